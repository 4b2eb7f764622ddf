"""Several uvicorn workers on one port: metrics are merged across them."""

from __future__ import annotations

import httpx

from tests.conftest import Upstreams, run_gateway

POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open,
          price: {{input_per_mtok: 1.0, output_per_mtok: 1.0}}}}
models:
  "*": {{to: [open]}}
"""


def _counter(text: str, prefix: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and not line.startswith("#")
    )


def test_metrics_aggregate_over_workers(upstreams: Upstreams) -> None:
    with run_gateway(POLICY.format(oai=upstreams.openai_url), {"GATEWAY_WORKERS": "2"}) as url:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(base_url=url) as client:
            for _ in range(40):
                # A new connection each time spreads requests over both workers.
                response = httpx.post(url + "/v1/chat/completions", json=body)
                assert response.status_code == 200
            text = client.get("/metrics").text
    assert _counter(text, "gateway_requests_total{") == 40
    # 40 answers of 18 tokens at $1/Mtok.
    assert abs(_counter(text, "gateway_cost_usd_total{") - 40 * 18 / 1e6) < 1e-9
