"""Two workers, one breaker: failures counted across workers, one probe between them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import run_gateway
from tests.support.fault_upstream import FaultUpstream, fault_upstream
from tests.support.probing import chat

POLICY = """
backends:
  steady: {{provider: openai, base_url: "{steady}", tier: open}}
  flaky:
    provider: openai
    base_url: "{flaky}"
    breaker: {{failures_to_open: 2, open_s: 5.0, half_open_probes: 1}}
models:
  "*": {{to: [flaky, steady]}}
"""


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FaultUpstream]]:
    with fault_upstream() as faults:
        policy = POLICY.format(steady=faults.base_url("steady"), flaky=faults.base_url("flaky"))
        tmp = tmp_path_factory.mktemp("two-workers")
        with run_gateway(policy, {"GATEWAY_WORKERS": "2"}, tmp=tmp) as url:
            yield url, faults


def _wait_half_open(http: httpx.Client, backend: str, timeout_s: float = 30.0) -> None:
    """Until `/readyz` says the circuit has come out of `open_s` (shared: either worker)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http.get("/readyz").json()["backends"][backend]["circuit"] == "half_open":
            return
        time.sleep(0.05)
    raise AssertionError(f"{backend}'s circuit did not become half-open")


def _fresh(url: str) -> httpx.Client:
    # No keep-alive: every request is a new connection, so both workers take some.
    return httpx.Client(base_url=url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0))


def test_the_circuit_is_shared_by_the_workers(two_workers: tuple[str, FaultUpstream]) -> None:
    url, faults = two_workers
    lane = faults.script("flaky", mode="fail500")
    with _fresh(url) as http:
        backends = [chat(http, "m").headers["x-gateway-backend"] for _ in range(8)]
        assert backends == ["steady"] * 8
        assert lane.requests == 2, "two failures, in whichever worker, open it for both"
        lane = faults.script("flaky", mode="ok", delay_s=1.0)
        _wait_half_open(http, "flaky")
        start = threading.Barrier(16)

        def one(_: int) -> str:
            start.wait()
            return chat(http, "m").headers["x-gateway-backend"]

        with ThreadPoolExecutor(16) as pool:
            backends = list(pool.map(one, range(16)))
    assert lane.requests == 1 and lane.peak == 1, "one probe between both workers"
    assert backends.count("flaky") == 1
