"""`gateway policy simulate` on a generated 1,000,000-record log, pinned to one core.

    .venv/bin/python bench/simulate_1m.py [--n 1000000] [--log PATH] [--report]

Generates the log once (kept at --log, default in the temp directory), then times the
whole command as a user runs it: `gateway policy simulate --policy
policies/examples/tiered.yaml --baseline policies/default.yaml --log LOG --json`
(`--report` adds the markdown report, chart and 21-point sweep). Target (reported, never
asserted): ≤ 60 s for 1,000,000 records.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
MODELS = ["auto", "auto", "auto", "auto-budget", "qwen3", "gpt-5-mini"]
TEAMS = ["search", "support", "default"]


def generate(path: Path, n: int, seed: int = 0) -> None:
    """A log shaped like production: mostly `auto`, 10 % cache hits, some errors."""
    rng = random.Random(seed)
    with path.open("wb") as out:
        chunk: list[bytes] = []
        for i in range(n):
            score = rng.betavariate(2, 5)
            hard = score >= 0.3
            hit = rng.random() < 0.1
            failed = rng.random() < 0.01
            backend = "-" if failed else ("gpt" if hard else "open-qwen")
            chunk.append(
                orjson.dumps(
                    {
                        "ts": 1.7e9 + i * 0.01,
                        "request_id": f"{i:032x}",
                        "team": rng.choice(TEAMS),
                        "model": rng.choice(MODELS),
                        "endpoint": "chat" if rng.random() < 0.95 else "embeddings",
                        "score": round(score, 6),
                        "backend": backend,
                        "tier": "-" if failed else ("closed" if hard else "open"),
                        "reason": "rule",
                        "fallbacks": [],
                        "prompt_tokens": rng.randint(20, 4000),
                        "completion_tokens": 0 if failed else rng.randint(1, 800),
                        "cost_usd": 0.0 if hit or failed else 1e-4,
                        "reference_cost_usd": 2e-4,
                        "cache": "hit" if hit else "miss",
                        "status": 502 if failed else 200,
                        "latency_ms": rng.uniform(20, 900),
                        "policy_version": "tiered-2026-11",
                        "classifier_version": "difficulty-0123456789ab",
                    }
                )
            )
            if len(chunk) >= 10_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk = []
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")


def main() -> int:
    """Generate (if needed) and time one simulate run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--report", action="store_true", help="also write the report")
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    log = args.log or Path(tempfile.gettempdir()) / f"gateway-bench-decisions-{args.n}.jsonl"
    if not log.is_file():
        start = time.perf_counter()
        generate(log, args.n)
        print(f"generated {log} ({args.n:,} records) in {time.perf_counter() - start:.1f} s")
    argv = [sys.executable, "-m", "gateway", "policy", "simulate"]
    argv += ["--policy", str(REPO / "policies/examples/tiered.yaml")]
    argv += ["--baseline", str(REPO / "policies/default.yaml"), "--log", str(log), "--json"]
    report = None
    if args.report:
        report = tempfile.mkdtemp(prefix="gateway-sim-report-")
        argv += ["--report", report]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        ["taskset", "-c", str(args.core), *argv], env=env, capture_output=True, check=False
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        print(done.stderr.decode(), file=sys.stderr)
        return done.returncode
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(done.stdout.decode().strip())
    print(
        f"\n{args.n:,} records: {elapsed:.1f} s wall, {cpu:.1f} s CPU on core {args.core}, "
        f"peak RSS {after.ru_maxrss / 1024:.0f} MB (target ≤ 60 s)"
    )
    if report:
        print(f"report: {report}/simulation.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
