"""Per-worker retry budget: retries may not outgrow a share of recent first attempts.

Every request's first attempt adds to the budget; every retry (an attempt after a request's
first, on another target) spends from it. Over the last `window_s` seconds a worker sends at
most ``ratio × first attempts + min_per_s × window_s`` retries (the floor lets a quiet worker
still retry). When every backend fails at once, retries stay a fifth of the traffic (with
the defaults) instead of doubling or tripling it; the request then fails fast with its last
error. Counted in one-second buckets, so the window slides by the second.
"""

from __future__ import annotations

from collections import deque

from gateway.policy.resilience import Retries

DEFAULT = Retries()


class RetryBudget:
    """First attempts and retries over the last seconds, in one-second buckets."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        # [second, first attempts, retries], oldest first.
        self._buckets: deque[list[int]] = deque()

    def _bucket(self, now: float, window_s: float) -> list[int]:
        second = int(now)
        buckets = self._buckets
        while buckets and buckets[0][0] <= second - window_s:
            buckets.popleft()
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0, 0])
        return buckets[-1]

    def first(self, now: float, policy: Retries = DEFAULT) -> None:
        """A request's first attempt."""
        self._bucket(now, policy.window_s)[1] += 1

    def try_retry(self, now: float, policy: Retries = DEFAULT) -> bool:
        """Spend one retry if the budget allows it; False when it is spent."""
        bucket = self._bucket(now, policy.window_s)
        firsts = sum(b[1] for b in self._buckets)
        retries = sum(b[2] for b in self._buckets)
        if retries + 1 > policy.ratio * firsts + policy.min_per_s * policy.window_s:
            return False
        bucket[2] += 1
        return True

    def counts(self, now: float, policy: Retries = DEFAULT) -> tuple[int, int]:
        """First attempts and retries within the window."""
        self._bucket(now, policy.window_s)
        return sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets)
