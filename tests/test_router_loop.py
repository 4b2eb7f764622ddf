"""The loop, live: labels from shadow evaluation → `adapt` in a child process → a new artifact
in Redis → served here and by a replica that starts later; rollback on every replica."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Connect, Upstreams, run_gateway
from tests.support.fake_upstreams import serve_in_thread
from tests.support.redis_server import RedisDb
from tests.support.scripted_closed import Scripted, scripted_app

ADMIN = "router-admin-key"
POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open}}
  gpt: {{provider: openai, base_url: "{s}/closed/v1", api_key: k, tier: closed, model: gpt}}
  judge: {{provider: openai, base_url: "{s}/judge/v1", api_key: k, tier: closed, model: j}}
models:
  auto: {{to: [open]}}
shadow: {{sample: 1.0, against: gpt, judge: judge, max_in_flight: 64}}
router: {{adapt: auto, min_labels: 80, every_s: 1}}
teams:
  labelled: {{keys: [sk-labelled], retain_prompts: true}}
"""
WORDS = ["apple", "river", "stone", "cloud", "paper", "glass", "tiger", "piano", "orbit"]
WORDS += ["candle", "maple", "silver"]


@pytest.fixture
def scripted() -> Iterator[str]:
    with serve_in_thread(scripted_app(Scripted())) as url:
        yield url


def _router(gateway: str) -> dict[str, str]:
    headers = {"authorization": f"Bearer {ADMIN}"}
    body: dict[str, str] = httpx.get(gateway + "/admin/router", headers=headers).json()
    return body


def _score(client: object, prompt: str) -> tuple[float, str]:
    raw = client.chat.completions.with_raw_response.create(  # type: ignore[attr-defined]
        model="auto", messages=[{"role": "user", "content": prompt}]
    )
    return float(raw.headers["x-gateway-difficulty"]), raw.headers["x-gateway-classifier"]


def test_labels_adapt_the_live_artifact_and_rollback_returns(
    upstreams: Upstreams, scripted: str, tmp_path: Path, redis_db: RedisDb, connect: Connect
) -> None:
    policy = POLICY.format(oai=upstreams.openai_url, s=scripted)
    env = {"GATEWAY_REDIS_URL": redis_db.url, "GATEWAY_ADMIN_KEY": ADMIN}
    probe = "HARD lantern quartz riddle"
    with run_gateway(policy, env, tmp=tmp_path) as gateway:
        client = connect(gateway, "sk-labelled")
        base_score, base_version = _score(client, probe)
        pairs = list(itertools.permutations(WORDS[:12], 2))[:60]
        for a, b in pairs:  # "HARD ..." is judged worse on the open tier, "easy ..." a tie
            _score(client, f"HARD {a} {b} question")
            _score(client, f"easy {a} {b} question")
        deadline = time.monotonic() + 120
        while _router(gateway)["classifier_version"] == base_version:
            assert time.monotonic() < deadline, "the loop did not adapt"
            time.sleep(0.5)
        live = _router(gateway)
        assert live["shared_version"] == live["classifier_version"] != base_version
        score, version = _score(client, probe)
        assert version == live["classifier_version"]
        assert score > base_score + 0.1, (base_score, score)
        # A replica that starts now serves the live artifact from its first request.
        with run_gateway(policy, env, tmp=tmp_path) as replica:
            other = connect(replica, "sk-labelled")
            assert _score(other, probe)[1] == live["classifier_version"]
            back = httpx.post(
                gateway + "/admin/router/rollback", headers={"authorization": f"Bearer {ADMIN}"}
            )
            assert back.status_code == 200 and back.json()["classifier_version"] == base_version
            assert _score(client, probe)[1] == base_version
            deadline = time.monotonic() + 15  # the replica follows within its sync period
            while _score(other, probe)[1] != base_version:
                assert time.monotonic() < deadline, "the replica did not follow the rollback"
                time.sleep(0.2)
