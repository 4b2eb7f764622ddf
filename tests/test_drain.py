"""SIGTERM with requests in flight, against real gateway processes.

Within the grace, streams finish; at its end, what still runs ends with an error (an SSE
error event on a stream, a 503 on a whole answer), is logged with that status, and the
process exits.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import GATEWAY_PROCS, run_gateway
from tests.support.fault_upstream import FaultUpstream, fault_upstream
from tests.support.probing import access_log, until

POLICY = """
backends:
  long: {{provider: openai, base_url: "{long}", tier: open}}
  hung: {{provider: openai, base_url: "{hung}", tier: open}}
models:
  "*": {{to: [long]}}
  hung: {{to: [hung]}}
"""


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultUpstream]:
    with fault_upstream() as upstream:
        yield upstream


class Streamer(threading.Thread):
    """Reads one stream in the background; `started` is set at its first event."""

    def __init__(self, url: str, model: str = "any") -> None:
        super().__init__(daemon=True)
        self.url, self.model = url, model
        self.started = threading.Event()
        self.events: list[bytes] = []
        self.ended_at = 0.0

    def run(self) -> None:
        body = {"model": self.model, "stream": True, "messages": [{"role": "user", "content": "x"}]}
        with httpx.stream("POST", self.url + "/v1/chat/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    self.events.append(line[5:].strip().encode())
                    self.started.set()
        self.ended_at = time.monotonic()


def _policy(faults: FaultUpstream) -> str:
    return POLICY.format(long=faults.base_url("long"), hung=faults.base_url("hung"))


def test_streams_in_flight_finish_within_the_grace(faults: FaultUpstream, tmp_path: Path) -> None:
    faults.script("long", mode="ok", chunks=8, gap_s=0.15)
    env = {"GATEWAY_DRAIN_GRACE_S": "5", "GATEWAY_DRAIN_DELAY_S": "0.5"}
    with run_gateway(_policy(faults), env, tmp=tmp_path) as url:
        streams = [Streamer(url) for _ in range(3)]
        for s in streams:
            s.start()
        assert all(s.started.wait(5) for s in streams)
        proc = GATEWAY_PROCS[url]
        term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        ready = httpx.get(url + "/readyz", timeout=2)  # still accepting for drain_delay_s
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        proc.wait(10)
        exited = time.monotonic() - term
        for s in streams:
            s.join(5)
        print(f"\nSIGTERM, 3 streams of ~1.1 s in flight: process exited after {exited:.2f} s")
        assert all(s.events[-1] == b"[DONE]" for s in streams)
        assert exited < 5
        statuses = [e["status"] for e in access_log(url, wait_s=0)]
        assert statuses[-3:] == [200, 200, 200]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_what_runs_past_the_grace_ends_with_an_error(
    faults: FaultUpstream, tmp_path: Path, signum: signal.Signals
) -> None:
    lane = faults.script("long", mode="ok", chunks=20, gap_s=0.2)
    faults.script("hung", mode="hang")
    env = {"GATEWAY_DRAIN_GRACE_S": "0.6"}
    with run_gateway(_policy(faults), env, tmp=tmp_path) as url:
        stream = Streamer(url)
        stream.start()
        assert stream.started.wait(5)
        whole: list[httpx.Response] = []
        waiter = threading.Thread(
            target=lambda: whole.append(
                httpx.post(
                    url + "/v1/chat/completions",
                    json={"model": "hung", "messages": [{"role": "user", "content": "x"}]},
                    timeout=10,
                )
            )
        )
        waiter.start()
        until(lambda: faults.lane("hung").in_flight == 1)
        proc = GATEWAY_PROCS[url]
        term = time.monotonic()
        proc.send_signal(signum)
        proc.wait(10)
        exited = time.monotonic() - term
        stream.join(5)
        waiter.join(5)
        cut = stream.ended_at - term
        print(f"\n{signum.name}, grace 0.6 s: stream cut with an error event after {cut:.2f} s,")
        print(f"process exited after {exited:.2f} s")
        assert b"[DONE]" not in stream.events
        error = orjson.loads(stream.events[-1])["error"]
        assert error["code"] == "gateway_shutting_down"
        assert 0.6 <= cut < 1.5
        assert whole[0].status_code == 503
        assert whole[0].json()["error"]["code"] == "gateway_shutting_down"
        until(lambda: len(lane.cancelled) == 1 and len(faults.lane("hung").cancelled) == 1)
        statuses = sorted(e["status"] for e in access_log(url, wait_s=0))
        assert statuses == [503, 503]
