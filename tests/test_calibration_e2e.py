"""closed_share routing through the running gateway: the realised share tracks the target."""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx

from tests.conftest import Connect, Upstreams, run_gateway

POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open}}
  strong: {{provider: openai, base_url: "{oai}/v1", tier: closed, api_key: k, model: strong}}
models:
  auto:
    route:
      - when: {{closed_share: 0.25}}
        to: [strong]
      - to: [open]
"""

TOPICS = ["sorting", "taxes", "gardening", "group theory", "SQL joins", "poetry", "thermodynamics"]
ASKS = [
    "Say hi about {t}.",
    "What is {t}?",
    "Explain {t} to a child in one sentence.",
    "Prove a non-trivial theorem in {t} step by step, then analyse its complexity.",
    "Write a Python function for {t} with tests and explain every edge case.",
    "Translate 'good morning' into French and mention {t}.",
    "Derive the equations governing {t} and solve them for the general case.",
]


def _realised_share(metrics: str) -> list[float]:
    return [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('gateway_closed_share_ratio{model="auto"}')
    ]


def test_closed_share_tracks_target(upstreams: Upstreams, tmp_path: Path, connect: Connect) -> None:
    rng = random.Random(7)
    prompts = [rng.choice(ASKS).format(t=rng.choice(TOPICS)) for _ in range(400)]
    env = {"GATEWAY_CALIBRATION_SYNC_S": "0.2"}
    with run_gateway(POLICY.format(oai=upstreams.openai_url), env, tmp=tmp_path) as url:
        client = connect(url)
        tiers = []
        for prompt in prompts:
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": prompt}]
            )
            tiers.append(raw.headers["x-gateway-tier"])
        # After the prior has been outweighed by real traffic, the share tracks the target.
        late = tiers[-150:]
        share = late.count("closed") / len(late)
        assert 0.1 <= share <= 0.4, share
        # The realised-share gauge is updated by the calibration sync (every 0.2 s here).
        deadline = time.monotonic() + 10
        while not _realised_share(metrics := httpx.get(url + "/metrics").text):
            assert time.monotonic() < deadline, "gateway_closed_share_ratio never appeared"
            time.sleep(0.05)
        realised = _realised_share(metrics)
        assert 0.05 <= realised[0] <= 0.5
        assert 'gateway_closed_share_target_ratio{model="auto"} 0.25' in metrics
