"""OpenAI's Responses API door: the official `openai` SDK against the gateway as a real server,
served by the scripted upstreams through the translation to chat completions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.conftest import Upstreams, run_gateway

TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "strict": True,
    }
]


@pytest.fixture
def client(gateway: str) -> Iterator[openai.OpenAI]:
    """The SDK client, closed after the test (its sockets are not left to the collector)."""
    with openai.OpenAI(base_url=gateway + "/v1", api_key="sk-test-tenant", max_retries=0) as sdk:
        yield sdk


def test_create_plain(client: openai.OpenAI, upstreams: Upstreams) -> None:
    raw = client.responses.with_raw_response.create(
        model="any-model",
        instructions="Be brief.",
        input="responses plain",
        max_output_tokens=40,
        temperature=0.3,
        metadata={"ticket": "7"},
    )
    response = raw.parse()
    sent = upstreams.openai_state.last
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "responses plain"},
    ]
    assert (sent["max_tokens"], sent["temperature"]) == (40, 0.3)
    assert "metadata" not in sent and "store" not in sent
    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.output_text == "echo: responses plain"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)
    assert response.metadata == {"ticket": "7"} and response.instructions == "Be brief."
    assert raw.headers["x-gateway-backend"] == "open"


def test_input_items_with_parts(client: openai.OpenAI, upstreams: Upstreams) -> None:
    items: Any = [
        {"role": "developer", "content": "Answer in French."},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "what is this?"},
                {"type": "input_image", "image_url": "https://example.com/a.png"},
            ],
        },
    ]
    client.responses.create(model="any-model", input=items)
    sent = upstreams.openai_state.last["messages"]
    assert sent[0] == {"role": "system", "content": "Answer in French."}
    assert sent[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/a.png", "detail": "auto"},
    }


def test_stream_event_sequence(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="any-model", input="stream it", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: stream it"
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == "echo: stream it"
    assert done.response.usage is not None and done.response.usage.output_tokens == 7


def test_stream_helper_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model="any-model", input="helper stream") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "echo: helper stream"


def test_previous_response_id_continues_the_conversation(
    client: openai.OpenAI, upstreams: Upstreams
) -> None:
    first = client.responses.create(
        model="any-model", instructions="Only the first time.", input="my name is Ada"
    )
    second = client.responses.create(
        model="any-model", previous_response_id=first.id, input="what is my name?"
    )
    assert [(m["role"], m["content"]) for m in upstreams.openai_state.last["messages"]] == [
        ("user", "my name is Ada"),
        ("assistant", "echo: my name is Ada"),
        ("user", "what is my name?"),
    ]
    assert second.previous_response_id == first.id
    # A streamed answer is stored before its last event is sent: continue from it at once.
    events = list(
        client.responses.create(
            model="any-model", previous_response_id=second.id, input="third", stream=True
        )
    )
    third = events[-1].response  # type: ignore[union-attr]
    client.responses.create(model="any-model", previous_response_id=third.id, input="fourth")
    assert len(upstreams.openai_state.last["messages"]) == 7


def test_function_call_and_output_follow_up(client: openai.OpenAI, upstreams: Upstreams) -> None:
    first = client.responses.create(
        model="any-model",
        input="weather in Paris?",
        tools=TOOLS,
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )
    sent = upstreams.openai_state.last
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": TOOLS[0]["parameters"],
                "strict": True,
            },
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "x"}

    client.responses.create(
        model="any-model",
        previous_response_id=first.id,
        tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"}],
    )
    messages = upstreams.openai_state.last["messages"]
    assert messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "18C"}

    # The same conversation without storing: the items are sent back by the client.
    client.responses.create(
        model="any-model",
        store=False,
        tools=TOOLS,
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "18C"},
        ],
    )
    messages = upstreams.openai_state.last["messages"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": "{}"}


def test_streamed_function_call(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(model="any-model", input="stream a call", tools=TOOLS, stream=True)
    )
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    final: Any = events[-1].response  # type: ignore[union-attr]
    assert final.output[0].type == "function_call"
    assert json.loads(final.output[0].arguments) == {"city": "x"}


def test_text_format_json_schema(client: openai.OpenAI, upstreams: Upstreams) -> None:
    schema: Any = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    response = client.responses.create(
        model="any-model",
        input="a number",
        text={"format": {"type": "json_schema", "name": "num", "schema": schema, "strict": True}},
    )
    assert upstreams.openai_state.last["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "num", "schema": schema, "strict": True},
    }
    assert json.loads(response.output_text) == {"n": 1}
    client.responses.create(model="any-model", input="j", text={"format": {"type": "json_object"}})
    assert upstreams.openai_state.last["response_format"] == {"type": "json_object"}


def test_retrieve_input_items_delete(client: openai.OpenAI) -> None:
    made = client.responses.create(
        model="any-model",
        input=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
    )
    assert client.responses.retrieve(made.id).output_text == made.output_text
    items: Any = client.responses.input_items.list(made.id, order="asc")
    assert [i.content[0].text for i in items.data] == ["one", "two"]
    newest: Any = client.responses.input_items.list(made.id, limit=1)
    assert newest.has_more and newest.data[0].content[0].text == "two"
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(made.id)


def test_store_false_is_not_kept(client: openai.OpenAI) -> None:
    made = client.responses.create(model="any-model", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


def test_tenants_cannot_read_each_others_responses(gateway: str) -> None:
    with (
        openai.OpenAI(base_url=gateway + "/v1", api_key="sk-alice", max_retries=0) as alice,
        openai.OpenAI(base_url=gateway + "/v1", api_key="sk-mallory", max_retries=0) as mallory,
    ):
        _isolated(alice, mallory)


def _isolated(alice: openai.OpenAI, mallory: openai.OpenAI) -> None:
    secret = alice.responses.create(model="any-model", input="alice's secret")
    assert alice.responses.retrieve(secret.id).id == secret.id
    with pytest.raises(openai.NotFoundError):
        mallory.responses.retrieve(secret.id)
    with pytest.raises(openai.NotFoundError):
        mallory.responses.input_items.list(secret.id)
    with pytest.raises(openai.NotFoundError) as info:
        mallory.responses.create(model="any-model", previous_response_id=secret.id, input="hi")
    assert info.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        mallory.responses.delete(secret.id)
    assert alice.responses.retrieve(secret.id).id == secret.id


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": [{"role": {}, "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user"}]}, "input[0].content"),
        ({"model": "m", "input": "x", "conversation": "c"}, "conversation"),
        ({"model": "m", "input": "x", "background": True}, "background"),
        ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "i"}]}, "input[0].type"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"model": "m", "input": "x", "max_output_tokens": "many"}, "max_output_tokens"),
    ],
)
def test_invalid_requests_have_openai_shape(gateway: str, body: dict[str, Any], param: str) -> None:
    response = httpx.post(gateway + "/v1/responses", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_stream_cut_mid_way_fails_the_response(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="cut", input="a b c d", stream=True))
    assert events[-2].type == "error"
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None


def test_metrics_label_the_door(gateway: str, client: openai.OpenAI) -> None:
    client.responses.create(model="any-model", input="metrics", store=False)
    metrics = httpx.get(gateway + "/metrics").text
    assert 'gateway_requests_total{backend="open",endpoint="responses"' in metrics


def test_stored_in_redis_with_a_ttl_per_tenant(
    test_policy: str, redis_url: str, tmp_path: Path
) -> None:
    env = {"GATEWAY_REDIS_URL": redis_url, "GATEWAY_RESPONSES_TTL_S": "120"}
    with (
        run_gateway(test_policy, env=env, tmp=tmp_path) as url,
        openai.OpenAI(base_url=url + "/v1", api_key="sk-alice", max_retries=0) as alice,
        openai.OpenAI(base_url=url + "/v1", api_key="sk-bob", max_retries=0) as bob,
    ):
        made = alice.responses.create(model="any-model", input="kept in redis")
        alice.responses.create(model="any-model", previous_response_id=made.id, input="again")
        with pytest.raises(openai.NotFoundError):
            bob.responses.retrieve(made.id)
    server = redis.Redis.from_url(redis_url)
    keys = [k.decode() for k in server.scan_iter(match=f"gateway:responses:v1:*:{made.id}")]
    assert len(keys) == 1 and keys[0].startswith("gateway:responses:v1:key:")
    assert 0 < server.ttl(keys[0]) <= 120


def test_served_by_the_anthropic_upstream(client: openai.OpenAI, upstreams: Upstreams) -> None:
    response = client.responses.create(model="claude", input="via claude", max_output_tokens=30)
    assert upstreams.anthropic_state.last["max_tokens"] == 30
    assert response.output_text == "echo: via claude"
    assert response.usage is not None and response.usage.input_tokens == 21
    events = list(client.responses.create(model="claude", input="claude stream", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "echo: claude stream"
