"""Projected quality in `gateway policy simulate --labels LABELS.jsonl`.

Label records (`gateway shadow export`) say, for a sample of requests, how much the open
tier's answer fell short of the closed tier's (`label` in [0, 1], by the judge's view) at
the request's difficulty `score`. From them the simulation estimates the open tier's
shortfall as a function of the score:

- the labels are put into ten equal-width score bins ([0, 0.1), [0.1, 0.2), ..., [0.9, 1]);
- a bin's estimate is its mean label shrunk toward the overall mean label with `PRIOR`
  pseudo-labels: `(sum of the bin's labels + PRIOR * mean) / (labels in the bin + PRIOR)`.
  A bin without labels gets the overall mean; one with many labels, nearly its own mean.
- a record's estimated shortfall is its score's bin estimate (the overall mean when the
  record has no score). Labels without a score are not used.

Per policy: `projected_open_shortfall` = the estimated shortfall summed over the records
that end on the open tier, divided by all records (lower is better); `quality_recovered`
= the estimated shortfall of the records that end on the closed tier as a share of the
estimated shortfall of all records (what sending everything to the open tier would give up).
Records without a backend (refused, unroutable) count in neither.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from gateway_tools.decisions import SourceError
from gateway_tools.replay_log import NO_BACKEND, FloatArray, IntArray
from gateway_tools.simulate import Outcome
from gateway_tools.simulate_rescore import json_objects

BINS = 10
PRIOR = 10.0


@dataclass(frozen=True)
class Curve:
    """The estimated open-tier shortfall per score bin."""

    estimate: FloatArray  # per bin
    counts: IntArray  # labels per bin
    mean: float  # the overall mean label
    without_score: int  # labels left out: no score

    def at(self, scores: FloatArray) -> FloatArray:
        """The estimated shortfall at each score (the overall mean for NaN)."""
        bins = np.clip(np.floor(np.nan_to_num(scores) * BINS).astype(np.int64), 0, BINS - 1)
        return np.where(np.isnan(scores), self.mean, self.estimate[bins])

    def summary(self) -> dict[str, Any]:
        """The `labels` object of the simulate JSON."""
        return {
            "used": int(self.counts.sum()),
            "without_score": self.without_score,
            "mean": self.mean,
            "by_score_bin": [round(float(e), 6) for e in self.estimate],
        }


def _unit(value: object) -> TypeGuard[int | float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 1.0
    )


def read_labels(path: str, rescored: Mapping[str, float] | None = None) -> Curve:
    """Fit the curve on a label file; `rescored` (id → score) replaces recorded scores."""
    scores: list[float] = []
    labels: list[float] = []
    without_score = 0
    for number, row in json_objects(path):
        label = row.get("label")
        if not _unit(label):
            raise SourceError(f"{path}:{number}: label must be a number in [0, 1]")
        score = row.get("score")
        if rescored is not None and str(row.get("id")) in rescored:
            score = rescored[str(row.get("id"))]
        if score is None:
            without_score += 1
            continue
        if not _unit(score):
            raise SourceError(f"{path}:{number}: score must be a number in [0, 1] or null")
        scores.append(float(score))
        labels.append(float(label))
    if not labels:
        raise SourceError(f"{path}: no label record with a score")
    return fit(np.array(scores), np.array(labels), without_score)


def fit(scores: FloatArray, labels: FloatArray, without_score: int = 0) -> Curve:
    """The shrunk per-bin means (see the module docstring)."""
    bins = np.clip(np.floor(scores * BINS).astype(np.int64), 0, BINS - 1)
    counts = np.bincount(bins, minlength=BINS)
    sums = np.bincount(bins, weights=labels, minlength=BINS)
    mean = math.fsum(labels.tolist()) / labels.size
    estimate = (sums + PRIOR * mean) / (counts + PRIOR)
    return Curve(estimate, counts.astype(np.int64), mean, without_score)


def quality(outcome: Outcome, shortfall: FloatArray) -> dict[str, float]:
    """`projected_open_shortfall` and `quality_recovered` of one outcome."""
    n = shortfall.size
    unserved = np.array([name == NO_BACKEND for name in outcome.names] or [False])
    served = ~unserved[outcome.backend] if n else np.zeros(0, np.bool_)
    on_open = served & ~outcome.closed
    total = math.fsum(shortfall.tolist())
    projected = math.fsum(shortfall[on_open].tolist()) / n if n else 0.0
    recovered = math.fsum(shortfall[outcome.closed].tolist()) / total if total > 0 else 0.0
    return {"projected_open_shortfall": projected, "quality_recovered": recovered}


def add_quality(
    summary: dict[str, Any], curve: Curve, scores: FloatArray, candidate: Outcome, baseline: Outcome
) -> None:
    """Add the quality keys to a simulate summary (in place)."""
    shortfall = curve.at(scores)
    summary["candidate"].update(quality(candidate, shortfall))
    summary["baseline"].update(quality(baseline, shortfall))
    summary["labels"] = curve.summary()
