"""Malformed requests get clean OpenAI-shaped 4xx errors, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Connect, Upstreams, run_gateway
from tests.support.door_bodies import messages_bodies, responses_bodies

# Valid Unicode only: lone surrogates cannot be sent as UTF-8 JSON at all.
UNICODE = st.characters(exclude_categories=["Cs"])


def _assert_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert error["message"]
    assert response.headers["x-request-id"]
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"\xff\xfe\xfa not utf-8", None),
        (b"[1, 2]", None),
        (b"", None),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
        (json.dumps({"model": "m"}).encode(), "messages"),
        (json.dumps({"model": "m", "messages": []}).encode(), "messages"),
        (json.dumps({"model": "m", "messages": "hello"}).encode(), "messages"),
        (json.dumps({"model": 5, "messages": [{"role": "user"}]}).encode(), "model"),
        (json.dumps({"model": "m", "messages": [{"role": "wizard"}]}).encode(), "messages[0].role"),
        (
            json.dumps({"model": "m", "messages": [{"role": "user", "content": 3}]}).encode(),
            "messages[0].content",
        ),
        (json.dumps({"model": "m", "messages": [{"role": "user"}], "n": 0}).encode(), "n"),
        (json.dumps({"model": "m", "messages": [{"role": "user"}], "n": 1000}).encode(), "n"),
        (
            json.dumps(
                {"model": "m", "messages": [{"role": "user"}], "temperature": "hot"}
            ).encode(),
            "temperature",
        ),
        (
            json.dumps({"model": "m", "messages": [{"role": "user"}], "stream": "yes"}).encode(),
            "stream",
        ),
        (json.dumps({"model": "m", "messages": [{"role": "user"}], "tools": {}}).encode(), "tools"),
        (
            json.dumps({"model": "m", "messages": [{"role": {}, "content": "x"}]}).encode(),
            "messages[0].role",
        ),
        (
            json.dumps({"model": "m", "messages": [{"role": "user"}]}).encode(),
            "messages[0].content",
        ),
        (
            json.dumps({"model": "m", "messages": [{"role": "user", "content": [3]}]}).encode(),
            "messages[0].content",
        ),
        *(
            (
                json.dumps(
                    {
                        "model": "m",
                        "messages": [{"role": "user", "content": "x"}],
                        "tools": [{"type": "function", "function": {"name": "add"}}],
                        "tool_choice": {"type": "function", "function": {"name": name}},
                    }
                ).encode(),
                "tool_choice",
            )
            for name in ("refund", ["add"])  # not offered; not even a name
        ),
    ],
)
def test_malformed_chat_requests(gateway: str, body: bytes, param: str | None) -> None:
    response = httpx.post(
        gateway + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    error = _assert_error(response, 400, "invalid_request_error")
    assert error["param"] == param


DEEP = b"[" * 300 + b'"x"' + b"]" * 300


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", b'{"model":"m","messages":[{"role":"user","content":%s}]}'),
        ("/v1/messages", b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":%s}]}'),
        ("/v1/responses", b'{"model":"m","input":[{"role":"user","content":%s}]}'),
        ("/v1/embeddings", b'{"model":"m","input":%s}'),
    ],
)
def test_deep_nesting_is_a_400_on_every_door(gateway: str, path: str, body: bytes) -> None:
    response = httpx.post(gateway + path, content=body % DEEP)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "nested" in error["message"]
    if path == "/v1/messages":
        assert response.json()["type"] == "error" and error["type"] == "invalid_request_error"


def test_oversized_body(gateway: str) -> None:
    big = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"a" * 10_000_000 + b'"}]}'
    response = httpx.post(gateway + "/v1/chat/completions", content=big, timeout=30)
    _assert_error(response, 413, "invalid_request_error")


def test_oversized_chunked_body(gateway: str) -> None:
    def chunks() -> Any:
        for _ in range(100):
            yield b"a" * 100_000

    response = httpx.post(gateway + "/v1/chat/completions", content=chunks(), timeout=30)
    _assert_error(response, 413, "invalid_request_error")


STRICT_POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open}}
models:
  only-this: {{to: [open]}}
"""


@pytest.fixture(scope="module")
def strict_gateway(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policy = STRICT_POLICY.format(oai=upstreams.openai_url)
    with run_gateway(policy, tmp=tmp_path_factory.mktemp("strict-gateway")) as url:
        yield url


def test_unknown_model(strict_gateway: str, connect: Connect) -> None:
    client = connect(strict_gateway)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")
    assert client.models.retrieve("only-this").id == "only-this"


def test_upstream_client_error_is_passed_on(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="any-model", messages=[{"role": "user", "content": "x"}], max_tokens=10**6
        )
    assert info.value.code == "context_length_exceeded"
    assert info.value.param == "max_tokens"


def test_upstream_rejecting_our_key_is_a_gateway_error(client: openai.OpenAI) -> None:
    # The operator's key is wrong, not the caller's: 502, and never the upstream's 401.
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="claude-badkey", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 502


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=UNICODE, max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet=UNICODE, max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.just("any-model"), json_values),
        "messages": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
                        "content": json_values,
                        "tool_calls": json_values,
                    },
                ),
                max_size=3,
            ),
            json_values,
        ),
        "n": json_values,
        "temperature": json_values,
        "stream": json_values,
        "stop": json_values,
        "tools": json_values,
        "response_format": json_values,
        "max_tokens": json_values,
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=chat_like)
def test_fuzzed_bodies_never_500(gateway: str, body: dict[str, Any]) -> None:
    for model in (None, "claude"):
        if model is not None and isinstance(body.get("model"), str):
            body = {**body, "model": model}
        response = httpx.post(gateway + "/v1/chat/completions", json=body, timeout=10)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    door=st.sampled_from(["/v1/messages", "/v1/responses"]),
    data=st.data(),
)
def test_fuzzed_bodies_never_500_on_the_other_doors(
    gateway: str, door: str, data: st.DataObject
) -> None:
    body = data.draw(messages_bodies if door == "/v1/messages" else responses_bodies)
    response = httpx.post(gateway + door, content=json.dumps(body), timeout=10)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == (
            {"type", "message"} if door == "/v1/messages" else {"message", "type", "param", "code"}
        )
