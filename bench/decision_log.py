"""What a decision record costs the request that writes it, pinned to one core.

    .venv/bin/python bench/decision_log.py [--n 200000] [--redis redis://127.0.0.1:PORT/0]

Per call, in the same run: "off" (building the record and dropping it, what the request
pays anyway to know its fields), "on" (building it and `DecisionLog.write`), and `write`
alone; plus the background thread's cost per record (serialising and writing a batch),
which is CPU the process spends off the request path. Target (reported, never asserted):
the on − off difference ≤ 0.05 ms p50.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.decisions import DecisionLog, DecisionRecord


def _record(i: int) -> DecisionRecord:
    return DecisionRecord(
        ts=time.time(),
        request_id=f"{i:032x}",
        team="search",
        model="auto",
        endpoint="chat",
        score=0.4321,
        backend="local",
        tier="open",
        reason="calibration",
        prompt_tokens=120,
        completion_tokens=340,
        cost_usd=2.3e-5,
        reference_cost_usd=7.1e-4,
        cache="miss",
        status=200,
        latency_ms=41.25,
        policy_version="tiered-2026-11",
        classifier_version="difficulty-0123456789ab",
    )


def _time(n: int, step: Callable[[int], None]) -> list[float]:
    """Microseconds per call."""
    out: list[float] = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(n):
            start = clock()
            step(i)
            out.append((clock() - start) / 1e3)
    finally:
        gc.enable()
    return out


def _p(us: list[float], q: float) -> float:
    ordered = sorted(us)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--redis", help="also write to this Redis (a server you started)")
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    with tempfile.TemporaryDirectory() as tmp:
        decisions = DecisionLog(Path(tmp), redis_url=args.redis, flush_s=0.1, max_buffer=5 * args.n)
        prebuilt = [_record(i) for i in range(args.n)]
        _time(10_000, lambda i: decisions.write(_record(i)))  # warm up
        decisions.flush()
        off = _time(args.n, _record)
        on = _time(args.n, lambda i: decisions.write(_record(i)))
        write = _time(args.n, lambda i: decisions.write(prebuilt[i]))
        time.sleep(0.3)
        decisions.flush()
        # The flusher's work per record, measured on one big batch.
        for record in prebuilt:
            decisions.write(record)
        start, start_cpu = time.perf_counter(), time.thread_time()
        flushed = max(decisions.flush(), 1)
        flush_us = (time.perf_counter() - start) / flushed * 1e6
        flush_cpu_us = (time.thread_time() - start_cpu) / flushed * 1e6
        dropped, errors = decisions.dropped, decisions.errors
        decisions.close()
        size = sum(p.stat().st_size for p in Path(tmp).glob("*.jsonl"))
    sinks = "files + Redis" if args.redis else "files"
    print(f"decision log ({sinks}), {args.n:,} calls each, pinned to core {args.core}")
    print("| call | p50 µs | p99 µs | mean µs |")
    print("|---|---:|---:|---:|")
    for name, us in (("off: build record", off), ("on: build + write", on), ("write", write)):
        print(f"| {name} | {_p(us, 0.5):.2f} | {_p(us, 0.99):.2f} | {sum(us) / len(us):.2f} |")
    delta = _p(on, 0.5) - _p(off, 0.5)
    print(f"\non − off, p50: {delta / 1000:.5f} ms (target ≤ 0.05 ms)")
    print(
        f"background flush, per record: {flush_cpu_us:.2f} µs CPU, {flush_us:.2f} µs wall "
        "(off the request path; wall includes waiting for Redis)"
    )
    print(f"{size / 1e6:.1f} MB written; dropped {dropped}, failed flushes {errors}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
