"""Doors forwarded as is: Messages to Anthropic backends, Responses to `responses: native` ones.

The gateway runs as a real server; the official `anthropic` and `openai` SDKs call it. What
the scripted upstream receives must be the client's body with only the model renamed, and
what the client gets must be what the upstream sent (compared with a direct call to the same
upstream), while usage, cache, headers and fallbacks to translated backends keep working.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Upstreams, run_gateway
from tests.support.fake_upstreams import FakeUpstream, serve_in_thread
from tests.support.responses_upstream import responses_app

POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open}}
  broken: {{provider: openai, base_url: "{oai}/fail500/v1", tier: open}}
  claude:
    provider: anthropic
    base_url: {anth}/v1
    api_key: test-anthropic-key
    model: claude-test
    tier: closed
    price: {{input_per_mtok: 3.0, output_per_mtok: 15.0}}
  claude-broken: {{provider: anthropic, base_url: "{anth}/fail500/v1", api_key: {akey}}}
  claude-cut: {{provider: anthropic, base_url: "{anth}/cut/v1", api_key: {akey}}}
  gpt:
    provider: openai
    base_url: {resp}/v1
    api_key: test-openai-key
    model: gpt-up
    tier: closed
    responses: native
  gpt-broken: {{provider: openai, base_url: "{resp}/fail500/v1", responses: native}}
  gpt-cut: {{provider: openai, base_url: "{resp}/cut/v1", responses: native}}
models:
  claude: {{to: [claude]}}
  claude-cut: {{to: [claude-cut]}}
  claude-then-open: {{to: [claude-broken, open]}}
  open-then-claude: {{to: [broken, claude]}}
  claude-cached: {{to: [claude], cache: {{enabled: true}}}}
  gpt: {{to: [gpt]}}
  gpt-cut: {{to: [gpt-cut]}}
  gpt-then-open: {{to: [gpt-broken, open]}}
  open-only: {{to: [open]}}
  gpt-cached: {{to: [gpt], cache: {{enabled: true}}}}
"""
TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def native() -> Iterator[tuple[str, FakeUpstream]]:
    state = FakeUpstream()
    with serve_in_thread(responses_app(state)) as url:
        yield url, state


@pytest.fixture(scope="module")
def gateway(
    upstreams: Upstreams, native: tuple[str, FakeUpstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    urls = {"oai": upstreams.openai_url, "anth": upstreams.anthropic_url, "resp": native[0]}
    policy = POLICY.format(**urls, akey="test-anthropic-key")
    with run_gateway(policy, tmp=tmp_path_factory.mktemp("native")) as url:
        yield url


@pytest.fixture
def claude(gateway: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def client(gateway: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway + "/v1", api_key="sk-test", max_retries=0) as sdk:
        yield sdk


# Everything Anthropic reads that the chat translation drops.
RICH: dict[str, Any] = {
    "max_tokens": 64,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": "first"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "earlier", "signature": "s0"},
                {"type": "text", "text": "ok"},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "text", "text": "as is", "cache_control": {"type": "ephemeral"}}],
        },
    ],
    "thinking": {"type": "enabled", "budget_tokens": 32},
    "metadata": {"user_id": "u-1"},
    "top_k": 5,
    "service_tier": "auto",
    "future_field": {"a": 1},  # unknown to the gateway: Anthropic's to judge
}
DIRECT = {"x-api-key": "test-anthropic-key", "anthropic-version": "2023-06-01"}


def _tokens(gateway: str, backend: str, kind: str) -> float:
    metrics = httpx.get(gateway + "/metrics").text
    pattern = rf'gateway_tokens_total{{backend="{backend}",[^}}]*kind="{kind}"[^}}]*}} (\S+)'
    return sum(float(v) for v in re.findall(pattern, metrics))


def test_messages_go_to_anthropic_as_is(gateway: str, upstreams: Upstreams) -> None:
    before = _tokens(gateway, "claude", "prompt"), _tokens(gateway, "claude", "completion")
    beta = {"anthropic-beta": "interleaved-thinking-2025-05-14", "x-api-key": "sk-test"}
    body = {**RICH, "model": "claude"}
    response = httpx.post(gateway + "/v1/messages", json=body, headers=beta)
    assert response.status_code == 200, response.text
    state = upstreams.anthropic_state
    assert state.last == {**RICH, "model": "claude-test"}
    assert state.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    direct = httpx.post(
        upstreams.anthropic_url + "/v1/messages", json=state.last, headers=DIRECT
    ).json()
    assert response.json() == direct  # the thinking block and its signature included
    assert response.json()["content"][0] == {
        "type": "thinking",
        "thinking": "Hmm, an echo.",
        "signature": "s1",
    }
    assert response.headers["x-gateway-backend"] == "claude"
    assert 0.0 <= float(response.headers["x-gateway-difficulty"]) <= 1.0
    after = _tokens(gateway, "claude", "prompt"), _tokens(gateway, "claude", "completion")
    assert (after[0] - before[0], after[1] - before[1]) == (21, 9)


def test_unknown_messages_fields_without_anthropic_are_a_400(gateway: str) -> None:
    body = {"model": "open-only", "max_tokens": 8, "future_field": 1}
    body["messages"] = [{"role": "user", "content": "x"}]
    response = httpx.post(gateway + "/v1/messages", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "'future_field'" in error["message"]


def test_messages_stream_is_relayed_unchanged(gateway: str, upstreams: Upstreams) -> None:
    before = _tokens(gateway, "claude", "prompt"), _tokens(gateway, "claude", "completion")
    body = {**RICH, "model": "claude", "stream": True}
    streamed = httpx.post(gateway + "/v1/messages", json=body, headers={"x-api-key": "k"})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    sent = upstreams.anthropic_state.last
    assert sent == {**RICH, "model": "claude-test", "stream": True}
    direct = httpx.post(upstreams.anthropic_url + "/v1/messages", json=sent, headers=DIRECT)
    assert streamed.text == direct.text
    assert "signature_delta" in streamed.text
    after = _tokens(gateway, "claude", "prompt"), _tokens(gateway, "claude", "completion")
    assert (after[0] - before[0], after[1] - before[1]) == (21, 9)


def test_messages_sdk_stream_keeps_thinking(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude",
        max_tokens=64,
        thinking={"type": "enabled", "budget_tokens": 32},
        messages=[{"role": "user", "content": "think"}],
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[1].text == "echo: think"  # type: ignore[union-attr]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (21, 9)


def test_messages_fallback_to_an_openai_backend_is_translated(
    claude: anthropic.Anthropic, upstreams: Upstreams
) -> None:
    raw = claude.messages.with_raw_response.create(
        model="claude-then-open", max_tokens=16, messages=[{"role": "user", "content": "fall"}]
    )
    message = raw.parse()
    assert raw.headers["x-gateway-backend"] == "open"
    assert upstreams.openai_state.last["messages"] == [{"role": "user", "content": "fall"}]
    assert message.content[0].text == "echo: fall"  # type: ignore[union-attr]


def test_messages_fallback_to_anthropic_is_as_is(
    claude: anthropic.Anthropic, upstreams: Upstreams
) -> None:
    raw = claude.messages.with_raw_response.create(
        model="open-then-claude",
        max_tokens=16,
        messages=[{"role": "user", "content": "to claude"}],
        stop_sequences=["END"],
    )
    assert raw.headers["x-gateway-backend"] == "claude"
    assert upstreams.anthropic_state.last == {
        "model": "claude-test",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "to claude"}],
        "stop_sequences": ["END"],
    }
    assert raw.parse().id == "msg_fake"


def test_messages_native_answers_are_cached_per_form(gateway: str, upstreams: Upstreams) -> None:
    state = upstreams.anthropic_state
    ask = {
        "model": "claude-cached",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "c"}],
    }
    first = httpx.post(gateway + "/v1/messages", json=ask)
    count = state.count
    second = httpx.post(gateway + "/v1/messages", json=ask)
    assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("miss", "hit")
    assert second.content == first.content and state.count == count
    # The stream of the same request is its own entry: kept as streamed, replayed as is.
    streamed = [httpx.post(gateway + "/v1/messages", json={**ask, "stream": True}) for _ in "ab"]
    assert [s.headers["x-gateway-cache"] for s in streamed] == ["miss", "hit"]
    assert streamed[0].text == streamed[1].text and "event: message_stop" in streamed[1].text
    assert state.count == count + 1
    # Fields the chat view drops still tell requests apart.
    thinking = {**ask, "thinking": {"type": "enabled", "budget_tokens": 16}}
    assert httpx.post(gateway + "/v1/messages", json=thinking).headers["x-gateway-cache"] == "miss"


def test_messages_stream_cut_ends_with_an_anthropic_error_event(gateway: str) -> None:
    body = {"model": "claude-cut", "max_tokens": 16, "stream": True}
    body["messages"] = [{"role": "user", "content": "a b c d"}]
    text = httpx.post(gateway + "/v1/messages", json=body).text
    last = text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\ndata: ")
    assert '"type":"error"' in last and '"api_error"' in last


def test_responses_go_to_a_native_backend_as_is(
    gateway: str, client: openai.OpenAI, native: tuple[str, FakeUpstream]
) -> None:
    before = _tokens(gateway, "gpt", "prompt"), _tokens(gateway, "gpt", "completion")
    raw = client.responses.with_raw_response.create(
        model="gpt",
        input="hello native",
        metadata={"k": "v"},
        extra_body={"future_field": {"a": 1}},
    )
    response = raw.parse()
    state = native[1]
    assert state.last == {
        "model": "gpt-up",
        "input": "hello native",
        "metadata": {"k": "v"},
        "future_field": {"a": 1},
    }
    assert response.id == f"resp_up{state.count}"  # the backend's own Response
    assert response.output_text == "echo: hello native"
    assert raw.headers["x-gateway-backend"] == "gpt"
    after = _tokens(gateway, "gpt", "prompt"), _tokens(gateway, "gpt", "completion")
    assert (after[0] - before[0], after[1] - before[1]) == (13, 5)
    assert client.responses.retrieve(response.id).output_text == "echo: hello native"


def test_unknown_fields_without_a_native_backend_are_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="open-only", input="x", extra_body={"future_field": 1})
    assert info.value.param == "future_field" and info.value.code == "unknown_parameter"


def test_responses_stream_is_relayed_unchanged(
    gateway: str, client: openai.OpenAI, native: tuple[str, FakeUpstream]
) -> None:
    before = _tokens(gateway, "gpt", "prompt"), _tokens(gateway, "gpt", "completion")
    with client.responses.stream(model="gpt", input="stream it") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    after = _tokens(gateway, "gpt", "prompt"), _tokens(gateway, "gpt", "completion")
    assert (after[0] - before[0], after[1] - before[1]) == (13, 5)
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
    assert final.output_text == "echo: stream it"
    body = {"model": "gpt", "input": "raw stream", "stream": True}
    streamed = httpx.post(gateway + "/v1/responses", json=body)
    sent = native[1].last
    assert sent == {**body, "model": "gpt-up"}
    number = native[1].count
    direct = httpx.post(native[0] + "/v1/responses", json=sent).text
    assert streamed.text == direct.replace(f"resp_up{number + 1}", f"resp_up{number}")


def test_previous_response_id_is_expanded_by_the_gateway(
    client: openai.OpenAI, native: tuple[str, FakeUpstream], upstreams: Upstreams
) -> None:
    first = client.responses.create(model="gpt", input="my name is Ada", instructions="Once.")
    second = client.responses.create(
        model="gpt", previous_response_id=first.id, input="what is my name?"
    )
    sent = native[1].last
    assert "previous_response_id" not in sent and "instructions" not in sent
    assert sent["input"] == [
        {"type": "message", "role": "user", "content": "my name is Ada"},
        {
            "type": "message",
            "id": "msg_up1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "echo: my name is Ada", "annotations": []}],
        },
        {"type": "message", "role": "user", "content": "what is my name?"},
    ]
    # A translated backend continues the same conversation from the stored chat history.
    client.responses.create(model="open-only", previous_response_id=second.id, input="third")
    assert [(m["role"], m["content"]) for m in upstreams.openai_state.last["messages"]] == [
        ("user", "my name is Ada"),
        ("assistant", "echo: my name is Ada"),
        ("user", "what is my name?"),
        ("assistant", "echo: what is my name?"),
        ("user", "third"),
    ]


def test_function_call_round_trip_natively(
    client: openai.OpenAI, native: tuple[str, FakeUpstream]
) -> None:
    first = client.responses.create(model="gpt", input="weather in Paris?", tools=[TOOL])
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city":"x"}'
    second = client.responses.create(
        model="gpt",
        previous_response_id=first.id,
        tools=[TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"}],
    )
    assert second.output_text == "tool said: 18C"
    kinds = [item["type"] for item in native[1].last["input"]]
    assert kinds == ["message", "function_call", "function_call_output"]


def test_responses_fallback_to_a_translated_backend(
    client: openai.OpenAI, upstreams: Upstreams
) -> None:
    raw = client.responses.with_raw_response.create(model="gpt-then-open", input="fall back")
    assert raw.headers["x-gateway-backend"] == "open"
    assert raw.parse().output_text == "echo: fall back"
    assert upstreams.openai_state.last["messages"] == [{"role": "user", "content": "fall back"}]


def test_responses_native_cache_and_cut_stream(
    gateway: str, native: tuple[str, FakeUpstream]
) -> None:
    ask = {"model": "gpt-cached", "input": "cache natively"}
    first, second = (httpx.post(gateway + "/v1/responses", json=ask) for _ in "ab")
    assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("miss", "hit")
    assert first.content == second.content
    cut = httpx.post(
        gateway + "/v1/responses", json={"model": "gpt-cut", "input": "a", "stream": True}
    )
    last = cut.text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\ndata: ") and '"type":"error"' in last


def test_native_responses_stay_with_their_tenant(
    gateway: str, native: tuple[str, FakeUpstream]
) -> None:
    with (
        openai.OpenAI(base_url=gateway + "/v1", api_key="sk-tenant-a", max_retries=0) as a,
        openai.OpenAI(base_url=gateway + "/v1", api_key="sk-tenant-b", max_retries=0) as b,
    ):
        kept = a.responses.create(model="gpt", input="mine")
        assert a.responses.retrieve(kept.id).id == kept.id
        with pytest.raises(openai.NotFoundError):
            b.responses.retrieve(kept.id)
        with pytest.raises(openai.NotFoundError):
            b.responses.create(model="gpt", previous_response_id=kept.id, input="theirs?")
        unstored = a.responses.create(model="gpt", input="forget me", store=False)
        assert native[1].last["store"] is False  # the client's choice goes up as is
        with pytest.raises(openai.NotFoundError):
            a.responses.retrieve(unstored.id)
