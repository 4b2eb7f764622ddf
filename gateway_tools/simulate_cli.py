"""`gateway policy simulate`: what a policy change would do to logged traffic.

gateway policy simulate --policy NEW.yaml [--baseline OLD.yaml] --log SOURCE [--json]
                        [--report DIR] [--respect-keys] [--stream KEY]

SOURCE: a decision-record JSONL file, a decision log directory, or a redis:// URL.
Without `--baseline` the baseline is the log as recorded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import orjson

from gateway.errors import PolicyError
from gateway.policy import Policy, PolicyInvalid, load_policy
from gateway_tools.decisions import SourceError
from gateway_tools.replay_log import Log, read_log
from gateway_tools.simulate import Outcome, as_recorded, replay, summarise, sweep, transitions
from gateway_tools.simulate_report import Report, write_report

SWEEP = [round(float(t), 2) for t in np.linspace(0.0, 1.0, 21)]


def _policy(path: str) -> Policy:
    try:
        return load_policy(Path(path)).policy
    except PolicyInvalid as exc:
        raise SourceError("\n".join(str(p) for p in exc.problems)) from None
    except PolicyError as exc:
        raise SourceError(str(exc)) from None


def _progress(total: int) -> None:
    sys.stderr.write(f"\rreading decision records: {total:,}")
    sys.stderr.flush()


def _text(n: int, k: int, base: Outcome, cand: Outcome, baseline_name: str) -> str:
    rows = [
        f"{n:,} records; {k:,} change backend ({100 * k / n if n else 0:.1f} %)",
        f"{'':16}{'baseline: ' + baseline_name:>30}{'candidate':>14}",
        f"{'closed share':16}{100 * base.closed_share:>29.1f}%{100 * cand.closed_share:>13.1f}%",
        f"{'cost (USD)':16}{base.cost_usd:>30.4f}{cand.cost_usd:>14.4f}",
        "by backend:",
    ]
    for name in dict.fromkeys([*base.by_backend, *cand.by_backend]):
        rows.append(
            f"  {name:14}{base.by_backend.get(name, 0):>30,}{cand.by_backend.get(name, 0):>14,}"
        )
    rows.append("(a re-routed request is assumed to use the tokens it recorded)")
    return "\n".join(rows)


def simulate_command(args: argparse.Namespace) -> int:
    """Run `gateway policy simulate`."""
    keys = bool(args.respect_keys)
    try:
        candidate_policy = _policy(args.policy)
        baseline_policy = _policy(args.baseline) if args.baseline else None
        progress = _progress if sys.stderr.isatty() else None
        log: Log = read_log(args.log, stream=args.stream, progress=progress)
        if progress is not None:
            sys.stderr.write("\n")
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
    baseline_name = args.baseline or "as recorded"
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    else:
        k = int(summary["changed"])
        print(_text(len(log), k, baseline, candidate, baseline_name))
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
