"""Faults against a real gateway process: hung backends, breakers, spill-over, stalls, leavers.

Every fault is scripted on its own lane of one `FaultUpstream`, with sub-second timeouts in
the policy; the figures these tests print (`-s`) are the ones in docs/reliability.md.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import orjson
import pytest

from tests.conftest import run_gateway
from tests.support.fault_upstream import FaultUpstream, fault_upstream
from tests.support.probing import access_log, chat, client, metric, stream_events, until

POLICY = """
backends:
  steady: {{provider: openai, base_url: "{steady}", tier: open}}
  hung:
    provider: openai
    base_url: "{hung}"
    timeout_s: 0.3
    breaker: {{failures_to_open: 2, open_s: 30}}
  flaky:
    provider: openai
    base_url: "{flaky}"
    breaker: {{failures_to_open: 2, open_s: 0.5, half_open_probes: 1}}
  stall: {{provider: openai, base_url: "{stall}", idle_timeout_s: 0.3}}
  patient: {{provider: openai, base_url: "{patient}", timeout_s: 10}}
  gappy: {{provider: openai, base_url: "{gappy}"}}
  small: {{provider: openai, base_url: "{small}", max_concurrency: 1}}
  watched:
    provider: openai
    base_url: "{watched}"
    health_check: {{interval_s: 0.1, timeout_s: 0.2, failures: 1}}
    breaker: {{open_s: 30}}
models:
  "*": {{to: [steady]}}
  hung-first: {{to: [hung, steady]}}
  flaky-first: {{to: [flaky, steady]}}
  stall: {{to: [stall]}}
  patient: {{to: [patient]}}
  gappy: {{to: [gappy]}}
  small-first: {{to: [small, steady]}}
  watched-first: {{to: [watched, steady]}}
"""
LANES = ("steady", "hung", "flaky", "stall", "patient", "gappy", "small", "watched")


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultUpstream]:
    with fault_upstream() as upstream:
        upstream.script("hung", mode="hang")
        upstream.script("watched", mode="ok")
        yield upstream


@pytest.fixture(scope="module")
def gw(faults: FaultUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policy = POLICY.format(**{lane: faults.base_url(lane) for lane in LANES})
    with run_gateway(policy, tmp=tmp_path_factory.mktemp("resilience")) as url:
        yield url


@pytest.fixture(scope="module")
def http(gw: str) -> Iterator[httpx.Client]:
    with client(gw) as http:
        yield http


def _state(http: httpx.Client, backend: str) -> str:
    state: str = http.get("/readyz").json()["backends"][backend]["state"]
    return state


def _backend(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-gateway-backend"]


def test_a_hung_backend_falls_back_within_its_timeout(
    http: httpx.Client, faults: FaultUpstream
) -> None:
    started = time.monotonic()
    assert _backend(chat(http, "hung-first")) == "steady"
    whole = time.monotonic() - started
    body = {"model": "hung-first", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    started = time.monotonic()
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["x-gateway-backend"] == "steady"
        first = time.monotonic() - started
        response.read()
    # Two timeouts opened its circuit: no request waits on it again (no second stall).
    started = time.monotonic()
    assert _backend(chat(http, "hung-first")) == "steady"
    after = time.monotonic() - started
    print(f"\nhung backend (timeout_s 0.3): whole answer {whole:.3f} s, first event {first:.3f} s")
    print(f"after its circuit opened: {after * 1000:.1f} ms")
    assert 0.3 <= whole < 0.8 and 0.3 <= first < 0.8
    assert after < 0.2 and faults.lane("hung").requests == 2
    until(lambda: len(faults.lane("hung").cancelled) == 2)  # the gateway hung up both times
    assert metric(http, "gateway_breaker_state", backend="hung") == 2
    assert _state(http, "hung") == "circuit open"


def test_half_open_admits_one_probe_and_a_success_closes(
    http: httpx.Client, faults: FaultUpstream
) -> None:
    faults.script("flaky", mode="fail500")
    assert [_backend(chat(http, "flaky-first")) for _ in range(2)] == ["steady", "steady"]
    assert _state(http, "flaky") == "circuit open"
    lane = faults.script("flaky", mode="ok", delay_s=1.0)
    time.sleep(0.6)  # past open_s: the next request may probe
    start = threading.Barrier(16)

    def one(_: int) -> tuple[str, float]:
        start.wait()
        response = chat(http, "flaky-first")
        return _backend(response), time.monotonic()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    backends = [b for b, _ in results]
    assert lane.requests == 1 and lane.peak == 1, "exactly one probe reached it"
    assert backends.count("flaky") == 1 and backends.count("steady") == 15
    probe_done = next(t for b, t in results if b == "flaky")
    assert all(t < probe_done for b, t in results if b == "steady")  # all during the probe
    started = time.monotonic()
    assert _backend(chat(http, "flaky-first")) == "flaky"  # closed by the probe's success
    assert time.monotonic() - started < 1.5
    assert metric(http, "gateway_breaker_probes_total", backend="flaky", result="success") == 1
    assert metric(http, "gateway_breaker_state", backend="flaky") == 0
    assert metric(http, "gateway_breaker_transitions_total", backend="flaky", state="open") == 1


def test_a_saturated_backend_spills_over(http: httpx.Client, faults: FaultUpstream) -> None:
    faults.script("small", mode="ok", delay_s=0.8)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(chat, http, "small-first")
        until(lambda: faults.lane("small").in_flight == 1)
        rest = [pool.submit(chat, http, "small-first") for _ in range(2)]
        backends = [_backend(f.result()) for f in [first, *rest]]
    assert backends == ["small", "steady", "steady"]
    labels = {"from_backend": "small", "to_backend": "steady", "reason": "max_concurrency"}
    spills = metric(http, "gateway_spillovers_total", **labels)
    assert spills == 2
    reason = {"model": "small-first", "tier": "open", "reason": "spillover"}
    assert metric(http, "gateway_routing_decisions_total", **reason) == 2


def test_a_stream_that_goes_quiet_ends_with_an_error_event(
    gw: str, http: httpx.Client, faults: FaultUpstream
) -> None:
    lane = faults.script("stall", mode="ok", chunks=5, stall_after=2)
    events, took = stream_events(http, "stall")
    assert b"[DONE]" not in events
    error = orjson.loads(events[-1])["error"]
    assert error["code"] == "upstream_timeout" and "sent nothing for 0.3 s" in error["message"]
    print(f"\nstream quiet after 2 events (idle_timeout_s 0.3): error event after {took:.3f} s")
    assert 0.3 <= took < 1.0
    until(lambda: len(lane.cancelled) == 1)  # the upstream stream was closed
    assert access_log(gw)[-1]["status"] == 504


def test_the_clients_deadline_header_bounds_the_wait(
    http: httpx.Client, faults: FaultUpstream
) -> None:
    faults.script("patient", mode="hang")
    started = time.monotonic()
    response = chat(http, "patient", **{"x-gateway-timeout-ms": "300"})
    took = time.monotonic() - started
    assert response.status_code == 504 and 0.3 <= took < 0.8
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_a_client_leaving_cancels_the_upstream_call(gw: str, faults: FaultUpstream) -> None:
    lane = faults.script("patient", mode="hang")
    body = orjson.dumps({"model": "patient", "messages": [{"role": "user", "content": "x"}]})
    parsed = urlparse(gw)
    assert parsed.hostname is not None and parsed.port is not None
    with socket.create_connection((parsed.hostname, parsed.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        until(lambda: lane.in_flight == 1)
        left = time.monotonic()
    until(lambda: len(lane.cancelled) == 1, timeout_s=1.0)
    print(f"\nnon-streaming client left: upstream closed {lane.cancelled[0] - left:.3f} s later")
    assert lane.cancelled[0] - left < 1.0
    assert access_log(gw)[-1]["status"] == 499


def test_a_stream_notices_a_leaving_client_between_events(
    http: httpx.Client, faults: FaultUpstream
) -> None:
    lane = faults.script("gappy", mode="ok", chunks=3, gap_s=3.0)
    body = {"model": "gappy", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with (
        httpx.Client(base_url=str(http.base_url)) as own,  # its own connection, to drop
        own.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        chunks = response.iter_raw()
        next(chunks)
        left = time.monotonic()  # the block's end hangs up
    until(lambda: len(lane.cancelled) == 1, timeout_s=1.0)
    gap = lane.cancelled[0] - left
    print(f"stream client left (3 s between events): upstream closed {gap:.3f} s later")
    assert gap < 1.0


def test_a_failing_health_check_opens_the_circuit(
    http: httpx.Client, faults: FaultUpstream
) -> None:
    lane = faults.script("watched", mode="hang")
    took = until(lambda: _state(http, "watched") == "circuit open")
    print(f"\nhealth check (interval 0.1 s, timeout 0.2 s) opened the circuit in {took:.3f} s")
    assert _backend(chat(http, "watched-first")) == "steady" and lane.requests == 0
    lane = faults.script("watched", mode="ok")
    until(lambda: _state(http, "watched") != "circuit open")
    assert _backend(chat(http, "watched-first")) == "watched"  # the probe, then closed
    assert _state(http, "watched") == "ok"
