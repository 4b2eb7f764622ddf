"""Golden request/answer/stream pairs for the Messages and Responses doors.

Each `tests/golden/<case>.json` holds a request a client sends, the answer a scripted
OpenAI-compatible upstream gives (whole and streamed), and what the gateway, a real server,
must send back: the whole JSON and every stream event (name and data), written from the
public API references (Anthropic's Messages streaming, OpenAI's Responses streaming events).
Ids are compared by identity (the n-th distinct id is `<id n>`) and timestamps as `<time>`,
so an `item_id` must still name its item; everything else, field sets included, is exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import run_gateway
from tests.support.fake_upstreams import serve_in_thread
from tests.support.golden_upstream import GOLDEN, golden_app

CASES = sorted(p.stem for p in GOLDEN.glob("*.json"))
_IDS = frozenset({"id", "item_id"})
_TIMES = frozenset({"created_at", "completed_at"})


def normalise(value: Any, ids: dict[str, str] | None = None) -> Any:
    """``value`` with ids numbered by first appearance and timestamps masked."""
    ids = {} if ids is None else ids
    if isinstance(value, list):
        return [normalise(v, ids) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in _IDS and isinstance(item, str):
            out[key] = ids.setdefault(item, f"<id {len(ids) + 1}>")
        elif key in _TIMES and isinstance(item, int):
            out[key] = "<time>"
        else:
            out[key] = normalise(item, ids)
    return out


def events_of(text: str) -> list[dict[str, Any]]:
    """An SSE body as [{event, data}], in order."""
    out = []
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line]
        if not lines:
            continue
        name = next((line[7:] for line in lines if line.startswith("event: ")), None)
        data = next(line[6:] for line in lines if line.startswith("data: "))
        out.append({"event": name, "data": json.loads(data)})
    return out


def load(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / f"{name}.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_in_thread(golden_app()) as upstream:
        policy = f"backends: {{golden: {{provider: openai, base_url: '{upstream}/v1'}}}}\n"
        policy += "models: {'*': {to: [golden]}}\n"
        with run_gateway(policy, tmp=tmp_path_factory.mktemp("golden")) as url:
            yield url


def _post(gateway: str, case: dict[str, Any], stream: bool) -> httpx.Response:
    body = {**case["request"], "stream": True} if stream else case["request"]
    response = httpx.post(f"{gateway}/v1/{case['door']}", json=body, headers={"x-api-key": "k"})
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize("name", CASES)
def test_whole_answer(gateway: str, name: str) -> None:
    case = load(name)
    assert normalise(_post(gateway, case, stream=False).json()) == case["whole"]


@pytest.mark.parametrize("name", CASES)
def test_stream_event_by_event(gateway: str, name: str) -> None:
    case = load(name)
    got = normalise(events_of(_post(gateway, case, stream=True).text))
    expected = case["stream"]
    assert [e["event"] for e in got] == [e["event"] for e in expected]
    for i, (one, want) in enumerate(zip(got, expected, strict=True)):
        assert sorted(one["data"]) == sorted(want["data"]), f"event {i}: field set"
        assert one == want, f"event {i} ({want['event']})"


def test_every_door_has_text_and_tool_cases() -> None:
    kinds = {(load(n)["door"], "tool" if "tools" in load(n)["request"] else "text") for n in CASES}
    assert kinds == {(d, k) for d in ("messages", "responses") for k in ("text", "tool")}
