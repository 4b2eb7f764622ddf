"""Simulated deployments: how much ``adapt`` gains with a share of a deployment labelled.

A deployment is one collection (one strong/weak model pair), or one collection's part of
a source-grouped fold (``--by fold``: tasks the base never saw). Its base is the shipped
recipe trained without it: on the base collections less the deployment's collection
(``collection``) or less the fold's tasks (``fold``); a collection the shipped artifact was
not trained on gets the shipped artifact. A share of the deployment's near-duplicate
groups becomes labels (the per-record gap of the collection's pairing, as in training),
``adapt`` runs on them with its guard, and the rest is scored by what ``adapt`` returned
and by the base: APGR against the true strong/weak outcomes, with paired intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.difficulty.artifact import DEFAULT_ARTIFACT, Artifact
from gateway_tools.adapt import AdaptConfig, LabelSet, adapt, featurize, residual_logit
from gateway_tools.evaluate import CI_LEVEL, MIN_GAP, apgr, bootstrap_apgr, interval
from gateway_tools.labels import BASE_COLLECTIONS, Record, source_folds
from gateway_tools.train import TrainConfig, fit, prepare

SHARES = (0.02, 0.05, 0.10, 0.20)


@dataclass(slots=True)
class Row:
    """One deployment at one label share."""

    group: str
    share: float
    labels: int
    scored: int
    adapted: bool
    base: float
    after: float
    boot_base: np.ndarray
    boot_after: np.ndarray
    # calibration on the scored part: mean label, mean base and adapted probability
    mean_label: float = float("nan")
    mean_base: float = float("nan")
    mean_after: float = float("nan")
    recalibrated: bool = False  # base kept, its scores rescaled (same ranking)


def subset(ls: LabelSet, idx: np.ndarray) -> LabelSet:
    """The labels at ``idx``."""
    return LabelSet(
        ls.root[idx],
        ls.base[idx],
        ls.bins[idx],
        [ls.tokens[i] for i in idx],
        ls.labels[idx],
        np.unique(ls.groups[idx], return_inverse=True)[1].astype(np.int64),
    )


def split(groups: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labelled and scored indices: whole near-duplicate groups, about ``share`` labelled."""
    order = np.random.default_rng(seed).permutation(int(groups.max()) + 1)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    by_rank = np.argsort(rank[groups], kind="stable")
    want = max(1, round(share * len(groups)))
    labelled = np.sort(by_rank[:want])
    # extend to the end of the last group so no group is split
    last = groups[by_rank[want - 1]]
    labelled = np.union1d(labelled, np.nonzero(groups == last)[0])
    scored = np.setdiff1d(np.arange(len(groups)), labelled)
    return labelled, scored


def deployments(records: Sequence[Record], by: str) -> dict[str, tuple[np.ndarray, str]]:
    """Deployment name -> (record indices, base key) under ``by`` (collection or fold)."""
    out: dict[str, list[int]] = {}
    base_of: dict[str, str] = {}
    folds = source_folds(records) if by == "fold" else [""] * len(records)
    for i, (rec, fold) in enumerate(zip(records, folds, strict=True)):
        name = f"{fold}:{rec.collection}" if by == "fold" else rec.collection
        out.setdefault(name, []).append(i)
        if rec.collection not in BASE_COLLECTIONS:
            base_of[name] = "shipped"
        else:
            base_of[name] = f"without {fold}" if by == "fold" else f"without {rec.collection}"
    return {k: (np.array(v), base_of[k]) for k, v in sorted(out.items())}


def _bases(
    records: Sequence[Record], by: str, keys: set[str], log: Callable[[str], None]
) -> dict[str, Artifact]:
    bases = {"shipped": Artifact.from_bytes(DEFAULT_ARTIFACT.read_bytes())}
    wanted = sorted(k for k in keys if k != "shipped")
    if not wanted:
        return bases
    base_idx = [i for i, r in enumerate(records) if r.collection in BASE_COLLECTIONS]
    prepared = prepare([records[i] for i in base_idx])
    folds = source_folds(records) if by == "fold" else []
    for key in wanted:
        held = key.removeprefix("without ")
        keep = [
            j
            for j, i in enumerate(base_idx)
            if (folds[i] if by == "fold" else records[i].collection) != held
        ]
        log(f"training the base {key}: {len(keep)} records")
        bases[key] = fit(prepared, np.array(keep), TrainConfig())
    return bases


def simulate(
    records: Sequence[Record],
    by: str,
    shares: Sequence[float] = SHARES,
    config: AdaptConfig | None = None,
    max_records: int = 0,
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> list[Row]:
    """Every deployment under ``by`` at every share (``max_records``: subsample above it)."""
    config = config or AdaptConfig(seed=seed)
    plan = deployments(records, by)
    rng = np.random.default_rng(seed)
    if max_records:
        plan = {
            k: (
                np.sort(rng.choice(v, max_records, replace=False)) if len(v) > max_records else v,
                b,
            )
            for k, (v, b) in plan.items()
        }
    bases = _bases(records, by, {b for _, b in plan.values()}, log)
    rows: list[Row] = []
    for name, (idx, key) in plan.items():
        recs = [records[i] for i in idx]
        strong = np.array([r.strong for r in recs])
        weak = np.array([r.weak for r in recs])
        bodies = [{"messages": r.messages} for r in recs]
        ls = featurize(bases[key], bodies, np.clip(strong - weak, 0.0, 1.0))
        for share in shares:
            labelled, scored = split(ls.groups, share, seed)
            outcome = adapt(bases[key], subset(ls, labelled), config)
            after = ls.base[scored]
            res = outcome.artifact.residual
            if res is not None and (outcome.adapted or outcome.recalibration is not None):
                after = residual_logit(outcome.artifact, res, ls, scored)
            s, w = strong[scored], weak[scored]
            if float(s.mean() - w.mean()) < MIN_GAP:
                continue
            boot = bootstrap_apgr(
                {"after": after, "base": ls.base[scored]}, s, w, config.bootstrap, seed, ()
            )
            rows.append(
                Row(
                    name,
                    share,
                    len(labelled),
                    len(scored),
                    outcome.adapted,
                    apgr(ls.base[scored], s, w),
                    apgr(after, s, w),
                    boot["base"],
                    boot["after"],
                    float(ls.labels[scored].mean()),
                    _mean_probability(ls.base[scored]),
                    _mean_probability(after),
                    outcome.recalibration is not None,
                )
            )
            log(f"{name} {share:.0%}: {_verdict(rows[-1])}")
    return rows


def _verdict(row: Row) -> str:
    return "adapted" if row.adapted else "recalibrated" if row.recalibrated else "base kept"


def _mean_probability(logits: np.ndarray) -> float:
    return float(np.mean(1.0 / (1.0 + np.exp(-logits))))


def _ci(draws: np.ndarray) -> str:
    ci = interval(draws)
    return "–" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


@dataclass(slots=True)
class Macro:
    """The macro mean over the deployments of one share."""

    deployments: int
    adapted: int
    base: float
    after: float
    gain: np.ndarray  # bootstrap draws of the macro gain
    with_interval: int
    above: int
    below: int
    recalibrated: int = 0
    # mean |mean score - mean label| over the deployments: base, and what adapt returned
    miscalibration_base: float = float("nan")
    miscalibration_after: float = float("nan")


def macro(part: Sequence[Row]) -> Macro:
    """Macro mean of ``part`` (one share), with clear wins and losses counted."""
    gains = [r.boot_after - r.boot_base for r in part]
    ok = [g for g in gains if interval(g) is not None]
    cis = [interval(g) for g in ok]
    return Macro(
        len(part),
        sum(r.adapted for r in part),
        float(np.mean([r.base for r in part])),
        float(np.mean([r.after for r in part])),
        np.nanmean(ok, axis=0) if ok else np.array([]),
        len(ok),
        sum(1 for c in cis if c is not None and c[0] > 0),
        sum(1 for c in cis if c is not None and c[1] < 0),
        sum(r.recalibrated for r in part),
        float(np.mean([abs(r.mean_base - r.mean_label) for r in part])),
        float(np.mean([abs(r.mean_after - r.mean_label) for r in part])),
    )


def format_summary(results: Sequence[tuple[str, Sequence[Row]]]) -> str:
    """One line per protocol and share: macro APGR base and adapted, clear wins/losses."""
    level = f"{CI_LEVEL:.0%}"
    lines = [
        f"| deployments | labelled | adapted | APGR base | APGR adapted | gain | gain {level} CI "
        "| clearly above | clearly below | rescaled | miscalibration base / after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in results:
        for share in sorted({r.share for r in rows}):
            m = macro([r for r in rows if r.share == share])
            note = f" ({m.with_interval})" if m.with_interval != m.deployments else ""
            lines.append(
                f"| {name} | {share:.0%} | {m.adapted} of {m.deployments} | {m.base:.3f} "
                f"| {m.after:.3f} | {m.after - m.base:+.3f} | {_ci(m.gain)}{note} | {m.above} "
                f"| {m.below} | {m.recalibrated} "
                f"| {m.miscalibration_base:.3f} / {m.miscalibration_after:.3f} |"
            )
    return "\n".join(lines)


def _mark(row: Row) -> str:
    return "yes" if row.adapted else "rescaled" if row.recalibrated else "no"


def format_rows(rows: Sequence[Row]) -> str:
    """Markdown: per share, each deployment's base and adapted APGR, then the macro mean."""
    level = f"{CI_LEVEL:.0%}"
    out: list[str] = []
    for share in sorted({r.share for r in rows}):
        part = [r for r in rows if r.share == share]
        out += [
            f"\n**{share:.0%} of each deployment labelled**\n",
            f"| deployment | labels | scored | adapted | APGR base | APGR adapted "
            f"| gain | gain {level} CI | mean label | mean score base | mean score adapted |",
            "|---|---:|---:|:---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in part:
            out.append(
                f"| {r.group} | {r.labels} | {r.scored} | {_mark(r)} "
                f"| {r.base:.3f} | {r.after:.3f} | {r.after - r.base:+.3f} "
                f"| {_ci(r.boot_after - r.boot_base) if r.adapted else 'base kept'} "
                f"| {r.mean_label:.3f} | {r.mean_base:.3f} "
                f"| {r.mean_after:.3f} |"
            )
        m = macro(part)
        note = f" ({m.with_interval} with an interval)" if m.with_interval != len(part) else ""
        out.append(
            f"| **macro mean ({len(part)})** | {sum(r.labels for r in part)} "
            f"| {sum(r.scored for r in part)} | {m.adapted} "
            f"| {m.base:.3f} | {m.after:.3f} | {m.after - m.base:+.3f} | {_ci(m.gain)}{note} "
            "| | | |"
        )
        out.append(
            f"Adapted clearly ({level}) above the base on {m.above} of {len(part)} deployments, "
            f"clearly below on {m.below}."
        )
    return "\n".join(out)
