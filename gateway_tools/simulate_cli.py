"""`gateway policy simulate`: what a policy change would do to logged traffic.

gateway policy simulate --policy NEW.yaml [--baseline OLD.yaml] --log SOURCE [--json]
                        [--report DIR] [--respect-keys] [--stream KEY]
                        [--labels LABELS.jsonl] [--rescore [--artifact FILE] [--prompts FILE]]

SOURCE: a decision-record JSONL file, a decision log directory, or a redis:// URL.
Without `--baseline` the baseline is the log as recorded. `--labels` adds projected
quality (simulate_quality); `--rescore` re-scores the records found in `--prompts`
(default: the `--labels` file) with `--artifact` before replaying (simulate_rescore).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from gateway.errors import PolicyError
from gateway.policy import Policy, PolicyInvalid, load_policy
from gateway_tools.decisions import SourceError
from gateway_tools.replay_log import Log, read_log
from gateway_tools.simulate import Outcome, as_recorded, replay, summarise, sweep, transitions
from gateway_tools.simulate_quality import Curve, add_quality, read_labels
from gateway_tools.simulate_report import Report, write_report
from gateway_tools.simulate_rescore import load_classifier, rescore, score_prompts

SWEEP = [round(float(t), 2) for t in np.linspace(0.0, 1.0, 21)]


def _policy(path: str) -> Policy:
    try:
        return load_policy(Path(path)).policy
    except PolicyInvalid as exc:
        raise SourceError("\n".join(str(p) for p in exc.problems)) from None
    except PolicyError as exc:
        raise SourceError(str(exc)) from None


PROGRESS_EVERY = 1_000_000  # records between progress lines when stderr is not a terminal


class _Progress:
    """Records read so far on stderr: a live counter on a terminal, else a line per million."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.next = PROGRESS_EVERY

    def __call__(self, total: int) -> None:
        if self.tty:
            sys.stderr.write(f"\rreading decision records: {total:,}")
        elif total >= self.next:
            sys.stderr.write(f"read {total:,} decision records\n")
            self.next = (total // PROGRESS_EVERY + 1) * PROGRESS_EVERY
        else:
            return
        sys.stderr.flush()


def _quality_rows(summary: dict[str, Any]) -> list[str]:
    base, cand = summary["baseline"], summary["candidate"]
    if "projected_open_shortfall" not in cand:
        return []
    labels = summary["labels"]
    return [
        f"{'open shortfall':16}{base['projected_open_shortfall']:>30.4f}"
        f"{cand['projected_open_shortfall']:>14.4f}",
        f"{'quality recov.':16}{100 * base['quality_recovered']:>29.1f}%"
        f"{100 * cand['quality_recovered']:>13.1f}%",
        f"(quality projected from {labels['used']:,} labels, by the judge's view; "
        "lower shortfall is better)",
    ]


def _text(summary: dict[str, Any], base: Outcome, cand: Outcome, baseline_name: str) -> str:
    n, k = int(summary["records"]), int(summary["changed"])
    rows = [
        f"{n:,} records; {k:,} change backend ({100 * k / n if n else 0:.1f} %)",
        f"{'':16}{'baseline: ' + baseline_name:>30}{'candidate':>14}",
        f"{'closed share':16}{100 * base.closed_share:>29.1f}%{100 * cand.closed_share:>13.1f}%",
        f"{'cost (USD)':16}{base.cost_usd:>30.4f}{cand.cost_usd:>14.4f}",
        *_quality_rows(summary),
        "by backend:",
    ]
    for name in dict.fromkeys([*base.by_backend, *cand.by_backend]):
        rows.append(
            f"  {name:14}{base.by_backend.get(name, 0):>30,}{cand.by_backend.get(name, 0):>14,}"
        )
    rows.append("(a re-routed request is assumed to use the tokens it recorded)")
    if "rescored" in summary:
        rows.append(rescored_note(summary["rescored"]))
    return "\n".join(rows)


def rescored_note(rescored: dict[str, Any]) -> str:
    """One line on how many records `--rescore` changed."""
    return (
        f"re-scored {rescored['records']:,} of {rescored['of']:,} records with "
        f"{rescored['classifier_version']} (prompts from {rescored['prompts']}); "
        "the others keep their recorded score"
    )


def _prepare(args: argparse.Namespace) -> tuple[Log, Curve | None, dict[str, Any] | None]:
    """Read the log (re-scored if asked) and the labels' curve."""
    if args.rescore and not (args.prompts or args.labels):
        raise SourceError("--rescore needs --prompts FILE (decision records carry no prompts)")
    if (args.artifact or args.prompts) and not args.rescore:
        raise SourceError("--artifact and --prompts only apply with --rescore")
    progress = _Progress(sys.stderr.isatty())
    log: Log = read_log(args.log, stream=args.stream, progress=progress, ids=args.rescore)
    if progress.tty:
        sys.stderr.write("\n")
    if not args.rescore:
        return log, read_labels(args.labels) if args.labels else None, None
    classifier = load_classifier(args.artifact)
    prompts = args.prompts or args.labels
    scores = score_prompts(prompts, classifier.score)
    log, count = rescore(log, scores)
    info = {
        "records": count,
        "of": len(log),
        "prompts": prompts,
        "artifact": args.artifact or "shipped",
        "classifier_version": classifier.version,
    }
    curve = None
    if args.labels:
        # The curve must be in the new artifact's score space: re-score the labels too.
        label_scores = (
            scores if args.labels == prompts else score_prompts(args.labels, classifier.score)
        )
        curve = read_labels(args.labels, label_scores)
    return log, curve, info


def simulate_command(args: argparse.Namespace) -> int:
    """Run `gateway policy simulate`."""
    keys = bool(args.respect_keys)
    try:
        candidate_policy = _policy(args.policy)
        baseline_policy = _policy(args.baseline) if args.baseline else None
        log, curve, rescored = _prepare(args)
    except SourceError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    candidate = replay(candidate_policy, log, keys_as_configured=keys)
    baseline = (
        replay(baseline_policy, log, keys_as_configured=keys)
        if baseline_policy is not None
        else as_recorded(log)
    )
    summary = summarise(log, candidate, baseline)
    if curve is not None:
        add_quality(summary, curve, log.score, candidate, baseline)
    if rescored is not None:
        summary["rescored"] = rescored
    baseline_name = args.baseline or "as recorded"
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    else:
        print(_text(summary, baseline, candidate, baseline_name))
    if args.report:
        report = Report(
            summary=summary,
            candidate_name=args.policy,
            baseline_name=baseline_name,
            log_name=args.log,
            moves=transitions(log, candidate),
            sweep=sweep(candidate_policy, log, SWEEP, keys_as_configured=keys),
        )
        page = write_report(Path(args.report), report)
        print(f"report: {page}", file=sys.stderr)
    return 0
