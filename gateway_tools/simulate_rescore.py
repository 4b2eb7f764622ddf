"""`gateway policy simulate --rescore`: replay with a classifier artifact's scores.

Decision records never carry prompts, so the prompts come from a JSONL file of
`{"id": request id, "messages": [...]}` (a label export has that shape) joined on the
records' `request_id`. Records without a prompt there keep their recorded score.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from gateway.difficulty.classifier import DifficultyClassifier
from gateway_tools.decisions import SourceError
from gateway_tools.replay_log import Log


def load_classifier(artifact: str | None) -> DifficultyClassifier:
    """The artifact's classifier (the shipped one without `artifact`)."""
    try:
        return DifficultyClassifier.load(Path(artifact) if artifact else None)
    except OSError as exc:
        raise SourceError(f"{artifact}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SourceError(f"{artifact}: not a classifier artifact ({exc})") from None


def json_objects(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(line number, object)` for every non-blank line of a JSONL file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from None
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise SourceError(f"{path}:{number}: invalid JSON") from None
        if type(row) is not dict:
            raise SourceError(f"{path}:{number}: not a JSON object")
        yield number, row


def score_prompts(path: str, score: Callable[[dict[str, Any]], float]) -> dict[str, float]:
    """`id → score` for every record of a prompt file that has messages."""
    out: dict[str, float] = {}
    for number, row in json_objects(path):
        if not isinstance(row.get("id"), str):
            raise SourceError(f"{path}:{number}: id must be a string")
        messages = row.get("messages")
        if messages is None:
            continue  # e.g. feedback on a request whose prompt was not retained
        if not isinstance(messages, list):
            raise SourceError(f"{path}:{number}: messages must be a list")
        try:
            out[row["id"]] = score({"messages": messages})
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise SourceError(f"{path}:{number}: cannot score the messages ({exc})") from None
    return out


def rescore(log: Log, scores: dict[str, float]) -> tuple[Log, int]:
    """The log with the records found in `scores` re-scored, and how many were."""
    assert log.request_ids is not None, "read the log with ids=True"
    new = log.score.copy()
    count = 0
    for i, request_id in enumerate(log.request_ids):
        value = scores.get(request_id)
        if value is not None:
            new[i] = value
            count += 1
    return replace(log, score=new), count
