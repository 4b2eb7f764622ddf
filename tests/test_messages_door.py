"""Anthropic's Messages API door: the official `anthropic` SDK against the gateway as a real
server, served by the scripted OpenAI-compatible upstream (translated both ways) and by the
scripted Anthropic upstream (chat in the middle)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import Upstreams, run_gateway

TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


@pytest.fixture
def claude(gateway: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway, api_key="sk-test-tenant", max_retries=0) as sdk:
        yield sdk


def test_create_translates_both_ways(claude: anthropic.Anthropic, upstreams: Upstreams) -> None:
    raw = claude.messages.with_raw_response.create(
        model="any-model",
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief."}],
        messages=[
            {"role": "user", "content": "first turn"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "messages create"}]},
        ],
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
        thinking={"type": "adaptive"},
        extra_body={"temperature": 0.5, "top_k": 5},
    )
    message = raw.parse()
    sent = upstreams.openai_state.last
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first turn"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "messages create"},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_k"]) == (64, 0.5, 5)
    assert sent["stop"] == ["END"] and sent["user"] == "u-1"
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: messages create"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    assert raw.headers["x-gateway-backend"] == "open"
    assert 0.0 <= float(raw.headers["x-gateway-difficulty"]) <= 1.0


def test_stream_event_sequence(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="any-model",
        max_tokens=64,
        messages=[{"role": "user", "content": "stream these words"}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert final.content[0].type == "text"
    assert final.content[0].text == "echo: stream these words"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 7)


def test_raw_stream_has_named_events_and_ping(gateway: str) -> None:
    body = {
        "model": "any-model",
        "max_tokens": 16,
        "stream": True,
        "messages": [{"role": "user", "content": "raw stream"}],
    }
    response = httpx.post(gateway + "/v1/messages", json=body, headers={"x-api-key": "k"})
    assert response.headers["content-type"].startswith("text/event-stream")
    names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert names[:2] == ["message_start", "ping"]
    assert names[-1] == "message_stop"


def test_tool_use_and_tool_result_follow_up(
    claude: anthropic.Anthropic, upstreams: Upstreams
) -> None:
    asked: Any = {"role": "user", "content": "weather in Paris?"}
    message = claude.messages.create(
        model="any-model",
        max_tokens=64,
        messages=[asked],
        tools=TOOLS,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    sent = upstreams.openai_state.last
    assert sent["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    assert message.stop_reason == "tool_use"
    use = message.content[-1]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "x"}

    claude.messages.create(
        model="any-model",
        max_tokens=64,
        tools=TOOLS,
        messages=[
            asked,
            {"role": "assistant", "content": message.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "18C, sunny"},
                    {"type": "text", "text": "and tomorrow?"},
                ],
            },
        ],
    )
    sent = upstreams.openai_state.last
    assert sent["messages"][1]["tool_calls"][0]["id"] == use.id
    assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"city":"x"}'
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": use.id, "content": "18C, sunny"}
    assert sent["messages"][3] == {"role": "user", "content": "and tomorrow?"}


def test_streamed_tool_use(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="any-model",
        max_tokens=64,
        messages=[{"role": "user", "content": "stream a tool call"}],
        tools=TOOLS,
    ) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "input_json_delta" in deltas
    assert final.stop_reason == "tool_use"
    assert final.content[-1].type == "tool_use" and final.content[-1].input == {"city": "x"}


def test_served_by_the_anthropic_upstream(
    claude: anthropic.Anthropic, upstreams: Upstreams
) -> None:
    message = claude.messages.create(
        model="claude", max_tokens=50, messages=[{"role": "user", "content": "round trip"}]
    )
    assert upstreams.anthropic_state.last["max_tokens"] == 50
    assert message.content[0].type == "text" and message.content[0].text == "echo: round trip"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 9)
    with claude.messages.stream(
        model="claude", max_tokens=50, messages=[{"role": "user", "content": "round stream"}]
    ) as stream:
        assert "".join(stream.text_stream) == "echo: round stream"


def test_output_config_format_is_json_schema(
    claude: anthropic.Anthropic, upstreams: Upstreams
) -> None:
    schema: Any = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    message = claude.messages.create(
        model="any-model",
        max_tokens=32,
        messages=[{"role": "user", "content": "a number please"}],
        output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "low"},
    )
    sent = upstreams.openai_state.last["response_format"]
    assert sent == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert message.content[0].type == "text" and message.content[0].text == '{"n":1}'


def test_count_tokens(claude: anthropic.Anthropic) -> None:
    short = claude.messages.count_tokens(
        model="any-model", messages=[{"role": "user", "content": "hi"}]
    )
    longer = claude.messages.count_tokens(
        model="any-model",
        system="You are a careful assistant.",
        messages=[{"role": "user", "content": "hi " * 400}],
        tools=TOOLS,
    )
    assert 0 < short.input_tokens < longer.input_tokens


def test_bearer_auth_is_accepted(gateway: str) -> None:
    with anthropic.Anthropic(base_url=gateway, auth_token="sk-bearer", max_retries=0) as claude:
        message = claude.messages.create(
            model="any-model", max_tokens=8, messages=[{"role": "user", "content": "bearer"}]
        )
    assert message.content[0].type == "text"


def _anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert body["request_id"] == response.headers["x-request-id"]
    message: str = body["error"]["message"]
    return message


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{not json", "JSON"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": {}, "content": "x"}]}, "role"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user"}]}, "content"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "x": 1},
            "x",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "document"}]}],
            },
            "type",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "temperature": 1.5,
                "messages": [{"role": "user", "content": "x"}],
            },
            "temperature",
        ),
    ],
)
def test_invalid_requests_have_anthropic_shape(
    gateway: str, body: dict[str, Any] | bytes, named: str
) -> None:
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.post(gateway + "/v1/messages", **kwargs)
    assert named in _anthropic_error(response, 400, "invalid_request_error")


def test_sdk_raises_its_own_errors(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model="any-model", max_tokens=-1, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_unknown_paths_and_methods_have_anthropic_shape(gateway: str) -> None:
    _anthropic_error(httpx.get(gateway + "/v1/messages"), 405, "invalid_request_error")
    _anthropic_error(httpx.post(gateway + "/v1/messages/batches"), 404, "not_found_error")


def test_stream_cut_mid_way_ends_with_an_error_event(claude: anthropic.Anthropic) -> None:
    ask: Any = [{"role": "user", "content": "a b c d"}]
    with (
        pytest.raises(anthropic.APIStatusError),
        claude.messages.stream(model="claude-cut", max_tokens=20, messages=ask) as stream,
    ):
        for _ in stream:
            pass


def test_metrics_label_the_door(gateway: str, claude: anthropic.Anthropic) -> None:
    claude.messages.create(
        model="any-model", max_tokens=8, messages=[{"role": "user", "content": "metrics"}]
    )
    metrics = httpx.get(gateway + "/metrics").text
    assert 'gateway_requests_total{backend="open",endpoint="messages"' in metrics


TEAMS_POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open}}
models:
  allowed: {{to: [open]}}
  other: {{to: [open]}}
teams:
  a: {{keys: [sk-team-a], allowed_models: [allowed]}}
"""


@pytest.fixture(scope="module")
def teams_gateway(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("teams")
    with run_gateway(TEAMS_POLICY.format(oai=upstreams.openai_url), tmp=tmp) as url:
        yield url


def test_auth_and_permission_errors(teams_gateway: str) -> None:
    with (
        anthropic.Anthropic(base_url=teams_gateway, api_key="sk-team-a", max_retries=0) as good,
        anthropic.Anthropic(base_url=teams_gateway, api_key="sk-wrong", max_retries=0) as bad,
    ):
        _auth_and_permission_errors(good, bad)


def _auth_and_permission_errors(good: anthropic.Anthropic, bad: anthropic.Anthropic) -> None:
    ask: dict[str, Any] = {"max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
    assert good.messages.create(model="allowed", **ask).content
    with pytest.raises(anthropic.AuthenticationError) as auth:
        bad.messages.create(model="allowed", **ask)
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.PermissionDeniedError):
        good.messages.create(model="other", **ask)
    with pytest.raises(anthropic.NotFoundError):
        good.messages.create(model="no-such-model", **ask)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.count_tokens(model="allowed", messages=ask["messages"])


def test_upstream_client_error_keeps_its_message(gateway: str) -> None:
    # (The SDK refuses so large a max_tokens without streaming: plain HTTP here.)
    body = {
        "model": "any-model",
        "max_tokens": 10**6,
        "messages": [{"role": "user", "content": "x"}],
    }
    response = httpx.post(gateway + "/v1/messages", json=body)
    message = _anthropic_error(response, 400, "invalid_request_error")
    assert message == "max_tokens is too large"


def test_gateway_failures_have_anthropic_types(claude: anthropic.Anthropic) -> None:
    ask: Any = [{"role": "user", "content": "x"}]
    with pytest.raises(anthropic.InternalServerError) as info:
        claude.messages.create(model="all-fail", max_tokens=8, messages=ask)
    body: Any = info.value.body
    assert info.value.status_code == 502 and body["error"]["type"] == "api_error"
