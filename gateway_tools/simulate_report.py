"""The `--report DIR` of `gateway policy simulate`: a markdown page and a PNG chart.

The page is meant for a pull-request comment; the chart plots cost against closed share
for the baseline, the candidate and a sweep of difficulty thresholds. matplotlib is
optional: without it the page says how to get the chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHART = "cost_vs_closed_share.png"
PAGE = "simulation.md"


@dataclass(frozen=True)
class Report:
    """Everything the page shows."""

    summary: dict[str, Any]
    candidate_name: str
    baseline_name: str  # a policy file, or "as recorded"
    log_name: str
    moves: Sequence[tuple[str, str, int]]
    sweep: Sequence[tuple[float, float, float]]


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _delta(new: float, old: float) -> str:
    if old == 0:
        return "n/a" if new else "0"
    return f"{100 * (new - old) / old:+.1f} %"


def _quality_rows(summary: dict[str, Any]) -> list[str]:
    base, cand = summary["baseline"], summary["candidate"]
    if "projected_open_shortfall" not in cand:
        return []
    old, new = base["projected_open_shortfall"], cand["projected_open_shortfall"]
    return [
        f"| projected open shortfall (lower is better) | {old:.4f} | {new:.4f} | "
        f"{_delta(new, old)} |",
        f"| quality recovered | {_pct(base['quality_recovered'])} | "
        f"{_pct(cand['quality_recovered'])} | "
        f"{100 * (cand['quality_recovered'] - base['quality_recovered']):+.1f} pt |",
    ]


def render_markdown(report: Report, chart: bool) -> str:
    """The markdown page."""
    s, base, cand = report.summary, report.summary["baseline"], report.summary["candidate"]
    n = s["records"]
    lines = [
        f"### Policy simulation: `{report.candidate_name}`",
        "",
        f"Replayed **{n:,}** decision records from `{report.log_name}` against "
        f"baseline **{report.baseline_name}**. **{s['changed']:,}** records "
        f"({_pct(s['changed'] / n if n else 0.0)}) change backend.",
        "",
        "| | baseline | candidate | change |",
        "|---|---:|---:|---:|",
        f"| closed share | {_pct(base['closed_share'])} | {_pct(cand['closed_share'])} | "
        f"{100 * (cand['closed_share'] - base['closed_share']):+.1f} pt |",
        f"| cost (USD) | {base['cost_usd']:.4f} | {cand['cost_usd']:.4f} | "
        f"{_delta(cand['cost_usd'], base['cost_usd'])} |",
        *_quality_rows(s),
        "",
        "| backend | baseline | candidate |",
        "|---|---:|---:|",
    ]
    names = list(dict.fromkeys([*base["by_backend"], *cand["by_backend"]]))
    for name in names:
        lines.append(
            f"| `{name}` | {base['by_backend'].get(name, 0):,} | "
            f"{cand['by_backend'].get(name, 0):,} |"
        )
    if "rescored" in s:
        r = s["rescored"]
        lines += [
            "",
            f"Re-scored **{r['records']:,}** of {r['of']:,} records with classifier "
            f"`{r['classifier_version']}` (prompts from `{r['prompts']}`); the others keep "
            "their recorded score.",
        ]
    if report.moves:
        lines += ["", "Most common moves (recorded → candidate):", ""]
        lines += ["| from | to | records |", "|---|---|---:|"]
        lines += [f"| `{a}` | `{b}` | {c:,} |" for a, b, c in report.moves]
    if report.sweep:
        lines += ["", "Threshold sweep (first conditional rule of every routed model):", ""]
        lines += ["| difficulty_at_least | closed share | cost (USD) |", "|---:|---:|---:|"]
        lines += [f"| {t:.2f} | {_pct(sh)} | {c:.4f} |" for t, sh, c in report.sweep]
    lines += [
        "",
        f"![cost vs closed share]({CHART})"
        if chart
        else "_Install matplotlib (`pip install matplotlib`) for the cost / closed-share chart._",
        "",
        "Assumptions: every backend healthy and (unless `--respect-keys`) has its API key; "
        "a re-routed request uses the tokens it recorded, priced at its new backend; cache "
        "hits stay hits at no cost; requests refused before routing stay refused; "
        "`closed_share` thresholds are the quantile of the log's own scores.",
    ]
    if "labels" in s:
        lines[-1] += (
            f" Quality is projected from {s['labels']['used']:,} label records (the judge's "
            "view of how far the open tier fell short), as a mean label per score decile "
            "shrunk toward the overall mean."
        )
    lines.append("")
    return "\n".join(lines)


def plot(report: Report, path: Path) -> bool:
    """Write the chart; False if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    base, cand = report.summary["baseline"], report.summary["candidate"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if report.sweep:
        xs = [100 * share for _, share, _ in report.sweep]
        ys = [cost for _, _, cost in report.sweep]
        ax.plot(xs, ys, "-o", color="0.6", markersize=3, label="threshold sweep")
        for t, share, cost in report.sweep[::4]:
            ax.annotate(f"{t:.2f}", (100 * share, cost), fontsize=7, color="0.4")
    ax.scatter([100 * base["closed_share"]], [base["cost_usd"]], s=60, label="baseline")
    ax.scatter([100 * cand["closed_share"]], [cand["cost_usd"]], s=60, label="candidate")
    ax.set_xlabel("closed-tier share of requests (%)")
    ax.set_ylabel("cost (USD)")
    ax.set_title(f"{report.summary['records']:,} records")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_report(directory: Path, report: Report) -> Path:
    """Write the page (and chart) into `directory`; returns the page's path."""
    directory.mkdir(parents=True, exist_ok=True)
    chart = plot(report, directory / CHART)
    page = directory / PAGE
    page.write_text(render_markdown(report, chart), encoding="utf-8")
    return page
