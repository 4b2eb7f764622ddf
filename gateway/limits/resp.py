"""The limiter's own Redis connection: one pipelined socket speaking RESP2, for one script.

A general client (redis-py) spends most of a limit check's time on its own generality:
packing each argument, its connection pool, its reply parsers. The limiter sends one kind
of command (EVALSHA of limits.lua, EVAL when Redis lost the script) and gets back integers
and arrays of them, so this writes the command in one join and parses replies off the
protocol's buffer as they arrive, in order, each resolving the future of its call: no task
or coroutine per call or per element. A caller that gave up (its wait is bounded by the
store) leaves its reply to be parsed and dropped, so the pipeline never goes out of step.
Any connection error fails every call in flight, and the next call connects again.

TCP only (host, port, database, username and password from the redis-py client the gateway
was given); the store keeps redis-py for TLS and Unix sockets.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from typing import Any, cast


class ReplyError(Exception):
    """Redis answered with an error (`-ERR ...`, `-NOSCRIPT ...`)."""


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


def _pack(parts: list[str]) -> bytes:
    """One command, RESP-encoded: ASCII in one join (lengths in characters are lengths in
    bytes), anything else part by part."""
    text = "".join([f"*{len(parts)}\r\n", *(f"${len(p)}\r\n{p}\r\n" for p in parts)])
    if text.isascii():
        return text.encode()
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """The reply that starts at `pos` and where the next one starts (_Incomplete if the
    buffer ends first). Errors are returned as ReplyError values, not raised."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, rest = buf[pos], buf[pos + 1 : end]
    pos = end + 2
    if kind == 58:  # ':'
        return int(rest), pos
    if kind == 42:  # '*'
        n = int(rest)
        if n < 0:
            return None, pos
        items = []
        for _ in range(n):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 36:  # '$'
        n = int(rest)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            raise _Incomplete
        return bytes(buf[pos : pos + n]), pos + n + 2
    if kind == 43:  # '+'
        return bytes(rest), pos
    if kind == 45:  # '-'
        return ReplyError(rest.decode(errors="replace")), pos
    raise ConnectionError(f"limits: unexpected reply from Redis: {bytes(buf[pos - 40 :])!r}")


# A call in flight: its future, and for a script call its keys and arguments (to send again
# by EVAL if Redis lost the script).
_Pending = tuple["asyncio.Future[Any]", "list[str] | None"]


class _Connection(asyncio.Protocol):
    """One socket: writes commands, parses replies in order into the calls' futures."""

    def __init__(self, script: RespScript) -> None:
        self._script = script
        self._buffer = bytearray()
        self.pending: deque[_Pending] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.keeper: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, command: list[str], future: asyncio.Future[Any], body: list[str] | None) -> None:
        """Write `command`; `body`: it runs the script (EVALSHA sha + body). Raises (and
        queues nothing) if the command cannot be encoded."""
        assert self.transport is not None
        data = _pack(command)
        self.pending.append((future, body))
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        pos, size = 0, len(buf)
        try:
            while pos < size:
                reply, pos = _parse(buf, pos)
                future, body = self.pending.popleft()
                noscript = isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")
                if body is not None and noscript:  # Redis keeps the script again
                    self.send(["EVAL", self._script.body, *body], future, None)
                    continue
                if future.done():
                    continue
                if isinstance(reply, ReplyError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except _Incomplete:
            pass
        except (ValueError, IndexError, ConnectionError) as exc:
            self._script.broken(self, ConnectionError(f"limits: bad reply from Redis: {exc}"))
            return
        finally:
            self._script.last_reply = time.monotonic()
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self._script.broken(self, ConnectionError(f"limits: Redis connection lost: {exc!r}"))

    def fail(self, error: BaseException) -> None:
        while self.pending:
            future, _ = self.pending.popleft()
            if not future.done():
                future.set_exception(error)


class RespScript:
    """Runs one Lua script over one pipelined connection: `await script(keys, args)`, or
    `script.call(keys, args)` for the future of its reply."""

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
        self.body = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()  # its id in Redis
        self._address = (host, port)
        self._db, self._username, self._password = db, username, password
        self._connect_timeout = connect_timeout_s
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self.last_reply = -1e9  # time.monotonic() of the last bytes Redis sent

    async def __call__(self, keys: list[str], args: list[str]) -> Any:
        return await self.call(keys, args)

    def call(self, keys: list[str], args: list[str]) -> asyncio.Future[Any]:
        """The future of one script call: its reply, or ReplyError / ConnectionError."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        body = [str(len(keys)), *keys, *args]
        conn = self._conn
        if conn is not None:
            conn.send(["EVALSHA", self._sha, *body], future, body)
            return future
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        self._connecting.add_done_callback(lambda t: self._connected(t, body, future))
        return future

    def _connected(
        self, task: asyncio.Task[_Connection], body: list[str], future: asyncio.Future[Any]
    ) -> None:
        if future.done():
            return
        if task.cancelled():
            future.set_exception(ConnectionError("limits: connecting was cancelled"))
        elif (exc := task.exception()) is not None:
            future.set_exception(
                exc if isinstance(exc, OSError) else ConnectionError(f"limits: {exc!r}")
            )
        elif self._conn is not task.result():  # it broke meanwhile
            future.set_exception(ConnectionError("limits: Redis connection lost"))
        else:
            try:
                task.result().send(["EVALSHA", self._sha, *body], future, body)
            except Exception as error:  # e.g. a key that cannot be encoded
                future.set_exception(error)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), *self._address),
                self._connect_timeout,
            )
            setup: list[list[str]] = []
            if self._password is not None:
                auth = ["AUTH", self._password]
                if self._username:
                    auth.insert(1, self._username)
                setup.append(auth)
            if self._db:
                setup.append(["SELECT", str(self._db)])
            try:
                for command in setup:
                    future: asyncio.Future[Any] = loop.create_future()
                    conn.send(command, future, None)
                    await asyncio.wait_for(future, self._connect_timeout)
            except BaseException as exc:
                self.broken(conn, ConnectionError("limits: Redis connection set-up failed"))
                if isinstance(exc, ReplyError):
                    raise ConnectionError(f"limits: Redis refused the connection: {exc}") from None
                raise
            self._conn = conn
            conn.keeper = loop.create_task(self._keep(conn))
            return conn
        finally:
            self._connecting = None

    async def _keep(self, conn: _Connection) -> None:
        """Lives as long as the connection and closes it when cancelled: a loop that ends
        (asyncio.run cancels its tasks) leaves no socket open."""
        try:
            await conn.lost
        finally:
            self.broken(conn, ConnectionError("limits: Redis connection closed"))

    def broken(self, conn: _Connection, error: BaseException) -> None:
        """`conn` failed: close it and fail every call in flight on it."""
        if self._conn is conn:
            self._conn = None
        if conn.transport is not None:
            conn.transport.close()
        conn.fail(error)

    async def aclose(self) -> None:
        """Close the connection; calls in flight fail."""
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
            self._connecting = None
        conn = self._conn
        if conn is not None:
            self.broken(conn, ConnectionError("limits: closed"))
            if conn.keeper is not None:
                conn.keeper.cancel()
                await asyncio.gather(conn.keeper, return_exceptions=True)


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
