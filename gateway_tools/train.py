"""Fit the difficulty model from labelled records (training time only; numpy alone).

Collections differ in base rate (GPT-4 vs Mixtral leaves a bigger gap than one 7B model
vs another), and their prompt formats would let a model learn "which collection is
this" instead of "how hard is this". So every collection gets its own intercept (a fixed
effect, dropped at serving time), and only words seen in at least two collections become
features: what is left has to explain differences *within* collections.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from gateway.difficulty.artifact import HISTOGRAM_BINS, Artifact
from gateway.difficulty.features import DENSE_NAMES, dense_values, tokenize
from gateway.difficulty.request import view_request
from gateway_tools.labels import Record, collection_weight
from gateway_tools.sparse import CsrRows, fit_logistic

T = TypeVar("T", bound=Hashable)
REFERENCE_COLLECTIONS = ("mmlu", "routerbench")


@dataclass(slots=True)
class TrainConfig:
    """Training knobs; the defaults are the ones the shipped artifact was built with."""

    seed: int = 0
    # "gap": clip(strong - weak, 0, 1); "half": (1 + strong - weak) / 2; "blendX": X of
    # "the open model fails" (1 - weak) mixed into the gap
    target: str = "gap"
    min_df: int = 5
    min_collections: int = 3
    max_unigrams: int = 30_000
    max_df_share: float = 0.2  # words in more of the prompts than this are format, not task
    dense_bins: int = 4  # coarse bins transfer better to unseen tasks than 8 or 12 (held out)
    l2_dense: float = 3e-3
    l2_lexical: float = 3e-4
    max_iter: int = 300
    reference: tuple[str, ...] = REFERENCE_COLLECTIONS
    source_balance: float = 0.5  # weight of a source ~ n_source ** this, within its collection
    # collection -> weight share, overriding ``labels.PAIRINGS``
    weights: dict[str, float] = field(default_factory=dict)
    # train on these collections only (hold-out protocols still score every record)
    collections: tuple[str, ...] = ()


@dataclass(slots=True)
class Prepared:
    """Per-record tokens and statistics, computed once and reused across folds."""

    records: list[Record]
    tokens: list[set[bytes]]  # distinct tokens
    dense: np.ndarray
    collections: list[str] = field(default_factory=list)


def prepare(records: Sequence[Record]) -> Prepared:
    """Tokenise and measure every record the way the serving path will."""
    tokens: list[set[bytes]] = []
    rows: list[list[float]] = []
    for rec in records:
        view = view_request({"messages": rec.messages})
        toks = tokenize(view.text)
        distinct = set(toks)
        tokens.append(distinct)
        rows.append(dense_values(view, toks, distinct))
    cols = [r.collection for r in records]
    return Prepared(list(records), tokens, np.array(rows), cols)


def labels(prepared: Prepared, target: str) -> np.ndarray:
    """Soft labels from the strong and weak outcomes."""
    gap = np.array([r.strong - r.weak for r in prepared.records])
    if target == "half":
        return np.asarray((1.0 + gap) / 2.0, dtype=np.float64)
    if target.startswith("blend"):  # "blend0.5": mix of the gap and "the open model fails"
        mix = float(target[5:])
        fails = np.array([1.0 - r.weak for r in prepared.records])
        return np.asarray((1 - mix) * np.clip(gap, 0.0, 1.0) + mix * fails, dtype=np.float64)
    return np.asarray(np.clip(gap, 0.0, 1.0), dtype=np.float64)


def sample_weights(
    prepared: Prepared, idx: np.ndarray, balance: float, weights: dict[str, float] | None = None
) -> np.ndarray:
    """Equal weight per collection (times its share), sources damped within it."""
    recs = [prepared.records[i] for i in idx]
    per_source = Counter(r.source for r in recs)
    by_col: dict[str, float] = {}
    for source, n in per_source.items():
        col = source.split("/", 1)[0]
        by_col[col] = by_col.get(col, 0.0) + n**balance
    w = np.array(
        [
            (weights or {}).get(r.collection, collection_weight(r.collection))
            * per_source[r.source] ** (balance - 1.0)
            / by_col[r.collection]
            for r in recs
        ]
    )
    return np.asarray(w * (len(w) / w.sum()), dtype=np.float64)


def _select(
    docs: Sequence[set[T]],
    cols: Sequence[str],
    min_df: int,
    min_collections: int,
    cap: int,
    max_share: float = 1.0,
) -> list[T]:
    """Items in at least ``min_df`` docs spread over ``min_collections`` collections, and in
    at most ``max_share`` of the docs."""
    df: Counter[T] = Counter()
    per_col: dict[str, Counter[T]] = {}
    for doc, col in zip(docs, cols, strict=True):
        df.update(doc)
        per_col.setdefault(col, Counter()).update(doc)
    spread: Counter[T] = Counter()
    for counter in per_col.values():
        spread.update(k for k, v in counter.items() if v >= 2)
    most = max_share * len(docs)
    keep = [k for k, v in df.items() if min_df <= v <= most and spread[k] >= min_collections]
    keep.sort(key=lambda k: (-df[k], str(k)))
    return keep[:cap]


def _build_rows(
    prepared: Prepared,
    idx: np.ndarray,
    vocab: dict[bytes, int],
    edges: list[np.ndarray],
    n_dense: int,
    fixed_col: dict[str, int],
) -> CsrRows:
    offsets = np.cumsum([0] + [len(e) + 1 for e in edges])
    n_vocab = len(vocab)
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for i in idx:
        values = prepared.dense[i]
        for f, e in enumerate(edges):
            indices.append(int(offsets[f] + np.searchsorted(e, values[f], side="right")))
            data.append(1.0)
        unigrams = sorted(vocab[t] for t in prepared.tokens[i] if t in vocab)
        scale = 1.0 / np.sqrt(len(unigrams)) if unigrams else 0.0
        lex = [n_dense + u for u in unigrams]
        indices.extend(lex)
        data.extend([scale] * len(lex))
        col = fixed_col.get(prepared.collections[i])
        if col is not None:
            indices.append(col)
            data.append(1.0)
        indptr.append(len(indices))
    n_cols = n_dense + n_vocab + len(fixed_col)
    return CsrRows(np.array(indptr), np.array(indices), np.array(data), n_cols)


def _center_dense(
    dense_w: np.ndarray, edges: list[np.ndarray], values: np.ndarray, w: np.ndarray, bias: float
) -> tuple[np.ndarray, float]:
    """Shift each statistic's bin weights to mean zero over training, into the bias.

    Scores do not change; ``explain`` then shows how far a prompt's bin is from a
    typical one instead of each bin's arbitrary share of the intercept.
    """
    out = dense_w.copy()
    start = 0
    for f, e in enumerate(edges):
        block = out[start : start + len(e) + 1]
        mean = float(np.average(block[np.searchsorted(e, values[:, f], side="right")], weights=w))
        block -= mean
        bias += mean
        start += len(e) + 1
    return out, bias


def fit(
    prepared: Prepared,
    idx: np.ndarray,
    config: TrainConfig,
    log: Callable[[str], None] = lambda _: None,
) -> Artifact:
    """Train on the records at ``idx``; returns a ready-to-save artifact."""
    idx = np.sort(np.asarray(idx))
    if config.collections:
        idx = np.array([i for i in idx if prepared.collections[i] in config.collections], int)
    cols = [prepared.collections[i] for i in idx]
    vocab_list = _select(
        [prepared.tokens[i] for i in idx],
        cols,
        config.min_df,
        config.min_collections,
        config.max_unigrams,
        config.max_df_share,
    )
    vocab = {t: i for i, t in enumerate(vocab_list)}
    quantiles = np.arange(1, config.dense_bins) / config.dense_bins
    edges = [
        np.unique(np.quantile(prepared.dense[idx, f], quantiles))
        for f in range(prepared.dense.shape[1])
    ]
    n_dense = int(sum(len(e) + 1 for e in edges))
    collections = sorted(set(cols))
    n_lex = len(vocab)
    fixed_col = {c: n_dense + n_lex + j for j, c in enumerate(collections)}
    rows = _build_rows(prepared, idx, vocab, edges, n_dense, fixed_col)
    log(f"rows={len(idx)} words={len(vocab)} dense_cols={n_dense}")
    y = labels(prepared, config.target)[idx]
    w = sample_weights(prepared, idx, config.source_balance, config.weights)
    l2 = np.concatenate(
        [
            np.full(n_dense, config.l2_dense),
            np.full(n_lex, config.l2_lexical),
            np.full(len(collections), 1e-6),  # fixed effects are intercepts: barely penalised
        ]
    )
    coef = fit_logistic(rows, y, w, l2, config.max_iter, log)
    fixed = {c: float(coef[fixed_col[c]]) for c in collections}
    ref = [fixed[c] for c in config.reference if c in fixed] or list(fixed.values())
    bias = float(np.mean(ref))
    serving_logit = rows.dot(coef) - np.array([fixed[c] for c in cols]) + bias
    dense_w, bias = _center_dense(coef[:n_dense], edges, prepared.dense[idx], w, bias)
    prior, _ = np.histogram(
        1.0 / (1.0 + np.exp(-serving_logit)), bins=HISTOGRAM_BINS, range=(0.0, 1.0)
    )
    return Artifact(
        vocab=[t.decode() for t in vocab_list],
        unigram_w=coef[n_dense : n_dense + len(vocab)],
        dense_edges=edges,
        dense_w=dense_w,
        bias=bias,
        score_prior=prior.astype(np.float64),
        meta={
            "name": "difficulty-v2",
            "dense_names": list(DENSE_NAMES),
            "seed": config.seed,
            "target": config.target,
            "trained_rows": len(idx),
            "collection_offsets": fixed,
        },
    )
