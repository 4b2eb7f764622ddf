"""Faults under load: N clients against a gateway (2 workers) while a backend hangs or fails.

    PYTHONPATH=. .venv/bin/python bench/fault_load.py [--clients 50] [--fault hang|fail500]
    PYTHONPATH=. .venv/bin/python bench/fault_load.py --fault queue   # real vLLM (see below)

A real `gateway serve --workers 2` in front of two scripted upstream lanes, `flaky` (first
choice) and `steady` (its fallback), both answering after 20 ms. For `--healthy-s` the
flaky lane answers, then it hangs (or answers 500) for `--fault-s`, then it heals. A
third of the requests stream. Per phase it reports requests, failures, latency quantiles,
how many requests reached the flaky lane (during the fault: the probes), and how long after
healing traffic returned to it. Nothing is asserted; the figures go to docs/reliability.md.

`--fault queue`: a real vLLM (`scripts/setup_vllm.sh`, `--max-num-seqs 4`) with a `load:`
block, and a scripted closed backend after it. `--light` clients send short requests the
whole time; for `--fault-s` the other clients join them (a surge; one in five is a
`data_residency: self_hosted` team, which never leaves vLLM), vLLM's queue passes
`max_waiting`, routine traffic spills to the closed backend, and comes back once the surge
is over and the queue has drained. It reports per phase who answered, when the spill-over
engaged and disengaged (sampled from the gateway's own metrics), and the counters.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import run_gateway
from tests.support.fault_upstream import FaultUpstream, fault_upstream

POLICY = """
backends:
  steady: {{provider: openai, base_url: "{steady}", tier: open}}
  flaky:
    provider: openai
    base_url: "{flaky}"
    timeout_s: {timeout}
    breaker: {{failures_to_open: {failures}, open_s: {open_s}, half_open_probes: 1}}
models:
  "*": {{to: [flaky, steady]}}
"""
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Result:
    started: float
    latency: float
    backend: str
    ok: bool
    detail: str = ""


async def _one(http: httpx.AsyncClient, stream: bool) -> tuple[str, bool, str]:
    if not stream:
        response = await http.post("/v1/chat/completions", json=BODY)
        backend = response.headers.get("x-gateway-backend", "-")
        return backend, response.status_code == 200, response.text[-200:]
    body = {**BODY, "stream": True}
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        text = (await response.aread()).decode()
        ok = response.status_code == 200 and text.rstrip().endswith("[DONE]")
        return response.headers.get("x-gateway-backend", "-"), ok, text[-200:]


async def _client(http: httpx.AsyncClient, until: float, n: int, out: list[Result]) -> None:
    i = n
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            backend, ok, detail = await _one(http, stream=i % 3 == 0)
        except httpx.HTTPError as exc:
            backend, ok, detail = "-", False, repr(exc)
        out.append(Result(started, time.monotonic() - started, backend, ok, detail))
        i += 1


async def _drive(args: argparse.Namespace, url: str, faults: FaultUpstream) -> list[Result]:
    out: list[Result] = []
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout would: a request
    # sent on a connection the server is closing fails with a reset, whatever the gateway does.
    limits = httpx.Limits(
        max_connections=args.clients, max_keepalive_connections=args.clients, keepalive_expiry=4
    )
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        start = time.monotonic()
        end = start + args.healthy_s + args.fault_s + args.healed_s

        async def script() -> None:
            await asyncio.sleep(args.healthy_s)
            faults.script("flaky", mode=args.fault, delay_s=0.02)
            await asyncio.sleep(args.fault_s)
            faults.script("flaky", mode="ok", delay_s=0.02)

        await asyncio.gather(script(), *(_client(http, end, n, out) for n in range(args.clients)))
    for r in out:
        r.started -= start
    return out


def _q(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def report(args: argparse.Namespace, results: list[Result]) -> None:
    """One markdown table row per phase."""
    healthy, faulty = args.healthy_s, args.healthy_s + args.fault_s
    phases = {
        "healthy": [r for r in results if r.started < healthy],
        f"{args.fault}": [r for r in results if healthy <= r.started < faulty],
        "healed": [r for r in results if r.started >= faulty],
    }
    print("| phase | requests | failed | p50 ms | p99 ms | max ms | ≥ 0.9 × timeout | by flaky |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in phases.items():
        lat = sorted(r.latency * 1000 for r in rows)
        slow = sum(1 for r in rows if r.latency >= args.timeout * 0.9)
        flaky = sum(1 for r in rows if r.backend == "flaky")
        failed = sum(1 for r in rows if not r.ok)
        print(
            f"| {name} | {len(rows)} | {failed} | {_q(lat, 50):.0f} | {_q(lat, 99):.0f} | "
            f"{(lat[-1] if lat else 0):.0f} | {slow} | {flaky} |"
        )
    for r in results:
        if not r.ok:
            print(f"failed at {r.started:.2f} s after {r.latency:.2f} s: {r.detail}")
    ends = [r.started + r.latency for r in results if r.backend == "flaky"]
    back = [end - faulty for end in ends if end >= faulty]
    if back:
        print(f"\ntraffic back on flaky {min(back):.2f} s after it healed")


QUEUE_POLICY = """
backends:
  vllm:
    provider: openai
    base_url: "{vllm}"
    model: smollm2
    # Requests that queue in vLLM (a self-hosted team's) wait for their first token.
    timeout_s: 300
    first_token_timeout_s: 300
    load: {{max_waiting: {max_waiting}, interval_s: 0.5, timeout_s: 2}}
  closed: {{provider: openai, base_url: "{closed}", api_key: k, tier: closed}}
models:
  "*": {{to: [vllm, closed]}}
teams:
  apps: {{keys: [sk-apps]}}
  onprem: {{keys: [sk-onprem], data_residency: self_hosted}}
"""


@dataclass
class Asked(Result):
    team: str = "apps"


async def _ask(http: httpx.AsyncClient, team: str, stream: bool, tokens: int) -> Asked:
    body = {**BODY, "max_tokens": tokens, "ignore_eos": True, "stream": stream}
    headers = {"authorization": f"Bearer sk-{team}"}
    started = time.monotonic()
    try:
        async with http.stream(
            "POST", "/v1/chat/completions", json=body, headers=headers
        ) as response:
            text = (await response.aread()).decode()
            ok = response.status_code == 200 and (not stream or text.rstrip().endswith("[DONE]"))
            backend = response.headers.get("x-gateway-backend", "-")
    except httpx.HTTPError as exc:
        backend, ok, text = "-", False, repr(exc)
    return Asked(started, time.monotonic() - started, backend, ok, text[-200:], team)


async def _surge(
    args: argparse.Namespace, url: str
) -> tuple[list[Asked], list[tuple[float, float, float]]]:
    """Light clients throughout, the rest during the surge; the saturation gauge sampled."""
    out: list[Asked] = []
    samples: list[tuple[float, float, float]] = []  # (t, saturated, waiting)
    limits = httpx.Limits(
        max_connections=args.clients, max_keepalive_connections=args.clients, keepalive_expiry=4
    )
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        start = time.monotonic()
        surge = (start + args.healthy_s, start + args.healthy_s + args.fault_s)
        end = surge[1] + args.healed_s

        async def client(n: int) -> None:
            light = n < args.light
            team = "onprem" if not light and n % 5 == 0 else "apps"
            if not light:
                await asyncio.sleep(surge[0] - time.monotonic())
            until = end if light else surge[1]
            i = n
            while time.monotonic() < until:
                out.append(await _ask(http, team, i % 3 == 0, args.tokens))
                i += 1

        async def sample() -> None:
            keep = httpx.Limits(keepalive_expiry=2)
            async with httpx.AsyncClient(base_url=url, timeout=10, limits=keep) as probe:
                while time.monotonic() < end:
                    try:
                        text = (await probe.get("/metrics")).text
                    except httpx.HTTPError:  # a kept-alive connection the server just closed
                        continue
                    values = {"saturated": 0.0, "waiting": 0.0}
                    for line in text.splitlines():
                        for key, name in (
                            ("saturated", 'gateway_backend_saturated{backend="vllm"}'),
                            ("waiting", 'gateway_backend_queue_waiting{backend="vllm"}'),
                        ):
                            if line.startswith(name):
                                values[key] = float(line.rsplit(" ", 1)[1])
                    samples.append((time.monotonic(), values["saturated"], values["waiting"]))
                    await asyncio.sleep(0.25)

        await asyncio.gather(sample(), *(client(n) for n in range(args.clients)))
    for r in out:
        r.started -= start
    return out, [(t - start, s, w) for t, s, w in samples]


def queue_report(
    args: argparse.Namespace, results: list[Asked], samples: list[tuple[float, float, float]]
) -> None:
    """Per phase: who answered; when the spill-over engaged and disengaged."""
    surge, over = args.healthy_s, args.healthy_s + args.fault_s
    phases = {
        "light": [r for r in results if r.started < surge],
        "surge": [r for r in results if surge <= r.started < over],
        "after": [r for r in results if r.started >= over],
    }
    print(
        "| phase | requests | failed | by vllm | by closed | self-hosted by closed "
        "| p50 ms | p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in phases.items():
        lat = sorted(r.latency * 1000 for r in rows)
        vllm = sum(1 for r in rows if r.backend == "vllm")
        closed = sum(1 for r in rows if r.backend == "closed")
        leaked = sum(1 for r in rows if r.backend == "closed" and r.team == "onprem")
        failed = sum(1 for r in rows if not r.ok)
        print(
            f"| {name} | {len(rows)} | {failed} | {vllm} | {closed} | {leaked} | "
            f"{_q(lat, 50):.0f} | {_q(lat, 99):.0f} |"
        )
    for r in results:
        if not r.ok:
            print(f"failed ({r.team}) at {r.started:.2f} s after {r.latency:.2f} s: {r.detail}")
    pairs = zip(samples[1:], samples[:-1], strict=True)
    changes = [(t, s) for (t, s, _), (_, before, _) in pairs if s != before]
    timeline = ", ".join(f"{'on' if s else 'off'} {t - surge:+.1f}" for t, s in changes)
    print(f"\nspill-over (s from the surge's start; the gauge sampled every 0.25 s): {timeline}")
    print(f"the surge ended at +{args.fault_s:.1f}")
    print(f"vLLM queue seen: up to {max(w for _, _, w in samples):.0f} waiting")
    back = [r.started for r in results if r.backend == "vllm" and r.started >= over]
    if back:
        print(
            f"first request after the surge answered by vllm: sent {min(back) - over:+.2f} s "
            "after it ended"
        )


def queue_main(args: argparse.Namespace) -> int:
    """The vLLM queue scenario (real vLLM, scripted closed backend)."""
    from tests.support import model_servers

    model_servers.VLLM_READY_TIMEOUT = 900.0  # a shared machine can take minutes to start it
    with (
        fault_upstream() as faults,
        model_servers.run_vllm(["--max-num-seqs", str(args.max_num_seqs)]) as vllm,
    ):
        faults.script("closed", mode="ok", delay_s=0.02)
        policy = QUEUE_POLICY.format(
            vllm=vllm, closed=faults.base_url("closed"), max_waiting=args.max_waiting
        )
        env = {"GATEWAY_WORKERS": "2"}
        with run_gateway(policy, env, tmp=Path(tempfile.mkdtemp(prefix="fault-queue-"))) as url:
            results, samples = asyncio.run(_surge(args, url))
            scrape = httpx.get(url + "/metrics").text
    print(
        f"{args.light} clients, then {args.clients} for {args.fault_s:g} s, then {args.light} "
        f"again; {args.tokens} tokens each; vLLM --max-num-seqs {args.max_num_seqs}, "
        f"load: {{max_waiting: {args.max_waiting}, interval_s: 0.5}}; 2 workers; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n"
    )
    queue_report(args, results, samples)
    print()
    for line in scrape.splitlines():
        if line.startswith(_QUEUE_COUNTERS) and 'backend="vllm"' in line:
            print(f"    {line}")
    return 0


_QUEUE_COUNTERS = (
    "gateway_spillovers_total",
    "gateway_backend_saturation_changes_total",
    "gateway_load_polls_total",
    "gateway_upstream_errors_total",
)


def main() -> int:
    """Run one scenario and print its table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--fault", choices=["hang", "fail500", "queue"], default="hang")
    parser.add_argument("--healthy-s", type=float, default=5.0)
    parser.add_argument("--fault-s", type=float, default=10.0)
    parser.add_argument("--healed-s", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=1.0, help="flaky's timeout_s")
    parser.add_argument("--open-s", type=float, default=2.0, help="flaky's breaker.open_s")
    parser.add_argument("--no-breaker", action="store_true", help="a circuit that never opens")
    queue = parser.add_argument_group("--fault queue")
    queue.add_argument("--light", type=int, default=4, help="clients before and after the surge")
    queue.add_argument("--tokens", type=int, default=8, help="max_tokens of every request")
    queue.add_argument("--max-num-seqs", type=int, default=4, help="vLLM's batch size")
    queue.add_argument("--max-waiting", type=int, default=4, help="the load: limit")
    args = parser.parse_args()
    if args.fault == "queue":
        return queue_main(args)
    with fault_upstream() as faults:
        faults.script("steady", mode="ok", delay_s=0.02)
        faults.script("flaky", mode="ok", delay_s=0.02)
        policy = POLICY.format(
            steady=faults.base_url("steady"),
            flaky=faults.base_url("flaky"),
            timeout=args.timeout,
            open_s=args.open_s,
            failures=10**9 if args.no_breaker else 3,
        )
        env = {"GATEWAY_WORKERS": "2"}
        with run_gateway(policy, env, tmp=Path(tempfile.mkdtemp(prefix="fault-load-"))) as url:
            results = asyncio.run(_drive(args, url, faults))
            scrape = httpx.get(url + "/metrics").text
    breaker = "no breaker" if args.no_breaker else f"open_s {args.open_s:g}"
    print(
        f"{args.clients} clients, flaky {args.fault} for {args.fault_s:g} s "
        f"(timeout_s {args.timeout:g}, {breaker}, 2 workers; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)\n"
    )
    report(args, results)
    print()
    for line in scrape.splitlines():
        if 'backend="flaky"' in line and line.startswith(_COUNTERS):
            print(f"    {line}")
    return 0


_COUNTERS = (
    "gateway_upstream_errors_total",
    "gateway_breaker_probes_total",
    "gateway_breaker_transitions_total",
)


if __name__ == "__main__":
    raise SystemExit(main())
