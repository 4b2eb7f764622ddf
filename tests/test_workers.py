"""Several uvicorn workers on one port: both serve, and metrics are merged across them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector

from tests.conftest import Upstreams, run_gateway

POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open,
          price: {{input_per_mtok: 1.0, output_per_mtok: 1.0}}}}
models:
  "*": {{to: [open]}}
"""
WORKERS = 2
MAX_REQUESTS = 400  # a bound, not a target: the loop stops once every worker has served


def _counter(text: str, prefix: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and not line.startswith("#")
    )


def _requests_by_process(metrics_dir: Path) -> dict[str, float]:
    """gateway_requests_total per process, read from each process's own metric file."""
    served: dict[str, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = path.stem.removeprefix("counter_")
        for metric in MultiProcessCollector.merge([str(path)]):  # type: ignore[no-untyped-call]
            if metric.name == "gateway_requests":
                total = sum(s.value for s in metric.samples if s.name == "gateway_requests_total")
                served[pid] = served.get(pid, 0.0) + total
    return {pid: count for pid, count in served.items() if count > 0}


def _chat(url: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    # A new connection each time, so the kernel may hand it to either worker.
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200


def test_every_worker_serves_and_metrics_aggregate(upstreams: Upstreams, tmp_path: Path) -> None:
    # The test chooses the directory the workers share metric files in, to read them per worker.
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"GATEWAY_WORKERS": str(WORKERS), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    policy = POLICY.format(oai=upstreams.openai_url)
    with run_gateway(policy, env, tmp=tmp_path) as url, ThreadPoolExecutor(4) as pool:
        sent = 0
        deadline = time.monotonic() + 60
        # Concurrent requests in rounds of 20, until every worker has answered some.
        while len(_requests_by_process(metrics_dir)) < WORKERS:
            assert sent < MAX_REQUESTS and time.monotonic() < deadline, (
                f"after {sent} requests only these workers served: "
                f"{_requests_by_process(metrics_dir)}"
            )
            list(pool.map(_chat, [url] * 20))
            sent += 20
        with httpx.Client(base_url=url) as client:
            text = client.get("/metrics").text
    by_process = _requests_by_process(metrics_dir)
    assert len(by_process) == WORKERS and sum(by_process.values()) == sent
    # /metrics, answered by one worker, counts the requests of all of them ...
    assert _counter(text, "gateway_requests_total{") == sent
    # ... and so the cost: `sent` answers of 18 tokens at $1/Mtok.
    assert abs(_counter(text, "gateway_cost_usd_total{") - sent * 18 / 1e6) < 1e-9
