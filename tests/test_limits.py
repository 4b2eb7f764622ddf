"""Team keys, rate limits and daily budgets, with Redis and without."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import openai
import pytest

from tests.conftest import Connect, Upstreams, run_gateway
from tests.support.redis_server import RedisServer

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
    request: pytest.FixtureRequest,
    upstreams: Upstreams,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    tag = f"{request.param}-{time.time_ns()}"
    with ExitStack() as stack:
        env: dict[str, str] = {}
        if request.param == "redis":
            # Only this parameter needs the test Redis (and skips without redis-server).
            server: RedisServer = request.getfixturevalue("redis_server")
            env["GATEWAY_REDIS_URL"] = stack.enter_context(server.lease()).url
        policy = POLICY.format(oai=upstreams.openai_url, tag=tag)
        tmp = tmp_path_factory.mktemp(f"limits-{request.param}")
        yield stack.enter_context(run_gateway(policy, env, tmp=tmp)), tag


def _chat(client: openai.OpenAI, model: str = "m") -> None:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def _minute() -> int:
    """The limiter's fixed window: the minute since the epoch."""
    return int(time.time() // 60)


def test_keys_are_required_when_teams_exist(
    limited_gateway: tuple[str, str], connect: Connect
) -> None:
    url, _ = limited_gateway
    stranger = connect(url, "sk-unknown")
    with pytest.raises(openai.AuthenticationError) as info:
        _chat(stranger)
    assert info.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()


def test_allowed_models(limited_gateway: tuple[str, str], connect: Connect) -> None:
    url, tag = limited_gateway
    client = connect(url, f"sk-narrow-{tag}")
    _chat(client, "m")
    with pytest.raises(openai.PermissionDeniedError):
        _chat(client, "other")
    assert [m.id for m in client.models.list()] == ["m"]


def test_rate_limit(limited_gateway: tuple[str, str], connect: Connect) -> None:
    url, tag = limited_gateway
    client = connect(url, f"sk-small-{tag}")
    # Four requests in one minute window, so the count is not split across two: wait (at
    # most one window) until the window has a few seconds left, and check it did not change.
    deadline = time.monotonic() + 10
    while time.time() % 60 > 55:
        assert time.monotonic() < deadline, "the clock did not reach a new minute"
        time.sleep(0.05)
    window = _minute()
    for _ in range(3):
        _chat(client)
    refused: openai.RateLimitError | None = None
    try:
        _chat(client)
    except openai.RateLimitError as exc:
        refused = exc
    assert _minute() == window, "the requests spanned two windows"
    assert refused is not None, "a 4th request within the minute was answered"
    assert refused.response.headers["retry-after"].isdigit()


def test_daily_budget(limited_gateway: tuple[str, str], connect: Connect) -> None:
    url, tag = limited_gateway
    client = connect(url, f"sk-broke-{tag}")
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
