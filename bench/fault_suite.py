"""The fault-injection suite of issue 14: a real vLLM and a scripted upstream, faults in turn.

    PYTHONPATH=. .venv/bin/python bench/fault_suite.py [--clients 50] [--short]
        [--vllm-url http://127.0.0.1:PORT/v1]   # a running vLLM; else it starts one

`gateway serve --workers 2` in front of two upstreams: the scripted one
(`tests/support/fault_process.py`, a process of its own so that it can be killed) and a real
vLLM (SmolLM2-135M on CPU, started as the tests start it). Most clients ask for `"*"`:
scripted first, vLLM the fallback that absorbs the traffic while the scripted one is faulty;
one client in ten asks for `smollm2`, vLLM first. A third of the requests stream;
`max_tokens` stays small for the CPU-only vLLM. Closed-loop clients run for the whole
timeline (60 s by default) while the scripted upstream goes through, in turn:

1. `warm`: healthy.
2. `killed`: SIGKILL mid-run; vLLM takes over. Streams past their first byte on the scripted
   one end with an SSE error event; nothing else may fail.
3. `back`: the scripted upstream restarted on the same port; traffic returns to it.
4. `hang`: it accepts and never answers. Requests caught by it fail over within its
   `timeout_s`; once its circuit is open only probes reach it, one at a time.
5. `hang_healed`: it answers again.
6. `fail500`: it answers 500; the circuit opens, probes are counted.
7. `fail_healed`: it answers again.

A phase lasts its length, then, where it has one, until its condition (the circuit opened,
closed, a probe failed) as `/metrics` shows it, so that a slow machine stretches the
timeline instead of skipping a step. Then the load stops, ten long streams (20-29 s) start,
and once each has sent its first event the gateway gets SIGTERM: all must end with `[DONE]`
within the default drain (30 s). In every healthy phase one client sends a
non-streaming request to a lane that never answers and leaves: the upstream sees its
connection closed (measured on the upstream's side).

The "vLLM queue saturated → spill-over" row of the issue is built separately: see
`SPILL_OVER_PHASE` below for where its phase goes.

It prints a table per phase and one per fault, with the counts and durations measured;
`tests/test_fault_suite.py` runs the `SHORT` timeline and asserts the properties on counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import GATEWAY_LOGS, GATEWAY_PROCS, run_gateway
from tests.support.fault_process import FaultProcess, Visit, fault_process
from tests.support.fault_upstream import HANG_S

T = TypeVar("T")


@dataclass(frozen=True)
class Timings:
    """The timeline, the load and the scripted backend's limits."""

    clients: int = 50
    think_s: float = 0.25  # each client's pause between two requests
    warm_s: float = 8.0
    killed_s: float = 8.0
    back_s: float = 6.0
    hang_s: float = 10.0
    hang_healed_s: float = 8.0
    fail_s: float = 10.0
    fail_healed_s: float = 10.0
    # The scripted backend's policy.
    timeout_s: float = 1.0
    failures_to_open: int = 3
    open_s: float = 2.0
    # The drain: streams of `drain_chunks + i` events, `drain_gap_s` apart, started when the
    # load has ended; SIGTERM once each has sent its first event.
    drain_streams: int = 10
    drain_chunks: int = 21
    drain_gap_s: float = 1.0
    poll_s: float = 0.25  # how often /metrics is read
    # A phase that waits for a condition (the circuit opened, closed, a probe failed) waits
    # this much longer than its length at most.
    cap_s: float = 30.0

    @property
    def phases(self) -> list[tuple[str, float]]:
        """Each phase and its length, in order."""
        return [
            ("warm", self.warm_s),
            ("killed", self.killed_s),
            ("back", self.back_s),
            ("hang", self.hang_s),
            ("hang_healed", self.hang_healed_s),
            ("fail500", self.fail_s),
            ("fail_healed", self.fail_healed_s),
        ]


# On the 2 shared CPUs the scripted upstream (one Python process) and the gateway can take
# over a second to answer 50 clients at load 25: `timeout_s` 2 keeps a starved answer from
# counting as a fault.
FULL = Timings(timeout_s=2.0)
# What CI runs: a few seconds per phase, fewer clients, short drain streams. Each fault still
# outlasts `timeout_s + open_s`, so that at least one probe reaches the faulty backend.
SHORT = Timings(
    clients=12,
    think_s=0.2,
    warm_s=2.0,
    killed_s=3.0,
    back_s=3.0,
    hang_s=6.0,
    hang_healed_s=3.5,
    fail_s=4.0,
    fail_healed_s=3.5,
    timeout_s=2.0,  # as FULL: a starved answer is not a fault
    open_s=1.5,
    drain_chunks=10,
    drain_gap_s=0.5,
)

# The "vLLM queue saturated → spill-over" phase (issue 14) is built separately: it drives the
# real vLLM into a queue with the `smollm2` clients and reads the spill-over counters. Its
# phase goes after `fail_healed`, before the drain; until then it is not run.
SPILL_OVER_PHASE: tuple[str, float] | None = None

POLICY = """
backends:
  scripted:
    provider: openai
    base_url: "{scripted}"
    tier: open
    timeout_s: {timeout_s}
    # Between stream events: far above the scripted 0.1 s gaps, so that a starved machine does
    # not end streams the faults did not touch.
    idle_timeout_s: 10
    breaker: {{failures_to_open: {failures_to_open}, open_s: {open_s}, half_open_probes: 1}}
  vllm:
    provider: openai
    base_url: "{vllm}"
    model: smollm2
    tier: open
    # A CPU-only vLLM absorbing every client: generous limits, it is slow, not broken.
    timeout_s: 60
    first_token_timeout_s: 60
  leave: {{provider: openai, base_url: "{leave}", tier: open, timeout_s: {hang_s}}}
{long_backends}
models:
  "*": {{to: [scripted, vllm]}}
  smollm2: {{to: [vllm, scripted]}}
  leave: {{to: [leave]}}
{long_models}
"""
MAX_TOKENS = 4
RAMP_S = 1.0
MAIN, LEAVE = "main", "leave"


def policy(t: Timings, faults: FaultProcess, vllm_url: str) -> str:
    """The suite's policy for these timings and upstreams."""
    longs = [f"long{i}" for i in range(t.drain_streams)]
    return POLICY.format(
        scripted=faults.base_url(MAIN),
        vllm=vllm_url,
        leave=faults.base_url(LEAVE),
        timeout_s=t.timeout_s,
        failures_to_open=t.failures_to_open,
        open_s=t.open_s,
        hang_s=HANG_S,
        long_backends="\n".join(
            f'  {n}: {{provider: openai, base_url: "{faults.base_url(n)}", tier: open}}'
            for n in longs
        ),
        long_models="\n".join(f"  {n}: {{to: [{n}]}}" for n in longs),
    )


def _script_lanes(t: Timings, faults: FaultProcess) -> None:
    """The healthy scripts (again after a restart)."""
    faults.script(MAIN, mode="ok", delay_s=0.02, chunks=5, gap_s=0.1)
    faults.script(LEAVE, mode="hang")
    for i in range(t.drain_streams):
        faults.script(f"long{i}", mode="ok", chunks=t.drain_chunks + i, gap_s=t.drain_gap_s)


@dataclass
class Result:
    """One client request, as the client saw it."""

    model: str
    stream: bool
    started: float
    ended: float = 0.0
    status: int = 0
    backend: str = "-"
    # Streams: data events before the last, and how it ended: done, error (an error event),
    # cut (neither), transport (the connection failed).
    events: int = 0
    end: str = ""
    error_code: str = ""

    @property
    def ok(self) -> bool:
        """A whole answer with 200, or a stream that ended with `[DONE]`."""
        return self.status == 200 and (not self.stream or self.end == "done")


def _backend(response: httpx.Response) -> str:
    return str(response.headers.get("x-gateway-backend", "-"))


async def _request(http: httpx.AsyncClient, model: str, stream: bool, out: Result) -> None:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": MAX_TOKENS,
        # A system turn of our own: shorter than the one SmolLM2's template adds without it.
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    }
    if not stream:
        response = await http.post("/v1/chat/completions", json=body)
        out.status, out.backend = response.status_code, _backend(response)
        return
    body["stream"] = True
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        out.status, out.backend = response.status_code, _backend(response)
        if response.status_code != 200:
            await response.aread()
            out.end = f"status {response.status_code}"
            return
        last = b""
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                if last:
                    out.events += 1
                last = line[5:].strip().encode()
    if last == b"[DONE]":
        out.end = "done"
    elif b'"error"' in last:
        out.end = "error"
        out.error_code = str(orjson.loads(last)["error"].get("code"))
    else:
        out.end = "cut"


async def _client(
    http: httpx.AsyncClient, n: int, t: Timings, stop: asyncio.Event, out: list[Result]
) -> None:
    model = "smollm2" if n % 10 == 9 else "m"
    await asyncio.sleep(n * RAMP_S / t.clients)  # not all at once: a ramp over RAMP_S
    i = n
    while not stop.is_set():
        result = Result(model, stream=i % 3 == 0, started=time.monotonic())
        try:
            await _request(http, model, result.stream, result)
        except httpx.HTTPError as exc:
            result.end = f"transport: {exc!r}"
        result.ended = time.monotonic()
        out.append(result)
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), t.think_s)


def series(text: str) -> dict[str, float]:
    """A Prometheus scrape as `name{labels, sorted}` → value."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        name, _, labels = key.partition("{")
        if labels:
            key = name + "{" + ",".join(sorted(labels.rstrip("}").split(","))) + "}"
        found[key] = float(value)
    return found


def _sum(scrape: dict[str, float], name: str, **labels: str) -> float:
    """The sum of a metric's series that carry ``labels``."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for key, value in scrape.items():
        head, _, rest = key.partition("{")
        if head == name and all(w in rest for w in wanted):
            total += value
    return total


def _breaker(scrape: dict[str, float], what: str, value: str) -> float:
    if what == "state":
        return _sum(scrape, "gateway_breaker_state", backend="scripted")
    label = "state" if what == "transitions" else "result"
    name = f"gateway_breaker_{what}_total"
    return _sum(scrape, name, backend="scripted", **{label: value})


class Control:
    """The scripted upstream, driven from the event loop (one call at a time, in a thread)."""

    def __init__(self, faults: FaultProcess) -> None:
        self.faults = faults
        self.lock = asyncio.Lock()

    async def run(self, work: Callable[[], T]) -> T:
        async with self.lock:
            return await asyncio.to_thread(work)


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float, every_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every_s)
    return True


async def _leave(url: str, control: Control) -> float | None:
    """A non-streaming request to the lane that never answers, then the client hangs up.

    The seconds from the hang-up to the upstream seeing its connection closed (None: it did
    not within 5 s).
    """
    host, port = url.removeprefix("http://").split(":")
    lanes = await control.run(control.faults.lanes)
    before = len(lanes.get(LEAVE, {}).get("cancelled", []))
    body = orjson.dumps({"model": "leave", "messages": [{"role": "user", "content": "x"}]})
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    _, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.encode() + body)
        await writer.drain()

        async def in_flight() -> bool:
            lanes = await control.run(control.faults.lanes)
            return bool(lanes.get(LEAVE, {}).get("in_flight"))

        await _until(in_flight, 10, 0.02)
    finally:
        left = time.monotonic()
        writer.close()
        await writer.wait_closed()
    closed: list[float] = []

    async def seen() -> bool:
        cancelled = (await control.run(control.faults.lanes)).get(LEAVE, {}).get("cancelled", [])
        closed[:] = cancelled[before:]
        return bool(closed)

    if not await _until(seen, 5, 0.02):
        return None
    return closed[0] - left


@dataclass
class Drained:
    """One of the long streams in flight at SIGTERM."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended: float = 0.0
    end: str = ""
    status: int = 0


async def _long_stream(http: httpx.AsyncClient, model: str, out: Drained) -> None:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    last = b""
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            out.status = response.status_code
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    last = line[5:].strip().encode()
                    out.started.set()
        out.end = "done" if last == b"[DONE]" else "error" if b'"error"' in last else "cut"
    except httpx.HTTPError as exc:
        out.end = f"transport: {exc!r}"
    out.started.set()
    out.ended = time.monotonic()


@dataclass
class Run:
    """What one run recorded, raw."""

    t: Timings
    marks: dict[str, float] = field(default_factory=dict)  # phase → start (monotonic)
    results: list[Result] = field(default_factory=list)
    polls: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    scrapes: dict[str, dict[str, float]] = field(default_factory=dict)  # moment → /metrics
    visits: list[Visit] = field(default_factory=list)  # the restarted upstream's, lane main
    killed_at: float = 0.0
    restarted_at: float = 0.0
    leaves: list[float | None] = field(default_factory=list)
    drained: list[Drained] = field(default_factory=list)
    held: dict[str, bool] = field(default_factory=dict)  # phase → its condition was met
    term_at: float = 0.0
    in_flight_at_term: int = 0
    exited_after_s: float = 0.0
    exit_code: int | None = None
    access: list[dict[str, Any]] = field(default_factory=list)
    vllm_requests: float = 0.0
    load: list[float] = field(default_factory=list)  # load average, sampled per phase


async def _scrape(http: httpx.AsyncClient) -> dict[str, float]:
    return series((await http.get("/metrics")).text)


async def _drive(t: Timings, url: str, faults: FaultProcess, vllm_url: str) -> Run:
    run = Run(t)
    control = Control(faults)
    stop = asyncio.Event()
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout would: a request
    # sent on a connection the server is closing fails with a reset, whatever the gateway does.
    limits = httpx.Limits(
        max_connections=t.clients, max_keepalive_connections=t.clients, keepalive_expiry=4
    )
    side = httpx.Limits(max_connections=t.drain_streams + 4, keepalive_expiry=4)
    async with (
        httpx.AsyncClient(base_url=url, timeout=90, limits=limits) as http,
        httpx.AsyncClient(base_url=url, timeout=90, limits=side) as aside,
        httpx.AsyncClient(base_url=vllm_url.removesuffix("/v1"), timeout=10) as vllm,
    ):
        vllm_before = _sum(series((await vllm.get("/metrics")).text), "vllm:request_success_total")

        async def poll() -> None:
            while not stop.is_set():
                with_time = (time.monotonic(), await _scrape(aside))
                run.polls.append(with_time)
                await asyncio.sleep(t.poll_s)

        async def boundary(ended: str | None, begins: str) -> None:
            # One scrape: the end of one phase, the start of the next (before its fault).
            scrape = await _scrape(aside)
            run.scrapes[begins] = scrape
            if ended is not None:
                run.scrapes[f"{ended}:end"] = scrape

        def mark(name: str) -> None:
            run.marks[name] = time.monotonic()
            run.load.append(os.getloadavg()[0])

        async def hold(name: str, length: float, since: str = "", what: str = "") -> None:
            """The phase lasts ``length``, then until ``what`` happened to the scripted
            backend's circuit since the phase ``since`` began (`opened`, a probe `failed`,
            `closed`: closed again and closed now; or `closed now`), for at most `cap_s` more:
            a condition, not a guess at how long it takes."""
            await asyncio.sleep(max(0.0, run.marks[name] + length - time.monotonic()))
            if not what:
                return
            counter, value = COUNTERS.get(what, ("", ""))
            began = _breaker(run.scrapes[since], counter, value) if counter else -1.0
            deadline = time.monotonic() + t.cap_s
            while time.monotonic() < deadline:
                now = run.polls[-1][1] if run.polls else {}
                done = not counter or _breaker(now, counter, value) > began
                closed = what not in ("closed", "closed now") or _breaker(now, "state", "") == 0
                if done and closed:
                    run.held[name] = True
                    return
                await asyncio.sleep(t.poll_s)
            run.held[name] = False

        async def script() -> None:
            healthy = {"mode": "ok", "delay_s": 0.02, "chunks": 5, "gap_s": 0.1}
            await boundary(None, "warm")
            mark("warm")
            run.leaves.append(await _leave(url, control))
            # Killed with its circuit closed, so that streams are in flight on it.
            await hold("warm", t.warm_s, "warm", "closed now")

            await boundary("warm", "killed")
            run.killed_at = await control.run(faults.kill)
            mark("killed")
            await hold("killed", t.killed_s, "killed", "opened")
            await control.run(faults.start)
            run.restarted_at = time.monotonic()
            await control.run(lambda: _script_lanes(t, faults))
            await boundary("killed", "back")
            mark("back")
            run.leaves.append(await _leave(url, control))
            await hold("back", t.back_s, "killed", "closed")

            await boundary("back", "hang")
            run.marks["hang:set"] = time.monotonic()  # healthy until this call returns
            await control.run(lambda: faults.script(MAIN, mode="hang"))
            mark("hang")
            await hold("hang", t.hang_s, "hang", "failed")
            await boundary("hang", "hang_healed")
            run.marks["hang:healing"] = time.monotonic()  # still hung until this call returns
            await control.run(lambda: faults.script(MAIN, **healthy))
            mark("hang_healed")
            run.leaves.append(await _leave(url, control))
            await hold("hang_healed", t.hang_healed_s, "hang", "closed")

            await boundary("hang_healed", "fail500")
            run.marks["fail500:set"] = time.monotonic()
            await control.run(lambda: faults.script(MAIN, mode="fail500", delay_s=0.02))
            mark("fail500")
            await hold("fail500", t.fail_s, "fail500", "failed")
            await boundary("fail500", "fail_healed")
            run.marks["fail500:healing"] = time.monotonic()
            await control.run(lambda: faults.script(MAIN, **healthy))
            mark("fail_healed")
            run.leaves.append(await _leave(url, control))
            await hold("fail_healed", t.fail_healed_s, "fail500", "closed")
            # ---- SPILL_OVER_PHASE: "vLLM queue saturated → spill-over" goes here ----
            await boundary("fail_healed", "end")
            mark("end")
            stop.set()

        clients = [_client(http, n, t, stop, run.results) for n in range(t.clients)]
        await asyncio.gather(script(), poll(), *clients)
        # The drain: the load is over, only the long streams run when SIGTERM comes.
        run.drained = [Drained() for _ in range(t.drain_streams)]
        drains = [
            asyncio.create_task(_long_stream(aside, f"long{i}", drained))
            for i, drained in enumerate(run.drained)
        ]
        run.vllm_requests = (
            _sum(series((await vllm.get("/metrics")).text), "vllm:request_success_total")
            - vllm_before
        )
        # The drain: only the long streams are left.
        await asyncio.gather(*(d.started.wait() for d in run.drained))
        run.in_flight_at_term = sum(1 for d in run.drained if not d.ended)
        proc = GATEWAY_PROCS[url]
        run.term_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        run.exit_code = await asyncio.to_thread(proc.wait, 90)
        run.exited_after_s = time.monotonic() - run.term_at
        await asyncio.gather(*drains)
    run.visits = [v for v in await control.run(faults.visits) if v.lane == MAIN]
    return run


def run_suite(t: Timings, vllm_url: str, tmp: Path) -> Run:
    """The whole suite against a running vLLM; the scripted upstream and gateway are its own."""
    with fault_process() as faults:
        _script_lanes(t, faults)
        env = {"GATEWAY_WORKERS": "2"}
        with run_gateway(policy(t, faults, vllm_url), env, tmp=tmp) as url:
            run = asyncio.run(_drive(t, url, faults, vllm_url))
            time.sleep(0.3)  # the access log thread's last write
            lines = GATEWAY_LOGS[url].read_text().splitlines()
            entries = [orjson.loads(line) for line in lines if line.startswith("{")]
            run.access = [e for e in entries if e.get("msg") == "request"]
    return run


# ---------------------------------------------------------------------------- the figures


@dataclass
class Fault:
    """A hang or 500s on the scripted backend, as the upstream and /metrics saw it."""

    reached: int  # requests that reached the scripted upstream during the fault
    probes: int  # failed probes, from /metrics
    wave: int  # those that reached it before its circuit opened (reached - probes)
    holds: list[float]  # how long the upstream held each of the wave
    not_hung_up: int  # of the wave, those the gateway did not hang up on (nor answered)
    probe_overlaps: int  # probes at the upstream at the same time as another (0: one at a time)
    probes_before_first_failure: int  # probes that arrived before the first failure (0)
    opened: int  # open transitions during the fault
    opened_after_s: float | None  # the first poll that saw it open, from the fault's start
    wave_s: float  # the fault's start to the wave's last arrival
    probe_successes: int  # after healing
    closed: int  # closed transitions after healing
    back_after_s: float | None  # healing → the first request at the upstream
    free_after_s: float | None  # healing → the first request a client sent (clients waiting
    # on the slow fallback cannot send sooner)
    closed_after_s: float | None  # healing → the first poll that saw it closed
    healed_answers: int  # answers from the scripted backend that ended after healing


def _first_poll(run: Run, since: float, check: Callable[[dict[str, float]], bool]) -> float | None:
    for at, scrape in run.polls:
        if at >= since and check(scrape):
            return at - since
    return None


def fault_figures(run: Run, name: str, healed: str) -> Fault:
    """The figures of the fault phase ``name`` and the healthy phase after it."""
    start, heal = run.marks[name], run.marks[healed]
    before, after = run.scrapes[name], run.scrapes[f"{healed}:end"]
    counted = int(_breaker(after, "probes", "failure") - _breaker(before, "probes", "failure"))
    # What the upstream failed (500, or hung and answered 504 once the gateway hung up) from
    # the moment the fault was being set to the moment the healing was in place.
    window = [v for v in run.visits if run.marks[f"{name}:set"] <= v.arrived < heal]
    during = sorted((v for v in window if v.status != 200), key=lambda v: v.arrived)
    probes = min(counted, len(during))
    wave, probing = during[: len(during) - probes], during[len(during) - probes :]
    # The first failure the upstream gave (a wave request, or the first probe when the
    # circuit was not closed as the fault began): no other probe may arrive before it.
    first_failure = min((v.left for v in during if v.left is not None), default=heal)
    overlaps = sum(
        1 for a, b in itertools.pairwise(probing) if a.left is None or b.arrived < a.left
    )
    opened_before = _breaker(before, "transitions", "open")
    closed_before = _breaker(before, "transitions", "closed")
    return Fault(
        reached=len(during),
        probes=counted,
        wave=len(wave),
        holds=[v.left - v.arrived for v in wave if v.left is not None],
        not_hung_up=sum(1 for v in wave if v.left is None or v.left - v.arrived >= HANG_S - 1),
        probe_overlaps=overlaps,
        probes_before_first_failure=sum(
            1 for v in probing if v is not during[0] and v.arrived < first_failure
        ),
        opened=int(_breaker(after, "transitions", "open") - opened_before),
        opened_after_s=_first_poll(
            run, start, lambda s: _breaker(s, "transitions", "open") > opened_before
        ),
        wave_s=(wave[-1].arrived - start) if wave else 0.0,
        probe_successes=int(
            _breaker(after, "probes", "success") - _breaker(before, "probes", "success")
        ),
        closed=int(_breaker(after, "transitions", "closed") - closed_before),
        back_after_s=min((v.arrived - heal for v in run.visits if v.arrived >= heal), default=None),
        free_after_s=min(
            (r.started - heal for r in run.results if r.started >= heal and r.model == "m"),
            default=None,
        ),
        closed_after_s=_first_poll(
            run, heal, lambda s: _breaker(s, "transitions", "closed") > closed_before
        ),
        healed_answers=sum(
            1 for r in run.results if r.backend == "scripted" and r.ok and r.ended >= heal
        ),
    )


@dataclass
class Kill:
    """The scripted upstream killed under load."""

    whole_failed: int  # non-streaming requests that failed, whole run
    streams_cut: list[Result]  # streams that did not end with [DONE], whole run
    cut_as_allowed: int  # of those: on scripted, in flight at the kill, after a first event,
    # ended with an SSE error event
    in_flight: int  # requests in flight at the kill (any backend)
    state_at_kill: str  # the scripted backend's circuit just before the kill
    opened_after_s: float | None  # kill → the first poll that saw its circuit open
    restart_s: float  # kill → the upstream answering again (the killed phase's length)
    back_after_s: float | None  # restart → the first request at the upstream
    back_answers: int  # requests started after the kill and answered by it (so: restarted)


def kill_figures(run: Run) -> Kill:
    """The figures of the killed and back phases."""
    k = run.killed_at
    opened_before = next(
        (_breaker(s, "transitions", "open") for at, s in reversed(run.polls) if at < k), 0.0
    )
    failed = [r for r in run.results if not r.ok and r.stream]
    allowed = [
        r
        for r in failed
        if r.backend == "scripted"
        and r.status == 200
        and r.started < k < r.ended
        and r.events >= 1
        and r.end == "error"
    ]
    back_end = run.marks["hang"]
    return Kill(
        whole_failed=sum(1 for r in run.results if not r.ok and not r.stream),
        streams_cut=failed,
        cut_as_allowed=len(allowed),
        in_flight=sum(1 for r in run.results if r.started < k < r.ended),
        state_at_kill=STATES[int(_breaker(run.scrapes["killed"], "state", ""))],
        opened_after_s=_first_poll(
            run, k, lambda s: _breaker(s, "transitions", "open") > opened_before
        ),
        restart_s=run.restarted_at - k,
        back_after_s=min(
            (v.arrived - run.restarted_at for v in run.visits if v.arrived >= run.restarted_at),
            default=None,
        ),
        back_answers=sum(
            1 for r in run.results if r.backend == "scripted" and r.ok and k <= r.started < back_end
        ),
    )


STATES = ("closed", "half-open", "open")
# What `hold` waits for: a breaker counter of the scripted backend growing.
COUNTERS = {
    "opened": ("transitions", "open"),
    "closed": ("transitions", "closed"),
    "failed": ("probes", "failure"),
}


def _q(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _length(run: Run, fault: str) -> float:
    return run.marks[f"{fault}:healing"] - run.marks[fault]


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def report(run: Run) -> str:
    """The markdown tables of a run."""
    t = run.t
    lines = [
        f"{t.clients} clients (a third streaming, one in ten vLLM first), "
        f"{run.marks['end'] - run.marks['warm']:.0f} s, 2 workers; scripted `timeout_s` "
        f"{t.timeout_s:g}, breaker `failures_to_open` {t.failures_to_open}, `open_s` "
        f"{t.open_s:g}, `half_open_probes` 1; load average per phase "
        f"{', '.join(f'{x:.1f}' for x in run.load)} on {os.cpu_count()} CPUs",
        "",
        "| phase | s | requests | failed (whole / streams) | p50 / p99 ms | by scripted | "
        "by vLLM | reached scripted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = [name for name, _ in t.phases]
    bounds = [run.marks[n] for n in names] + [run.marks["end"]]
    for name, lo, hi in zip(names, bounds, bounds[1:], strict=False):
        rows = [r for r in run.results if lo <= r.started < hi]
        lat = sorted((r.ended - r.started) * 1000 for r in rows)
        whole = sum(1 for r in rows if not r.ok and not r.stream)
        streams = sum(1 for r in rows if not r.ok and r.stream)
        reached = sum(1 for v in run.visits if lo <= v.arrived < hi)
        reached_text = "(killed process)" if name in ("warm", "killed") else str(reached)
        lines.append(
            f"| {name} | {hi - lo:.1f} | {len(rows)} | {whole} / {streams} | "
            f"{_q(lat, 50):.0f} / {_q(lat, 99):.0f} | "
            f"{sum(1 for r in rows if r.backend == 'scripted')} | "
            f"{sum(1 for r in rows if r.backend == 'vllm')} | {reached_text} |"
        )
    kill = kill_figures(run)
    hang = fault_figures(run, "hang", "hang_healed")
    fail = fault_figures(run, "fail500", "fail_healed")
    done = sum(1 for d in run.drained if d.end == "done")
    drain_last = max((d.ended for d in run.drained), default=run.term_at) - run.term_at
    leaves = [x for x in run.leaves if x is not None]
    leave_logged = sum(1 for e in run.access if e.get("model") == "leave" and e["status"] == 499)
    codes = sorted({r.error_code for r in kill.streams_cut})
    holds = sorted(hang.holds)
    end = run.scrapes["end"]

    def errors(backend: str) -> str:
        return ", ".join(
            f"{kind} {_sum(end, 'gateway_upstream_errors_total', backend=backend, kind=kind):.0f}"
            for kind in ("connect", "timeout", "status_5xx", "bad_response")
        )

    lines += [
        "",
        "| fault | measured |",
        "|---|---|",
        f"| scripted upstream killed (SIGKILL) | {kill.in_flight} requests in flight; "
        f"{kill.whole_failed} non-streaming requests failed (whole run); "
        f"{len(kill.streams_cut)} streams ended without `[DONE]`, {kill.cut_as_allowed} of them "
        f"past their first event on the killed upstream and ended with an SSE error event "
        f"({', '.join(codes) or '-'}); circuit {kill.state_at_kill} at the kill, open "
        f"{_s(kill.opened_after_s)} after it; "
        f"restarted after {kill.restart_s:.1f} s, first request reached it "
        f"{_s(kill.back_after_s)} later, {kill.back_answers} answers from it in the phase |",
        f"| scripted upstream hangs for {_length(run, 'hang'):.1f} s | {hang.reached} requests "
        f"reached it: "
        f"{hang.wave} before its circuit opened (arrived over {hang.wave_s:.2f} s; held "
        f"{_q(holds, 50):.2f} s p50, {(holds[-1] if holds else 0):.2f} s max, then hung up on "
        f"and answered by vLLM; {hang.not_hung_up} not hung up on), then {hang.probes} probes "
        f"({hang.probe_overlaps} at the same time as another); circuit open "
        f"{_s(hang.opened_after_s)} after the hang began; healed: a client free to send "
        f"{_s(hang.free_after_s)} later, first request at it {_s(hang.back_after_s)} later, "
        f"circuit closed after {_s(hang.closed_after_s)} "
        f"({hang.probe_successes} successful probe), {hang.healed_answers} answers from it |",
        f"| scripted upstream answers 500 for {_length(run, 'fail500'):.1f} s | {fail.reached} "
        f"requests reached it: {fail.wave} 500s before its circuit opened (over "
        f"{fail.wave_s:.2f} s; circuit open {_s(fail.opened_after_s)} after the first 500s, "
        f"{fail.opened} open transitions), "
        f"then {fail.probes} failed probes ({fail.probe_overlaps} overlapping); healed: "
        f"a client free {_s(fail.free_after_s)} later, first request at it "
        f"{_s(fail.back_after_s)} later, closed after {_s(fail.closed_after_s)} "
        f"({fail.probe_successes} successful probe), {fail.healed_answers} answers from it |",
        "| vLLM queue saturated → spill-over | not in this suite yet (built separately; "
        "`SPILL_OVER_PHASE`) |",
        f"| SIGTERM, {len(run.drained)} streams of "
        f"{(t.drain_chunks - 1) * t.drain_gap_s:g}-"
        f"{(t.drain_chunks + t.drain_streams - 2) * t.drain_gap_s:g} s in flight "
        f"(default grace, 30 s) | {run.in_flight_at_term} in flight at the signal, {done} "
        f"ended with `[DONE]` ({sorted({d.end for d in run.drained})}); last ended "
        f"{drain_last:.1f} s after SIGTERM; process exited after {run.exited_after_s:.1f} s "
        f"(code {run.exit_code}) |",
        f"| a client leaves a non-streaming request ({len(run.leaves)} times) | upstream "
        f"connection closed {', '.join(f'{x:.3f}' for x in leaves)} s after the client hung "
        f"up; {len(run.leaves) - len(leaves)} not within 5 s; {leave_logged} logged as 499 |",
        "",
        f"Totals: {len(run.results)} requests, "
        f"{sum(1 for r in run.results if r.backend == 'vllm')} answered by vLLM "
        f"({run.vllm_requests:.0f} finished by vLLM itself, its own count); "
        f"retry budget exhausted {_sum(end, 'gateway_retry_budget_exhausted_total'):.0f} times; "
        f"{_sum(end, 'gateway_breaker_probes_total', backend='scripted'):.0f} probes of the "
        f"scripted backend in all; upstream errors by kind: scripted {errors('scripted')}; "
        f"vLLM {errors('vllm')}. Phases held until their "
        "condition (warm: circuit closed; killed: open; back, healed: closed again; "
        "faults: a probe failed): "
        + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in run.held.items())
        + ".",
    ]
    odd = [r for r in run.results if not r.ok and r not in kill.streams_cut] + [
        r for r in kill.streams_cut if r.end != "error"
    ]
    lines += [f"    failed: {r}" for r in odd[:20]]
    return "\n".join(lines)


def main() -> int:
    """Start vLLM (or use a running one), run the suite, print its tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--short", action="store_true", help="the timeline CI runs")
    parser.add_argument("--vllm-url", help="a running vLLM's OpenAI base URL (.../v1)")
    parser.add_argument(
        "--vllm-ready-s", type=float, default=600, help="how long vLLM may take to start"
    )
    args = parser.parse_args()
    t = SHORT if args.short else FULL
    if args.clients is not None:
        t = replace(t, clients=args.clients)
    tmp = Path(tempfile.mkdtemp(prefix="fault-suite-"))
    began = time.monotonic()
    if args.vllm_url:
        run = run_suite(t, args.vllm_url, tmp)
        ready = 0.0
    else:
        from tests.support import model_servers

        problem = model_servers.vllm_setup_problem()
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
        model_servers.VLLM_READY_TIMEOUT = args.vllm_ready_s
        with model_servers.run_vllm() as vllm_url:
            ready = time.monotonic() - began
            run = run_suite(t, vllm_url, tmp)
    print(report(run))
    print(f"\nvLLM ready after {ready:.0f} s; whole run {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
