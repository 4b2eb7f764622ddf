"""The limiter's own pipelined connection: in order, lost scripts, databases, restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from gateway.limits import Limiter
from gateway.limits.resp import ReplyError, RespScript, _Connection, for_client
from gateway.limits.store import SCRIPT
from gateway.metrics import Metrics
from tests.support.limits import tenant
from tests.support.redis_process import RedisServer

ECHO = "return {tonumber(ARGV[1]), #KEYS}"


async def test_replies_resolve_their_own_calls_in_order(redis: aioredis.Redis) -> None:
    script = for_client(redis, ECHO, 2.0)
    assert script is not None
    try:
        replies = await asyncio.gather(*(script(["k"] * (i % 3), [str(i)]) for i in range(300)))
        assert replies == [[i, i % 3] for i in range(300)]
    finally:
        await script.aclose()


async def test_a_script_redis_lost_is_sent_again(redis: aioredis.Redis) -> None:
    script = for_client(redis, ECHO, 2.0)
    assert script is not None
    try:
        assert await script([], ["1"]) == [1, 0]
        await redis.script_flush()
        assert await script([], ["2"]) == [2, 0]  # NOSCRIPT, then EVAL
        assert await redis.script_exists(script._sha) == [True]
    finally:
        await script.aclose()


async def test_errors_are_raised_and_the_connection_stays_in_step(redis: aioredis.Redis) -> None:
    script = for_client(redis, "return redis.call('INCR', KEYS[1])", 2.0)
    assert script is not None
    try:
        await redis.set("not-a-number", "x")
        with pytest.raises(ReplyError, match="not an integer"):
            await script(["not-a-number"], [])
        assert await script(["counter"], []) == 1
    finally:
        await script.aclose()


async def test_the_database_of_the_url_is_used(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    client = aioredis.from_url(base + "/5")
    script = for_client(client, "return redis.call('INCR', KEYS[1])", 2.0)
    assert script is not None
    try:
        assert await script(["in-db-5"], []) == 1
        assert await client.get("in-db-5") == b"1"
    finally:
        await client.delete("in-db-5")
        await script.aclose()
        await client.aclose()


def test_unix_sockets_keep_redis_py() -> None:
    client = aioredis.Redis(unix_socket_path="/tmp/none.sock")
    assert for_client(client, ECHO, 2.0) is None
    assert isinstance(for_client(aioredis.Redis(), ECHO, 2.0), RespScript)


async def test_after_a_restart_the_next_call_connects_again(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    script = RespScript(ECHO, "127.0.0.1", server.port)
    try:
        assert await script([], ["1"]) == [1, 0]
        server.stop()
        with pytest.raises(OSError):  # refused: ConnectionError is an OSError
            for _ in range(3):
                await script([], ["2"])
        server.start()
        assert await script([], ["3"]) == [3, 0]
    finally:
        await script.aclose()
        server.stop()


async def test_the_limiter_uses_its_own_connection(redis: aioredis.Redis) -> None:
    limiter = Limiter(redis, Metrics(), timeout_s=2.0)
    assert limiter._store is not None
    assert isinstance(limiter._store._script, RespScript)
    assert SCRIPT.startswith("--")
    await limiter.admit(tenant(requests_per_minute=5), 1, 0.0)
    await limiter.close()


class _Sink:
    """Stands in for a transport: what the connection writes, and whether it was closed."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


REPLIES = b"$11\r\n0 1 2\n3 4 5\r\n:42\r\n*2\r\n:-1\r\n$-1\r\n-NOSCRIPT gone\r\n+OK\r\n"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, len(REPLIES)])
async def test_replies_split_anywhere_resolve_in_order(chunk: int) -> None:
    """Replies cut into pieces at any byte: each call gets its own once it is whole."""
    script = RespScript(ECHO, "127.0.0.1", 1)
    conn = _Connection(script)
    conn.connection_made(cast(Any, _Sink()))
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(5)]
    for future in futures:
        conn.send(["PING"], future, None)
    for start in range(0, len(REPLIES), chunk):
        conn.data_received(REPLIES[start : start + chunk])
    results = [f.result() if f.exception() is None else f.exception() for f in futures]
    assert results[:3] == [b"0 1 2\n3 4 5", 42, [-1, None]]
    assert isinstance(results[3], ReplyError) and str(results[3]) == "NOSCRIPT gone"
    assert results[4] == b"OK"


async def test_a_reply_nobody_asked_for_breaks_the_connection() -> None:
    script = RespScript(ECHO, "127.0.0.1", 1)
    conn = _Connection(script)
    sink = _Sink()
    conn.connection_made(cast(Any, sink))
    future = asyncio.get_running_loop().create_future()
    conn.send(["PING"], future, None)
    conn.data_received(b"?what\r\n")
    assert sink.closed and isinstance(future.exception(), ConnectionError)


async def test_a_call_that_cannot_be_encoded_leaves_the_pipeline_in_step(
    redis: aioredis.Redis,
) -> None:
    script = for_client(redis, ECHO, 2.0)
    assert script is not None
    try:
        first = script.call(["bad\ud800"], ["0"])  # before the connection is up
        with pytest.raises(UnicodeEncodeError):
            await asyncio.wait_for(first, 5)  # not left waiting
        assert await script([], ["1"]) == [1, 0]
        with pytest.raises(UnicodeEncodeError):
            script.call(["bad\ud800"], ["2"])  # on the open connection
        replies = asyncio.gather(script([], ["3"]), script(["k"], ["4"]))
        assert await asyncio.wait_for(replies, 5) == [[3, 0], [4, 1]]
    finally:
        await script.aclose()


async def test_closed_before_it_connected_it_connects_again(redis: aioredis.Redis) -> None:
    script = for_client(redis, ECHO, 2.0)
    assert script is not None
    pending = script.call([], ["1"])
    await script.aclose()  # cancels the connecting task before its first step
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(pending, 5)
    assert await asyncio.wait_for(script([], ["2"]), 5) == [2, 0]
    await script.aclose()
