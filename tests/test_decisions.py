"""Decision records: the contract's fields, the off-path writer (files, Redis), export."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from gateway import cli
from gateway.decisions import (
    DEFAULT_STREAM,
    FIELDS,
    DecisionLog,
    DecisionRecord,
    _XAdd,
    from_stream_fields,
    to_stream_fields,
)
from gateway.limits.resp import _parse
from gateway_tools.decisions import parse_since
from tests.support.model_servers import free_port

# The decision-record contract, in its order.
CONTRACT = [
    *("ts", "request_id", "team", "model", "endpoint", "score", "backend", "tier", "reason"),
    *("fallbacks", "prompt_tokens", "completion_tokens", "cost_usd", "reference_cost_usd"),
    *("cache", "status", "latency_ms", "policy_version", "classifier_version", "key_id"),
]


def make(i: int = 0, **changes: Any) -> DecisionRecord:
    fields: dict[str, Any] = {
        "ts": 1_700_000_000.0 + i,
        "request_id": f"req-{i}",
        "team": "search",
        "model": "auto",
        "endpoint": "chat",
        "score": 0.25,
        "backend": "local",
        "tier": "open",
        "reason": "calibration",
        "prompt_tokens": 12,
        "completion_tokens": 34,
        "cost_usd": 1e-6,
        "reference_cost_usd": 2e-5,
        "cache": "miss",
        "status": 200,
        "latency_ms": 12.5,
        "policy_version": "v1",
        "classifier_version": "difficulty-abc",
    }
    fields.update(changes)
    return DecisionRecord(**fields)


def lines(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("decisions-*.jsonl")):
        out += [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return out


def test_record_fields_are_the_contract() -> None:
    assert list(FIELDS) == CONTRACT
    assert list(orjson.loads(orjson.dumps(make()))) == CONTRACT
    assert cli.DECISION_STREAM == DEFAULT_STREAM
    # No prompt, body or message text can be put in a record.
    with pytest.raises(TypeError):
        make(messages=[{"role": "user", "content": "secret"}])


def test_stream_fields_round_trip() -> None:
    record = make(score=None, fallbacks=["gpt", "claude"], status=502)
    fields = to_stream_fields(record)
    assert "score" not in fields and fields["fallbacks"] == '["gpt","claude"]'
    encoded = {k.encode(): v.encode() for k, v in fields.items()}
    assert from_stream_fields(encoded) == orjson.loads(orjson.dumps(record))


def test_the_packed_xadd_carries_the_stream_fields() -> None:
    record = make(score=None, fallbacks=["gpt"], status=502)
    packed = _XAdd("s", 10)(record)
    command, end = _parse(bytearray(packed), 0)
    assert end == len(packed)
    assert command[:6] == [b"XADD", b"s", b"MAXLEN", b"~", b"10", b"*"]
    fields = dict(zip(command[6::2], command[7::2], strict=True))
    assert fields == {k.encode(): v.encode() for k, v in to_stream_fields(record).items()}


def test_writes_jsonl_from_the_background_thread(tmp_path: Path) -> None:
    decisions = DecisionLog(tmp_path, flush_s=0.02)
    try:
        records = [make(i) for i in range(50)]
        for record in records:
            decisions.write(record)
        deadline = time.monotonic() + 5
        while len(lines(tmp_path)) < 50:
            assert time.monotonic() < deadline, "the background thread did not flush"
            time.sleep(0.02)
    finally:
        decisions.close()
    assert lines(tmp_path) == [dataclasses.asdict(r) | {"fallbacks": []} for r in records]
    assert decisions.dropped == 0 and decisions.errors == 0


def test_rotation_by_size_and_age_and_retention(tmp_path: Path) -> None:
    decisions = DecisionLog(tmp_path, rotate_bytes=2_000, keep_files=3, flush_s=60)
    try:
        for i in range(40):  # ~430 bytes a record: a few records per file
            decisions.write(make(i))
            decisions.flush()
        by_size = sorted(tmp_path.glob("decisions-*.jsonl"))
        assert len(by_size) >= 4  # files just written are never pruned (another worker's?)
        # A file is rotated once it reaches the size: it passes it by at most one batch.
        assert all(2_000 <= p.stat().st_size < 2_500 for p in by_size[:-1])
        assert [r["request_id"] for r in lines(tmp_path)] == [f"req-{i}" for i in range(40)]
        old = time.time() - 3600
        for path in by_size:
            os.utime(path, (old, old))
        decisions.rotate_s = 0.0  # by age: the next flush starts a new file
        decisions.write(make(99))
        decisions.flush()
        kept = sorted(tmp_path.glob("decisions-*.jsonl"))
        assert len(kept) == 3 and kept[-1] not in by_size
        assert lines(tmp_path)[-1]["request_id"] == "req-99"
    finally:
        decisions.close()


def test_a_deleted_file_is_reopened_and_a_full_queue_drops(tmp_path: Path) -> None:
    decisions = DecisionLog(tmp_path, flush_s=60, max_buffer=3)
    try:
        decisions.write(make(0))
        decisions.flush()
        shutil.rmtree(tmp_path)
        tmp_path.mkdir()
        decisions.write(make(1))
        decisions.flush()
        assert [r["request_id"] for r in lines(tmp_path)] == ["req-1"]
        for i in range(5):
            decisions.write(make(i))
        assert decisions.dropped == 2
    finally:
        decisions.close()


def test_redis_stream_is_bounded_and_exports(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = f"test:decisions:{time.time_ns()}"
    decisions = DecisionLog(redis_url=redis_url, stream=stream, stream_max_len=100, flush_s=60)
    try:
        for i in range(1_000):
            decisions.write(make(i, ts=time.time()))
        decisions.flush()
    finally:
        decisions.close()
    client = redis.Redis.from_url(redis_url)
    length = client.xlen(stream)
    client.close()
    assert 100 <= length < 1_000  # MAXLEN ~ trims whole nodes: about 100, never unbounded
    out = tmp_path / "export.jsonl"
    argv = ["decisions", "export", "--from", redis_url, "--stream", stream, "--out", str(out)]
    assert cli.main(argv) == 0
    exported = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(exported) == length
    assert exported[-1]["request_id"] == "req-999" and list(exported[-1]) == CONTRACT
    assert f"{length} decision records" in capsys.readouterr().err


def test_redis_down_never_raises(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    decisions = DecisionLog(tmp_path, redis_url=url, flush_s=60, redis_timeout_s=0.2)
    try:
        decisions.write(make(0))
        decisions.flush()
        assert decisions.errors == 1
        assert [r["request_id"] for r in lines(tmp_path)] == ["req-0"]  # files still written
    finally:
        decisions.close()


def test_export_from_files_with_since(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    decisions = DecisionLog(tmp_path / "log", flush_s=60)
    for i in range(10):
        decisions.write(make(i))
    decisions.close()
    out = tmp_path / "out.jsonl"
    since = "2023-11-14T22:13:25Z"  # 1_700_000_005
    argv = ["decisions", "export", "--from", str(tmp_path / "log"), "--since", since]
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert [orjson.loads(x)["request_id"] for x in out.read_bytes().splitlines()] == [
        f"req-{i}" for i in range(5, 10)
    ]
    assert cli.main([*argv[:-2], "--since", "yesterday", "--out", str(out)]) == 1
    assert "--since 'yesterday'" in capsys.readouterr().err
    assert cli.main(["decisions", "export", "--from", str(tmp_path / "nope"), "--out", "-"]) == 1


def test_parse_since() -> None:
    now = 1_000_000.0
    assert parse_since("90s", now) == now - 90
    assert parse_since("15m", now) == now - 900
    assert parse_since("2h", now) == now - 7200
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("12345.5", now) == 12345.5
    assert parse_since("1970-01-01T00:00:10+00:00", now) == 10.0


def test_simulate_reads_a_log_directory_and_redis(redis_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "backends:\n  local: {provider: openai, base_url: 'http://l/v1', "
        "price: {input_per_mtok: 1000000, output_per_mtok: 0}}\nmodels:\n  auto: {to: [local]}\n"
    )
    stream = f"test:sim:{time.time_ns()}"
    decisions = DecisionLog(tmp_path / "log", redis_url=redis_url, stream=stream, flush_s=60)
    for i in range(7):
        decisions.write(make(i, prompt_tokens=i, ts=time.time()))
    decisions.close()
    for source in (str(tmp_path / "log"), redis_url):
        out = tmp_path / "sim.json"
        argv = ["policy", "simulate", "--policy", str(policy), "--log", source, "--json"]
        argv += ["--stream", stream]
        with out.open("w") as handle, contextlib.redirect_stdout(handle):
            assert cli.main(argv) == 0
        result = orjson.loads(out.read_bytes())
        assert result["records"] == 7 and result["changed"] == 0
        assert result["candidate"]["cost_usd"] == sum(range(7))
