"""Decision records from a real gateway: one per request, every endpoint, no prompt text,
exported and replayed by `gateway policy simulate`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import openai
import orjson
import pytest

from gateway.decisions import FIELDS
from tests.conftest import REPO, Connect, run_gateway
from tests.support.redis_server import RedisDb

SECRET = "the-prompt-text-never-logged"


def _export(source: str, out: Path, expect: int) -> list[dict[str, object]]:
    """Export until ``expect`` records are there (the writer flushes every 0.5 s)."""
    deadline = time.monotonic() + 20
    while True:
        command = [sys.executable, "-m", "gateway", "decisions", "export", "--out", str(out)]
        command += ["--from", source]
        done = subprocess.run(command, check=False, cwd=REPO, capture_output=True)
        # Before the first flush there may be no record file yet: export says so and fails.
        lines = out.read_bytes().splitlines() if out.exists() else []
        records = [orjson.loads(line) for line in lines]
        if len(records) >= expect or time.monotonic() > deadline:
            assert done.returncode == 0, done.stderr
            return records
        time.sleep(0.2)


@pytest.mark.parametrize("sink", ["files", "redis"])
def test_one_record_per_request_without_prompts(
    test_policy: str, tmp_path: Path, connect: Connect, sink: str, redis_db: RedisDb
) -> None:
    env = {"GATEWAY_DECISION_LOG_DIR": str(tmp_path / "decisions")}
    if sink == "redis":
        env = {"GATEWAY_REDIS_URL": redis_db.url}
    with run_gateway(test_policy, env, tmp=tmp_path) as gateway:
        client = connect(gateway, "sk-decisions")
        ids = []
        raw = client.chat.completions.with_raw_response.create(
            model="any", messages=[{"role": "user", "content": SECRET}]
        )
        ids.append(raw.headers["x-request-id"])
        stream = client.chat.completions.create(
            model="routed", messages=[{"role": "user", "content": SECRET}], stream=True
        )
        list(stream)
        raw_e = client.embeddings.with_raw_response.create(model="any", input=SECRET)
        ids.append(raw_e.headers["x-request-id"])
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="all-fail", messages=[{"role": "user", "content": SECRET}]
            )
        raw_f = client.chat.completions.with_raw_response.create(
            model="fallback-500", messages=[{"role": "user", "content": SECRET}]
        )
        ids.append(raw_f.headers["x-request-id"])
        source = env.get("GATEWAY_DECISION_LOG_DIR") or redis_db.url
        out = tmp_path / "decisions.jsonl"
        records = _export(source, out, 5)
    assert len(records) == 5
    assert SECRET not in out.read_text()
    assert all(set(FIELDS) <= set(r) for r in records)
    by_id = {r["request_id"]: r for r in records}
    assert set(ids) <= set(by_id)
    chat, embed, fallback = (by_id[i] for i in ids)
    assert (chat["endpoint"], chat["status"], chat["backend"], chat["tier"]) == (
        "chat", 200, "open", "open"
    )  # fmt: skip
    assert chat["prompt_tokens"] > 0 and chat["score"] is not None
    assert embed["endpoint"] == "embeddings" and embed["score"] is None
    assert fallback["reason"] == "fallback" and fallback["fallbacks"] == ["broken"]
    assert sorted(r["status"] for r in records) == [200, 200, 200, 200, 502]
    # The log replays: with the same policy nothing changes backend.
    policy = tmp_path / "policy.yaml"
    policy.write_text(test_policy)
    command = [sys.executable, "-m", "gateway", "policy", "simulate", "--policy", str(policy)]
    result = subprocess.run(
        [*command, "--log", str(out), "--json"], check=True, cwd=REPO, capture_output=True
    )
    summary = orjson.loads(result.stdout)
    assert summary["records"] == 5
