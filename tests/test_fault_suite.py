"""The fault-injection suite (`bench/fault_suite.py`) in its short form, with the real vLLM.

One run of the `SHORT` timeline (a few seconds per phase, 12 clients, `gateway serve
--workers 2`, the scripted upstream in a process of its own, vLLM as the fallback) and one
test per property of issue 14's "Must reach", asserted on what the upstreams, the clients
and `/metrics` counted, never on how long anything took. Its tables print with `-s`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.fault_suite import SHORT, Run, fault_figures, kill_figures, report, run_suite
from tests.support import model_servers


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with model_servers.run_vllm() as vllm_url:
        done = run_suite(SHORT, vllm_url, tmp_path_factory.mktemp("fault-suite"))
    print("\n" + report(done))
    yield done


def test_both_upstreams_served_and_every_phase_met_its_condition(run: Run) -> None:
    backends = {r.backend for r in run.results if r.ok}
    assert {"scripted", "vllm"} <= backends
    assert run.vllm_requests > 0  # vLLM's own count: the real server answered
    # warm: its circuit closed; killed: opened; back, healed: closed again; faults: a probe
    # failed.
    assert run.held == dict.fromkeys(
        ["warm", "killed", "back", "hang", "hang_healed", "fail500", "fail_healed"], True
    )


def test_killing_an_upstream_fails_only_streams_past_their_first_byte(run: Run) -> None:
    kill = kill_figures(run)
    assert kill.whole_failed == 0, [r for r in run.results if not r.ok and not r.stream]
    # Every stream that did not end with [DONE] was on the killed upstream when it died, had
    # sent at least one event, and ended with the gateway's SSE error event (never cut).
    assert kill.cut_as_allowed == len(kill.streams_cut), kill.streams_cut
    # Restarted, it answered again (a request sent after the kill, answered by it).
    assert kill.back_answers > 0


@pytest.mark.parametrize(("fault", "healed"), [("hang", "hang_healed"), ("fail500", "fail_healed")])
def test_a_faulty_upstream_gets_one_probe_at_a_time_then_traffic_back(
    run: Run, fault: str, healed: str
) -> None:
    figures = fault_figures(run, fault, healed)
    lo, hi = run.marks[fault], run.marks[healed]
    failed = [r for r in run.results if lo <= r.started < hi and not r.ok]
    assert failed == []
    assert figures.opened >= 1  # its circuit opened
    # Once open, only probes reached it: at least one (the fault outlasts timeout_s + open_s),
    # never two at once, none before its first failure; and the gateway itself hung up on
    # every request the hung upstream held (the upstream would have waited 30 s).
    assert figures.probes >= 1
    assert figures.reached == figures.wave + figures.probes
    assert figures.probe_overlaps == 0
    assert figures.probes_before_first_failure == 0
    assert figures.not_hung_up == 0
    # Healed: a probe succeeded, the circuit closed, the upstream answered again.
    assert figures.probe_successes >= 1 and figures.closed >= 1
    assert figures.healed_answers > 0


def test_sigterm_lets_the_long_streams_finish_within_the_default_drain(run: Run) -> None:
    assert run.in_flight_at_term == SHORT.drain_streams
    assert [d.end for d in run.drained] == ["done"] * SHORT.drain_streams
    assert run.exit_code == 0
    longs = [e["status"] for e in run.access if str(e.get("model", "")).startswith("long")]
    assert longs == [200] * SHORT.drain_streams


def test_a_client_leaving_closes_the_upstream_connection(run: Run) -> None:
    # The upstream saw each connection closed by the gateway (within 5 s of the client
    # leaving, not when its own 30 s hang ran out); each was logged as 499.
    assert len(run.leaves) == 4 and None not in run.leaves
    leaving = [e["status"] for e in run.access if e.get("model") == "leave"]
    assert leaving == [499] * 4
