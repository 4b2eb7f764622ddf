"""Circuits shared by gateway replicas through a real Redis: in-process, then two processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.breaker_sync import HASH, BreakerSync
from gateway.breakers import Breakers, State
from gateway.policy.resilience import BreakerPolicy
from tests.conftest import run_gateway
from tests.support.fault_upstream import FaultUpstream, fault_upstream
from tests.support.model_servers import free_port
from tests.support.probing import chat, metric, until

KEYS = {"flaky", "steady"}


class Replica:
    """One gateway replica's circuits and its side of the sync."""

    def __init__(self) -> None:
        self.sync = BreakerSync()
        self.sync.enabled = True
        self.breakers = Breakers(self.moved)

    def moved(self, key: str, state: State) -> None:
        self.sync.note(key, state, self.breakers[key].open_until)

    async def round(self, redis: aioredis.Redis) -> int:
        return self.sync.apply(await self.sync.exchange(redis), self.breakers, KEYS)


def test_an_open_circuit_reaches_the_other_replica_and_so_does_its_close(redis_url: str) -> None:
    async def main() -> None:
        redis = aioredis.from_url(redis_url)
        a, b = Replica(), Replica()
        policy = BreakerPolicy(failures_to_open=1, open_s=30)
        try:
            assert await a.round(redis) == 0 and await b.round(redis) == 0
            now = time.monotonic()
            a.breakers["flaky"].failure(now, policy)
            assert a.sync.outbox and await a.round(redis) == 0 and not a.sync.outbox
            assert await b.round(redis) == 1
            held = b.breakers["flaky"]
            assert held.current(time.monotonic()) is State.OPEN
            # Held as long as the first replica's, not a fresh `open_s` from now.
            assert abs(held.open_until - a.breakers["flaky"].open_until) < 1.0
            assert not b.sync.outbox, "a state learnt is not published back"
            assert b.breakers["steady"].current(now) is State.CLOSED
            assert await b.round(redis) == 0, "only changes are applied"
            # A probe succeeds in the first: the second may probe at once.
            a.breakers["flaky"].success()
            await a.round(redis)
            assert await b.round(redis) == 1
            assert held.current(time.monotonic()) is State.HALF_OPEN
            stored = await redis.hgetall(HASH)
            value = stored[b"flaky"]
            assert set(stored) == {b"flaky"} and isinstance(value, bytes)
            assert value.startswith(b"closed ")
        finally:
            await redis.aclose()

    asyncio.run(main())


def test_redis_away_keeps_the_outbox_for_later() -> None:
    async def main() -> None:
        redis = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5)
        a = Replica()
        try:
            a.breakers["flaky"].failure(time.monotonic(), BreakerPolicy(failures_to_open=1))
            with pytest.raises(RedisError):
                await a.round(redis)
            assert list(a.sync.outbox) == ["flaky"]
        finally:
            await redis.aclose()

    asyncio.run(main())


POLICY = """
breakers: {{shared: redis}}
backends:
  steady: {{provider: openai, base_url: "{steady}"}}
  flaky:
    provider: openai
    base_url: "{flaky}"
    breaker: {{failures_to_open: 2, open_s: 30}}
models:
  "*": {{to: [flaky, steady]}}
"""


@pytest.fixture
def faults() -> Iterator[FaultUpstream]:
    with fault_upstream() as upstream:
        yield upstream


def _circuit(http: httpx.Client, name: str) -> str:
    return str(http.get("/readyz").json()["backends"][name]["circuit"])


def test_two_gateway_replicas_share_an_open_circuit(
    faults: FaultUpstream, redis_url: str, tmp_path: Path
) -> None:
    policy = POLICY.format(steady=faults.base_url("steady"), flaky=faults.base_url("flaky"))
    flaky = faults.script("flaky", mode="fail500")
    env = {"GATEWAY_REDIS_URL": redis_url}
    with (
        run_gateway(policy, env, tmp=tmp_path) as one,
        # Two workers: the one that learns it from Redis tells the other (the mapped file).
        run_gateway(policy, {**env, "GATEWAY_WORKERS": "2"}, tmp=tmp_path) as two,
        httpx.Client(base_url=one, timeout=10) as first,
        httpx.Client(base_url=two, timeout=10) as second,
    ):
        assert [chat(first, "m").status_code for _ in range(3)] == [200] * 3
        assert flaky.requests == 2 and _circuit(first, "flaky") == "open"
        # The other replica learns it from Redis and never tries the failing backend.
        until(lambda: _circuit(second, "flaky") == "open", timeout_s=5)
        answers = [chat(second, "m") for _ in range(10)]
        assert [r.headers["x-gateway-backend"] for r in answers] == ["steady"] * 10
        assert flaky.requests == 2


def test_redis_down_leaves_circuits_local_without_errors(
    faults: FaultUpstream, tmp_path: Path
) -> None:
    policy = POLICY.format(steady=faults.base_url("steady"), flaky=faults.base_url("flaky"))
    flaky = faults.script("flaky", mode="fail500")
    env = {"GATEWAY_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with (
        run_gateway(policy, env, tmp=tmp_path) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        assert [chat(http, "m").status_code for _ in range(6)] == [200] * 6
        assert flaky.requests == 2 and _circuit(http, "flaky") == "open"
        until(lambda: metric(http, "gateway_cache_errors_total", operation="breaker_sync") > 0)


def test_sharing_is_on_before_the_first_request(
    faults: FaultUpstream, redis_url: str, tmp_path: Path
) -> None:
    """A circuit that opens in a worker's first second is shared too (it was not, once)."""
    from gateway.app import create_app
    from gateway.settings import Settings

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        POLICY.format(steady=faults.base_url("steady"), flaky=faults.base_url("flaky"))
    )
    app = create_app(Settings(policy=str(policy), redis_url=redis_url))

    async def main() -> None:
        # The ASGI lifespan, driven by hand: startup, look, shutdown.
        inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        outbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})
        server = asyncio.create_task(app({"type": "lifespan"}, inbox.get, outbox.put))  # type: ignore[arg-type]
        assert (await outbox.get())["type"] == "lifespan.startup.complete"
        services = app.services
        assert services is not None and services.breaker_sync.enabled
        services.breakers["flaky"].failure(time.monotonic(), BreakerPolicy(failures_to_open=1))
        assert "flaky" in services.breaker_sync.outbox
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await server

    asyncio.run(main())
