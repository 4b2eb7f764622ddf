"""The pipeline in-process: every request is finished exactly once, errors carry headers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from gateway.errors import AuthenticationFailed, ClientGone, GatewayError
from gateway.metrics import Metrics
from gateway.pipeline import CLIENT_GONE, Incoming, handle
from gateway.services import Services
from gateway.settings import Settings
from tests.conftest import Upstreams

POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open}}
  broken: {{provider: openai, base_url: "{oai}/fail500/v1", tier: open}}
models:
  "*": {{to: [open]}}
  fallback: {{to: [broken, open]}}
teams:
  t: {{keys: [sk-team]}}
"""


@pytest.fixture
async def services(upstreams: Upstreams, tmp_path: Path) -> AsyncIterator[Services]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(oai=upstreams.openai_url))
    settings = Settings(policy=policy, redis_url="", policy_reload_s=0, access_log=False)
    started = await Services.start(settings, Metrics())
    try:
        yield started
    finally:
        await started.close()


def _incoming(body: dict[str, object] | bytes, key: str = "sk-team") -> Incoming:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)

    async def read() -> bytes:
        return raw

    return Incoming("chat", "req-1", f"Bearer {key}", read)


def _finished(services: Services) -> float:
    """Requests finished so far, over every label set."""
    total = 0.0
    for metric in services.metrics.registry.collect():
        if metric.name == "gateway_requests":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


async def test_an_answer_is_finished_once_after_it_was_sent(services: Services) -> None:
    async with handle(services, _incoming(CHAT)) as answer:
        assert _finished(services) == 0  # not before the door has sent it
        assert answer.events is None
        assert orjson.loads(answer.body)["choices"][0]["message"]["content"] == "echo: hello"
        assert answer.headers["x-request-id"] == "req-1"
        assert answer.headers["x-gateway-backend"] == "open"
    assert _finished(services) == 1


async def test_a_stream_is_finished_when_it_ends(services: Services) -> None:
    async with handle(services, _incoming({**CHAT, "stream": True})) as answer:
        assert answer.events is not None
        blocks = [block async for block in answer.events]
        assert _finished(services) == 0
    assert blocks[-1].endswith(b"data: [DONE]\n\n")
    assert _finished(services) == 1


async def test_a_fallback_is_one_request(services: Services) -> None:
    async with handle(services, _incoming({**CHAT, "model": "fallback"})) as answer:
        assert answer.headers["x-gateway-backend"] == "open"
    assert _finished(services) == 1


@pytest.mark.parametrize(
    ("body", "key", "error", "status"),
    [
        (CHAT, "sk-wrong", AuthenticationFailed, 401),
        (b"{not json", "sk-team", GatewayError, 400),
        ({**CHAT, "messages": []}, "sk-team", GatewayError, 400),
    ],
)
async def test_an_error_is_finished_once_and_carries_the_request_id(
    services: Services, body: dict[str, object] | bytes, key: str, error: type, status: int
) -> None:
    with pytest.raises(error) as info:
        async with handle(services, _incoming(body, key)):
            pytest.fail("no answer expected")
    assert isinstance(info.value, GatewayError)
    assert info.value.http_status == status
    assert info.value.headers["x-request-id"] == "req-1"
    assert _finished(services) == 1


async def test_a_client_gone_before_its_body_is_counted_once(services: Services) -> None:
    async def gone() -> bytes:
        raise ClientGone

    incoming = Incoming("chat", "req-2", "Bearer sk-team", gone)
    with pytest.raises(ClientGone):
        async with handle(services, incoming):
            pass
    value = services.metrics.registry.get_sample_value(
        "gateway_requests_total",
        {"endpoint": "chat", "model": "-", "backend": "-", "tier": "-", "status": "4xx"},
    )
    assert value == 1 and CLIENT_GONE // 100 == 4


TIED_POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open}}
  strong: {{provider: openai, base_url: "{oai}/v1", api_key: k, tier: closed}}
models:
  auto:
    route:
      - when: {{closed_share: 0.3}}
        to: [strong]
      - to: [open]
"""


async def test_tied_scores_split_by_the_target_share(upstreams: Upstreams, tmp_path: Path) -> None:
    # Every request is the same prompt, so every score ties: a plain threshold would send
    # all of them (or none) to the closed tier; the tie-aware draw sends about 30%.
    policy = tmp_path / "tied.yaml"
    policy.write_text(TIED_POLICY.format(oai=upstreams.openai_url))
    settings = Settings(policy=policy, redis_url="", policy_reload_s=0, access_log=False)
    services = await Services.start(settings, Metrics())
    tiers = []
    try:
        for _ in range(400):
            body = {"model": "auto", "messages": [{"role": "user", "content": "Same words."}]}
            async with handle(services, _incoming(body, key="k")) as answer:
                tiers.append(answer.headers["x-gateway-tier"])
    finally:
        await services.close()
    share = tiers[-200:].count("closed") / 200
    assert 0.15 <= share <= 0.45, share


async def _started(policy_text: str, tmp_path: Path) -> Services:
    policy = tmp_path / "guards.yaml"
    policy.write_text(policy_text)
    settings = Settings(policy=policy, redis_url="", policy_reload_s=0, access_log=False)
    return await Services.start(settings, Metrics())


def _sample(services: Services, name: str, **labels: str) -> float:
    return services.metrics.registry.get_sample_value(name, labels) or 0.0


GUARDS_POLICY = """
retries: {{max_attempts: {attempts}, ratio: {ratio}, min_per_s: {floor}, window_s: 10}}
backends:
  broken-a: {{provider: openai, base_url: "{oai}/fail500/v1", tier: open,
             breaker: {{failures_to_open: 1000, ratio_min_requests: 1000}}}}
  broken-b: {{provider: openai, base_url: "{oai}/fail500/v1", tier: open,
             breaker: {{failures_to_open: 1000, ratio_min_requests: 1000}}}}
  busy: {{provider: openai, base_url: "{oai}/busy/v1", tier: open}}
  busydate: {{provider: openai, base_url: "{oai}/busydate/v1", tier: open}}
  open: {{provider: openai, base_url: "{oai}/v1", tier: open}}
models:
  "*": {{to: [open]}}
  three: {{to: [broken-a, broken-b, open]}}
  two: {{to: [broken-a, open]}}
  busy-first: {{to: [busy, open]}}
  busydate-first: {{to: [busydate, open]}}
teams:
  t: {{keys: [sk-team]}}
"""


async def test_a_request_tries_at_most_max_attempts_targets(
    upstreams: Upstreams, tmp_path: Path
) -> None:
    text = GUARDS_POLICY.format(oai=upstreams.openai_url, attempts=2, ratio=1.0, floor=100)
    services = await _started(text, tmp_path)
    try:
        with pytest.raises(GatewayError) as info:
            async with handle(services, _incoming({**CHAT, "model": "three"})):
                pytest.fail("no answer expected")
        assert info.value.http_status == 502  # broken-b's 500: the last error, at once
        exhausted = "gateway_retry_budget_exhausted_total"
        assert _sample(services, exhausted, backend="broken-b", scope="request") == 1
        errors = "gateway_upstream_errors_total"
        assert _sample(services, errors, backend="broken-a", kind="status_5xx") == 1
        assert _sample(services, errors, backend="broken-b", kind="status_5xx") == 1
        async with handle(services, _incoming({**CHAT, "model": "two"})) as answer:
            assert answer.headers["x-gateway-backend"] == "open"  # two attempts: allowed
    finally:
        await services.close()


async def test_the_workers_retry_budget_fails_fast_once_spent(
    upstreams: Upstreams, tmp_path: Path
) -> None:
    # No floor, 50% of first attempts: of 10 requests that all fail over, 5 may retry.
    text = GUARDS_POLICY.format(oai=upstreams.openai_url, attempts=3, ratio=0.5, floor=0)
    services = await _started(text, tmp_path)
    answered = failed = 0
    try:
        for _ in range(10):
            try:
                async with handle(services, _incoming({**CHAT, "model": "two"})) as answer:
                    assert answer.headers["x-gateway-backend"] == "open"
                    answered += 1
            except GatewayError as err:
                assert err.http_status == 502  # broken-a's own failure
                failed += 1
        assert (answered, failed) == (5, 5)
        exhausted = "gateway_retry_budget_exhausted_total"
        assert _sample(services, exhausted, backend="broken-a", scope="worker") == 5
        fallbacks = "gateway_fallbacks_total"
        labels = {"from_backend": "broken-a", "to_backend": "open", "reason": "status_5xx"}
        assert _sample(services, fallbacks, **labels) == 5  # only retries that were made
    finally:
        await services.close()


@pytest.mark.parametrize("busy", ["busy", "busydate"])
async def test_retry_after_keeps_a_backend_aside_until_then(
    upstreams: Upstreams, tmp_path: Path, busy: str
) -> None:
    text = GUARDS_POLICY.format(oai=upstreams.openai_url, attempts=3, ratio=0.2, floor=3)
    services = await _started(text, tmp_path)
    try:
        for _ in range(3):
            async with handle(services, _incoming({**CHAT, "model": f"{busy}-first"})) as answer:
                assert answer.headers["x-gateway-backend"] == "open"
        errors = "gateway_upstream_errors_total"
        # Asked once (503, Retry-After: 30 s, or a date 30 s ahead); then skipped without a call.
        assert _sample(services, errors, backend=busy, kind="status_5xx") == 1
        breaker = services.breakers[busy]
        assert breaker.paused(time.monotonic())
        assert 25 < breaker.retry_after(time.monotonic()) <= 30
    finally:
        await services.close()


SOFT_POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open, price: {{input_per_mtok: 0}}}}
  strong: {{provider: openai, base_url: "{oai}/v1", api_key: k, tier: closed,
           price: {{input_per_mtok: 10, output_per_mtok: 100}}}}
models:
  "*": {{to: [strong, open]}}
  closed-only: {{to: [strong]}}
teams:
  soft: {{keys: [sk-soft], limits: {{budget_usd_per_day: 1.0, soft_budget_share: 0.01}}}}
  plain: {{keys: [sk-plain], limits: {{budget_usd_per_day: 1.0}}}}
"""


async def test_a_team_past_its_soft_budget_share_stays_on_the_open_tier(
    upstreams: Upstreams, tmp_path: Path
) -> None:
    # Each request holds ~$0.05 at `strong`'s prices: past 1% of $1 from the first one.
    services = await _started(SOFT_POLICY.format(oai=upstreams.openai_url), tmp_path)
    try:
        async with handle(services, _incoming(CHAT, key="sk-soft")) as answer:
            assert answer.headers["x-gateway-tier"] == "open"
        async with handle(services, _incoming(CHAT, key="sk-plain")) as answer:
            assert answer.headers["x-gateway-tier"] == "closed"
        # No open target left: the closed one stays (a soft limit never refuses).
        body = {**CHAT, "model": "closed-only"}
        async with handle(services, _incoming(body, key="sk-soft")) as answer:
            assert answer.headers["x-gateway-tier"] == "closed"
        decisions = "gateway_routing_decisions_total"
        assert _sample(services, decisions, model="*", tier="open", reason="budget") == 1
        assert _sample(services, decisions, model="*", tier="closed", reason="alias") == 1
    finally:
        await services.close()


PRICED_POLICY = """
backends:
  open: {{provider: openai, base_url: "{oai}/v1", tier: open,
         price: {{input_per_mtok: 1000, output_per_mtok: 1000}}}}
models:
  "*": {{to: [open]}}
teams:
  t: {{keys: [sk-team], limits: {{budget_usd_per_day: 100.0}}}}
"""


async def test_a_stream_its_client_never_read_is_charged_and_closed(
    upstreams: Upstreams, tmp_path: Path
) -> None:
    """The door got the stream but the client left before its first byte was read (the
    door never started it): the backend was called and answered, so the request is charged
    (the prompt and the first block, as a stream cut there) and its upstream closed."""
    services = await _started(PRICED_POLICY.format(oai=upstreams.openai_url), tmp_path)
    try:
        async with handle(services, _incoming({**CHAT, "stream": True})) as answer:
            assert answer.events is not None  # and never iterated
        cost = _sample(services, "gateway_cost_usd_total", backend="open", tier="open", team="t")
        assert cost > 0
        decided = [
            s.labels
            for m in services.metrics.registry.collect()
            if m.name == "gateway_routing_decisions"
            for s in m.samples
            if s.name.endswith("_total") and s.value == 1
        ]
        assert [d["tier"] for d in decided] == ["open"]  # routed and counted once
        assert _finished(services) == 1
    finally:
        await services.close()
