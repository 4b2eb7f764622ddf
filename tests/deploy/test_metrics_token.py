"""A real Prometheus scrapes a gateway whose /metrics wants a token: with the documented
`authorization` block it gets the series, without it the target is down (401)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import Upstreams, run_gateway
from tests.deploy.test_prometheus_integration import _start_prometheus, query

POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open}}
models:
  m: {{to: [open]}}
"""
TOKEN = "metrics-token-for-prometheus"


def test_prometheus_scrapes_with_the_token(
    upstreams: Upstreams, tool: Callable[[str, str], str], tmp_path: Path
) -> None:
    prometheus_bin = tool("prometheus", "apt-get install prometheus")
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN)
    env = {"GATEWAY_METRICS_TOKEN": TOKEN}
    with run_gateway(POLICY.format(oai=upstreams.openai_url), env, tmp=tmp_path) as url:
        target = [url.removeprefix("http://")]
        jobs = [
            {
                "job_name": "with-token",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "static_configs": [{"targets": target}],
            },
            {"job_name": "without", "static_configs": [{"targets": target}]},
        ]
        with _start_prometheus(prometheus_bin, target, tmp_path, jobs) as prometheus:
            deadline = time.monotonic() + 30
            while True:
                up = {s["metric"]["job"]: s["value"][1] for s in query(prometheus, "up")}
                if len(up) == 2:
                    break
                assert time.monotonic() < deadline, up
                time.sleep(0.25)
            assert up == {"with-token": "1", "without": "0"}
            assert query(prometheus, 'gateway_build_info{job="with-token"}')
        assert httpx.get(url + "/metrics").status_code == 401
