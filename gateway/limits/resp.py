"""The limiter's own Redis connection: one pipelined socket speaking RESP2, for one script.

A general client (redis-py) spends most of a limit check's time on its own generality:
packing each argument, its connection pool, its reply parsers. The limiter sends one kind
of command (EVALSHA of limits.lua, EVAL when Redis lost the script) and gets back integers
and arrays of them, so this writes the command in one join and reads replies in order off
one connection. Requests are written in the order their futures are queued, replies resolve
them in that order; a caller that gave up (its wait is bounded by the store) leaves its
reply to be read and dropped, so the pipeline never goes out of step. Any connection error
fails every call in flight, and the next call connects again.

TCP only (host, port, database, username and password from the redis-py client the gateway
was given); the store keeps redis-py for TLS and Unix sockets.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from typing import Any


class ReplyError(Exception):
    """Redis answered with an error (`-ERR ...`, `-NOSCRIPT ...`)."""


def _pack(parts: list[bytes]) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


async def _read(reader: asyncio.StreamReader) -> Any:
    line = await reader.readuntil(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    if kind == b":":
        return int(rest)
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [await _read(reader) for _ in range(n)]
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else (await reader.readexactly(n + 2))[:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return ReplyError(rest.decode(errors="replace"))
    raise ConnectionError(f"limits: unexpected reply from Redis: {line[:40]!r}")


class RespScript:
    """Runs one Lua script over one pipelined connection: `await script(keys, args)`."""

    def __init__(
        self,
        script: str,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self._body = script.encode()
        self._sha = hashlib.sha1(self._body).hexdigest().encode()  # the script's id in Redis
        self._address = (host, port)
        self._db, self._username, self._password = db, username, password
        self._connect_timeout = connect_timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._connecting: asyncio.Future[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def __call__(self, keys: list[str], args: list[str]) -> Any:
        parts = [str(len(keys)).encode(), *(k.encode() for k in keys)]
        parts += [a.encode() for a in args]
        reply = await self._send([b"EVALSHA", self._sha, *parts])
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            reply = await self._send([b"EVAL", self._body, *parts])  # Redis keeps it again
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def _send(self, parts: list[bytes]) -> Any:
        writer = self._writer if self._writer is not None else await self._connect()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        writer.write(_pack(parts))
        return await future

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is not None:  # another call is connecting: wait for it
            await asyncio.shield(self._connecting)
            if self._writer is None:
                raise ConnectionError("limits: Redis connection failed")
            return self._writer
        self._connecting = asyncio.get_running_loop().create_future()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(*self._address), self._connect_timeout
            )
            setup: list[list[bytes]] = []
            if self._password is not None:
                auth = [b"AUTH", self._password.encode()]
                if self._username:
                    auth.insert(1, self._username.encode())
                setup.append(auth)
            if self._db:
                setup.append([b"SELECT", str(self._db).encode()])
            for command in setup:
                writer.write(_pack(command))
                reply = await asyncio.wait_for(_read(reader), self._connect_timeout)
                if isinstance(reply, ReplyError):
                    writer.close()
                    raise ConnectionError(f"limits: Redis refused the connection: {reply}")
            self._writer = writer
            self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader))
            return writer
        finally:
            self._connecting.set_result(None)
            self._connecting = None

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                reply = await _read(reader)
                future = self._pending.popleft()
                if not future.done():
                    future.set_result(reply)
        except (OSError, EOFError, asyncio.IncompleteReadError, ConnectionError, IndexError) as e:
            self._broken(e)
        except asyncio.CancelledError:
            self._broken(ConnectionError("limits: Redis connection closed"))
            raise

    def _broken(self, exc: BaseException) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        error = exc if isinstance(exc, ConnectionError) else ConnectionError(repr(exc))
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)

    async def aclose(self) -> None:
        """Close the connection; calls in flight fail."""
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        self._broken(ConnectionError("limits: closed"))


def for_client(redis: Any, script: str, connect_timeout_s: float) -> RespScript | None:
    """A RespScript to the server of a redis-py client, or None where it cannot speak for it
    (TLS, Unix sockets: the caller keeps redis-py)."""
    pool = getattr(redis, "connection_pool", None)
    if pool is None or pool.connection_class.__name__ != "Connection":
        return None
    kw = pool.connection_kwargs
    return RespScript(
        script,
        kw.get("host", "localhost"),
        int(kw.get("port", 6379)),
        db=int(kw.get("db", 0) or 0),
        username=kw.get("username"),
        password=kw.get("password"),
        connect_timeout_s=connect_timeout_s,
    )
