"""Breaker state shared by the workers of one replica, in a small memory-mapped file.

One 64-byte slot per backend, found by a digest of its name: state, consecutive failures,
probes in flight, the time the circuit stays open until and the time a backend's own
`Retry-After` holds until (CLOCK_MONOTONIC, the same clock in every process of the
machine). The common case, a closed circuit, is one byte read without a lock; every change
happens under an `flock` of the file, so "one probe at a time" holds across workers and a
circuit opened by one worker is open for all of them.

A second region of the file holds each backend's load state (policy `load:`): until when it
is saturated, and when its `/metrics` is polled next (the worker that claims a due poll
makes it: one poll per replica and interval).

In-flight counts (for `max_concurrency`) and the error-ratio window stay per worker: they
change on every request.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.breakers import DEFAULT, Admit, Breaker, OnChange, State
from gateway.policy.resilience import BreakerPolicy

SLOTS = 512
SLOT = 64
KEY = 16
# state, failures, probes, open_until, paused_until
_FIELDS = struct.Struct("<B3xIIdd")
_PAUSED = KEY + _FIELDS.size - 8
_EMPTY = bytes(KEY)
# The load region, at a slot's offset + LOAD: overloaded_until, load_due
LOAD = SLOTS * SLOT
_LOAD = struct.Struct("<dd")


class Board:
    """The shared file, mapped into this worker."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        with self.locked():
            if os.fstat(self._fd).st_size < 2 * LOAD:
                os.ftruncate(self._fd, 2 * LOAD)
        self._map = mmap.mmap(self._fd, 2 * LOAD)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's lock (held for microseconds: never across an await)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def slot(self, name: str) -> int:
        """The offset of a backend's slot, taking a free one on first use."""
        key = hashlib.blake2b(name.encode(), digest_size=KEY).digest()
        with self.locked():
            for offset in range(0, SLOTS * SLOT, SLOT):
                held = self._map[offset : offset + KEY]
                if held == key:
                    return offset
                if held == _EMPTY:
                    self._map[offset : offset + KEY] = key
                    return offset
        raise RuntimeError(f"the breaker board is full ({SLOTS} backends)")

    def closed(self, offset: int) -> bool:
        """Whether a slot's circuit is closed with no failures counted (no lock)."""
        state, failures, _, _, _ = _FIELDS.unpack_from(self._map, offset + KEY)
        return bool(state == State.CLOSED and failures == 0)

    def paused_until(self, offset: int) -> float:
        """Until when a slot's backend asked not to be called (no lock)."""
        (until,) = struct.unpack_from("<d", self._map, offset + _PAUSED)
        return float(until)

    def load(self, offset: int, breaker: Breaker) -> None:
        """Copy a slot into a breaker."""
        fields = _FIELDS.unpack_from(self._map, offset + KEY)
        state, breaker.failures, breaker.probes, breaker.open_until, breaker.paused_until = fields
        breaker.state = State(state)

    def save(self, offset: int, breaker: Breaker) -> None:
        """Copy a breaker into its slot."""
        fields = (
            breaker.state.value,
            breaker.failures,
            breaker.probes,
            breaker.open_until,
            breaker.paused_until,
        )
        _FIELDS.pack_into(self._map, offset + KEY, *fields)

    def overloaded_until(self, offset: int) -> float:
        """Until when a slot's backend is saturated by its last load poll (no lock)."""
        (until,) = struct.unpack_from("<d", self._map, LOAD + offset)
        return float(until)

    def load_state(self, offset: int, breaker: Breaker) -> None:
        """Copy a slot's load state into a breaker."""
        breaker.overloaded_until, breaker.load_due = _LOAD.unpack_from(self._map, LOAD + offset)

    def save_load_state(self, offset: int, breaker: Breaker) -> None:
        """Copy a breaker's load state into its slot."""
        _LOAD.pack_into(self._map, LOAD + offset, breaker.overloaded_until, breaker.load_due)

    def breaker(self, name: str, on_change: OnChange | None) -> Breaker:
        """A breaker whose state lives on this board."""
        return SharedBreaker(name, on_change=on_change, board=self, offset=self.slot(name))

    def close(self) -> None:
        """Unmap the file."""
        self._map.close()
        os.close(self._fd)


@dataclass(slots=True)
class SharedBreaker(Breaker):
    """A `Breaker` that reads and writes its state on the board (the same rules)."""

    board: Board | None = None
    offset: int = 0

    @contextmanager
    def _synced(self) -> Iterator[None]:
        assert self.board is not None
        with self.board.locked():
            self.board.load(self.offset, self)
            yield
            self.board.save(self.offset, self)

    def _fresh(self) -> Breaker:
        assert self.board is not None
        self.board.load(self.offset, self)
        return self

    def current(self, now: float) -> State:
        """The shared state as of ``now``."""
        return Breaker.current(self._fresh(), now)

    def usable(self, now: float, policy: BreakerPolicy = DEFAULT) -> bool:
        """Whether a request would be admitted now, by any worker's count."""
        return Breaker.usable(self._fresh(), now, policy)

    def admit(self, now: float, policy: BreakerPolicy = DEFAULT) -> Admit:
        """As `Breaker.admit`, across workers."""
        assert self.board is not None
        if self.board.closed(self.offset):
            self.state = State.CLOSED
            return Admit.PASS
        with self._synced():
            return Breaker.admit(self, now, policy)

    def success(self, admitted: Admit = Admit.PASS, now: float | None = None) -> None:
        """As `Breaker.success`; nothing to write when it is closed already."""
        assert self.board is not None
        if admitted is not Admit.PROBE and self.board.closed(self.offset):
            self.count(time.monotonic() if now is None else now, failed=False)
            return
        with self._synced():
            Breaker.success(self, admitted, now)

    def failure(
        self,
        now: float | None = None,
        policy: BreakerPolicy = DEFAULT,
        admitted: Admit = Admit.PASS,
    ) -> None:
        """As `Breaker.failure`, counted for every worker."""
        with self._synced():
            Breaker.failure(self, now, policy, admitted)

    def release(self, admitted: Admit) -> None:
        """As `Breaker.release` (only a probe has anything to give back)."""
        if admitted is Admit.PROBE:
            with self._synced():
                Breaker.release(self, admitted)

    def trip(self, now: float, policy: BreakerPolicy = DEFAULT) -> None:
        """As `Breaker.trip`."""
        with self._synced():
            Breaker.trip(self, now, policy)

    def retry_after(self, now: float) -> float:
        """As `Breaker.retry_after`, from the shared state."""
        return Breaker.retry_after(self._fresh(), now)

    def pause(self, now: float, seconds: float) -> None:
        """As `Breaker.pause`, for every worker."""
        with self._synced():
            Breaker.pause(self, now, seconds)

    def paused(self, now: float) -> bool:
        """As `Breaker.paused`, by any worker's pause (no lock)."""
        assert self.board is not None
        return now < self.board.paused_until(self.offset)

    def hold(self, now: float, until: float) -> None:
        """As `Breaker.hold`, for every worker."""
        with self._synced():
            Breaker.hold(self, now, until)

    def healthy(self, now: float) -> None:
        """As `Breaker.healthy`."""
        with self._synced():
            Breaker.healthy(self, now)

    @contextmanager
    def _load_synced(self) -> Iterator[None]:
        assert self.board is not None
        with self.board.locked():
            self.board.load_state(self.offset, self)
            yield
            self.board.save_load_state(self.offset, self)

    def is_overloaded(self, now: float) -> bool:
        """As `Breaker.is_overloaded`, by the last poll of any worker (no lock)."""
        assert self.board is not None
        return now < self.board.overloaded_until(self.offset)

    def claim_poll(self, now: float, interval_s: float) -> bool:
        """As `Breaker.claim_poll`: the first worker to find the poll due makes it."""
        with self._load_synced():
            return Breaker.claim_poll(self, now, interval_s)

    def load_polled(self, now: float, overloaded: bool, hold_s: float) -> None:
        """As `Breaker.load_polled`, for every worker."""
        with self._load_synced():
            Breaker.load_polled(self, now, overloaded, hold_s)
