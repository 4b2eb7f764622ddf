"""Load-aware spill-over against a real gateway (2 workers) and a scripted vLLM `/metrics`.

The open backend's lane reports a queue; past `max_waiting` routine traffic spills to the
closed backend (`x-gateway-reason: spillover`), a `data_residency: self_hosted` team queues
on the open one (or gets a 503 where `when_saturated: reject`), and once the queue is back
under `recover_at` of the limit traffic returns. Every step waits on a condition (a metric,
a poll count), never on a clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_gateway
from tests.support.fault_upstream import FaultUpstream, fault_upstream
from tests.support.probing import metric, until
from tests.test_workers import _requests_by_process

POLICY = """
backends:
  vllm:
    provider: openai
    base_url: "{vllm}"
    load: {{max_waiting: 4, interval_s: 0.1, timeout_s: 0.5}}
  strict:
    provider: openai
    base_url: "{strict}"
    load: {{max_waiting: 4, interval_s: 0.1, when_saturated: reject}}
  closed: {{provider: openai, base_url: "{closed}", api_key: k, tier: closed}}
  rare:
    provider: openai
    base_url: "{rare}"
    load: {{max_waiting: 4, interval_s: 600}}
models:
  m: {{to: [vllm, closed]}}
  strict: {{to: [strict, closed]}}
teams:
  apps: {{keys: [sk-apps]}}
  onprem: {{keys: [sk-onprem], data_residency: self_hosted}}
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FaultUpstream]]:
    with fault_upstream() as faults:
        for lane in ("vllm", "strict", "rare"):
            faults.queue(lane, waiting=0)
        lanes = {lane: faults.base_url(lane) for lane in ("vllm", "strict", "closed", "rare")}
        tmp = tmp_path_factory.mktemp("load-spill")
        metrics_dir = tmp / "metrics"
        metrics_dir.mkdir()
        env = {"GATEWAY_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        with run_gateway(POLICY.format(**lanes), env, tmp=tmp) as url:
            METRICS_DIRS[url] = metrics_dir
            yield url, faults


METRICS_DIRS: dict[str, Path] = {}


def _chat(http: httpx.Client, key: str, model: str = "m") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


def _routed(http: httpx.Client, key: str, model: str = "m") -> tuple[str, str]:
    response = _chat(http, key, model)
    assert response.status_code == 200, response.text
    return response.headers["x-gateway-backend"], response.headers["x-gateway-reason"]


def _saturated(http: httpx.Client, backend: str = "vllm") -> float:
    return metric(http, "gateway_backend_saturated", backend=backend)


def _polls_pass(faults: FaultUpstream, lane: str, n: int) -> None:
    """Wait until the lane's `/metrics` has been asked ``n`` more times."""
    seen = faults.lane(lane).polls
    until(lambda: faults.lane(lane).polls >= seen + n, timeout_s=10)


def test_a_queue_past_its_limit_spills_routine_traffic_and_recovers(
    gw: tuple[str, FaultUpstream],
) -> None:
    url, faults = gw
    with httpx.Client(base_url=url, timeout=10) as http:
        until(lambda: metric(http, "gateway_load_polls_total", backend="vllm", result="ok") > 0)
        assert _routed(http, "sk-apps") == ("vllm", "alias")

        faults.queue("vllm", waiting=9, running=8, kv=0.4)
        until(lambda: _saturated(http) == 1, timeout_s=10)
        assert metric(http, "gateway_backend_queue_waiting", backend="vllm") == 9
        assert metric(http, "gateway_backend_queue_running", backend="vllm") == 8
        assert metric(http, "gateway_backend_kv_cache_usage_ratio", backend="vllm") == 0.4
        readyz = http.get("/readyz").json()["backends"]
        assert readyz["vllm"]["saturated"] is True and "saturated" not in readyz["closed"]
        for _ in range(3):
            assert _routed(http, "sk-apps") == ("closed", "spillover")
        # The self-hosted team is never spilled closed: it queues on the open backend.
        assert _routed(http, "sk-onprem") == ("vllm", "alias")

        faults.queue("vllm", waiting=3.5)  # under the limit, over 80% of it: still saturated
        _polls_pass(faults, "vllm", 3)
        assert _saturated(http) == 1
        assert _routed(http, "sk-apps") == ("closed", "spillover")

        faults.queue("vllm", waiting=2)
        until(lambda: _saturated(http) == 0, timeout_s=10)
        assert _routed(http, "sk-apps") == ("vllm", "alias")

        spills = {"from_backend": "vllm", "to_backend": "closed", "reason": "load"}
        assert metric(http, "gateway_spillovers_total", **spills) == 4
        changes = "gateway_backend_saturation_changes_total"
        assert metric(http, changes, backend="vllm", state="saturated") == 1
        assert metric(http, changes, backend="vllm", state="recovered") == 1
        decisions = {"model": "m", "tier": "closed", "reason": "spillover"}
        assert metric(http, "gateway_routing_decisions_total", **decisions) == 4


def test_reject_answers_a_self_hosted_team_503_with_retry_after(
    gw: tuple[str, FaultUpstream],
) -> None:
    url, faults = gw
    with httpx.Client(base_url=url, timeout=10) as http:
        faults.queue("strict", waiting=50)
        until(lambda: _saturated(http, "strict") == 1, timeout_s=10)
        refused = _chat(http, "sk-onprem", "strict")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "saturated" in refused.json()["error"]["message"]
        assert _routed(http, "sk-apps", "strict") == ("closed", "spillover")
        faults.queue("strict", waiting=0)
        until(lambda: _saturated(http, "strict") == 0, timeout_s=10)
        assert _routed(http, "sk-onprem", "strict") == ("strict", "alias")


def test_a_failing_poll_never_saturates(gw: tuple[str, FaultUpstream]) -> None:
    url, faults = gw
    with httpx.Client(base_url=url, timeout=10) as http:
        failed = metric(http, "gateway_load_polls_total", backend="vllm", result="failed")
        faults.lane("vllm").metrics = None  # /metrics answers 500
        until(
            lambda: (
                metric(http, "gateway_load_polls_total", backend="vllm", result="failed")
                >= failed + 5
            ),
            timeout_s=10,
        )
        assert _saturated(http) == 0
        assert _routed(http, "sk-apps") == ("vllm", "alias")
        faults.queue("vllm", waiting=0)


def test_one_poll_per_interval_for_the_whole_replica(gw: tuple[str, FaultUpstream]) -> None:
    url, faults = gw
    # Once a worker has answered a request its loop has made its first claim: with both
    # workers serving, `rare` (interval 600 s) was polled once, not once per worker.
    for _ in range(20):
        if len(_requests_by_process(METRICS_DIRS[url])) >= 2:
            break
        for _ in range(20):  # new connections, so the kernel hands some to each worker
            with httpx.Client(base_url=url, timeout=10) as http:
                _routed(http, "sk-apps", "strict")
    assert len(_requests_by_process(METRICS_DIRS[url])) == 2
    assert faults.lane("rare").polls == 1
