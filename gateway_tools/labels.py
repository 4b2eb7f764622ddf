"""Training records and their "open model falls short of the strong model" labels.

Scores are only comparable within a collection, so each collection names its own strong
model (the GPT-4-class or best model it has) and weak models (representative open
models; several are averaged, which gives smoother soft labels). Training-time only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Pairing:
    """Which models of a collection play the strong and the weak tier."""

    strong: str
    weak: tuple[str, ...]
    weight: float  # share of training weight; collections without a closed model count less


PAIRINGS: dict[str, Pairing] = {
    # GPT-4 Turbo vs Mixtral: exactly the closed-vs-open question the gateway asks.
    "mmlu": Pairing("gpt-4-1106-preview", ("mistralai/Mixtral-8x7B-Instruct-v0.1",), 1.0),
    "routerbench": Pairing(
        "gpt-4-1106-preview",
        ("mistralai/mixtral-8x7b-chat", "zero-one-ai/Yi-34B-Chat", "meta/llama-2-70b-chat"),
        1.0,
    ),
    # No closed model: the best model of the set against the typical small ones.
    "llmrouter": Pairing(
        "llama-3.1-nemotron-51b-instruct",
        ("llama-3.1-8b-instruct", "gemma-2-9b-it", "qwen2.5-7b-instruct"),
        0.8,
    ),
    "routerdc": Pairing(
        "cognitivecomputations/dolphin-2.9-llama3-8b",
        (
            "mistralai/Mistral-7B-v0.1",
            "HuggingFaceH4/zephyr-7b-beta",
            "cognitivecomputations/dolphin-2.6-mistral-7b",
        ),
        0.5,
    ),
    # The pairs the data README suggests: the strongest closed model against an open one.
    "arenahard": Pairing("gpt-4-1106-preview", ("mistralai/Mixtral-8x7B-Instruct-v0.1",), 1.0),
    "mmlupro": Pairing("gemini-1.5-pro-002", ("Mixtral-8x7B-Instruct-v0.1",), 1.0),
    "zeroeval": Pairing("o1-mini-2024-09-12", ("Meta-Llama-3.1-8B-Instruct",), 1.0),
}
# What the shipped artifact was trained on (the file before the last three collections).
BASE_COLLECTIONS = ("mmlu", "routerbench", "llmrouter", "routerdc")

# Task families cut across collections; leave-family-out evaluation holds one out.
_FAMILY_KEYS: tuple[tuple[str, str], ...] = (
    ("gsm8k", "math"),
    ("mgsm", "math"),
    ("math", "math"),
    ("algebra", "math"),
    ("mbpp", "code"),
    ("humaneval", "code"),
    ("human_eval", "code"),
    ("javascript", "code"),
    ("computer_science", "code"),
    ("ceval", "chinese"),
    ("cmmlu", "chinese"),
    ("arc", "science_qa"),
    ("openbook", "science_qa"),
    ("winogrande", "commonsense"),
    ("commonsense", "commonsense"),
    ("logicgrid", "commonsense"),
    ("commongen", "generation"),
    ("natural_qa", "open_qa"),
    ("trivia_qa", "open_qa"),
)


# Spellings of one task across collections, so a source-grouped split keeps a task's
# copies (e.g. MBPP in three collections) on the same side.
_TASK_ALIASES: tuple[tuple[str, str], ...] = (
    ("human_eval", "humaneval"),
    ("arc-challenge", "arc_challenge"),
    ("mgsm", "gsm8k"),
)


def task_of(source: str) -> str:
    """Task of a ``collection/task`` source, spelled the same in every collection."""
    task = source.split("/", 1)[-1].lower()
    for spelling, canonical in _TASK_ALIASES:
        task = task.replace(spelling, canonical)
    if "gsm8k" in task:
        return "gsm8k"
    return task


SOURCE_FOLDS = 5


def source_folds(records: Sequence[Record], folds: int = SOURCE_FOLDS) -> list[str]:
    """Source-grouped fold of each record, ``fold0`` .. ``fold{folds-1}``.

    Tasks go, largest first, to the fold with the fewest records so far (ties to the
    lowest index): deterministic for a given data file, balanced in size, and every copy
    of a task (MBPP in three collections) lands in one fold.
    """
    sizes: dict[str, int] = {}
    for rec in records:
        sizes[rec.task] = sizes.get(rec.task, 0) + 1
    load = [0] * folds
    fold_of: dict[str, int] = {}
    for task in sorted(sizes, key=lambda t: (-sizes[t], t)):
        best = min(range(folds), key=lambda f: (load[f], f))
        fold_of[task] = best
        load[best] += sizes[task]
    return [f"fold{fold_of[rec.task]}" for rec in records]


def family_of(source: str) -> str:
    """Task family of a ``collection/task`` source name."""
    task = source.split("/", 1)[-1].lower()
    for key, family in _FAMILY_KEYS:
        if key in task:
            return family
    return "knowledge"


@dataclass(slots=True)
class Record:
    """One training prompt with its strong and weak outcome."""

    id: str
    source: str
    messages: list[Any]
    strong: float
    weak: float

    @property
    def collection(self) -> str:
        """Collection (the part of ``source`` before the slash)."""
        return self.source.split("/", 1)[0]

    @property
    def task(self) -> str:
        """Task of the record's source, the same across collections."""
        return task_of(self.source)

    @property
    def family(self) -> str:
        """Task family of the record's source."""
        return family_of(self.source)


def _pair(pairing: Pairing, outcomes: dict[str, Any]) -> tuple[float, float] | None:
    if pairing.strong not in outcomes:
        return None
    weak = [float(outcomes[m]) for m in pairing.weak if m in outcomes]
    if not weak:
        return None
    return float(outcomes[pairing.strong]), sum(weak) / len(weak)


def _infer_pairing(rows: list[dict[str, Any]]) -> Pairing:
    """For an unknown collection: its best model on average against all the others."""
    totals: dict[str, list[float]] = {}
    for row in rows:
        for model, score in (row.get("outcomes") or {}).items():
            totals.setdefault(model, []).append(float(score))
    ranked = sorted(totals, key=lambda m: (-sum(totals[m]) / len(totals[m]), m))
    return Pairing(ranked[0], tuple(ranked[1:]), 1.0)


def load_records(path: Path) -> list[Record]:
    """Records of a ``train.jsonl``-style file, labelled with each collection's pairing."""
    by_collection: dict[str, list[dict[str, Any]]] = {}
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                row = orjson.loads(line)
                source = str(row.get("source") or "unknown/unknown")
                by_collection.setdefault(source.split("/", 1)[0], []).append(row)
    records: list[Record] = []
    for collection, rows in by_collection.items():
        pairing = PAIRINGS.get(collection) or _infer_pairing(rows)
        for row in rows:
            pair = _pair(pairing, row.get("outcomes") or {})
            if pair is not None:
                source = str(row.get("source") or "unknown/unknown")
                records.append(Record(str(row.get("id")), source, row.get("messages") or [], *pair))
    return records


def collection_weight(collection: str) -> float:
    """Training weight share of a collection."""
    pairing = PAIRINGS.get(collection)
    return pairing.weight if pairing is not None else 1.0
