"""Team keys, rate limits and daily budgets, with Redis and without."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import Upstreams, run_gateway

POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open,
          price: {{input_per_mtok: 1000.0, output_per_mtok: 1000.0}}}}
models:
  m: {{to: [open]}}
  other: {{to: [open]}}
teams:
  small:
    keys: [sk-small-{tag}]
    limits: {{requests_per_minute: 3}}
  broke:
    keys: [sk-broke-{tag}]
    limits: {{budget_usd_per_day: 0.001}}
  narrow:
    keys: [sk-narrow-{tag}]
    allowed_models: [m]
"""


@pytest.fixture(scope="module", params=["redis", "in-process"])
def limited_gateway(
    request: pytest.FixtureRequest, upstreams: Upstreams
) -> Iterator[tuple[str, str]]:
    tag = f"{request.param}-{time.time_ns()}"
    env = {"GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/10"} if request.param == "redis" else {}
    with run_gateway(POLICY.format(oai=upstreams.openai_url, tag=tag), env) as url:
        yield url, tag
    if request.param == "redis":
        subprocess.run(["redis-cli", "-n", "10", "flushdb"], check=True, capture_output=True)


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def _chat(client: openai.OpenAI, model: str = "m") -> None:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def test_keys_are_required_when_teams_exist(limited_gateway: tuple[str, str]) -> None:
    url, _ = limited_gateway
    with pytest.raises(openai.AuthenticationError) as info:
        _chat(_client(url, "sk-unknown"))
    assert info.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        _client(url, "sk-unknown").models.list()


def test_allowed_models(limited_gateway: tuple[str, str]) -> None:
    url, tag = limited_gateway
    client = _client(url, f"sk-narrow-{tag}")
    _chat(client, "m")
    with pytest.raises(openai.PermissionDeniedError):
        _chat(client, "other")
    assert [m.id for m in client.models.list()] == ["m"]


def test_rate_limit(limited_gateway: tuple[str, str]) -> None:
    url, tag = limited_gateway
    client = _client(url, f"sk-small-{tag}")
    # Stay inside one minute window so the count is not split across two.
    if time.time() % 60 > 55:
        time.sleep(6)
    for _ in range(3):
        _chat(client)
    with pytest.raises(openai.RateLimitError) as info:
        _chat(client)
    assert info.value.response.headers["retry-after"].isdigit()


def test_daily_budget(limited_gateway: tuple[str, str]) -> None:
    url, tag = limited_gateway
    client = _client(url, f"sk-broke-{tag}")
    _chat(client)  # 18 tokens at $1000/Mtok = $0.018 > $0.001 budget
    deadline = time.monotonic() + 5
    while True:
        try:
            _chat(client)
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota"
            break
        assert time.monotonic() < deadline, "the budget was never enforced"
        time.sleep(0.1)
