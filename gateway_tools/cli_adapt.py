"""``gateway classify adapt`` and ``gateway classify simulate-adapt``.

gateway classify adapt --labels LABELS.jsonl [--base ARTIFACT] --out ARTIFACT
gateway classify simulate-adapt --data FILE [--by collection|fold|both] [--share 0.1 ...]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import orjson

from gateway.difficulty.artifact import DEFAULT_ARTIFACT, Artifact
from gateway_tools.adapt import Outcome, version_of
from gateway_tools.evaluate import CI_LEVEL


class InputError(Exception):
    """Bad user input; reported as one line on stderr with exit code 2."""


def parse_record(raw: bytes, where: str) -> dict[str, Any]:
    """One JSONL line of `{"id", "messages", ...}`; raises `InputError` naming ``where``."""
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{where}: invalid JSON: {exc}") from None
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{where}: 'messages' is missing or not a non-empty list")
    return row


class Parser(argparse.ArgumentParser):
    """argparse that raises ``InputError`` instead of exiting on a usage error."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise InputError(message)


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def read_labels(path: Path) -> tuple[list[dict[str, Any]], list[float]]:
    """Label records ``{"id", "messages", "label"}`` (other fields ignored), checked line by
    line: an error names the file and the line."""
    try:
        raw_lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise InputError(f"labels file not found: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read labels {path}: {exc.strerror or exc}") from None
    bodies: list[dict[str, Any]] = []
    labels: list[float] = []
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}, line {number}"
        row = parse_record(raw, where)
        label = row.get("label")
        if isinstance(label, bool) or not isinstance(label, (int, float)):
            raise InputError(f"{where}: 'label' is missing or not a number")
        if not (math.isfinite(label) and 0.0 <= label <= 1.0):
            raise InputError(f"{where}: 'label' must be within [0, 1], got {label}")
        bodies.append({"messages": row["messages"]})
        labels.append(float(label))
    if not labels:
        raise InputError(f"{path}: no label records")
    return bodies, labels


def _load_base(value: str | None) -> tuple[Artifact, str]:
    path = Path(value) if value else DEFAULT_ARTIFACT
    if not path.is_file():
        raise InputError(f"base artifact not found: {path}")
    try:
        artifact = Artifact.from_bytes(path.read_bytes())
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a classifier artifact ({exc})") from None
    return artifact, version_of(artifact)


def describe(outcome: Outcome, base_version: str, quantile: float = 0.1) -> list[str]:
    """Human-readable report lines of an ``adapt`` run."""
    v = outcome.validation

    def fmt(ci: tuple[float, float] | None, sign: str = "") -> str:
        return "–" if ci is None else f"[{ci[0]:{sign}.3f}, {ci[1]:{sign}.3f}]"

    level = f"{CI_LEVEL:.0%}"
    lines = [f"base {base_version}; {v.n} labels in {v.groups} near-duplicate groups"]
    if v.reason:
        lines.append(f"not validated: {v.reason}")
    else:
        lines.append(
            f"held-out APGR on the labels ({level} intervals): base {v.base:.3f} "
            f"{fmt(v.base_ci)}, adapted {v.adapted:.3f} {fmt(v.adapted_ci)}, "
            f"adapted - base {v.adapted - v.base:+.3f} {fmt(v.gain_ci, '+')}"
        )
    if outcome.adapted:
        lines.append(
            f"adapted: better on the held-out labels (the {quantile:.0%} quantile of the "
            f"resampled gain is {v.gain_low:+.3f} > 0); artifact {version_of(outcome.artifact)}"
        )
    else:
        lines.append(
            f"kept the base's ranking: the adapted model is not clearly better (the "
            f"{quantile:.0%} quantile of the resampled gain must be above 0)"
        )
        r = outcome.recalibration
        if r is None:
            lines.append(f"artifact {base_version} (the base, unchanged)")
        else:
            lines.append(
                f"recalibrated: scores rescaled (logit x {r.scale:.3f} {r.bias:+.3f}, same "
                f"ranking): held-out log loss {r.loss_base:.4f} -> {r.loss_recalibrated:.4f}; "
                f"artifact {version_of(outcome.artifact)}"
            )
    return lines


def cmd_adapt(args: argparse.Namespace) -> int:
    """Fit, validate and write an adapted artifact (or the base, when not clearly better)."""
    from gateway_tools.adapt import AdaptConfig, adapt, featurize

    start = time.perf_counter()
    bodies, labels = read_labels(Path(args.labels))
    base, version = _load_base(args.base)
    config = AdaptConfig(
        seed=args.seed,
        bootstrap=args.bootstrap,
        guard_quantile=args.guard_quantile,
        recalibrate=args.recalibrate,
    )
    outcome = adapt(base, featurize(base, bodies, labels), config)
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(outcome.artifact.to_bytes())
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    for line in describe(outcome, version, args.guard_quantile):
        print(line)
    print(f"wrote {out} in {time.perf_counter() - start:.1f}s")
    return 0


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more: {value!r}")
    return int(value)


def _quantile(value: str) -> float:
    try:
        q = float(value)
    except ValueError:
        q = -1.0
    if not 0.0 < q < 1.0:
        raise argparse.ArgumentTypeError(f"must be within (0, 1): {value!r}")
    return q


GUARD_HELP = (
    "adapt only if this share of the resampled held-out gains is at most zero "
    "(default 0.1: a one-sided 90%% bound; 0.5: more likely better than not)"
)


RECAL_HELP = (
    "when the adapted model is not clearly better, keep the base as it is instead of "
    "rescaling its scores to the labels (a rescale keeps every request's rank)"
)


def _shares(value: str) -> list[float]:
    try:
        shares = [float(part) for part in value.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of shares: {value!r}") from None
    if not shares or any(not 0.0 < s < 1.0 for s in shares):
        raise argparse.ArgumentTypeError(f"shares must be within (0, 1): {value}")
    return shares


def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulated deployments: base against adapted APGR per deployment and share."""
    from gateway_tools.adapt import AdaptConfig
    from gateway_tools.adapt_simulate import SHARES, format_rows, format_summary, simulate
    from gateway_tools.labels import load_records

    path = Path(args.data)
    if not path.is_file():
        raise InputError(f"data file not found: {path}")
    records = load_records(path)
    if not records:
        raise InputError(f"{path}: no usable records")
    start = time.perf_counter()
    shares = args.share or list(SHARES)
    config = AdaptConfig(
        seed=args.seed,
        bootstrap=args.bootstrap,
        guard_quantile=args.guard_quantile,
        recalibrate=args.recalibrate,
    )
    results = []
    for by in ("collection", "fold") if args.by == "both" else (args.by,):
        rows = simulate(records, by, shares, config, args.max_records, args.seed, log)
        what = "collection" if by == "collection" else "collection within a source fold"
        sub = f", at most {args.max_records} records each" if args.max_records else ""
        print(f"## Simulated deployments: one per {what}{sub}\n{format_rows(rows)}\n")
        results.append(("per collection" if by == "collection" else "per fold:collection", rows))
    print(f"## Summary (seed {args.seed})\n\n{format_summary(results)}\n")
    print(f"simulated in {time.perf_counter() - start:.0f}s")
    return 0


def subparsers() -> dict[str, tuple[Parser, Callable[[argparse.Namespace], int]]]:
    """The two commands' parsers and handlers."""
    ad = Parser(prog="gateway classify adapt", description="Adapt an artifact to labels.")
    ad.add_argument("--labels", required=True, help='jsonl of {"id", "messages", "label"}')
    ad.add_argument("--base", help="artifact to adapt (default: the shipped one)")
    ad.add_argument("--out", required=True, help="artifact to write (.npz)")
    ad.add_argument("--seed", type=int, default=0)
    ad.add_argument("--bootstrap", type=_positive, default=200, help="resamples for the intervals")
    ad.add_argument("--guard-quantile", type=_quantile, default=0.1, help=GUARD_HELP)
    ad.add_argument("--no-recalibrate", dest="recalibrate", action="store_false", help=RECAL_HELP)

    sim = Parser(
        prog="gateway classify simulate-adapt",
        description="Label a share of each simulated deployment, adapt, score the rest.",
    )
    sim.add_argument("--data", required=True, help="train.jsonl with per-model outcomes")
    sim.add_argument("--by", choices=("collection", "fold", "both"), default="both")
    sim.add_argument(
        "--share",
        type=_shares,
        default=None,
        help="labelled share(s), comma-separated (default 0.02,0.05,0.1,0.2)",
    )
    sim.add_argument(
        "--max-records", type=int, default=0, help="subsample deployments above this size"
    )
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--bootstrap", type=_positive, default=200)
    sim.add_argument("--guard-quantile", type=_quantile, default=0.1, help=GUARD_HELP)
    sim.add_argument("--no-recalibrate", dest="recalibrate", action="store_false", help=RECAL_HELP)
    return {"adapt": (ad, cmd_adapt), "simulate-adapt": (sim, cmd_simulate)}
