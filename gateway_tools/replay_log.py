"""Decision records as numpy columns, for replaying a million of them in seconds.

Strings (model, team, endpoint, backend) become integer codes into a name list; a null
score becomes NaN. Lines are parsed in batches as one JSON array each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from gateway_tools.decisions import SourceError, batches

NO_BACKEND = "-"
REQUIRED = ("model", "endpoint", "backend", "prompt_tokens", "completion_tokens")
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Log:
    """Columns of a decision log; `*_names[code]` is the string behind a code."""

    model: IntArray
    team: IntArray
    endpoint: IntArray
    backend: IntArray
    score: FloatArray
    prompt_tokens: IntArray
    completion_tokens: IntArray
    cost_usd: FloatArray
    closed: BoolArray  # the recorded tier
    hit: BoolArray  # answered from the cache
    refused: BoolArray  # no backend and status below 500: refused before routing
    model_names: list[str]
    team_names: list[str]
    endpoint_names: list[str]
    backend_names: list[str]
    request_ids: list[str] | None = None  # only when read with `ids=True`

    def __len__(self) -> int:
        return int(self.model.size)


class _Columns:
    def __init__(self) -> None:
        self.tables: dict[str, dict[Any, int]] = {
            name: {} for name in ("model", "team", "endpoint", "backend")
        }
        self.parts: dict[str, list[npt.NDArray[Any]]] = {}

    def add(self, name: str, array: npt.NDArray[Any]) -> None:
        self.parts.setdefault(name, []).append(array)

    def codes(self, name: str, values: list[Any]) -> None:
        table = self.tables[name]
        put = table.setdefault
        self.add(name, np.fromiter((put(v, len(table)) for v in values), np.int64, len(values)))

    def joined(self, name: str, dtype: Any) -> npt.NDArray[Any]:
        parts = self.parts.get(name)
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    def names(self, name: str) -> list[str]:
        return [NO_BACKEND if v is None else str(v) for v in self.tables[name]]


def _rows(where: str, first: int, lines: list[bytes]) -> list[Any]:
    body = [line for line in lines if line.strip()]
    try:
        rows = orjson.loads(b"[" + b",".join(body) + b"]")
    except orjson.JSONDecodeError:
        _locate(where, first, lines)
        raise SourceError(f"{where}: invalid JSON") from None
    assert isinstance(rows, list)
    return rows


def _locate(where: str, first: int, lines: Sequence[bytes]) -> None:
    for offset, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise SourceError(f"{where}:{first + offset}: invalid JSON") from None
        if type(row) is not dict:
            raise SourceError(f"{where}:{first + offset}: not a JSON object")
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise SourceError(f"{where}:{first + offset}: missing {', '.join(missing)}")


def _ints(rows: list[Any], key: str) -> IntArray:
    try:
        return np.array([r[key] or 0 for r in rows], dtype=np.int64)
    except (OverflowError, TypeError, ValueError):
        raise SourceError(f"{key} must be a whole number in every record") from None


def _floats(rows: list[Any], key: str) -> FloatArray:
    try:
        return np.array([r.get(key) for r in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise SourceError(f"{key} must be a number (or null) in every record") from None


def _add_batch(cols: _Columns, rows: list[Any], ids: list[str] | None) -> None:
    if ids is not None:
        ids.extend(str(r.get("request_id") or "") for r in rows)
    cols.codes("model", [r["model"] for r in rows])
    cols.codes("endpoint", [r["endpoint"] for r in rows])
    cols.codes("backend", [r["backend"] or NO_BACKEND for r in rows])
    cols.codes("team", [r.get("team") for r in rows])
    cols.add("score", _floats(rows, "score"))
    cols.add("cost_usd", np.nan_to_num(_floats(rows, "cost_usd")))
    cols.add("prompt_tokens", _ints(rows, "prompt_tokens"))
    cols.add("completion_tokens", _ints(rows, "completion_tokens"))
    cols.add("closed", np.array([r.get("tier") == "closed" for r in rows], dtype=np.bool_))
    cols.add("hit", np.array([r.get("cache") == "hit" for r in rows], dtype=np.bool_))
    cols.add("status", np.array([r.get("status") or 0 for r in rows], dtype=np.int64))


def read_log(
    source: str,
    *,
    stream: str,
    progress: Callable[[int], None] | None = None,
    ids: bool = False,
) -> Log:
    """Read every decision record of a source (file, directory or Redis URL) as columns
    (with `ids`, also every record's `request_id`)."""
    cols = _Columns()
    request_ids: list[str] | None = [] if ids else None
    total = 0
    for where, first, lines in batches(source, stream=stream):
        rows = _rows(where, first, lines)
        try:
            _add_batch(cols, rows, request_ids)
        except (KeyError, TypeError):  # a missing field or a row that is not an object
            _locate(where, first, lines)
            raise SourceError(f"{where}: a record has a field of the wrong type") from None
        total += len(rows)
        if progress is not None:
            progress(total)
    backend = cols.joined("backend", np.int64)
    backend_names = cols.names("backend")
    unset = np.array([n == NO_BACKEND for n in backend_names] or [False], dtype=np.bool_)
    no_backend = unset[backend] if backend.size else np.zeros(0, np.bool_)
    return Log(
        model=cols.joined("model", np.int64),
        team=cols.joined("team", np.int64),
        endpoint=cols.joined("endpoint", np.int64),
        backend=backend,
        score=cols.joined("score", np.float64),
        prompt_tokens=cols.joined("prompt_tokens", np.int64),
        completion_tokens=cols.joined("completion_tokens", np.int64),
        cost_usd=cols.joined("cost_usd", np.float64),
        closed=cols.joined("closed", np.bool_),
        hit=cols.joined("hit", np.bool_),
        refused=no_backend & (cols.joined("status", np.int64) < 500),
        model_names=cols.names("model"),
        team_names=cols.names("team"),
        endpoint_names=[str(v) for v in cols.tables["endpoint"]],
        backend_names=backend_names,
        request_ids=request_ids,
    )
