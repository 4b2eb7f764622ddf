"""Guarded adaptation: a deployment's labels teach a residual on top of the trained model.

The adapted logit is ``scale * base logit + bias + bin weights + word weights``
(``artifact.Residual``), fitted by logistic regression with the base logit as an offset,
so with no evidence it *is* the base. Every residual weight has an L2 penalty that is
fixed in the summed loss (so it weighs ``l2 / n`` per label): with few labels the fit stays
at the base, with many the labels win. ``scale`` is penalised toward 1, ``bias`` barely:
the deployment's base rate is learned freely and scores stay one calibrated probability.

The guard: the labels are split into grouped folds (near-duplicate prompts share a group,
so none is on both sides), each fold is scored by a residual fitted on the others, and
the adapted model is taken only if its APGR on the labels beats the base's with the
whole paired bootstrap interval above zero. Otherwise the base is kept, as it was.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gateway.difficulty.artifact import HISTOGRAM_BINS, Artifact, Residual
from gateway.difficulty.classifier import DifficultyClassifier
from gateway_tools import recalibrate as recalibration
from gateway_tools.evaluate import apgr, bootstrap_apgr, interval
from gateway_tools.recalibrate import Recalibration
from gateway_tools.sparse import CsrRows, fit_logistic

_NON_WORD = re.compile(r"[\W_]+")
_DIGITS = re.compile(r"\d+")


@dataclass(slots=True)
class AdaptConfig:
    """Knobs of ``adapt``; penalties are per summed loss (divided by the label count)."""

    l2_scale: float = 30.0
    l2_dense: float = 10.0
    l2_words: float = 3.0
    min_df: int = 3  # a word must be in this many labelled prompts
    max_df_share: float = 0.5
    max_words: int = 4_096
    folds: int = 5
    bootstrap: int = 200
    min_labels: int = 50
    # adopt only if this share of the resampled gains is above zero at most (one-sided)
    guard_quantile: float = 0.1
    # when the residual is not clearly better: rescale the base's scores if that is (ranking kept)
    recalibrate: bool = True
    max_iter: int = 200
    seed: int = 0


@dataclass(slots=True)
class LabelSet:
    """Labelled prompts as the base model sees them."""

    root: np.ndarray  # logit of the base's trained model (the residual's offset)
    base: np.ndarray  # logit of the base artifact as given (with any residual it has)
    bins: np.ndarray  # (n, statistics): bin of each statistic
    tokens: list[set[bytes]]
    labels: np.ndarray
    groups: np.ndarray  # near-duplicate group id per prompt


@dataclass(slots=True)
class Validation:
    """Base against adapted APGR on held-back labels (grouped folds)."""

    n: int
    groups: int
    base: float
    adapted: float
    base_ci: tuple[float, float] | None
    adapted_ci: tuple[float, float] | None
    gain_ci: tuple[float, float] | None
    gain_low: float = float("nan")  # the guard's one-sided bound of the gain
    reason: str = ""

    @property
    def better(self) -> bool:
        """Clearly better: the guard's lower bound of the paired gain is above zero."""
        return self.gain_low > 0.0 and not self.reason

    def as_meta(self) -> dict[str, Any]:
        """JSON-safe summary, stored in the adapted artifact."""
        return {
            "labels": self.n,
            "groups": self.groups,
            "apgr_base": round(self.base, 6),
            "apgr_adapted": round(self.adapted, 6),
            "gain_ci": None if self.gain_ci is None else [round(x, 6) for x in self.gain_ci],
        }


@dataclass(slots=True)
class Outcome:
    """What ``adapt`` decided and the artifact it made."""

    artifact: Artifact
    adapted: bool
    validation: Validation
    # Set when the base was kept but its scores were put on the labels' scale (same ranking).
    recalibration: Recalibration | None = None


def group_of(messages: Any) -> str:
    """Near-duplicate key: a hash of the normalised first user message (digits folded)."""
    text = ""
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and message.get("role", "user") == "user":
                content = message.get("content")
                text = content if isinstance(content, str) else repr(content)
                break
    norm = " ".join(_NON_WORD.sub(" ", _DIGITS.sub("0", text.lower())).split())
    return hashlib.sha1(norm.encode()).hexdigest()[:16]


def root_of(artifact: Artifact) -> Artifact:
    """The trained model without any residual: what a new residual is fitted over."""
    return replace(artifact, residual=None)


def featurize(
    base: Artifact, bodies: Sequence[dict[str, Any]], labels: Sequence[float]
) -> LabelSet:
    """Base logits, bins and tokens of labelled request bodies."""
    root = DifficultyClassifier(root_of(base))
    given = DifficultyClassifier(base) if base.residual is not None else None
    logits, bins, tokens = [], [], []
    for body in bodies:
        logit, b, distinct = root.features(body)
        logits.append(logit)
        bins.append(b)
        tokens.append(distinct)
    root_logit = np.array(logits, dtype=np.float64)
    base_logit = root_logit if given is None else np.array([given.logit(body) for body in bodies])
    keys = [group_of(body.get("messages")) for body in bodies]
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return LabelSet(
        root_logit,
        base_logit,
        np.array(bins, dtype=np.int64).reshape(len(bodies), -1),
        tokens,
        np.asarray(labels, dtype=np.float64),
        np.array([ids[k] for k in keys], dtype=np.int64),
    )


def _offsets(base: Artifact) -> np.ndarray:
    return np.cumsum([0] + [len(e) + 1 for e in base.dense_edges])[:-1]


def _vocab(tokens: Sequence[set[bytes]], config: AdaptConfig) -> list[bytes]:
    df: Counter[bytes] = Counter()
    for doc in tokens:
        df.update(doc)
    most = config.max_df_share * len(tokens)
    keep = [w for w, n in df.items() if config.min_df <= n <= most]
    keep.sort(key=lambda w: (-df[w], w))
    return keep[: config.max_words]


def _rows(
    ls: LabelSet, idx: np.ndarray, offsets: np.ndarray, vocab: dict[bytes, int], n_dense: int
) -> CsrRows:
    """Columns: base logit (scale - 1), statistic bins, words, intercept."""
    n_words = len(vocab)
    indptr, indices, data = [0], [], []
    for i in idx:
        indices.append(0)
        data.append(float(ls.root[i]))
        indices.extend((1 + offsets + ls.bins[i]).tolist())
        data.extend([1.0] * len(offsets))
        words = sorted(vocab[t] for t in ls.tokens[i] if t in vocab)
        if words:
            indices.extend(1 + n_dense + w for w in words)
            data.extend([1.0 / np.sqrt(len(words))] * len(words))
        indices.append(1 + n_dense + n_words)
        data.append(1.0)
        indptr.append(len(indices))
    return CsrRows(np.array(indptr), np.array(indices), np.array(data), 2 + n_dense + n_words)


def fit_residual(
    base: Artifact, ls: LabelSet, idx: np.ndarray, config: AdaptConfig, meta: dict[str, Any]
) -> Residual:
    """Residual fitted on the labels at ``idx``."""
    offsets = _offsets(base)
    n_dense = len(base.dense_w)
    vocab_list = _vocab([ls.tokens[i] for i in idx], config)
    vocab = {w: j for j, w in enumerate(vocab_list)}
    rows = _rows(ls, idx, offsets, vocab, n_dense)
    n = max(1, len(idx))
    l2 = np.concatenate(
        [
            [config.l2_scale / n],
            np.full(n_dense, config.l2_dense / n),
            np.full(len(vocab), config.l2_words / n),
            [1e-6],
        ]
    )
    y = ls.labels[idx]
    coef = fit_logistic(rows, y, np.ones(len(y)), l2, config.max_iter, offset=ls.root[idx])
    return Residual(
        scale=1.0 + float(coef[0]),
        bias=float(coef[-1]),
        dense_w=coef[1 : 1 + n_dense].copy(),
        vocab=[w.decode() for w in vocab_list],
        word_w=coef[1 + n_dense : 1 + n_dense + len(vocab)].copy(),
        meta=meta,
    )


def residual_logit(base: Artifact, residual: Residual, ls: LabelSet, idx: np.ndarray) -> np.ndarray:
    """Adapted logits of the prompts at ``idx`` (the serving formula, vectorised)."""
    offsets = _offsets(base)
    weights = dict(zip(residual.vocab, residual.word_w.tolist(), strict=True))
    by_bytes = {w.encode(): v for w, v in weights.items()}
    out = np.empty(len(idx))
    for k, i in enumerate(idx):
        words = [by_bytes[t] for t in ls.tokens[i] if t in by_bytes]
        out[k] = math.fsum(words) / math.sqrt(len(words)) if words else 0.0
    dense = residual.dense_w[offsets[None, :] + ls.bins[idx]].sum(axis=1)
    return np.asarray(residual.scale * ls.root[idx] + residual.bias + dense + out)


def fold_of(groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold of each label: its group's, drawn at random (seeded)."""
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    draw = np.random.default_rng(seed).permutation(n_groups) % folds
    return np.asarray(draw[groups], dtype=np.int64)


def cross_validated(base: Artifact, ls: LabelSet, config: AdaptConfig) -> np.ndarray:
    """Adapted logit of every label from a residual fitted without its fold."""
    folds = fold_of(ls.groups, config.folds, config.seed)
    out = np.zeros(len(ls.labels))
    for f in range(config.folds):
        test = np.nonzero(folds == f)[0]
        train = np.nonzero(folds != f)[0]
        if len(test) and len(train):
            residual = fit_residual(base, ls, train, config, {})
            out[test] = residual_logit(base, residual, ls, test)
    return out


def validate(ls: LabelSet, adapted: np.ndarray, config: AdaptConfig) -> Validation:
    """APGR of base and adapted logits on the labels, with paired bootstrap intervals."""
    n, groups = len(ls.labels), len(set(ls.groups.tolist()))
    strong, weak = ls.labels, np.zeros(n)
    reason = ""
    if n < config.min_labels:
        reason = f"only {n} labels (at least {config.min_labels} needed)"
    elif groups < config.folds:
        reason = f"only {groups} distinct prompts"
    elif float(strong.mean()) < 0.01:
        reason = "the labels show no gap to learn (mean label < 0.01)"
    if reason:
        return Validation(n, groups, float("nan"), float("nan"), None, None, None, reason=reason)
    routers = {"adapted": adapted, "base": ls.base}
    boot = bootstrap_apgr(
        routers, strong, weak, config.bootstrap, config.seed, (("adapted", "base"),)
    )
    return Validation(
        n,
        groups,
        apgr(ls.base, strong, weak),
        apgr(adapted, strong, weak),
        interval(boot.get("base")),
        interval(boot.get("adapted")),
        interval(boot.get("adapted-base")),
        _lower(boot["adapted-base"], config.guard_quantile),
    )


def _lower(draws: np.ndarray, q: float) -> float:
    """The ``q`` quantile of the draws; NaN (no verdict) when more than ``q`` of them are NaN."""
    if not len(draws) or np.isnan(draws).mean() > q:
        return float("nan")
    return float(np.nanquantile(draws, q))


def adapt(base: Artifact, ls: LabelSet, config: AdaptConfig) -> Outcome:
    """Validate a residual on held-back labels; the adapted artifact if clearly better."""
    if len(ls.labels) >= config.min_labels and len(set(ls.groups.tolist())) >= config.folds:
        oof = cross_validated(base, ls, config)
    else:
        oof = ls.base.copy()
    check = validate(ls, oof, config)
    if not check.better:
        if check.reason or not config.recalibrate:
            return Outcome(base, False, check)
        recal = recalibration.check(ls, fold_of(ls.groups, config.folds, config.seed), config)
        if not recal.better:
            return Outcome(base, False, check)
        meta = {"validation": check.as_meta(), "base": version_of(base)}
        return Outcome(recalibration.recalibrated(base, recal, meta), False, check, recal)
    everything = np.arange(len(ls.labels))
    meta = {"validation": check.as_meta(), "base": version_of(base)}
    residual = fit_residual(base, ls, everything, config, meta)
    logits = residual_logit(base, residual, ls, everything)
    prior, _ = np.histogram(1.0 / (1.0 + np.exp(-logits)), bins=HISTOGRAM_BINS, range=(0, 1))
    return Outcome(recalibration.with_residual(base, residual, prior, "adapted"), True, check)


def version_of(artifact: Artifact) -> str:
    """The version string the server reports for ``artifact``."""
    return f"{artifact.meta.get('name', 'difficulty')}-{artifact.digest()}"
