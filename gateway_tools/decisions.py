"""Read decision records back from where `gateway.decisions.DecisionLog` writes them.

A source is a JSONL file, a directory of the log's `decisions-*.jsonl` files (oldest
first), or a Redis URL (`redis://host:port/db`) whose stream (`--stream`) holds them.

gateway decisions export --out FILE [--since 2h|ISO-8601|EPOCH] [--from DIR|FILE|redis://...]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from gateway.decisions import DEFAULT_STREAM, FILE_PREFIX, from_stream_fields

BATCH = 50_000
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SourceError(Exception):
    """A decision source that cannot be read; reported as one line."""


def parse_since(text: str, now: float | None = None) -> float:
    """`--since` as epoch seconds: `90s`, `15m`, `2h`, `7d` ago, ISO 8601, or epoch seconds."""
    now = time.time() if now is None else now
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative is not None:
        return now - float(relative.group(1)) * _UNIT_S[relative.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SourceError(f"--since {text!r}: expected 15m, 2h, 7d, ISO 8601 or epoch") from None
    if stamp.tzinfo is None:
        raise SourceError(f"--since {text!r}: give a time zone (e.g. a trailing Z for UTC)")
    return stamp.timestamp()


def is_redis(source: str) -> bool:
    """Whether a source names a Redis server rather than a path."""
    return source.startswith(_REDIS_SCHEMES)


def record_files(path: Path) -> list[Path]:
    """The JSONL files of a source path, oldest first."""
    if path.is_dir():
        files = sorted(path.glob(f"{FILE_PREFIX}*.jsonl"))
        if not files:
            raise SourceError(f"{path}: no {FILE_PREFIX}*.jsonl files")
        return files
    if not path.is_file():
        raise SourceError(f"{path}: no such file or directory")
    return [path]


def batches(
    source: str, *, stream: str = DEFAULT_STREAM, since: float | None = None
) -> Iterator[tuple[str, int, list[bytes]]]:
    """`(where, first line number, lines)` in batches; blank lines kept, so numbers hold."""
    if is_redis(source):
        number = 1
        for lines in _redis_batches(source, stream, since):
            yield f"{source} {stream}", number, lines
            number += len(lines)
        return
    for path in record_files(Path(source)):
        with path.open("rb") as handle:
            number, lines = 1, []
            for line in handle:
                lines.append(line)
                if len(lines) >= BATCH:
                    yield str(path), number, lines
                    number, lines = number + len(lines), []
            if lines:
                yield str(path), number, lines


def _redis_batches(url: str, stream: str, since: float | None) -> Iterator[list[bytes]]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    # Entry ids are the time the entry was added, never before the record's `ts`.
    start = f"{int(since * 1000)}-0" if since is not None else "-"
    try:
        while True:
            entries: Any = client.xrange(stream, min=start, max="+", count=BATCH // 10)
            if not entries:
                return
            yield [orjson.dumps(from_stream_fields(fields)) for _, fields in entries]
            ms, seq = entries[-1][0].decode().split("-")
            start = f"{ms}-{int(seq) + 1}"
    except redis.RedisError as exc:
        raise SourceError(f"{url}: {exc}") from None
    finally:
        client.close()


def export(source: str, out: IO[bytes], since: float | None, stream: str) -> int:
    """Copy records at or after `since` to `out` as JSONL; returns how many."""
    count = 0
    for where, first, lines in batches(source, stream=stream, since=since):
        kept = []
        for offset, line in enumerate(lines):
            if not line.strip():
                continue
            if since is not None:
                try:
                    ts = orjson.loads(line).get("ts")
                except (orjson.JSONDecodeError, AttributeError):
                    raise SourceError(f"{where}:{first + offset}: not a JSON object") from None
                if not isinstance(ts, int | float) or ts < since:
                    continue
            kept.append(line.rstrip(b"\r\n"))
        if kept:
            out.write(b"\n".join(kept) + b"\n")
            count += len(kept)
    return count


def export_command(args: argparse.Namespace) -> int:
    """`gateway decisions export`."""
    source = args.source or os.environ.get("GATEWAY_DECISION_LOG_DIR", "")
    if not source:
        hint = "give --from DIR|FILE|redis://... (or set GATEWAY_DECISION_LOG_DIR)"
        print(f"gateway: {hint}", file=sys.stderr)
        return 2
    try:
        since = parse_since(args.since) if args.since else None
        if args.out == "-":
            count = export(source, sys.stdout.buffer, since, args.stream)
        else:
            target = Path(args.out)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                with tmp.open("wb") as handle:
                    count = export(source, handle, since, args.stream)
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)
    except SourceError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"gateway: {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{count} decision records", file=sys.stderr)
    return 0
