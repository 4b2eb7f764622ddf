"""Per-backend circuit breakers and in-flight counts, local to each worker."""

from __future__ import annotations

import time
from dataclasses import dataclass

FAILURES_TO_OPEN = 3
COOLDOWN_S = 10.0


@dataclass(slots=True)
class Breaker:
    """Opens after consecutive failures; after a cooldown lets traffic probe it again."""

    failures: int = 0
    open_until: float = 0.0
    in_flight: int = 0

    def usable(self, now: float) -> bool:
        """False while the circuit is open."""
        return now >= self.open_until

    def success(self) -> None:
        """A request succeeded: close the circuit."""
        self.failures = 0
        self.open_until = 0.0

    def failure(self, now: float | None = None) -> None:
        """A request failed for a backend reason (connect, timeout, 5xx, 429)."""
        self.failures += 1
        if self.failures >= FAILURES_TO_OPEN:
            self.open_until = (time.monotonic() if now is None else now) + COOLDOWN_S


class Breakers:
    """The breaker of every backend by name; survives policy reloads."""

    def __init__(self) -> None:
        self._by_name: dict[str, Breaker] = {}

    def __getitem__(self, name: str) -> Breaker:
        health = self._by_name.get(name)
        if health is None:
            health = self._by_name[name] = Breaker()
        return health
