"""Replicas of one backend with real processes: balanced, an outlier ejected and back, a kill.

A gateway of two workers in front of scripted upstream lanes; one replica runs in a child
process so that it can be killed outright. Assertions are on counts and states, never time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_gateway
from tests.support.fault_process import fault_process
from tests.support.fault_upstream import FaultUpstream, fault_upstream
from tests.support.probing import chat, metric, until

POLICY = """
backends:
  pool:
    provider: openai
    base_urls: ["{r0}", "{r1}"]
    breaker: {{failures_to_open: 2, open_s: 30}}
    health_check: {{interval_s: 0.2, timeout_s: 1, failures: 2}}
  spare: {{provider: openai, base_url: "{spare}"}}
models:
  "*": {{to: [pool, spare]}}
"""


def _fresh(url: str) -> httpx.Client:
    # No keep-alive: every request is a new connection, so both workers take some.
    return httpx.Client(base_url=url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0))


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FaultUpstream]]:
    with fault_upstream() as faults:
        urls = {lane: faults.base_url(lane) for lane in ("r0", "r1", "spare")}
        tmp = tmp_path_factory.mktemp("replicas")
        with run_gateway(POLICY.format(**urls), {"GATEWAY_WORKERS": "2"}, tmp=tmp) as url:
            yield url, faults


def _replicas(http: httpx.Client) -> list[str]:
    return [r["circuit"] for r in http.get("/readyz").json()["backends"]["pool"]["replicas"]]


def test_traffic_spreads_over_the_replicas(pool: tuple[str, FaultUpstream]) -> None:
    url, faults = pool
    r0, r1, spare = (faults.script(lane) for lane in ("r0", "r1", "spare"))
    with _fresh(url) as http:
        assert all(chat(http, "m").status_code == 200 for _ in range(40))
        assert spare.requests == 0 and r0.requests + r1.requests == 40
        # Equal loads: each drawn first half the time (fewer than 8 of 40: p < 1e-4).
        assert r0.requests >= 8 and r1.requests >= 8, (r0.requests, r1.requests)
        readyz = http.get("/readyz").json()["backends"]["pool"]
        assert readyz["state"] == "ok" and _replicas(http) == ["closed", "closed"]
        # Eight at once, each held a second: a worker sends each to the replica with fewer
        # in flight, so each replica takes at least half of every worker's share (rounded down).
        r0, r1 = faults.script("r0", delay_s=1.0), faults.script("r1", delay_s=1.0)
        start = threading.Barrier(8)

        def one(_: int) -> int:
            start.wait()
            return chat(http, "m").status_code

        with ThreadPoolExecutor(8) as threads:
            assert list(threads.map(one, range(8))) == [200] * 8
    assert r0.requests >= 3 and r1.requests >= 3, (r0.requests, r1.requests)


def test_a_replica_answering_500_is_ejected_and_back_once_healed(
    pool: tuple[str, FaultUpstream],
) -> None:
    url, faults = pool
    r0, spare = faults.script("r0"), faults.script("spare")
    r1 = faults.script("r1", mode="fail500")
    with _fresh(url) as http:
        # Failed attempts on r1 are retried on r0: the client never sees them.
        statuses = [chat(http, "m").status_code for _ in range(10)]
        until(lambda: _replicas(http) == ["closed", "open"])
        assert statuses == [200] * 10 and spare.requests == 0
        assert metric(http, "gateway_backend_replica_up", backend="pool", replica="1") == 0
        assert metric(http, "gateway_backend_replica_up", backend="pool", replica="0") == 1
        # Ejected: nothing more reaches it while it fails (open for 30 s, checks failing).
        seen, answered = r1.requests, r0.completed
        assert all(chat(http, "m").status_code == 200 for _ in range(20))
        assert r1.requests == seen and r0.completed == answered + 20 and spare.requests == 0
        backend = http.get("/readyz").json()["backends"]["pool"]
        assert backend["state"] == "ok" and backend["circuit"] == "closed"
        # Healed: a passing health check lets a probe through, whose success closes it.
        r1 = faults.script("r1")
        until(lambda: chat(http, "m").status_code == 200 and r1.completed > 0, timeout_s=10)
        until(lambda: _replicas(http) == ["closed", "closed"])
        assert all(chat(http, "m").status_code == 200 for _ in range(30))
        assert r1.completed >= 4 and spare.requests == 0
        opened = metric(
            http,
            "gateway_backend_replica_transitions_total",
            backend="pool",
            replica="1",
            state="open",
        )
        closed = metric(
            http,
            "gateway_backend_replica_transitions_total",
            backend="pool",
            replica="1",
            state="closed",
        )
        assert opened >= 1 and closed >= 1
        # The backend as a whole never went down, so its own circuit gauge stayed closed.
        assert metric(http, "gateway_breaker_state", backend="pool") == 0


KILL_POLICY = """
backends:
  pool: {{provider: openai, base_urls: ["{doomed}", "{steady}"]}}
  spare: {{provider: openai, base_url: "{spare}"}}
models:
  "*": {{to: [pool, spare]}}
"""


def test_a_killed_replica_costs_no_request(tmp_path: Path) -> None:
    with fault_upstream() as faults, fault_process() as doomed:
        steady, spare = faults.script("steady"), faults.script("spare")
        urls = {lane: faults.base_url(lane) for lane in ("steady", "spare")}
        urls["doomed"] = doomed.base_url("d")
        with run_gateway(KILL_POLICY.format(**urls), {"GATEWAY_WORKERS": "2"}, tmp=tmp_path) as url:
            done: list[tuple[bool, int]] = []  # (sent after the kill, status)
            killed = threading.Event()
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(base_url=url, timeout=10) as http:
                    while not stop.is_set():
                        after = killed.is_set()
                        done.append((after, chat(http, "m").status_code))

            with ThreadPoolExecutor(8) as threads:
                for _ in range(8):
                    threads.submit(load)
                until(lambda: len(done) >= 80, timeout_s=30)
                before = steady.requests
                doomed.kill()
                at_kill = steady.requests
                killed.set()
                until(lambda: sum(after for after, _ in done) >= 120, timeout_s=30)
                stop.set()
            # `/v1/models` (a "*" route) asks the replicas in turn: the first one is dead.
            models = httpx.get(url + "/v1/models", timeout=10).json()["data"]
            assert [m["id"] for m in models] == ["f"] and steady.checks == 1
    statuses = [status for _, status in done]
    assert statuses == [200] * len(done), "no request failed"
    assert before < 80, "the killed replica took its share before it died"
    sent_after = sum(after for after, _ in done)
    # Everything sent after the kill went to the other replica (some after a failed try).
    assert steady.requests - at_kill >= sent_after and spare.requests == 0
