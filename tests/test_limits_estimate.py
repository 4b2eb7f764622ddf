"""The budget reservation's price: the route's possibly-dearest prices, found once per policy
(`PolicyState.prices`), and no estimate at all for a tenant without a budget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import pipeline
from gateway.limits.estimate import estimate, route_prices
from gateway.metrics import Metrics
from gateway.pipeline import Incoming, handle
from gateway.policy import Price, parse_policy
from gateway.services import Services
from gateway.settings import Settings
from tests.conftest import Upstreams

POLICY = """
backends:
  a: {{provider: openai, base_url: "{oai}/v1", tier: open,
       price: {{input_per_mtok: 1.0, output_per_mtok: 9.0}}}}
  b: {{provider: openai, base_url: "{oai}/v1", tier: open,
       price: {{input_per_mtok: 5.0, output_per_mtok: 2.0}}}}
  c: {{provider: openai, base_url: "{oai}/v1", tier: open,
       price: {{input_per_mtok: 0.5, output_per_mtok: 1.0}}}}
models:
  m:
    route:
      - when: {{difficulty_at_least: 0.9}}
        to: [a, c]
      - to: [b, c]
  cheap: {{to: [c]}}
teams:
  rated: {{keys: [sk-rated], limits: {{requests_per_minute: 1000}}}}
  budgeted: {{keys: [sk-budgeted], limits: {{budget_usd_per_day: 100}}}}
"""


def test_route_prices_keep_only_what_can_be_dearest() -> None:
    prices = route_prices(parse_policy(POLICY.format(oai="http://x"), "p.yaml").policy)
    # c is below a and b in both input and output: it can never be the dearest.
    assert {(p.input_per_mtok, p.output_per_mtok) for p in prices["m"]} == {(1, 9), (5, 2)}
    assert [(p.input_per_mtok, p.output_per_mtok) for p in prices["cheap"]] == [(0.5, 1.0)]
    long_prompt = estimate(prices["m"], "chat", {"max_tokens": 1}, 4000)
    long_answer = estimate(prices["m"], "chat", {"max_tokens": 4000}, 4)
    assert long_prompt.reserve_usd == pytest.approx((1000 * 5 + 1 * 2) / 1e6)  # b
    assert long_answer.reserve_usd == pytest.approx((1 * 1 + 4000 * 9) / 1e6)  # a


_PRICE = st.builds(
    Price,
    input_per_mtok=st.floats(0, 100, allow_nan=False),
    output_per_mtok=st.floats(0, 100, allow_nan=False),
)


@given(
    st.lists(_PRICE, min_size=1, max_size=6),
    st.integers(1, 100_000),
    st.integers(0, 4096),
)
def test_the_kept_prices_cost_as_much_as_the_dearest_of_all(
    prices: list[Price], prompt: int, output: int
) -> None:
    backends = {f"b{i}": {"provider": "openai", "base_url": "http://x/v1"} for i in range(6)}
    doc: dict[str, Any] = {"backends": backends, "models": {"m": {"to": []}}}
    for i, price in enumerate(prices):
        backends[f"b{i}"]["price"] = price.model_dump()
        doc["models"]["m"]["to"].append(f"b{i}")
    kept = route_prices(parse_policy(orjson.dumps(doc).decode(), "p.yaml").policy)["m"]
    assert len(kept) <= len(prices)
    dearest = max(p.cost(prompt, output) for p in prices)
    assert max(p.cost(prompt, output) for p in kept) == dearest


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


async def test_only_a_tenant_with_a_budget_is_priced(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert services.state.prices == route_prices(services.state.loaded.policy)
    priced: list[tuple[Price, ...]] = []

    def spy(prices: tuple[Price, ...], *args: Any) -> Any:
        priced.append(prices)
        return estimate(prices, *args)

    monkeypatch.setattr(pipeline, "estimate", spy)
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]})

    async def read() -> bytes:
        return body

    for key in ("sk-rated", "sk-budgeted"):
        async with handle(services, Incoming("chat", f"req-{key}", f"Bearer {key}", read)) as a:
            assert a.body is not None and b"echo: hello" in a.body
    assert priced == [services.state.prices["m"]]  # the budgeted team's request alone
