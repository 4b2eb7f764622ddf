"""Flood one limited team and count what gets through in every 60 s window.

    PYTHONPATH=. python bench/limits_flood.py --rpm 100 --clients 50 --seconds 70 --workers 2

Starts its own redis-server (free port, no persistence), a scripted upstream and the gateway
(`--workers` processes sharing that Redis), then runs `--clients` closed-loop clients (or a
paced open loop with `--rate`, requests per second) for `--seconds`, and prints a JSON summary:
accepted and refused counts, the most accepted in any 60 s window, the upstream calls made.
Only loopback addresses are used; the run is bounded by `--seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx

from tests.conftest import GATEWAY_LOGS, run_gateway
from tests.support.fake_upstreams import FakeUpstream, openai_app, serve_in_thread
from tests.support.redis_process import running_redis

POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open,
          price: {{input_per_mtok: 1.0, output_per_mtok: 1.0}}}}
models:
  m: {{to: [open]}}
teams:
  flood:
    keys: [sk-flood]
    limits: {{requests_per_minute: {rpm}}}
"""

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def _drive(url: str, clients: int, seconds: float, rate: float) -> dict[str, list[float]]:
    seen: dict[str, list[float]] = {"ok": [], "refused": [], "error": []}
    headers = {"authorization": "Bearer sk-flood"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        end = time.monotonic() + seconds

        async def one() -> None:
            try:
                r = await http.post("/v1/chat/completions", json=BODY, headers=headers)
                kind = (
                    "ok" if r.status_code == 200 else "refused" if r.status_code == 429 else "error"
                )
            except httpx.HTTPError:
                kind = "error"
            seen[kind].append(time.monotonic())

        if rate > 0:  # open loop: a request every 1/rate s, at most `clients` in flight
            gate = asyncio.Semaphore(clients)

            async def paced() -> None:
                async with gate:
                    await one()

            tasks = []
            start = time.monotonic()
            i = 0
            while time.monotonic() < end:
                tasks.append(asyncio.create_task(paced()))
                i += 1
                await asyncio.sleep(max(start + i / rate - time.monotonic(), 0))
            await asyncio.gather(*tasks)
        else:

            async def loop() -> None:
                while time.monotonic() < end:
                    await one()

            await asyncio.gather(*(loop() for _ in range(clients)))
    return seen


def _busiest(times: list[float], span: float = 60.0) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - span:
            j += 1
        best = max(best, i - j + 1)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rpm", type=int, default=100)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=70.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0.0, help="open loop, requests/s")
    parser.add_argument("--dump", type=Path, help="write accepted times (s from start) here")
    args = parser.parse_args()
    state = FakeUpstream()
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_redis(Path(tmp)) as redis_url,
        serve_in_thread(openai_app(state)) as oai,
    ):
        env = {"GATEWAY_REDIS_URL": redis_url, "GATEWAY_WORKERS": str(args.workers)}
        env["GATEWAY_ACCESS_LOG"] = "false"
        with run_gateway(POLICY.format(oai=oai, rpm=args.rpm), env) as url:
            seen = asyncio.run(_drive(url, args.clients, args.seconds, args.rate))
            log = GATEWAY_LOGS[url]
            warnings = [line for line in log.read_text().splitlines() if '"level":"warn' in line]
    if args.dump is not None:
        first = min((t for v in seen.values() for t in v), default=0.0)
        args.dump.write_text("\n".join(f"{t - first:.3f}" for t in sorted(seen["ok"])))
    summary = {
        "rpm_limit": args.rpm,
        "clients": args.clients,
        "rate_per_s": args.rate or None,
        "workers": args.workers,
        "seconds": args.seconds,
        "accepted": len(seen["ok"]),
        "refused": len(seen["refused"]),
        "errors": len(seen["error"]),
        "busiest_60s_accepted": _busiest(seen["ok"]),
        "upstream_calls": state.count,
        "gateway_warnings": len(warnings),
        "first_warnings": warnings[:3],
        "offered_per_s": round(sum(len(v) for v in seen.values()) / args.seconds, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
