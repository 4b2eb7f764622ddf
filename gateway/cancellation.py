"""Why a request ends before its answer does, and the worker's drain on SIGTERM.

A request ends early when its client leaves (`client_gone`), when the drain's grace runs out
(`drain`), or, for a stream, when its backend goes quiet (`idle`) or the request's deadline
passes (`deadline`). Each cancels the request's task once, after writing the reason on the
request's `Watch`: nothing is paid per stream event, and an upstream call is interrupted
where it waits. Whoever catches the CancelledError asks the watch whether it was one of
these (`claim`) and answers accordingly: an error event on a stream, a 503 on a request not
yet answered, nothing for a client that is gone. Any other cancellation propagates.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from gateway.errors import GatewayError, UpstreamTimeout

log = logging.getLogger("gateway.drain")

Reason = Literal["client_gone", "drain", "idle", "deadline"]
# A request still running after this long starts watching for its client leaving.
ARM_AFTER_S = 0.05
Receive = Callable[[], Awaitable[Any]]


def shutting_down() -> GatewayError:
    """The error a request still running at the end of the drain ends with."""
    return GatewayError(
        "The gateway is shutting down and could not finish this request in time; retry it.",
        status=503,
        code="gateway_shutting_down",
    )


def cut_short(reason: Reason, backend: str, idle_s: float) -> GatewayError:
    """The error event a stream ends with when the gateway ends it."""
    if reason == "idle":
        return UpstreamTimeout(f"backend {backend} sent nothing for {idle_s:g} s")
    if reason == "deadline":
        return UpstreamTimeout("The request's deadline passed before the stream ended.")
    return shutting_down()


def time_limit(server_s: float, client_s: float | None) -> float:
    """A request's time limit: the server's (0: none), shortened by the client's."""
    limit = server_s if server_s > 0 else float("inf")
    return min(limit, client_s) if client_s is not None and client_s > 0 else limit


class Watch:
    """One request's reasons to stop early; created in the task that serves the request."""

    __slots__ = (
        "_arm_timer",
        "_claimed",
        "_deadline",
        "_drain",
        "_gone",
        "_idle_s",
        "_loop",
        "_receive",
        "_since",
        "_task",
        "_timer",
        "_waiting",
        "closed",
        "reason",
    )

    def __init__(self, drain: Drain | None = None) -> None:
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self.reason: Reason | None = None
        self.closed = False
        self._claimed = False
        self._gone: asyncio.Future[Any] | None = None
        self._receive: Receive | None = None
        self._arm_timer: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle_s = 0.0
        self._deadline = float("inf")
        self._since = 0.0
        self._waiting = False
        self._drain = drain
        if drain is not None:
            drain.register(self)

    def arm(self, receive: Receive) -> None:
        """Once the whole body is read, the next ASGI message can only be the disconnect.

        Watching for it takes a task, so it starts only if the request is still running
        after `ARM_AFTER_S` (or when a stream starts): most whole answers are over sooner,
        and a client that leaves within that time costs the backend at most that much.
        """
        if self._gone is None and self._arm_timer is None:
            self._receive = receive
            self._arm_timer = self._loop.call_later(ARM_AFTER_S, self._arm_now)

    def _arm_now(self) -> None:
        self._arm_timer = None
        if self._gone is None and not self.closed and self._receive is not None:
            self._gone = asyncio.ensure_future(self._receive())
            self._gone.add_done_callback(self._left)

    def _left(self, gone: asyncio.Future[Any]) -> None:
        if not gone.cancelled():
            self.cancel("client_gone")

    def receiver(self, receive: Receive) -> Receive:
        """``receive`` for sending the reply: the disconnect this watch waits for (a stream
        asks for it at once; a whole answer never does)."""
        if self._receive is None:
            return receive

        async def disconnect() -> Any:
            if self._gone is None:
                if self._arm_timer is not None:
                    self._arm_timer.cancel()
                    self._arm_timer = None
                self._arm_now()
            assert self._gone is not None
            return await asyncio.shield(self._gone)

        return disconnect

    def cancel(self, reason: Reason) -> None:
        """Stop the request for ``reason`` (the first reason wins)."""
        task = self._task
        if self.reason is None and not self.closed and task is not None and not task.done():
            self.reason = reason
            task.cancel(reason)

    def claim(self, *reasons: Reason) -> Reason | None:
        """The reason, if the CancelledError being handled is ours (one of ``reasons``, if
        given); it is absorbed, so the task goes on. None: not ours, re-raise it."""
        reason = self.reason
        if reason is None or self._claimed or (reasons and reason not in reasons):
            return None
        self._claimed = True
        if self._task is not None:
            self._task.uncancel()
        return reason

    def watch_stream(self, idle_s: float, deadline_in_s: float) -> None:
        """Relaying a stream: stop it after ``idle_s`` waiting on the backend, or at the
        deadline. One timer per stream, moved only when it fires (`waiting`/`sending` are
        two attribute writes per event)."""
        self._idle_s = idle_s
        now = self._loop.time()
        self._deadline = now + deadline_in_s
        self.waiting()
        self._timer = self._loop.call_at(min(now + idle_s, self._deadline), self._check)

    def waiting(self) -> None:
        """Now waiting on the backend for the next event."""
        self._since = self._loop.time()
        self._waiting = True

    def sending(self) -> None:
        """Now sending to the client (a slow reader is not a quiet backend)."""
        self._waiting = False

    def _check(self) -> None:
        if self.closed or self.reason is not None:
            return
        now = self._loop.time()
        if not self._waiting:  # mid-send: look again soon
            due = min(now + self._idle_s, max(self._deadline, now + 0.05))
        elif now >= self._deadline:
            self.cancel("deadline")
            return
        elif now - self._since >= self._idle_s:
            self.cancel("idle")
            return
        else:
            due = min(self._since + self._idle_s, self._deadline)
        self._timer = self._loop.call_at(due, self._check)

    def close(self) -> None:
        """The request is over: stop watching."""
        self.closed = True
        if self._arm_timer is not None:
            self._arm_timer.cancel()
        if self._gone is not None and not self._gone.done():
            self._gone.cancel()
        if self._timer is not None:
            self._timer.cancel()
        if self._drain is not None:
            self._drain.unregister(self)


class Drain:
    """A worker's shutdown: not ready at once, requests finish within the grace, the rest cut."""

    def __init__(self, grace_s: float = 30.0) -> None:
        self.grace_s = grace_s
        self.draining = False
        self.cut_done = False
        self._watches: set[Watch] = set()

    def __len__(self) -> int:
        return len(self._watches)

    def register(self, watch: Watch) -> None:
        """A request has started."""
        self._watches.add(watch)
        if self.cut_done:
            asyncio.get_running_loop().call_soon(watch.cancel, "drain")

    def unregister(self, watch: Watch) -> None:
        """A request has ended."""
        self._watches.discard(watch)

    def begin(self) -> None:
        """SIGTERM: `/readyz` fails from now; what still runs after the grace is cut."""
        if self.draining:
            return
        self.draining = True
        log.info("draining", extra={"in_flight": len(self), "grace_s": self.grace_s})
        asyncio.get_running_loop().call_later(self.grace_s, self.cut)

    def cut(self) -> None:
        """The grace is over: end every request still running, each with an error."""
        self.cut_done = True
        if self._watches:
            log.warning("drain grace over: cutting requests", extra={"in_flight": len(self)})
        for watch in list(self._watches):
            watch.cancel("drain")

    def install(self, delay_s: float = 0.0) -> None:
        """Chain onto the server's SIGTERM and SIGINT handlers: drain at once; after SIGTERM
        the server stops accepting connections ``delay_s`` later (its handler, called then),
        after SIGINT (a terminal's Ctrl-C) at once, and a second Ctrl-C still forces it."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for signum, delay in ((signal.SIGTERM, delay_s), (signal.SIGINT, 0.0)):
            previous = signal.getsignal(signum)
            if callable(previous):
                signal.signal(signum, self._chained(loop, previous, delay))

    def _chained(
        self, loop: asyncio.AbstractEventLoop, previous: Callable[[int, Any], Any], delay_s: float
    ) -> Callable[[int, Any], None]:
        def handler(signum: int, frame: Any) -> None:
            loop.call_soon_threadsafe(self.begin)
            if delay_s > 0:
                loop.call_soon_threadsafe(loop.call_later, delay_s, previous, signum, None)
            else:
                previous(signum, frame)

        return handler
