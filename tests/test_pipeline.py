"""The pipeline in-process: every request is finished exactly once, errors carry headers."""

from __future__ import annotations

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
