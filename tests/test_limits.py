"""Team keys, rate limits and budgets end to end: real gateway processes, with a Redis the
tests start and without one; several processes sharing one Redis enforce one limit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.conftest import Upstreams, run_gateway
from tests.support.redis_process import running_redis

POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open,
          price: {{input_per_mtok: 1000.0, output_per_mtok: 1000.0}}}}
  mute: {{provider: openai, base_url: "{oai}/nousage/v1", tier: open,
          price: {{input_per_mtok: 1000.0, output_per_mtok: 1000.0}}}}
models:
  m: {{to: [open]}}
  other: {{to: [open]}}
  mute: {{to: [mute]}}
teams:
  counted:
    keys: [sk-counted-{tag}]
    limits: {{requests_per_minute: 100, tokens_per_minute: 100000}}
  unreported:
    keys: [sk-unreported-{tag}]
    limits: {{budget_usd_per_day: 0.01}}
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


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(Path(tmp_path_factory.mktemp("redis"))) as url:
        yield url


@pytest.fixture(scope="module", params=["redis", "in-process"])
def limited_gateway(
    request: pytest.FixtureRequest, upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    tag = f"{request.param}-{time.time_ns()}"
    policy = POLICY.format(oai=upstreams.openai_url, tag=tag)
    tmp = tmp_path_factory.mktemp("gateway")
    if request.param == "in-process":
        with run_gateway(policy, tmp=tmp) as url:
            yield url, tag
        return
    redis_url = request.getfixturevalue("redis_url")
    with run_gateway(policy, {"GATEWAY_REDIS_URL": redis_url}, tmp=tmp) as url:
        yield url, tag


_OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Every client a test made is closed when it ends (no leaked sockets)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def _client(url: str, key: str) -> openai.OpenAI:
    made = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    _OPEN.append(made)
    return made


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
    for left in (2, 1, 0):
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(left)
    with pytest.raises(openai.RateLimitError) as info:
        _chat(client)
    assert info.value.code == "rate_limit_exceeded"
    assert 55 <= int(info.value.response.headers["retry-after"]) <= 60


def test_tokens_settle_with_real_usage_streams_included(limited_gateway: tuple[str, str]) -> None:
    url, tag = limited_gateway
    client = _client(url, f"sk-counted-{tag}")
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert [c for c in stream if c.usage is not None] == []  # the client did not ask for usage
    deadline = time.monotonic() + 5
    while True:  # the stream's settlement runs after its last event
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        used = 100_000 - int(raw.headers["x-ratelimit-remaining-tokens"])
        # the stream's 18 real tokens, and this request's estimate (its body's bytes / 4)
        if used < 18 + 30:
            break
        assert time.monotonic() < deadline, f"{used} tokens counted"
        time.sleep(0.1)
    assert used > 18


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
            assert int(exc.response.headers["retry-after"]) >= 1
            break
        assert time.monotonic() < deadline, "the budget was never enforced"
        time.sleep(0.1)


def test_an_answer_without_usage_is_charged_an_estimate(limited_gateway: tuple[str, str]) -> None:
    url, tag = limited_gateway
    client = _client(url, f"sk-unreported-{tag}")
    _chat(client, "mute")  # no usage; ~70 estimated tokens at $1000/Mtok > $0.01
    deadline = time.monotonic() + 5
    while True:
        try:
            _chat(client, "mute")
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota"
            break
        assert time.monotonic() < deadline, "an answer without usage was charged nothing"
        time.sleep(0.1)


SHARED = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open}}
models:
  m: {{to: [open]}}
teams:
  shared:
    keys: [sk-shared]
    limits: {{requests_per_minute: 6}}
"""


def test_processes_sharing_one_redis_enforce_one_limit(
    upstreams: Upstreams, redis_url: str, tmp_path: Path
) -> None:
    env = {"GATEWAY_REDIS_URL": redis_url, "GATEWAY_REPLICAS": "2"}
    policy = SHARED.format(oai=upstreams.openai_url)
    with (
        run_gateway(policy, env, tmp=tmp_path) as first,
        run_gateway(policy, env, tmp=tmp_path) as second,
    ):
        clients = [_client(u, "sk-shared") for u in (first, second)]

        def one(i: int) -> bool:
            try:
                _chat(clients[i % 2])
            except openai.RateLimitError:
                return False
            return True

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(20)))
    assert sum(results) == 6
