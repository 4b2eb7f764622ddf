"""Latency, load time and memory of the difficulty classifier, pinned to one core.

    .venv/bin/python bench/classifier_latency.py [--data train.jsonl] [--n 3000]
        [--artifact FILE]   # e.g. one written by `gateway classify adapt`

Targets (reported, never asserted): p50 <= 1 ms, p99 <= 3 ms, load <= 2 s, RSS <= 200 MB.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.difficulty import DifficultyClassifier

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/routing/train.jsonl"
CHARS_PER_TOKEN = 4  # rough English average; CJK is about one character per token


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _real_prompts(path: Path, n: int, rng: random.Random) -> list[str]:
    if not path.is_file():
        return []
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    picked = rng.sample(rows, min(n, len(rows)))
    return [str(r["messages"][0]["content"]) for r in picked]


def _synthetic(real: list[str], n: int, rng: random.Random) -> dict[str, list[str]]:
    """Long prompts (up to ~2,000 tokens) of prose, code and CJK."""
    pool = real or ["Explain how a hash map handles collisions and resizing."]
    code = "def f(x):\n    return {k: v for k, v in x.items() if v > 0}  # filter\n"
    cjk = "请详细说明这个算法的时间复杂度，并给出证明。"
    long: list[str] = []
    for _ in range(n):
        target = rng.randint(500, 2_000) * CHARS_PER_TOKEN
        parts: list[str] = []
        while sum(map(len, parts)) < target:
            parts.append(rng.choice(pool))
        long.append("\n\n".join(parts)[:target])
    return {
        "long_prose_500-2000tok": long,
        "long_code_2000tok": [code * (2_000 * CHARS_PER_TOKEN // len(code))] * max(1, n // 4),
        "long_cjk_2000tok": [cjk * (2_000 // len(cjk))] * max(1, n // 4),
    }


def _time(
    classifier: DifficultyClassifier, prompts: list[str], repeat: int
) -> tuple[list[float], list[float]]:
    """Wall-clock and thread-CPU milliseconds per ``score`` call."""
    bodies: list[dict[str, Any]] = [
        {"model": "auto", "messages": [{"role": "user", "content": p}]} for p in prompts
    ]
    for body in bodies[:50]:  # warm caches
        classifier.score(body)
    wall: list[float] = []
    cpu: list[float] = []
    gc.disable()  # measure scoring, not whichever request happens to trigger a collection
    try:
        for _ in range(repeat):
            for body in bodies:
                start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
                classifier.score(body)
                cpu.append((time.thread_time_ns() - start_cpu) / 1e6)
                wall.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        gc.enable()
    return wall, cpu


def _p(ms: list[float], q: float) -> float:
    ordered = sorted(ms)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(name: str, wall: list[float], cpu: list[float], prompts: list[str]) -> str:
    mean_chars = statistics.mean(len(p) for p in prompts)
    return (
        f"| {name} | {len(prompts)} | {mean_chars:,.0f} | {_p(wall, 0.5):.3f} "
        f"| {_p(wall, 0.99):.3f} | {_p(cpu, 0.5):.3f} | {_p(cpu, 0.99):.3f} |"
    )


def main() -> int:
    """Run the benchmark and print a markdown report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=3_000, help="real prompts to sample")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--artifact", type=Path, help="artifact to load (default: the shipped one)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    # Load first, before the benchmark data has grown the heap, so RSS growth is the model's.
    gc.collect()
    rss_before = _rss_mb()
    start = time.perf_counter()
    classifier = DifficultyClassifier.load(args.artifact)
    load_s = time.perf_counter() - start
    gc.collect()
    rss_added = _rss_mb() - rss_before
    rng = random.Random(0)
    real = _real_prompts(args.data, args.n, rng)
    sets = {"real (train.jsonl sample)": real, **_synthetic(real, max(20, args.n // 10), rng)}

    python = sys.version.split()[0]
    print(f"classifier {classifier.version}, pinned to core {args.core}, python {python}")
    print(f"load: {load_s * 1000:.0f} ms; RSS added by the loaded classifier: {rss_added:.1f} MB\n")
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at start: {load_avg:.2f} (wall times include time lost to other work)")
    print("| prompts | n | mean chars | wall p50 ms | wall p99 ms | CPU p50 ms | CPU p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    all_wall: list[float] = []
    all_cpu: list[float] = []
    all_prompts: list[str] = []
    for name, prompts in sets.items():
        if not prompts:
            continue
        wall, cpu = _time(classifier, prompts, args.repeat)
        all_wall += wall
        all_cpu += cpu
        all_prompts += prompts
        print(_summary(name, wall, cpu, prompts))
    print(_summary("all", all_wall, all_cpu, all_prompts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
