"""Held-out scores: each record is scored by a model trained without its group, so the
evaluation measures transfer to task types the model never saw.

- ``collection``: leave one collection out (a new mix of tasks with a new model pairing);
- ``family``: leave one task family (math, code, ...) out of every collection at once;
- ``source``: ``SOURCE_FOLDS`` folds of sources, a task's copies in several collections
  kept in one fold (source-grouped K-fold, ``labels.SOURCE_FOLDS``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from gateway.difficulty.classifier import DifficultyClassifier
from gateway_tools.evaluate import score_records
from gateway_tools.labels import Record, source_folds
from gateway_tools.train import Prepared, TrainConfig, fit

HOLDOUT_UNITS = ("collection", "family", "source")


def holdout_keys(records: Sequence[Record], unit: str) -> list[str]:
    """The held-out group of each record under ``unit``."""
    if unit == "collection":
        return [r.collection for r in records]
    if unit == "family":
        return [r.family for r in records]
    if unit == "source":
        return source_folds(records)
    raise ValueError(f"unknown holdout unit {unit!r}; choose from {HOLDOUT_UNITS}")


def holdout_scores(
    prepared: Prepared,
    unit: str,
    config: TrainConfig,
    log: Callable[[str], None] = lambda _: None,
) -> np.ndarray:
    """Out-of-group scores for every record, holding out one ``unit`` value at a time."""
    keys = np.array(holdout_keys(prepared.records, unit))
    scores = np.zeros(len(keys))
    for key in sorted(set(keys.tolist())):
        test = np.nonzero(keys == key)[0]
        train = np.nonzero(keys != key)[0]
        if config.collections:
            train = np.array([i for i in train if prepared.collections[i] in config.collections])
        if not len(train):
            raise ValueError(f"nothing left to train on when holding out {unit}={key}")
        log(f"holding out {unit}={key}: train {len(train)}, test {len(test)}")
        classifier = DifficultyClassifier(fit(prepared, train, config))
        scores[test] = score_records(classifier, [prepared.records[i] for i in test])
    return scores
