"""Shadow evaluation end to end: a real gateway, scripted closed and judge backends.

The open tier is the shared scripted upstream (it echoes); the closed tier and the judge are
scripted (tests/support/scripted_closed.py) so every verdict is known.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.shadow.labels import STREAM
from tests.conftest import REPO, Upstreams, run_gateway
from tests.support.fake_upstreams import serve_in_thread
from tests.support.redis_server import RedisDb
from tests.support.scripted_closed import Scripted, scripted_app

ADMIN = "admin-test-key"


POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open,
          price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}}}
  gpt: {{provider: openai, base_url: "{s}/closed/v1", api_key: k, tier: closed, model: gpt,
         price: {{input_per_mtok: 2.0, output_per_mtok: 8.0}}}}
  judge: {{provider: openai, base_url: "{s}/judge/v1", api_key: k, tier: closed, model: j}}
models:
  auto:
    route:
      - when: {{difficulty_at_least: 0.99}}
        to: [gpt]
      - to: [open]
  to-closed: {{to: [gpt, open]}}
  sampled: {{to: [open], shadow: {{sample: 0.3, against: gpt, judge: judge, max_in_flight: 64}}}}
  busy: {{to: [open], shadow: {{sample: 1.0, against: gpt, judge: judge, max_in_flight: 1}}}}
shadow: {{sample: 1.0, against: gpt, judge: judge, max_usd_per_day: {cap}, max_in_flight: 64}}
teams:
  labelled: {{keys: [sk-labelled], retain_prompts: true}}
  private: {{keys: [sk-private]}}
  onprem: {{keys: [sk-onprem], retain_prompts: true, data_residency: self_hosted}}
"""


@pytest.fixture
def scripted() -> Iterator[tuple[Scripted, str]]:
    state = Scripted()
    with serve_in_thread(scripted_app(state)) as url:
        yield state, url


def _gateway(upstreams: Upstreams, url: str, tmp: Path, cap: float = 10.0, redis: str = "") -> Any:
    policy = POLICY.format(oai=upstreams.openai_url, s=url, cap=cap)
    env = {"GATEWAY_ADMIN_KEY": ADMIN, "GATEWAY_REDIS_URL": redis}
    return run_gateway(policy, env=env, tmp=tmp)


def _labels(gateway: str, expect: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Wait until the gateway holds at least ``expect`` labels; return them."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(
            gateway + "/admin/labels", headers={"authorization": f"Bearer {ADMIN}"}
        )
        records = [orjson.loads(line) for line in response.content.splitlines()]
        if len(records) >= expect or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def _metric(gateway: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(gateway + "/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _client(gateway: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway + "/v1", api_key=key, max_retries=0)


def test_labels_have_the_judged_values_and_never_delay_the_client(
    upstreams: Upstreams, scripted: tuple[Scripted, str], tmp_path: Path
) -> None:
    state, url = scripted
    state.closed_delay_s = 0.5
    with _gateway(upstreams, url, tmp_path) as gateway, _client(gateway, "sk-labelled") as client:
        asked, answered = {}, {}
        for prompt in ("HARD: prove it", "easy one", "SAME words"):
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": prompt}]
            )
            answered[prompt] = time.monotonic()
            assert raw.headers["x-gateway-tier"] == "open"
            asked[raw.headers["x-request-id"]] = prompt
        records = {r["id"]: r for r in _labels(gateway, 3)}
    assert set(records) == set(asked)
    # Each client had its answer before its shadow call (0.5 s on the closed tier) ended.
    assert all(answered[p] < state.closed_done[p] for p in answered)
    by_prompt = {asked[i]: r for i, r in records.items()}
    assert by_prompt["HARD: prove it"]["label"] == 1.0
    assert by_prompt["HARD: prove it"]["source"] == "judge"
    assert by_prompt["easy one"]["label"] == 0.0
    assert by_prompt["SAME words"] == {
        **by_prompt["SAME words"],
        "label": 0.0,
        "source": "identical",
    }
    hard = by_prompt["HARD: prove it"]
    assert hard["messages"] == [{"role": "user", "content": "HARD: prove it"}]
    assert hard["open_backend"] == "open" and hard["closed_backend"] == "gpt"
    # Judged both ways round: the closed answer once as A, once as B.
    hard_prompts = [p for p in state.judge_prompts if "HARD" in p]
    assert len(hard_prompts) == 2
    assert (
        "## Answer A\nclosed:" in hard_prompts[1] and "## Answer A\nclosed:" not in hard_prompts[0]
    )


def test_closed_answers_are_shadowed_by_the_open_tier(
    upstreams: Upstreams, scripted: tuple[Scripted, str], tmp_path: Path
) -> None:
    _, url = scripted
    with _gateway(upstreams, url, tmp_path) as gateway, _client(gateway, "sk-labelled") as client:
        raw = client.chat.completions.with_raw_response.create(
            model="to-closed", messages=[{"role": "user", "content": "HARD question"}]
        )
        assert raw.headers["x-gateway-tier"] == "closed"
        (record,) = _labels(gateway, 1)
    assert record["routed"] == "gpt" and record["open_backend"] == "open"
    assert record["label"] == 1.0


def test_streams_are_shadowed_from_the_assembled_answer(
    upstreams: Upstreams, scripted: tuple[Scripted, str], tmp_path: Path
) -> None:
    _, url = scripted
    with _gateway(upstreams, url, tmp_path) as gateway, _client(gateway, "sk-labelled") as client:
        stream = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "HARD stream"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "echo: HARD stream"
        (record,) = _labels(gateway, 1)
    assert record["label"] == 1.0


def test_sampling_rate_concurrency_bound_and_daily_cap(
    upstreams: Upstreams, scripted: tuple[Scripted, str], tmp_path: Path
) -> None:
    state, url = scripted
    # One shadow costs 100 × 2 + 50 × 8 = 600 µUSD at gpt's prices (judge calls are free).
    with (
        _gateway(upstreams, url, tmp_path, cap=0.0009) as gateway,
        _client(gateway, "sk-labelled") as client,
    ):
        for i in range(200):
            client.chat.completions.create(
                model="sampled", messages=[{"role": "user", "content": f"easy {i}"}]
            )
        labelled = _metric(gateway, "gateway_shadow_requests_total", model="sampled")
        # 200 draws at 0.3: 60 expected; 5 standard deviations either side.
        assert 28 <= labelled <= 92, labelled
        # The cap (0.0009 USD) is reached after two shadows on the policy-wide block.
        for i in range(6):
            client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": f"capped {i}"}]
            )
            time.sleep(0.05)
        _labels(gateway, 1)
        assert _metric(gateway, "gateway_shadow_requests_total", outcome="dropped_budget") >= 1
        state.closed_delay_s = 0.5
        for i in range(5):
            client.chat.completions.create(
                model="busy", messages=[{"role": "user", "content": f"busy {i}"}]
            )
        assert (
            _metric(gateway, "gateway_shadow_requests_total", model="busy", outcome="dropped_busy")
            >= 3
        )


def test_no_labels_without_opt_in_and_never_closed_for_self_hosted_teams(
    upstreams: Upstreams, scripted: tuple[Scripted, str], tmp_path: Path
) -> None:
    state, url = scripted
    with _gateway(upstreams, url, tmp_path) as gateway:
        with _client(gateway, "sk-private") as private:
            private.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "HARD private"}]
            )
        with _client(gateway, "sk-onprem") as onprem:
            raw = onprem.chat.completions.with_raw_response.create(
                model="to-closed", messages=[{"role": "user", "content": "HARD onprem"}]
            )
            assert raw.headers["x-gateway-tier"] == "open"
        time.sleep(0.5)  # give a (wrong) shadow call time to happen
        assert _labels(gateway, 0, timeout_s=0) == []
    assert state.closed_calls == []


def test_feedback_joins_by_request_id_and_export_round_trips(
    upstreams: Upstreams, scripted: tuple[Scripted, str], tmp_path: Path
) -> None:
    _, url = scripted
    with _gateway(upstreams, url, tmp_path) as gateway, _client(gateway, "sk-labelled") as client:
        raw = client.chat.completions.with_raw_response.create(
            model="sampled", messages=[{"role": "user", "content": "rate me"}]
        )
        request_id = raw.headers["x-request-id"]
        post = httpx.post(
            gateway + "/v1/feedback",
            json={"request_id": request_id, "label": 0.75},
            headers={"authorization": "Bearer sk-labelled"},
        )
        assert post.status_code == 200, post.text
        other = httpx.post(
            gateway + "/v1/feedback",
            json={"request_id": request_id, "label": 0.5},
            headers={"authorization": "Bearer sk-private"},
        )
        assert other.status_code == 404 and other.json()["error"]["type"] == "not_found_error"
        bad = httpx.post(
            gateway + "/v1/feedback",
            json={"request_id": request_id, "label": 2},
            headers={"authorization": "Bearer sk-labelled"},
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "label"
        records = _labels(gateway, 1)
        feedback = [r for r in records if r["source"] == "feedback"]
        assert feedback and feedback[0]["label"] == 0.75
        assert feedback[0]["messages"] == [{"role": "user", "content": "rate me"}]
        out = tmp_path / "labels.jsonl"
        command = [sys.executable, "-m", "gateway", "shadow", "export", "--out", str(out)]
        command += ["--gateway", gateway, "--admin-key", ADMIN, "--team", "labelled"]
        subprocess.run(command, check=True, cwd=REPO, capture_output=True)
    exported = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["id"] for r in exported] == [r["id"] for r in records]
    assert all({"id", "messages", "label"} <= set(r) for r in exported)


def test_labels_and_feedback_go_through_redis(
    upstreams: Upstreams, scripted: tuple[Scripted, str], tmp_path: Path, redis_db: RedisDb
) -> None:
    _, url = scripted
    with (
        _gateway(upstreams, url, tmp_path, redis=redis_db.url) as gateway,
        _client(gateway, "sk-labelled") as client,
    ):
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "HARD in redis"}]
        )
        request_id = raw.headers["x-request-id"]
        (label,) = _labels(gateway, 1)
        assert label["id"] == request_id and label["label"] == 1.0
        post = httpx.post(
            gateway + "/v1/feedback",
            json={"request_id": request_id, "label": 0.0},
            headers={"authorization": "Bearer sk-labelled"},
        )
        assert post.status_code == 200, post.text
    with redis_db.client() as r:
        assert r.xlen(STREAM) == 2
        # The retained request is keyed by tenant partition: no clear key, no other tenant.
        keys = [k.decode() for k in r.scan_iter(match="gateway:retained:*")]
        assert keys == [f"gateway:retained:v1:team:labelled:{request_id}"]
    out = tmp_path / "labels.jsonl"
    command = [sys.executable, "-m", "gateway", "shadow", "export", "--out", str(out)]
    subprocess.run([*command, "--redis", redis_db.url], check=True, cwd=REPO, capture_output=True)
    exported = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(r["source"], r["label"]) for r in exported] == [("judge", 1.0), ("feedback", 0.0)]
