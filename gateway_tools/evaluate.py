"""Router quality versus strong-model share: APGR, CPT and a grouped held-out protocol.

Routing the top ``p`` share of prompts (by score) to the strong model gives a quality
``q(p)``; PGR(p) = (q(p) - q_weak) / (q_strong - q_weak) is the share of the strong/weak
gap recovered. APGR is the area under PGR over p in [0, 1] (0.5 for random routing);
CPT(x) is the smallest strong-call share that recovers x of the gap.

A group's APGR comes with a bootstrap interval (records resampled with replacement, the
same resample for every router, so "model minus length" is a paired difference): on a
group whose strong/weak gap is a few points, one APGR number is mostly noise, and the
interval says whether "above random" or "above length" is clear or a coin flip.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.difficulty.classifier import DifficultyClassifier
from gateway.difficulty.request import view_request
from gateway_tools.labels import Record, source_folds

GRID = np.linspace(0.0, 1.0, 1001)
MIN_GAP = 0.01  # below this the gap is noise and PGR is meaningless
BOOTSTRAP = 200  # resamples per group for the APGR intervals
CI_LEVEL = 0.9  # two-sided: the 5th to the 95th percentile of the resampled APGRs


@dataclass(slots=True)
class GroupResult:
    """Metrics of one evaluation group."""

    name: str
    n: int
    weak: float
    strong: float
    apgr: dict[str, float]
    cpt50: dict[str, float]
    cpt80: dict[str, float]
    curves: dict[str, np.ndarray]
    # resampled APGR per router (and "model-length", the paired difference); empty when
    # the group was evaluated without a bootstrap
    boot: dict[str, np.ndarray] = field(default_factory=dict)

    def ci(self, key: str) -> tuple[float, float] | None:
        """The ``CI_LEVEL`` bootstrap interval of ``key``'s APGR (see ``interval``)."""
        return interval(self.boot.get(key))

    @property
    def valid(self) -> bool:
        """Whether the strong model beats the weak one by enough for PGR to mean anything."""
        return _has_gap(self.strong, self.weak)


def _has_gap(q_strong: float, q_weak: float) -> bool:
    return q_strong - q_weak >= MIN_GAP


def interval(draws: np.ndarray | None) -> tuple[float, float] | None:
    """The ``CI_LEVEL`` interval of bootstrap draws.

    None without draws, and when more than one tail's share of them is NaN (resamples with
    no strong/weak gap to recover): then the gap itself is not clear, and neither is any
    APGR measured against it.
    """
    tail = (1.0 - CI_LEVEL) / 2.0
    if draws is None or not len(draws) or np.isnan(draws).mean() > tail:
        return None
    lo, hi = np.nanquantile(draws, [tail, 1.0 - tail])
    return float(lo), float(hi)


def quality_curve(
    scores: np.ndarray, strong: np.ndarray, weak: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Mean quality on ``GRID`` when the highest-scored share goes to the strong model."""
    n = len(scores)
    tiebreak = np.random.default_rng(seed).random(n)  # ties are broken at random, not by order
    order = np.lexsort((tiebreak, -scores))
    cum = np.concatenate([[0.0], np.cumsum((strong - weak)[order])])
    curve = (weak.sum() + np.interp(GRID * n, np.arange(n + 1), cum)) / n
    return np.asarray(curve, dtype=np.float64)


def _cpt(pgr: np.ndarray, level: float) -> float:
    hit = np.nonzero(pgr >= level - 1e-12)[0]
    return float(GRID[hit[0]]) if len(hit) else 1.0


def _span(strong: np.ndarray, weak: np.ndarray) -> float:
    span = float(strong.mean()) - float(weak.mean())
    return span if abs(span) > 1e-12 else 1e-12


def apgr(scores: np.ndarray, strong: np.ndarray, weak: np.ndarray) -> float:
    """Area under the PGR curve of routing by ``scores`` (0.5 for random routing)."""
    curve = quality_curve(scores, strong, weak)
    return float(np.trapezoid((curve - weak.mean()) / _span(strong, weak), GRID))


def bootstrap_apgr(
    routers: dict[str, np.ndarray],
    strong: np.ndarray,
    weak: np.ndarray,
    draws: int,
    seed: int,
    pairs: Sequence[tuple[str, str]] = (("model", "length"),),
) -> dict[str, np.ndarray]:
    """Resampled APGR of each router (NaN where a resample has no gap), and for each pair
    ``(a, b)`` of routers present, the paired difference as ``"a-b"``."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {name: [] for name in routers}
    for _ in range(draws):
        pick = rng.integers(0, len(strong), len(strong))
        s, w = strong[pick], weak[pick]
        no_gap = not _has_gap(float(s.mean()), float(w.mean()))  # PGR undefined, as for groups
        for name, scores in routers.items():
            out[name].append(float("nan") if no_gap else apgr(scores[pick], s, w))
    boot = {name: np.array(values) for name, values in out.items()}
    for a, b in pairs:
        if a in boot and b in boot:
            boot[f"{a}-{b}"] = boot[a] - boot[b]
    return boot


def evaluate_group(
    name: str,
    routers: dict[str, np.ndarray],
    strong: np.ndarray,
    weak: np.ndarray,
    bootstrap: int = 0,
    seed: int = 0,
) -> GroupResult:
    """APGR/CPT of each router (name -> scores) on one group, plus random and oracle.

    With ``bootstrap`` > 0, also that many resampled APGRs of each router (seeded).
    """
    q_weak, q_strong = float(weak.mean()), float(strong.mean())
    span = _span(strong, weak)
    curves = {"random": q_weak + GRID * (q_strong - q_weak)}
    for router, scores in {**routers, "oracle": strong - weak}.items():
        curves[router] = quality_curve(scores, strong, weak)
    result = GroupResult(name, len(strong), q_weak, q_strong, {}, {}, {}, curves)
    for router, curve in curves.items():
        pgr = (curve - q_weak) / span
        result.apgr[router] = float(np.trapezoid(pgr, GRID))
        result.cpt50[router] = _cpt(pgr, 0.5)
        result.cpt80[router] = _cpt(pgr, 0.8)
    if bootstrap > 0 and result.valid:
        result.boot = bootstrap_apgr(routers, strong, weak, bootstrap, seed)
    return result


def group_key(record: Record, by: str) -> str:
    """Evaluation group of a record: ``source``, ``collection`` or ``family``.

    Scores are only comparable within a collection (one strong/weak pairing), so mixed
    groups are split by collection.
    """
    if by == "source":
        return record.source
    if by == "family":
        return f"{record.collection}:{record.family}"
    if by == "collection":
        return record.collection
    return "all"


def prompt_length(record: Record) -> float:
    """Length baseline: characters of the prompt."""
    return float(view_request({"messages": record.messages}).total_chars)


def score_records(classifier: DifficultyClassifier, records: Sequence[Record]) -> np.ndarray:
    """Scores of records through the exact serving path."""
    return np.array([classifier.score({"messages": r.messages}) for r in records])


def evaluate(
    records: Sequence[Record], scores: np.ndarray, by: str, bootstrap: int = 0
) -> list[GroupResult]:
    """Per-group results for model scores against the length baseline (with ``bootstrap``
    resamples per group for the APGR intervals; 0 for none)."""
    lengths = np.array([prompt_length(r) for r in records])
    if by == "fold":  # the folds of ``--holdout source``, split by collection
        keys = [f"{f}:{r.collection}" for f, r in zip(source_folds(records), records, strict=True)]
    else:
        keys = [group_key(r, by) for r in records]
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    results = []
    for name in sorted(groups):
        idx = np.array(groups[name])
        strong = np.array([records[i].strong for i in idx])
        weak = np.array([records[i].weak for i in idx])
        routers = {"model": scores[idx], "length": lengths[idx]}
        results.append(evaluate_group(name, routers, strong, weak, bootstrap))
    return results


def _interval(ci: tuple[float, float] | None) -> str:
    return "–" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _verdicts(valid: Sequence[GroupResult]) -> str:
    """How many groups are clearly (the whole interval) above or below random and length."""
    model = [r.ci("model") for r in valid]
    diff = [r.ci("model-length") for r in valid]
    n = len(valid)
    above = sum(1 for c in model if c is not None and c[0] > 0.5)
    below = sum(1 for c in model if c is not None and c[1] < 0.5)
    beat = sum(1 for c in diff if c is not None and c[0] > 0.0)
    lose = sum(1 for c in diff if c is not None and c[1] < 0.0)
    unclear = sum(1 for c in diff if c is None)
    level = f"{CI_LEVEL:.0%}"
    text = (
        f"Clearly ({level} interval) above random on {above} of {n} groups, below on {below}; "
        f"clearly above the length baseline on {beat}, below on {lose}; "
        "the other groups cannot tell the two apart"
    )
    if unclear:
        which = "1 of them has" if unclear == 1 else f"{unclear} of them have"
        text += (
            f" ({which} no interval: the strong/weak gap vanishes in more than "
            f"{(1 - CI_LEVEL) / 2:.0%} of resamples; the macro interval leaves them out)"
        )
    return text + "."


def format_table(results: Sequence[GroupResult]) -> str:
    """Markdown table of results with a macro average over valid groups.

    When the results carry bootstrap draws, two interval columns (model APGR, and model
    minus length APGR, paired) and a line counting the clear wins and losses are added.
    """
    with_ci = any(r.boot for r in results)
    level = f"{CI_LEVEL:.0%}"
    ci_head = f" model {level} CI | model − length {level} CI |" if with_ci else ""
    lines = [
        "| group | n | weak | strong | APGR model | APGR length | APGR oracle |"
        f"{ci_head} CPT50 model | CPT50 length | CPT80 model | CPT80 length |",
        "|---|---:|---:|---:|---:|---:|---:|"
        + ("---:|---:|" if with_ci else "")
        + "---:|---:|---:|---:|",
    ]
    blank = " |" * (8 if with_ci else 6)  # the cells after "n/a"
    for r in results:
        if not r.valid:
            lines.append(
                f"| {r.name} | {r.n} | {r.weak:.3f} | {r.strong:.3f} | n/a (gap < 0.01) |" + blank
            )
            continue
        cis = (
            f" {_interval(r.ci('model'))} | {_interval(r.ci('model-length'))} |" if with_ci else ""
        )
        lines.append(
            f"| {r.name} | {r.n} | {r.weak:.3f} | {r.strong:.3f} | {r.apgr['model']:.3f} "
            f"| {r.apgr['length']:.3f} | {r.apgr['oracle']:.3f} |{cis} {r.cpt50['model']:.1%} "
            f"| {r.cpt50['length']:.1%} | {r.cpt80['model']:.1%} | {r.cpt80['length']:.1%} |"
        )
    valid = [r for r in results if r.valid]
    if valid:

        def mean(get: Callable[[GroupResult], float]) -> float:
            return float(np.mean([get(r) for r in valid]))

        macro_ci = ""
        if with_ci:
            # over the groups with an interval: one whose gap vanishes in resamples would
            # make every macro draw undefined
            boots = [r for r in valid if r.ci("model-length") is not None]
            note = f" ({len(boots)} groups)" if len(boots) != len(valid) else ""

            def macro(key: str) -> str:
                draws = np.nanmean([r.boot[key] for r in boots], axis=0) if boots else None
                return _interval(interval(draws)) + note

            macro_ci = f" {macro('model')} | {macro('model-length')} |"
        lines.append(
            f"| **macro mean ({len(valid)} groups)** | {sum(r.n for r in valid)} | | "
            f"| {mean(lambda r: r.apgr['model']):.3f} | {mean(lambda r: r.apgr['length']):.3f} "
            f"| {mean(lambda r: r.apgr['oracle']):.3f} |{macro_ci} "
            f"{mean(lambda r: r.cpt50['model']):.1%} "
            f"| {mean(lambda r: r.cpt50['length']):.1%} | {mean(lambda r: r.cpt80['model']):.1%} "
            f"| {mean(lambda r: r.cpt80['length']):.1%} |"
        )
    lines.append("Random routing: APGR 0.500, CPT50 50.0%, CPT80 80.0%.")
    if with_ci and valid:
        lines.append(_verdicts(valid))
    return "\n".join(lines)


# A group whose weak tier is always right has no gap, so the top band can stop short of 1.
WEAK_BANDS = ((0.0, 0.45), (0.45, 0.7), (0.7, 1.0))


def format_bands(results: Sequence[GroupResult], min_n: int = 50) -> str:
    """Mean APGR of groups by how often the weak tier is right on them.

    Where the open model is rarely right (both tiers mostly fail), the gap sits on the
    easiest items of a group; where it is usually right, on the hardest. A difficulty
    score can only serve the second case, the one a gateway is deployed for.
    """
    lines = [
        "| weak-tier accuracy of the group | groups | APGR model | APGR length "
        "| model above 0.5 | model above length |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for lo, hi in WEAK_BANDS:
        band = [r for r in results if r.valid and r.n >= min_n and lo <= r.weak < hi]
        if not band:
            continue
        label = f"{lo:.0%}–{hi:.0%}"
        model = float(np.mean([r.apgr["model"] for r in band]))
        length = float(np.mean([r.apgr["length"] for r in band]))
        above = sum(r.apgr["model"] > 0.5 for r in band)
        beat = sum(r.apgr["model"] > r.apgr["length"] for r in band)
        lines.append(
            f"| {label} | {len(band)} | {model:.3f} | {length:.3f} | {above} of {len(band)} "
            f"| {beat} of {len(band)} |"
        )
    if len(lines) == 2:
        return f"No group has at least {min_n} prompts and a strong/weak gap."
    lines.append(f"Groups with at least {min_n} prompts and a strong/weak gap.")
    return "\n".join(lines)


def plot(results: Sequence[GroupResult], path: Path, title: str) -> None:
    """Quality vs strong-call share per group, as a PNG (needs matplotlib)."""
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    shown = [r for r in results if r.valid][:20]
    cols = min(4, max(1, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, r in zip(axes.flat, shown, strict=False):
        for router, style in (("oracle", ":"), ("model", "-"), ("length", "--"), ("random", "-.")):
            label = f"{router} ({r.apgr[router]:.2f})"
            ax.plot(GRID * 100, r.curves[router], style, label=label)
        ax.set_title(f"{r.name} (n={r.n})", fontsize=9)
        ax.set_xlabel("strong-model calls (%)")
        ax.set_ylabel("quality")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
