"""Per-backend circuit breakers and in-flight counts (state shared by workers: breaker_board).

    closed ──(failures_to_open consecutive failures, failure_ratio of the recent attempts,
              or a failed health check)──▶ open
    open ──(open_s elapsed, or a health check passes)──▶ half-open
    half-open ──(a probe succeeds: closed at once)──▶ closed
    half-open ──(a probe fails)──▶ open again for open_s

While half-open at most `half_open_probes` requests at a time reach the backend; every other
request goes to its next target. So a backend that hangs costs one probe's timeout per
`open_s`, not a stall of every request in flight. Every admitted request ends in exactly one
of `success`, `failure` or `release` (cancelled, or an error that says nothing about the
backend), which gives its probe slot back.

The error ratio is counted per worker (one-second buckets of attempts and failures; only
those since the circuit last closed), the state it opens is shared. A backend that answers
429 or 503 with `Retry-After` is `pause`d until then: planning puts it last and the walk
skips it, like an open circuit, without changing the circuit's state.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from gateway.policy.resilience import BreakerPolicy

DEFAULT = BreakerPolicy()
# Kept for readers of the old constants (tests, tools).
FAILURES_TO_OPEN = DEFAULT.failures_to_open
COOLDOWN_S = DEFAULT.open_s


class State(IntEnum):
    """A circuit's state; the value is what `gateway_breaker_state` exports."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Admit(IntEnum):
    """What `Breaker.admit` allows: nothing (falsy), a normal request, or a probe."""

    REFUSED = 0
    PASS = 1
    PROBE = 2


OnChange = Callable[[str, State], None]
# Builds a backend's breaker (a shared one: `gateway.breaker_board`).
MakeBreaker = Callable[[str, OnChange | None], "Breaker"]


@dataclass(slots=True)
class Breaker:
    """One backend's circuit and in-flight count."""

    name: str = ""
    state: State = State.CLOSED
    failures: int = 0
    open_until: float = 0.0
    probes: int = 0
    in_flight: int = 0
    on_change: OnChange | None = None
    # Skipped until then: the backend's own Retry-After (shared, like the state).
    paused_until: float = 0.0
    # This worker's recent attempts: [second, attempts, failures], oldest first.
    window: deque[list[int]] = field(default_factory=deque)
    # Until when the backend's own load report (policy `load:`, gateway.load) holds it
    # saturated, and when it is polled next (shared, like the state). A verdict lapses by
    # itself: a poller that stops cannot keep a backend saturated.
    overloaded_until: float = 0.0
    load_due: float = 0.0

    def current(self, now: float) -> State:
        """The state as of ``now`` (an open circuit past its time reads as half-open)."""
        if self.state is State.OPEN and now >= self.open_until:
            return State.HALF_OPEN
        return self.state

    def usable(self, now: float, policy: BreakerPolicy = DEFAULT) -> bool:
        """Whether a request would be admitted now."""
        state = self.current(now)
        if state is State.CLOSED:
            return True
        return state is State.HALF_OPEN and self.probes < policy.half_open_probes

    def admit(self, now: float, policy: BreakerPolicy = DEFAULT) -> Admit:
        """Take a place: always when closed, a probe slot when half-open, none when open."""
        if self.state is State.CLOSED:
            return Admit.PASS
        if self.state is State.OPEN:
            if now < self.open_until:
                return Admit.REFUSED
            self._move(State.HALF_OPEN)
        if self.probes >= policy.half_open_probes:
            return Admit.REFUSED
        self.probes += 1
        return Admit.PROBE

    def success(self, admitted: Admit = Admit.PASS, now: float | None = None) -> None:
        """The backend answered: the circuit closes at once."""
        self._give_back(admitted)
        self.count(time.monotonic() if now is None else now, failed=False)
        self.failures = 0
        if self.state is not State.CLOSED:
            self._move(State.CLOSED)

    def failure(
        self,
        now: float | None = None,
        policy: BreakerPolicy = DEFAULT,
        admitted: Admit = Admit.PASS,
    ) -> None:
        """A backend failure (connect, timeout, 5xx, 429, bad answer)."""
        self._give_back(admitted)
        now = time.monotonic() if now is None else now
        self.count(now, failed=True)
        self.failures += 1
        # Not closed: a failed probe (or a late failure) opens it for a full period again.
        if (
            self.state is not State.CLOSED
            or self.failures >= policy.failures_to_open
            or self.ratio_exceeded(now, policy)
        ):
            self._open(now, policy)

    def count(self, now: float, *, failed: bool) -> None:
        """One attempt's outcome in this worker's window (kept for at most 60 s)."""
        second, window = int(now), self.window
        while window and window[0][0] <= second - 60:
            window.popleft()
        if not window or window[-1][0] != second:
            window.append([second, 0, 0])
        window[-1][1] += 1
        window[-1][2] += failed

    def ratio_exceeded(self, now: float, policy: BreakerPolicy = DEFAULT) -> bool:
        """Whether the recent failure ratio opens the circuit (enough attempts, enough failed).

        Counts the last `ratio_window_s` seconds, none from before the circuit last opened
        (`open_until`), so a circuit that just closed starts from a clean slate.
        """
        since = max(now - policy.ratio_window_s, self.open_until)
        total = failed = 0
        for second, attempts, failures in self.window:
            if second >= since:
                total += attempts
                failed += failures
        return total >= policy.ratio_min_requests and failed >= policy.failure_ratio * total

    def pause(self, now: float, seconds: float) -> None:
        """The backend asked not to be called for ``seconds`` (`Retry-After`)."""
        self.paused_until = max(self.paused_until, now + seconds)

    def paused(self, now: float) -> bool:
        """Whether the backend's own `Retry-After` still holds."""
        return now < self.paused_until

    def is_overloaded(self, now: float) -> bool:
        """Whether the backend's last load report, still current, found it saturated."""
        return now < self.overloaded_until

    def claim_poll(self, now: float, interval_s: float) -> bool:
        """Whether this worker polls the backend's load now (one poll per interval)."""
        if now < self.load_due:
            return False
        self.load_due = now + interval_s
        return True

    def load_polled(self, now: float, overloaded: bool, hold_s: float) -> None:
        """A poll's verdict: saturated for ``hold_s`` unless a later poll says otherwise."""
        self.overloaded_until = now + hold_s if overloaded else 0.0

    def release(self, admitted: Admit) -> None:
        """The attempt ended without saying anything about the backend (e.g. cancelled)."""
        self._give_back(admitted)

    def trip(self, now: float, policy: BreakerPolicy = DEFAULT) -> None:
        """A health check failed: open now (or stay open), whatever the failure count."""
        if self.state is not State.OPEN or self.open_until < now + policy.open_s:
            self._open(now, policy)

    def hold(self, now: float, until: float) -> None:
        """Another gateway replica opened this circuit until ``until``: open it as long."""
        if until > now and (self.state is not State.OPEN or self.open_until < until):
            self.open_until = until
            self.window.clear()
            self._move(State.OPEN)

    def healthy(self, now: float) -> None:
        """A health check passed: an open circuit may be probed at once."""
        if self.state is State.OPEN and self.open_until > now:
            self.open_until = now

    def retry_after(self, now: float) -> float:
        """Seconds until this backend is tried again (circuit open, or paused; 0 if now)."""
        wait = max(self.open_until - now, 0.0) if self.state is State.OPEN else 0.0
        return max(wait, self.paused_until - now)

    def _open(self, now: float, policy: BreakerPolicy) -> None:
        self.open_until = now + policy.open_s
        self.window.clear()
        self._move(State.OPEN)

    def _give_back(self, admitted: Admit) -> None:
        if admitted is Admit.PROBE and self.probes > 0:
            self.probes -= 1

    def _move(self, state: State) -> None:
        changed = state is not self.state
        self.state = state
        if changed and self.on_change is not None:
            self.on_change(self.name, state)


class Breakers:
    """The breaker of every backend by name; survives policy reloads."""

    def __init__(self, on_change: OnChange | None = None, make: MakeBreaker | None = None) -> None:
        self._by_name: dict[str, Breaker] = {}
        self._on_change = on_change
        self._make = make

    def __getitem__(self, name: str) -> Breaker:
        breaker = self._by_name.get(name)
        if breaker is None:
            if self._make is not None:
                breaker = self._make(name, self._on_change)
            else:
                breaker = Breaker(name, on_change=self._on_change)
            self._by_name[name] = breaker
        return breaker
