"""``gateway classify``: score files, train, evaluate, explain and adapt the difficulty model.

gateway classify --input IN.jsonl --output OUT.jsonl [--artifact FILE]
gateway classify train --data FILE --out PATH [--seed 0] [--collections a,b]
gateway classify eval --data FILE [--by source] [--plot PATH | --no-plot] [--holdout source]
                     [--bootstrap N]
gateway classify explain "prompt text"
gateway classify adapt --labels LABELS.jsonl [--base ARTIFACT] --out ARTIFACT
gateway classify simulate-adapt --data FILE [--by collection|fold|both] [--share 0.1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from gateway.difficulty.classifier import DifficultyClassifier
from gateway_tools import cli_adapt
from gateway_tools.cli_adapt import InputError, parse_record
from gateway_tools.cli_adapt import Parser as _Parser
from gateway_tools.evaluate import BOOTSTRAP

EXIT_USAGE = 2  # argparse's own exit code for usage errors


def _classifier(model: str | None) -> DifficultyClassifier:
    path = Path(model) if model else None
    if path is not None and not path.is_file():
        raise InputError(f"model artifact not found: {path}")
    try:
        return DifficultyClassifier.load(path)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a usable classifier artifact ({exc})") from None


def classify_file(input_path: str, output_path: str, model: str | None = None) -> int:
    """Score every line of ``input_path`` into ``output_path``; returns the line count."""
    classifier = _classifier(model)
    try:
        raw_lines = (
            sys.stdin.buffer.read() if input_path == "-" else Path(input_path).read_bytes()
        ).splitlines()
    except OSError as exc:
        raise InputError(f"cannot read input {input_path}: {exc.strerror or exc}") from None
    out: list[bytes] = []
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        row = parse_record(raw, f"{input_path}, line {number}")
        row_id = row.get("id")
        out.append(orjson.dumps({"id": row_id, "score": classifier.score(row)}))
    payload = b"\n".join(out) + (b"\n" if out else b"")
    if output_path == "-":
        sys.stdout.buffer.write(payload)
        return len(out)
    target = Path(output_path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(payload)
        tmp.replace(target)  # all or nothing: no half-written output on failure
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write output {output_path}: {exc.strerror or exc}") from None
    return len(out)


def _data_path(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise InputError(f"data file not found: {path}")
    return path


def _non_negative(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value}")
    return number


def _only(records: list[Any], collections: str | None) -> list[Any]:
    """The records of the named collections (comma-separated), or all of them."""
    if not collections:
        return records
    wanted = {c.strip() for c in collections.split(",") if c.strip()}
    return [r for r in records if r.collection in wanted]


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _weights(value: str) -> dict[str, float]:
    """``a=0.5,b=1`` -> collection weights."""
    out: dict[str, float] = {}
    for part in _names(value):
        name, _, number = part.partition("=")
        try:
            out[name.strip()] = float(number)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not collection=weight: {part!r}") from None
    return out


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_train(args: argparse.Namespace) -> int:
    import numpy as np

    from gateway_tools.labels import load_records
    from gateway_tools.train import TrainConfig, fit, prepare

    start = time.perf_counter()
    records = _only(load_records(_data_path(args.data)), args.collections)
    if not records:
        raise InputError(f"{args.data}: no usable records")
    prepared = prepare(records)
    config = TrainConfig(seed=args.seed, weights=args.weights)
    artifact = fit(prepared, np.arange(len(records)), config, _log)
    digest = artifact.save(Path(args.out))
    print(
        f"wrote {args.out} ({artifact.meta['name']}-{digest}) from {len(records)} records "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from gateway_tools import evaluate as ev
    from gateway_tools.labels import load_records

    records = _only(load_records(_data_path(args.data)), args.collections)
    if not records:
        raise InputError(f"{args.data}: no usable records")
    if args.holdout:
        from gateway_tools.holdout import holdout_scores
        from gateway_tools.labels import SOURCE_FOLDS
        from gateway_tools.train import TrainConfig, prepare

        config = TrainConfig(
            seed=args.seed, weights=args.weights, collections=tuple(args.train_collections)
        )
        try:
            scores = holdout_scores(prepare(records), args.holdout, config, _log)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        by = args.by or ("fold" if args.holdout == "source" else args.holdout)
        protocol = {
            "source": f"source-grouped {SOURCE_FOLDS}-fold hold-out",
            "collection": "leave-one-collection-out",
            "family": "leave-one-task-family-out",
        }[args.holdout]
        title = f"{protocol}, grouped by {by}"
    else:
        classifier = _classifier(args.model)
        scores = ev.score_records(classifier, records)
        by = args.by or "source"
        title = f"{classifier.version}, grouped by {by}"
    results = ev.evaluate(records, scores, by, args.bootstrap)
    print(f"## {title}\n\n{ev.format_table(results)}")
    if by == "source":
        print(f"\n### By weak-tier accuracy\n\n{ev.format_bands(results)}")
    if not args.no_plot:
        plot = Path(args.plot or f"routing-eval-{by}.png")
        try:
            ev.plot(results, plot, title)
        except ImportError:
            print("\nplot: skipped (needs matplotlib: pip install 'gateway[train]')")
        else:
            print(f"\nplot: {plot}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    classifier = _classifier(args.model)
    body = {"messages": [{"role": "user", "content": " ".join(args.text)}]}
    print(f"score {classifier.score(body):.4f}  ({classifier.version})")
    for name, value in classifier.explain(body, top=args.top):
        print(f"  {value:+.4f}  {name}")
    return 0


def _subparsers() -> dict[str, tuple[_Parser, Callable[[argparse.Namespace], int]]]:
    train = _Parser(prog="gateway classify train", description="Train and write an artifact.")
    train.add_argument("--data", required=True, help="train.jsonl with per-model outcomes")
    train.add_argument("--out", required=True, help="artifact path (.npz)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--collections", help="train on these collections only (a,b,c)")
    train.add_argument("--weights", type=_weights, default={}, help="collection=weight,...")

    ev = _Parser(prog="gateway classify eval", description="APGR/CPT per group.")
    ev.add_argument("--data", required=True, help="jsonl with per-model outcomes")
    ev.add_argument("--by", choices=("source", "collection", "family", "fold", "all"), default=None)
    ev.add_argument(
        "--plot",
        help="PNG of quality vs strong-call share per group (default: routing-eval-<by>.png)",
    )
    ev.add_argument("--no-plot", action="store_true", help="print the table only")
    ev.add_argument(
        "--artifact", "--model", dest="model", help="artifact to evaluate (default: shipped)"
    )
    ev.add_argument(
        "--holdout",
        choices=("collection", "family", "source"),
        help="train leave-one-group-out models and evaluate each on its held-out group",
    )
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--collections", help="evaluate (and hold out) these collections only")
    ev.add_argument(
        "--train-collections",
        type=_names,
        default=[],
        help="with --holdout: train on these collections only (every record is still scored)",
    )
    ev.add_argument(
        "--weights", type=_weights, default={}, help="with --holdout: collection=weight,..."
    )
    ev.add_argument(
        "--bootstrap",
        type=_non_negative,
        default=BOOTSTRAP,
        metavar="N",
        help=f"resamples per group for the APGR intervals (default {BOOTSTRAP}; 0: none)",
    )

    explain = _Parser(prog="gateway classify explain", description="Score and top signals.")
    explain.add_argument("text", nargs="+", help="prompt text")
    explain.add_argument("--top", type=int, default=8)
    explain.add_argument(
        "--artifact", "--model", dest="model", help="artifact (default: the shipped one)"
    )
    return {
        "train": (train, _cmd_train),
        "eval": (ev, _cmd_eval),
        "explain": (explain, _cmd_explain),
        **cli_adapt.subparsers(),
    }


def _run(argv: Sequence[str]) -> int:
    commands = _subparsers()
    if argv and argv[0] in commands:
        parser, handler = commands[argv[0]]
        return handler(parser.parse_args(argv[1:]))
    parser = _Parser(
        prog="gateway classify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, help="jsonl of {id, messages}; - for stdin")
    parser.add_argument("--output", required=True, help="jsonl of {id, score}; - for stdout")
    parser.add_argument(
        "--artifact", "--model", dest="model", help="artifact (default: the shipped one)"
    )
    args = parser.parse_args(argv)
    count = classify_file(args.input, args.output, args.model)
    if args.output != "-":
        print(f"scored {count} requests -> {args.output}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    """Entry point of ``gateway classify``; returns the process exit code."""
    try:
        return _run(argv)
    except InputError as exc:
        print(f"gateway classify: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # argparse --help; callers in-process want a code, not an exit
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
