"""Load-aware spill-over against a real vLLM (one sequence at a time) and a scripted closed API.

A `data_residency: self_hosted` team sends a few long requests at once: they never leave the
open tier, so they queue in vLLM (`vllm:num_requests_waiting`). The gateway's poll of vLLM's
own `/metrics` sees the queue; routine traffic spills to the closed backend until the queue
has drained, then comes back. Every step waits on a condition (a metric, an answer).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateway.load import parse
from tests.conftest import run_gateway
from tests.support.fault_upstream import FaultUpstream, fault_upstream
from tests.support.model_servers import MODEL_NAME, run_vllm
from tests.support.probing import metric, until

POLICY = """
backends:
  vllm:
    provider: openai
    base_url: "{vllm}"
    model: smollm2
    timeout_s: 600
    load: {{max_waiting: 1, interval_s: 0.2, timeout_s: 2}}
  closed: {{provider: openai, base_url: "{closed}", api_key: k, tier: closed}}
models:
  m: {{to: [vllm, closed]}}
teams:
  apps: {{keys: [sk-apps]}}
  onprem: {{keys: [sk-onprem], data_residency: self_hosted}}
"""
LONG = 4  # self-hosted requests at once: one runs, three wait (max_num_seqs 1)


@pytest.fixture(scope="module")
def vllm() -> Iterator[str]:
    with run_vllm(["--max-num-seqs", "1"]) as url:
        yield url


@pytest.fixture(scope="module")
def gw(vllm: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FaultUpstream]]:
    with fault_upstream() as faults:
        policy = POLICY.format(vllm=vllm, closed=faults.base_url("closed"))
        with run_gateway(policy, tmp=tmp_path_factory.mktemp("load-vllm")) as url:
            yield url, faults


def _chat(http: httpx.Client, key: str, max_tokens: int) -> httpx.Response:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}],
        "max_tokens": max_tokens,
        "ignore_eos": True,  # vLLM: generate all max_tokens, so each request takes a while
    }
    headers = {"authorization": f"Bearer {key}"}
    response = http.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


def _routed(http: httpx.Client, key: str = "sk-apps") -> tuple[str, str]:
    response = _chat(http, key, max_tokens=2)
    return response.headers["x-gateway-backend"], response.headers["x-gateway-reason"]


def test_the_real_vllm_exports_what_the_poll_reads(vllm: str) -> None:
    text = httpx.get(vllm.removesuffix("/v1") + "/metrics", timeout=10).content
    for name in (b"vllm:num_requests_waiting{", b"vllm:num_requests_running{"):
        assert name in text
    assert b"vllm:kv_cache_usage_perc{" in text
    sample = parse(text)
    assert sample is not None and sample.waiting is not None and sample.running is not None
    assert sample.kv_cache is not None and 0 <= sample.kv_cache <= 1


def test_a_vllm_queue_spills_routine_traffic_closed_and_it_comes_back(
    gw: tuple[str, FaultUpstream],
) -> None:
    url, faults = gw
    with httpx.Client(base_url=url, timeout=600) as http:
        until(lambda: metric(http, "gateway_load_polls_total", backend="vllm", result="ok") > 0)
        assert _routed(http) == ("vllm", "alias")

        with ThreadPoolExecutor(LONG) as pool:
            long = [pool.submit(_chat, http, "sk-onprem", 24) for _ in range(LONG)]
            until(lambda: metric(http, "gateway_backend_saturated", backend="vllm") == 1, 120)
            assert metric(http, "gateway_backend_queue_waiting", backend="vllm") > 1
            assert _routed(http) == ("closed", "spillover")
            assert faults.lane("closed").completed == 1
            # The self-hosted team queued on vLLM the whole time, none went closed.
            answers = [f.result() for f in long]
        assert {a.headers["x-gateway-backend"] for a in answers} == {"vllm"}
        assert all(a.json()["model"] == MODEL_NAME for a in answers)

        until(lambda: metric(http, "gateway_backend_saturated", backend="vllm") == 0, 60)
        assert _routed(http) == ("vllm", "alias")
        spills = {"from_backend": "vllm", "to_backend": "closed", "reason": "load"}
        assert metric(http, "gateway_spillovers_total", **spills) == 1
        changes = "gateway_backend_saturation_changes_total"
        assert metric(http, changes, backend="vllm", state="saturated") == 1
        assert metric(http, changes, backend="vllm", state="recovered") == 1
