"""Target-share calibration: turn "send about 20% to the closed tier" into a threshold.

Scores of recent traffic go into fixed-bin histograms, one per time bucket; the threshold
is the score above which ``target_share`` of the recent window lies. Each replica counts
locally; ``sync`` adds its new counts to one Redis hash per time bucket (expiring with
the window) and reads back the merged window, so all replicas route against the same
cluster-wide distribution. Before enough traffic is seen, the score histogram of the
training data (shipped in the artifact) stands in as a prior.

Scores can tie (templated prompts score the same): when the target share falls inside a
mass of equal or nearly equal scores (one histogram bin), ``score >= threshold()`` sends
all of it one way. ``decide(score)`` routes a seeded random fraction of the threshold's
bin instead (``closed_fraction_at_threshold``), so the realised share tracks the target.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gateway.difficulty.artifact import HISTOGRAM_BINS

_CLOSED, _TOTAL = "closed", "total"


def cut_of(counts: Sequence[float], q: float) -> tuple[int, float, float]:
    """Where the ``q`` quantile cuts a histogram: ``(bin, share of the bin above, quantile)``.

    The bin's share above is the fraction of its mass that lies beyond the quantile, so
    sending that fraction of the bin (and everything above it) gives exactly ``1 - q``.
    """
    q = min(max(q, 0.0), 1.0)
    bins = len(counts)
    total = sum(counts)
    if total <= 0:
        i = min(int(q * bins), bins - 1)
        return i, 1.0 - (q * bins - i), q
    want = q * total
    seen = 0.0
    for i, c in enumerate(counts):
        if c > 0 and seen + c >= want:
            return i, (seen + c - want) / c, (i + (want - seen) / c) / bins
        seen += c
    return bins - 1, 0.0, 1.0


def quantile_of(counts: Sequence[float], q: float) -> float:
    """Quantile of a histogram over [0, 1] given by its bin counts."""
    return cut_of(counts, q)[2]


def _add(into: list[float], counts: Iterable[float]) -> None:
    for i, c in enumerate(counts):
        into[i] += c


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ShareCalibrator:
    """Keeps the score threshold that sends about ``target_share`` of traffic to closed."""

    def __init__(
        self,
        target_share: float,
        *,
        bins: int = HISTOGRAM_BINS,
        bucket_seconds: float = 10.0,
        window_buckets: int = 30,
        prior: Sequence[float] | None = None,
        prior_weight: float = 500.0,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= target_share <= 1.0:
            raise ValueError("target_share must be within [0, 1]")
        self.target_share = target_share
        self.bins = bins
        self.bucket_seconds = bucket_seconds
        self.window_buckets = window_buckets
        self.prior_weight = prior_weight
        self._clock = clock
        self._prior = _normalised(prior, bins)
        # bucket id -> bin counts + [closed, total]; ids come from wall-clock time so that
        # replicas agree on them without talking to each other.
        self._local: dict[int, list[float]] = {}
        self._pending: dict[int, list[float]] = {}
        self._remote: dict[int, list[float]] | None = None
        self._cached: float | None = None
        self._cut = (bins - 1, 0.0)  # threshold's bin and the share of it sent closed
        self._since_refresh = 0
        self._rng = random.Random(seed)

    def _bucket(self) -> int:
        return math.floor(self._clock() / self.bucket_seconds)

    def _slot(self, store: dict[int, list[float]], bucket: int) -> list[float]:
        slot = store.get(bucket)
        if slot is None:
            slot = store[bucket] = [0.0] * (self.bins + 2)
            for old in [b for b in store if b <= bucket - self.window_buckets]:
                del store[old]
        return slot

    def observe(self, score: float) -> None:
        """Record the score of one request."""
        if math.isnan(score):
            return
        i = min(int(min(max(score, 0.0), 1.0) * self.bins), self.bins - 1)
        bucket = self._bucket()
        self._slot(self._local, bucket)[i] += 1.0
        self._slot(self._pending, bucket)[i] += 1.0
        self._since_refresh += 1
        if self._since_refresh >= 32:  # the quantile walk is cheap, but not per request
            self._cached = None

    def record(self, routed_closed: bool) -> None:
        """Record one routing decision, for ``realised_share``."""
        bucket = self._bucket()
        for store in (self._local, self._pending):
            slot = self._slot(store, bucket)
            slot[self.bins] += 1.0 if routed_closed else 0.0
            slot[self.bins + 1] += 1.0

    def _window(self) -> list[float]:
        """Summed counts of the recent window: merged Redis view if synced, else local."""
        lo = self._bucket() - self.window_buckets
        total = [0.0] * (self.bins + 2)
        stores = [self._local] if self._remote is None else [self._remote, self._pending]
        for store in stores:
            for bucket, slot in store.items():
                if bucket > lo:
                    _add(total, slot)
        return total

    def observed(self) -> float:
        """How many scores the recent window holds (without the prior)."""
        return sum(self._window()[: self.bins])

    def threshold(self) -> float:
        """Score at or above which a request goes to the closed tier."""
        if self._cached is None:
            counts = self._window()[: self.bins]
            seen = sum(counts)
            if seen < self.prior_weight:  # thin evidence: lean on the training distribution
                missing = self.prior_weight - seen
                counts = [c + p * missing for c, p in zip(counts, self._prior, strict=True)]
            cut, fraction, self._cached = cut_of(counts, 1.0 - self.target_share)
            self._cut = (cut, fraction)
            self._since_refresh = 0
        return self._cached

    def closed_fraction_at_threshold(self) -> float:
        """Share of the scores in the threshold's histogram bin that go to the closed tier."""
        self.threshold()
        return self._cut[1]

    def decide(self, score: float) -> bool:
        """Whether a request with ``score`` goes to the closed tier, tie-aware.

        Above the threshold's bin: closed; below it: open; inside it (equal or nearly
        equal scores, which ``threshold`` cannot split): closed with the bin's fraction,
        drawn from the calibrator's seeded generator.
        """
        if math.isnan(score) or self.target_share <= 0.0:
            return False
        if self.target_share >= 1.0:
            return True
        self.threshold()
        cut, fraction = self._cut
        i = min(int(min(max(score, 0.0), 1.0) * self.bins), self.bins - 1)
        if i != cut:
            return i > cut
        return fraction >= 1.0 or self._rng.random() < fraction

    def realised_share(self) -> float:
        """Share of recent recorded decisions that went to the closed tier."""
        window = self._window()
        total = window[self.bins + 1]
        return window[self.bins] / total if total else 0.0

    async def sync(self, redis: Any, key: str) -> None:
        """Push new counts to Redis (one hash per time bucket) and pull the merged window."""
        pending, self._pending = self._pending, {}
        now = self._bucket()
        ttl = max(1, math.ceil(self.bucket_seconds * (self.window_buckets + 2)))
        pipe = redis.pipeline(transaction=True)
        for bucket, slot in pending.items():
            name = f"{key}:{bucket}"
            for i, count in enumerate(slot):
                if count:
                    field = _CLOSED if i == self.bins else _TOTAL if i > self.bins else str(i)
                    pipe.hincrby(name, field, int(count))
            pipe.expire(name, ttl)
        window = range(now - self.window_buckets + 1, now + 1)
        for bucket in window:
            pipe.hgetall(f"{key}:{bucket}")
        try:
            replies = await pipe.execute()
        except BaseException:
            for bucket, slot in pending.items():  # nothing was applied: retry next time
                _add(self._slot(self._pending, bucket), slot)
            raise
        remote: dict[int, list[float]] = {}
        for bucket, reply in zip(window, replies[-len(window) :], strict=True):
            if reply:
                remote[bucket] = self._parse(reply)
        self._remote = remote
        self._cached = None

    def _parse(self, reply: dict[Any, Any]) -> list[float]:
        slot = [0.0] * (self.bins + 2)
        for raw_field, raw_value in reply.items():
            field, value = _decode(raw_field), float(_decode(raw_value))
            if field == _CLOSED:
                slot[self.bins] = value
            elif field == _TOTAL:
                slot[self.bins + 1] = value
            elif field.isdigit() and int(field) < self.bins:
                slot[int(field)] = value
        return slot


def _normalised(prior: Sequence[float] | None, bins: int) -> list[float]:
    """Prior bin shares; uniform when absent. A prior of another size is a bug, not a default."""
    if prior is not None and len(prior) != bins:
        raise ValueError(f"the score prior has {len(prior)} bins, the calibrator {bins}")
    if prior is None or sum(prior) <= 0:
        return [1.0 / bins] * bins
    total = float(sum(prior))
    return [max(0.0, float(p)) / total for p in prior]
