"""Recalibration: when the guard keeps the base, its scores can still be put on the right scale.

A deployment whose labels do not show a clearly better *ranking* may still show that the
base's probabilities are off: ZeroEval's open tier falls short on 61% of its requests while
the benchmark-trained base says 31%. A threshold rule (`when: {difficulty_above: 0.5}`) and
the dashboard's open-worse rate by decile read those probabilities as such.

``recalibrate`` fits ``scale * base logit + bias`` (two numbers; a positive scale keeps every
request's rank, so the routing of a ``closed_share`` rule and the APGR stay exactly as they
were) on the labels, checks it on held-back labels (the same grouped folds as the guard),
and keeps it only when the held-out log loss is clearly lower: the guard's quantile of the
paired bootstrap gain above zero. The result is a ``Residual`` with no bin or word weights,
composed with the base's own residual when it has one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.difficulty.artifact import HISTOGRAM_BINS, Artifact, Residual

if TYPE_CHECKING:
    from gateway_tools.adapt import AdaptConfig, LabelSet

_EPS = 1e-6


@dataclass(slots=True)
class Recalibration:
    """Held-out log loss of the base and the recalibrated scores on the labels."""

    scale: float
    bias: float
    loss_base: float
    loss_recalibrated: float
    gain_low: float  # the guard's one-sided bound of the loss reduction

    @property
    def better(self) -> bool:
        """Clearly better calibrated, and still the same ranking (a positive scale)."""
        return self.gain_low > 0.0 and self.scale > 0.0

    def as_meta(self) -> dict[str, Any]:
        """JSON-safe summary, stored in the recalibrated artifact."""
        return {
            "scale": round(self.scale, 6),
            "bias": round(self.bias, 6),
            "log_loss_base": round(self.loss_base, 6),
            "log_loss_recalibrated": round(self.loss_recalibrated, 6),
        }


def _log_loss(logit: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(1.0 / (1.0 + np.exp(-logit)), _EPS, 1.0 - _EPS)
    return np.asarray(-(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def fit_scale_bias(x: np.ndarray, y: np.ndarray, l2_scale: float) -> tuple[float, float]:
    """``scale, bias`` minimising the summed log loss of ``scale * x + bias`` (Newton).

    Soft labels in [0, 1]; ``scale`` is penalised toward 1 by ``l2_scale`` (in the summed
    loss, like the residual's), ``bias`` not at all.
    """
    w = np.array([1.0, 0.0])
    design = np.stack([x, np.ones_like(x)], axis=1)
    for _ in range(50):
        z = design @ w
        p = 1.0 / (1.0 + np.exp(-z))
        grad = design.T @ (p - y) + np.array([l2_scale * (w[0] - 1.0), 0.0])
        hess = design.T @ (design * (p * (1.0 - p))[:, None]) + np.diag([l2_scale, 1e-9])
        step = np.linalg.solve(hess, grad)
        w = w - step
        if float(np.abs(step).max()) < 1e-9:
            break
    return float(w[0]), float(w[1])


def check(ls: LabelSet, folds: np.ndarray, config: AdaptConfig) -> Recalibration:
    """Fit on all labels; validate out of fold against the base's log loss."""
    x, y = ls.base, ls.labels
    oof = x.copy()
    for f in range(config.folds):
        test, train = folds == f, folds != f
        if test.any() and train.any():
            s, b = fit_scale_bias(x[train], y[train], config.l2_scale)
            oof[test] = s * x[test] + b
    gain = _log_loss(x, y) - _log_loss(oof, y)  # per label: how much lower the loss is
    rng = np.random.default_rng(config.seed)
    draws = np.array(
        [gain[rng.integers(0, len(gain), len(gain))].mean() for _ in range(config.bootstrap)]
    )
    scale, bias = fit_scale_bias(x, y, config.l2_scale)
    return Recalibration(
        scale,
        bias,
        float(_log_loss(x, y).mean()),
        float(_log_loss(oof, y).mean()),
        float(np.quantile(draws, config.guard_quantile)) if len(draws) else float("nan"),
    )


def recalibrated(base: Artifact, r: Recalibration, meta: dict[str, Any]) -> Artifact:
    """The base with ``r`` on top of its scores (composed with the base's residual)."""
    n_dense = len(base.dense_w)
    given = base.residual
    if given is None:
        given = Residual(1.0, 0.0, np.zeros(n_dense), [], np.zeros(0))
    residual = Residual(
        scale=r.scale * given.scale,
        bias=r.scale * given.bias + r.bias,
        dense_w=r.scale * given.dense_w,
        vocab=list(given.vocab),
        word_w=r.scale * given.word_w,
        meta=dict(meta, recalibration=r.as_meta()),
    )
    # The base's score histogram, each bin moved where the new scale puts it.
    centre = (np.arange(HISTOGRAM_BINS) + 0.5) / HISTOGRAM_BINS
    moved = 1.0 / (1.0 + np.exp(-(r.scale * np.log(centre / (1.0 - centre)) + r.bias)))
    prior, _ = np.histogram(moved, bins=HISTOGRAM_BINS, range=(0, 1), weights=base.score_prior)
    return with_residual(base, residual, prior, "recalibrated")


def with_residual(base: Artifact, residual: Residual, prior: np.ndarray, kind: str) -> Artifact:
    """``base`` serving ``residual``, named ``<name>+<kind>``, as the server will load it."""
    name = str(base.meta.get("name", "difficulty")).split("+", 1)[0] + "+" + kind
    out = replace(
        base,
        residual=residual,
        score_prior=prior.astype(np.float64),
        meta=dict(base.meta, name=name),
    )
    # What is written is what the server loads: round-trip so float32 storage is what counts.
    return Artifact.from_bytes(out.to_bytes())
