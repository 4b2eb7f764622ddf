"""The caller's key id in decision records and the access log: an API key's `key_...` id, or
where the policy declares the key; never the clear key, nor its HMAC or a prefix of it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from gateway.auth import KeyHasher
from tests.conftest import GATEWAY_LOGS, Connect, Upstreams, run_gateway
from tests.support.keys import ADMIN, POLICY, SECRET, chat, create
from tests.support.redis_server import RedisDb


def _records(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("decisions-*.jsonl")):
        out += [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return out


def _wait(read: Any, ids: set[str]) -> dict[str, dict[str, Any]]:
    """`read()`'s entries by request id once every id in `ids` is there (flushes are periodic)."""
    deadline = time.monotonic() + 20
    while True:
        found = {e.get("request_id"): e for e in read()}
        if ids <= set(found) or time.monotonic() > deadline:
            assert ids <= set(found), f"missing: {ids - set(found)}"
            return found
        time.sleep(0.1)


def test_records_and_logs_name_the_key_by_id_only(
    redis_db: RedisDb, upstreams: Upstreams, tmp_path: Path, connect: Connect
) -> None:
    decisions = tmp_path / "decisions"
    env = {
        "GATEWAY_REDIS_URL": redis_db.url,
        "GATEWAY_ADMIN_KEY": ADMIN,
        "GATEWAY_KEY_SECRET": SECRET,
        "GATEWAY_DECISION_LOG_DIR": str(decisions),
    }
    with run_gateway(POLICY.format(oai=upstreams.openai_url), env, tmp=tmp_path) as url:
        made = create(url, team="apps")
        clear = {"policy": "sk-policy-search", "api": made["key"], "wrong": "sk-gw-not-a-key"}
        ids: dict[str, str] = {}
        for who in ("policy", "api"):
            raw = connect(url, clear[who]).chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            ids[who] = raw.headers["x-request-id"]
        assert chat(connect(url, made["key"]))
        with pytest.raises(openai.AuthenticationError) as info:
            connect(url, clear["wrong"]).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        ids["wrong"] = info.value.response.headers["x-request-id"]

        def log_lines() -> list[dict[str, Any]]:
            text = GATEWAY_LOGS[url].read_text()
            return [orjson.loads(ln) for ln in text.splitlines() if ln.startswith("{")]

        logged = _wait(log_lines, set(ids.values()))
        recorded = _wait(lambda: _records(decisions), set(ids.values()))
        log_text = GATEWAY_LOGS[url].read_text()
    expected = {"policy": "search.keys[0]", "api": made["id"], "wrong": ""}
    for who, request_id in ids.items():
        assert recorded[request_id]["key_id"] == expected[who]
        assert logged[request_id]["key_id"] == expected[who]
        assert logged[request_id]["msg"] == "request"
    assert recorded[ids["api"]]["team"] == "apps"
    records_text = "\n".join(p.read_text() for p in decisions.glob("decisions-*.jsonl"))
    hasher = KeyHasher(SECRET.encode())
    for key in clear.values():
        digest = hasher.digest(key)
        for text in (records_text, log_text):
            assert key not in text
            assert digest[:16] not in text  # nor the limiter's id of a policy key
