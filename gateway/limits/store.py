"""The Redis side: one script call admits a request, one settles it (limits.lua)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from gateway.limits.calls import Admitted, Refused, Settlement, admit_template
from gateway.limits.resp import for_client
from gateway.limits.rules import Rules, budget_ttl_s

SCRIPT = (Path(__file__).with_name("limits.lua")).read_text(encoding="utf-8")
T = TypeVar("T")

# A check past its timeout still waits while Redis has answered anyone within ALIVE_S: under
# CPU pressure the event loop, not Redis, is slow, and deciding alone would admit too much.
# Nothing waits longer than MAX_WAIT_S (the first call also connects and loads the script).
ALIVE_S = 1.0
MAX_WAIT_S = 2.0


# At most this many calls of one team go in one script call.
BATCH_MAX = 64
# One call of limits.lua: its keys and its arguments, space-separated.
Call = tuple[tuple[str, ...], str]
_Waiting = tuple[tuple[str, ...], str, "asyncio.Future[Any]"]


def _split(reply: bytes | str) -> list[list[int]]:
    """A batch's reply: a line of numbers per call (str from a decoding redis-py client)."""
    return [[int(v) for v in line.split()] for line in reply.splitlines()]


def own_connections(redis: Any, socket_timeout_s: float) -> Any:
    """A client of `redis`'s server with its own pool and socket timeouts."""
    import redis.asyncio as aioredis

    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": socket_timeout_s}
    kwargs["socket_connect_timeout"] = socket_timeout_s
    return aioredis.Redis(
        connection_pool=type(pool)(connection_class=pool.connection_class, **kwargs)
    )


class RedisStore:
    """Runs the limits script by EVALSHA (loaded again by the client after a restart); every
    call is bounded (TimeoutError) as ALIVE_S and MAX_WAIT_S say."""

    def __init__(self, redis: Any, lease_s: float, timeout_s: float) -> None:
        # Its own pipelined connection where it can (TCP), else redis-py's script object.
        self._resp = for_client(redis, SCRIPT, MAX_WAIT_S)
        self._script: Any = self._resp if self._resp is not None else redis.register_script(SCRIPT)
        self._lease_ms = str(int(lease_s * 1000))
        self._timeout = timeout_s
        self._last_reply = -1e9  # redis-py's calls (the own connection keeps its own)
        # The own connection's calls in flight, oldest first: (when it gives up unless Redis
        # is answering, when it started, its future); one timer watches them all.
        self._watched: deque[tuple[float, float, asyncio.Future[Any]]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        # Per hash tag: the calls waiting while one of that tag is in flight.
        self._waiting: dict[str, list[_Waiting]] = {}
        self._sending: set[asyncio.Task[Any]] = set()  # the loop keeps only weak references

    async def aclose(self) -> None:
        """Close the limiter's own connection (redis-py's is the client's to close); calls
        after it, and those still waiting, fail with ConnectionError."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._resp is not None:
            await self._resp.aclose()

    async def _run(self, tag: str, keys: tuple[str, ...], call: str) -> Any:
        """One script call, coalesced: while a call of the same team is in flight, the next
        ones wait and then go together in one script call (one round trip, one slot). A
        lone call goes at once; nothing waits for a batch to fill."""
        waiting = self._waiting.get(tag)
        if waiting is not None:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            waiting.append((keys, call, future))
            return await future
        self._waiting[tag] = []
        try:
            return _split(await self._packed([(keys, call)]))[0]
        finally:
            self._next(tag)

    def _next(self, tag: str) -> None:
        waiting = self._waiting.get(tag)
        if not waiting or self._closed:
            for _, _, future in self._waiting.pop(tag, None) or ():
                if not future.done():
                    future.set_exception(ConnectionError("limits: closed"))
            return
        batch, self._waiting[tag] = waiting[:BATCH_MAX], waiting[BATCH_MAX:]
        reply: asyncio.Future[bytes]
        calls = [(keys, call) for keys, call, _ in batch]
        try:
            reply = asyncio.ensure_future(self._packed(calls))
        except Exception as exc:  # e.g. a connection that broke while writing
            reply = asyncio.get_running_loop().create_future()
            reply.set_exception(exc)
        if isinstance(reply, asyncio.Task):  # redis-py's call: the loop keeps weak references
            self._sending.add(reply)
            reply.add_done_callback(self._sending.discard)
        reply.add_done_callback(lambda done: self._delivered(tag, batch, done))

    def _delivered(self, tag: str, batch: list[_Waiting], done: asyncio.Future[Any]) -> None:
        """A batch's reply is in: each waiting call gets its own (or the batch's error)."""
        try:
            if done.cancelled():
                raise ConnectionError("limits: the batch was cancelled")
            replies = _split(done.result())
            if len(replies) != len(batch):
                raise ConnectionError("limits: the script answered a batch out of step")
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, _, future), reply in zip(batch, replies, strict=True):
                if not future.done():
                    future.set_result(reply)
        finally:
            self._next(tag)

    async def _many(self, calls: list[Call]) -> list[list[int]]:
        """Calls of one team in one script call: their replies."""
        return _split(await self._packed(calls))

    def _packed(self, calls: list[Call]) -> Awaitable[bytes]:
        """Calls of one team as one script call. Each call's set of keys goes once, however
        many calls use it (each call names where its keys start and how many there are)."""
        at: dict[tuple[str, ...], int] = {}
        flat_keys: list[str] = []
        argv = []
        for keys, call in calls:
            start = at.get(keys)
            if start is None:
                start = at[keys] = len(flat_keys)
                flat_keys += keys
            argv.append(f"{start} {len(keys)} {call}")
        return self._call(flat_keys, argv)

    def _call(self, keys: list[str], args: list[str]) -> Awaitable[Any]:
        """One script call, bounded: TimeoutError unless Redis is visibly answering."""
        if self._closed:
            raise ConnectionError("limits: closed")
        if self._resp is None:
            return self._bounded(self._script(keys=keys, args=args))
        future = self._resp.call(keys, args)
        loop = future.get_loop()
        now = loop.time()
        first = self._timeout if self._resp.last_reply > 0 else MAX_WAIT_S
        due = now + first
        self._watched.append((due, now, future))
        watchdog = self._watchdog
        if watchdog is None or watchdog.when() > due:  # sooner than the one set (at start)
            if watchdog is not None:
                watchdog.cancel()
            self._watchdog = loop.call_at(due, self._patrol)
        return future

    def _patrol(self) -> None:
        """Fail the calls past their time while Redis is silent (or past MAX_WAIT_S), as
        `_bounded` does for one; then sleep until the next one is due."""
        assert self._resp is not None
        self._watchdog = None
        watched = self._watched
        while watched and watched[0][2].done():
            watched.popleft()
        if not watched:
            return
        loop = watched[0][2].get_loop()
        now = loop.time()
        alive = time.monotonic() - self._resp.last_reply < ALIVE_S
        wake = now + self._timeout
        for due, started, future in watched:
            if future.done():
                continue
            if due > now:
                wake = min(wake, due)
            elif not alive or now - started >= MAX_WAIT_S:
                future.set_exception(TimeoutError("limits: Redis did not answer in time"))
        while watched and watched[0][2].done():
            watched.popleft()
        if watched:
            self._watchdog = loop.call_at(wake, self._patrol)

    async def _bounded(self, call: Awaitable[T]) -> T:
        """Await a Redis call: give up after the timeout, unless Redis is visibly answering."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(None) as deadline:

            def check() -> None:
                now = loop.time()
                alive = time.monotonic() - self._last_reply < ALIVE_S
                if alive and now - started < MAX_WAIT_S:
                    handle[0] = loop.call_later(self._timeout, check)
                else:
                    deadline.reschedule(now)

            first = self._timeout if self._last_reply > 0 else MAX_WAIT_S
            handle = [loop.call_later(first, check)]
            try:
                result = await call
            finally:
                handle[0].cancel()
        self._last_reply = time.monotonic()
        return result

    async def admit(
        self,
        rules: Rules,
        admission_id: str,
        now_ms: int,
        now: float,
        weights: tuple[int, ...],
        reserve_nano: int,
        budget_keys: tuple[str, ...],
    ) -> Admitted | Refused:
        """Check every window and budget of `rules`; count and hold only if all fit."""
        memo = ("admit", self._lease_ms)  # the lease is in the template
        template = rules.memo.get(memo)
        if template is None:
            template = rules.memo[memo] = admit_template(rules, self._lease_ms)
        values: list[object] = [now_ms, admission_id, *weights]
        for budget in rules.budgets:
            values += (reserve_nano, budget_ttl_s(budget.period, now))
        return await self.ask(rules, template.format(*values), now)

    async def ask(self, rules: Rules, call: str, now: float) -> Admitted | Refused:
        """Run one admission call of `rules` (an admission's, or a slice's: slices.py)."""
        out = await self._run(rules.tag, rules.keys(now), call)
        status, at = out[0], out[1]
        if status != 0:
            return Refused(at, status == 2, out[2], out[3])
        nw = 2 * len(rules.windows)
        w, b = out[2 : 2 + nw], out[2 + nw :]
        return Admitted(at, tuple(w[0::2]), tuple(w[1::2]), tuple(b[0::2]), tuple(b[1::2]))

    async def settle(self, s: Settlement) -> None:
        """Apply a settlement. It goes at once, not after the team's admissions in flight:
        settlements (and slices given back) reach Redis in the order they were sent."""
        await self._many([(s.keys, s.call)])

    async def settle_batch(self, settlements: list[Settlement]) -> None:
        """Apply up to BATCH_MAX settlements of one team in one script call (all or none)."""
        assert len(settlements) <= BATCH_MAX
        await self._many([(s.keys, s.call) for s in settlements])
