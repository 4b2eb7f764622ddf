"""Balancing a backend's replicas: power of two choices on requests in flight.

A backend with `base_urls` is planned as its replicas in a row (`Backend.replicas`), so a
retry after one replica fails goes to another replica of the same backend before the next
backend, within the request's `max_attempts` and the worker's retry budget. The first is
drawn by two choices: two replicas at random, the one with fewer requests in flight (this
worker's count; a tie goes to the first drawn). The others follow, fewest in flight first.

Each replica has its own circuit (outlier ejection): one whose circuit refuses, or that
asked for time with `Retry-After`, goes to the end of the plan with the saturated ones, as
an open backend does. When every replica is out, the backend is out, and the plan's next
backend comes first, as for a backend with one URL.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.breakers import Breakers, State
from gateway.policy import Backend

if TYPE_CHECKING:
    from gateway.metrics import Metrics

# randrange(n): a draw in [0, n); tests pass a seeded one.
Draw = Callable[[int], int]


def two_choices(loads: Sequence[int], draw: Draw = random.randrange) -> int:
    """The index of the less loaded of two distinct replicas drawn at random."""
    n = len(loads)
    if n == 1:
        return 0
    a = draw(n)
    b = draw(n - 1)
    b += b >= a
    return a if loads[a] <= loads[b] else b


@dataclass(slots=True)
class Placement:
    """A backend's replicas as the plan takes them."""

    # Usable and below `max_concurrency`: the two-choices pick, then fewest in flight.
    ready: list[Backend] = field(default_factory=list)
    # Saturated (fewest in flight first), then those whose circuit refuses or are paused.
    degraded: list[Backend] = field(default_factory=list)
    # The breaker keys of the refusing or paused ones.
    refusing: list[str] = field(default_factory=list)
    # Some replica would admit the request, and every one that would is saturated.
    saturated: bool = False


def place(
    replicas: Sequence[Backend], breakers: Breakers, now: float, draw: Draw = random.randrange
) -> Placement:
    """Order one backend's replicas for a plan."""
    placed = Placement()
    free: list[tuple[int, Backend]] = []
    busy: list[tuple[int, Backend]] = []
    out: list[Backend] = []
    for replica in replicas:
        state = breakers[replica.key]
        limit = replica.max_concurrency
        if not state.usable(now, replica.breaker) or state.paused(now):
            out.append(replica)
            placed.refusing.append(replica.key)
        elif limit is not None and state.in_flight >= limit:
            busy.append((state.in_flight, replica))
        else:
            free.append((state.in_flight, replica))
    if free:
        first = free.pop(two_choices([load for load, _ in free], draw))
        free.sort(key=_load)
        placed.ready = [first[1], *(replica for _, replica in free)]
    busy.sort(key=_load)
    placed.degraded = [*(replica for _, replica in busy), *out]
    placed.saturated = bool(busy) and not placed.ready
    return placed


def _load(pair: tuple[int, Backend]) -> int:
    return pair[0]


def circuits(backend: Backend, breakers: Breakers, now: float) -> list[State]:
    """The circuit of each of a backend's replicas, as of ``now``."""
    return [breakers[replica.key].current(now) for replica in backend.replicas or ()]


def best(states: Sequence[State]) -> State:
    """A replicated backend's circuit: the best of its replicas' (closed if one is)."""
    return min(states, default=State.OPEN)


def moved(metrics: Metrics, backend: Backend, index: int, state: State, others: State) -> None:
    """A replica's circuit changed: its gauge, its transition, the backend's circuit gauge.

    ``others`` is the best circuit among the backend's other replicas (read by the caller
    without touching the breaker that is moving, whose state is being written).
    """
    replica = str(index)
    metrics.replica_up.labels(backend.name, replica).set(1 if state is State.CLOSED else 0)
    metrics.replica_transitions.labels(backend.name, replica, state.name.lower()).inc()
    metrics.breaker_state.labels(backend.name).set(min(state, others).value)
