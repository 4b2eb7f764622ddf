"""Load one limited team through `--workers` gateway processes sharing a real Redis; count.

    PYTHONPATH=. python bench/limits_flood.py rate   --rpm 600 --rate 50 --seconds 90
    PYTHONPATH=. python bench/limits_flood.py rate   --rpm 600 --burst 12 --rate 50 --seconds 90
    PYTHONPATH=. python bench/limits_flood.py flood  --rpm 100 --clients 50 --seconds 90
    PYTHONPATH=. python bench/limits_flood.py budget --budget 0.03 --clients 50 --delay 0.5
    PYTHONPATH=. python bench/limits_flood.py kill   --rpm 600 --rate 50 --seconds 90

Starts its own redis-server (a free loopback port; `kill` runs it with an fsync-always AOF),
a scripted upstream (usage 11 + 7 tokens, `--delay` s per answer) and `gateway serve
--workers N`, then drives `--clients` closed-loop clients, or a paced open loop with `--rate`
requests per second (at most `--clients` in flight), for `--seconds`. Prints a JSON summary:

- every scenario: accepted / refused (429) / errors (anything else), the most and the fewest
  accepted in any 60 s window (sliding over the accept times; the fewest only over windows
  inside the loaded span), the upstream calls made. Twice: at the client (when the answer
  arrived: skewed by the latency of a CPU-starved machine) and as Redis timed the admissions
  (read from the window's sorted set every 2 s: the decision's own time);
- `budget`: the day's spend in Redis against the budget, and one request's cost;
- `kill`: Redis is SIGKILLed at `--kill-at` s and restarted (same port, from its AOF)
  `--down` s later; accepted while it was down against the processes' local shares, the
  local decisions counted by the gateway, and after the load the spend in Redis against the
  sum of what the accepted requests cost (the journal replayed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import Tenant
from gateway.limits.rules import rules_for
from gateway.policy import Limits
from tests.conftest import GATEWAY_LOGS, run_gateway
from tests.support.fake_upstreams import serve_in_thread
from tests.support.redis_process import RedisServer

POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open,
          price: {{input_per_mtok: {price_in}, output_per_mtok: {price_out}}}}}
models:
  m: {{to: [open]}}
teams:
  flood:
    keys: [sk-flood]
    limits: {limits}
"""
PRICE_IN, PRICE_OUT = 100.0, 300.0  # USD per million tokens
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
COST = (11 * PRICE_IN + 7 * PRICE_OUT) / 1e6  # what one answer is charged: $0.0032
# max_tokens 7: the hold (prompt bytes / 4 at the input price + 7 at the output price) covers
# the real cost, so the reservation error is 0 unless the hold was cut to what was left.
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7}


class Upstream:
    """A scripted OpenAI upstream: every chat answer reports USAGE, after `delay` s."""

    def __init__(self, delay: float) -> None:
        self.delay, self.calls = delay, 0
        self._lock = threading.Lock()

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            body = orjson.loads(await request.body())
            with self._lock:
                self.calls += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            message = {"role": "assistant", "content": "ok"}
            answer = {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": USAGE,
            }
            return Response(orjson.dumps(answer), media_type="application/json")

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


Seen = dict[str, list[Any]]  # times (s), statuses, exception names


async def _drive(url: str, clients: int, seconds: float, rate: float, t0: float) -> Seen:
    seen: Seen = {"ok": [], "refused": [], "error": [], "error_status": []}
    headers = {"authorization": "Bearer sk-flood"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        end = t0 + seconds

        async def one() -> None:
            status = 0
            try:
                r = await http.post("/v1/chat/completions", json=BODY, headers=headers)
                status = r.status_code
            except httpx.HTTPError as exc:  # no answer: named in the summary
                seen.setdefault("exceptions", []).append(type(exc).__name__)
            kind = "ok" if status == 200 else "refused" if status == 429 else "error"
            seen[kind].append(time.monotonic() - t0)
            if kind == "error":
                seen["error_status"].append(status)

        if rate > 0:  # open loop: a request every 1/rate s, at most `clients` in flight
            gate = asyncio.Semaphore(clients)

            async def paced() -> None:
                async with gate:
                    await one()

            tasks, i = [], 0
            while time.monotonic() < end:
                tasks.append(asyncio.create_task(paced()))
                i += 1
                await asyncio.sleep(max(t0 + i / rate - time.monotonic(), 0))
            await asyncio.gather(*tasks)
        else:

            async def loop() -> None:
                while time.monotonic() < end:
                    await one()

            await asyncio.gather(*(loop() for _ in range(clients)))
    return seen


def busiest(times: list[float], span: float = 60.0) -> int:
    """The most accept times in any window [t - span, t] ... (t - span, t]."""
    times, best, j = sorted(times), 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - span:
            j += 1
        best = max(best, i - j + 1)
    return best


def quietest(times: list[float], start: float, end: float, span: float = 60.0) -> int | None:
    """The fewest accept times in any window of `span` inside [start, end] (None: too short).

    The count only drops just after an accept leaves the window's left edge, so the windows
    (t_i, t_i + span] and [start, start + span] are the candidates.
    """
    times = sorted(times)
    starts = [start] + [t for t in times if start <= t and t + span <= end]
    if start + span > end:
        return None
    best: int | None = None
    for s in starts:
        n = (
            sum(1 for t in times if s < t <= s + span)
            if s != start
            else sum(1 for t in times if s <= t <= s + span)
        )
        best = n if best is None else min(best, n)
    return best


def _metric(url: str, name: str) -> dict[str, float]:
    """Samples of one metric family from /metrics, by their label text."""
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name):
            labels, _, value = line.rpartition(" ")
            out[labels[len(name) :]] = float(value)
    return out


class Admissions:
    """The team's request admissions as Redis timed them (its own clock, ms), collected by
    reading the request window's sorted set every `every_s` (entries live 60 s there).

    Only what Redis decided (or what was replayed into a window still open); a process
    deciding alone while Redis is away is counted by its metrics instead.
    """

    def __init__(self, redis_url: str, limits: Limits, every_s: float = 2.0) -> None:
        tenant = Tenant("flood", "flood", limits=limits)
        rules = rules_for(tenant)
        keys = rules.window_keys()
        # the first sliding window (a paced rate keeps no times: `--burst` adds a token
        # window too large to bind, whose entries carry the same admissions' times)
        sliding = [2 * i for i, w in enumerate(rules.windows) if not w.burst]
        self.key = keys[sliding[0]] if sliding else ""  # none: nothing to read
        self.url, self.every_s = redis_url, every_s
        self.seen: dict[bytes, tuple[float, int]] = {}  # id: (time, admissions)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> float:
        """Redis' clock, in seconds (None-safe: the local clock if Redis is away)."""
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=1)
            sec, usec = client.time()
            client.close()
            return sec + usec / 1e6
        except redis.RedisError:
            return time.time()

    def _poll(self) -> None:
        if not self.key:
            return
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=1)
            for member, score in client.zrange(self.key, 0, -1, withscores=True):
                # "<id>:<weight>": a token window's settlement rewrites the weight. A slice
                # ("s<16 hex>:<size>") stands for admissions not made yet: skipped; what was
                # settled from it comes back as one entry ("s<16 hex>d:<how many>").
                name, _, weight = member.rpartition(b":")
                if len(name) == 17 and name.startswith(b"s"):
                    continue
                count = int(weight) if name.endswith(b"d") and len(name) == 18 else 1
                self.seen[name] = (score / 1000, count)
            client.close()
        except redis.RedisError:
            pass  # Redis is away (the kill scenario): what it held comes back with its AOF

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._poll()

    def __enter__(self) -> Admissions:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()

    def times(self, origin: float) -> list[float]:
        """Admission times in seconds after `origin` (Redis clock)."""
        return sorted(t - origin for t, count in self.seen.values() for _ in range(count))


def _spend(redis_url: str, limits: Limits) -> tuple[float, float]:
    """The day's spent and held USD of the team in Redis."""
    tenant = Tenant("flood", "flood", limits=limits)
    key = rules_for(tenant).budget_keys(time.time())[0]
    client = redis.Redis.from_url(redis_url)
    spent, held = client.hmget(key, "spent", "held")
    client.close()
    return int(spent or 0) / 1e9, int(held or 0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=["rate", "flood", "budget", "kill"])
    parser.add_argument("--rpm", type=int, default=0)
    parser.add_argument(
        "--burst", type=int, default=0, help="pace the requests (GCRA), this many at once"
    )
    parser.add_argument("--budget", type=float, default=0.0, help="USD per day")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0, help="open loop, requests/s")
    parser.add_argument("--delay", type=float, default=0.0, help="upstream seconds per answer")
    parser.add_argument("--kill-at", type=float, default=20.0)
    parser.add_argument("--down", type=float, default=10.0)
    args = parser.parse_args()
    limits_doc: dict[str, Any] = {}
    if args.rpm:
        limits_doc["requests_per_minute"] = args.rpm
    if args.burst:
        limits_doc["requests_burst"] = args.burst
        limits_doc["tokens_per_minute"] = 10**9  # never binds: times the admissions
    if args.budget:
        limits_doc["budget_usd_per_day"] = args.budget
    elif args.scenario == "kill":
        limits_doc["budget_usd_per_day"] = 1000.0  # never reached: spend is what is compared
    limits = Limits(**limits_doc)
    upstream = Upstream(args.delay)
    summary: dict[str, Any] = {"scenario": args.scenario, "workers": args.workers}
    summary |= {"limits": limits_doc, "clients": args.clients, "rate_per_s": args.rate or None}
    summary |= {"seconds": args.seconds, "upstream_delay_s": args.delay}
    with tempfile.TemporaryDirectory() as tmp, serve_in_thread(upstream.app()) as oai:
        server = RedisServer(Path(tmp) / "redis", aof=args.scenario == "kill")
        server.start()
        try:
            env = {"GATEWAY_REDIS_URL": server.url, "GATEWAY_WORKERS": str(args.workers)}
            env["GATEWAY_ACCESS_LOG"] = "false"
            policy = POLICY.format(
                oai=oai, price_in=PRICE_IN, price_out=PRICE_OUT, limits=json.dumps(limits_doc)
            )
            with (
                run_gateway(policy, env, tmp=Path(tmp)) as url,
                Admissions(server.url, limits) as admissions,
            ):
                r0 = admissions.now()
                t0 = time.monotonic()
                outage: list[float] = []
                if args.scenario == "kill":

                    def fault() -> None:
                        time.sleep(max(t0 + args.kill_at - time.monotonic(), 0))
                        server.stop()  # SIGKILL
                        outage.append(time.monotonic() - t0)
                        time.sleep(args.down)
                        server.start()
                        outage.append(time.monotonic() - t0)

                    threading.Thread(target=fault, daemon=True).start()
                seen = asyncio.run(_drive(url, args.clients, args.seconds, args.rate, t0))
                r1 = admissions.now()
                local = _metric(url, "gateway_limit_local_decisions_total")
                replayed = _metric(url, "gateway_limit_spend_replayed_usd_total")
                lost = _metric(url, "gateway_limit_spend_lost_usd_total")
                if args.budget or args.scenario == "kill":
                    # settlements run in the background: wait until no hold is left
                    deadline = time.monotonic() + 30
                    while _spend(server.url, limits)[1] > 0 and time.monotonic() < deadline:
                        time.sleep(0.2)
                    spent, held = _spend(server.url, limits)
                log = GATEWAY_LOGS[url]
                warnings = [ln for ln in log.read_text().splitlines() if '"level":"warn' in ln]
        finally:
            server.stop()
    ok = seen["ok"]
    first = min(ok, default=0.0)
    at_redis = admissions.times(r0) if args.rpm else []
    summary |= {
        "accepted": len(ok),
        "refused": len(seen["refused"]),
        "errors": len(seen["error"]),
        "error_statuses": sorted(set(seen["error_status"])),
        "client_exceptions": sorted(set(seen.get("exceptions", []))),
        "busiest_60s_accepted": busiest(ok),
        "quietest_60s_accepted": quietest(ok, first, args.seconds),
        "redis_admissions": len(at_redis),
        "redis_busiest_60s": busiest(at_redis),
        "redis_quietest_60s": quietest(at_redis, min(at_redis, default=0.0), r1 - r0),
        "upstream_calls": upstream.calls,
        "offered_per_s": round(
            sum(len(seen[k]) for k in ("ok", "refused", "error")) / args.seconds, 1
        ),
        "local_decisions": local,
        "gateway_warnings": len(warnings),
        "first_warnings": [w[:300] for w in warnings if "GATEWAY_KEY_SECRET" not in w][:8],
    }
    if args.budget or args.scenario == "kill":
        summary |= {
            "spent_usd_in_redis": round(spent, 9),
            "held_usd_in_redis": round(held, 9),
            "charged_usd_sum": round(len(ok) * COST, 9),
            "one_request_usd": COST,
            "spend_replayed_usd": replayed,
            "spend_lost_usd": lost,
        }
    if args.budget:
        summary["over_budget_usd"] = round(spent - args.budget, 9)
    if args.scenario == "kill":
        down_from, down_to = outage
        summary["redis_down_s"] = [round(down_from, 2), round(down_to, 2)]
        summary["accepted_while_down"] = sum(1 for t in ok if down_from <= t <= down_to)
        summary["local_share_per_process"] = max(args.rpm // args.workers, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
