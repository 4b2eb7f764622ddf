"""Leave-one-group-out scores: each collection (or task family) is scored by a model
trained without it, so the evaluation measures transfer to unseen task types."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gateway.routing.classifier import DifficultyClassifier
from gateway.routing.evaluate import score_records
from gateway.routing.train import Prepared, TrainConfig, fit

HOLDOUT_UNITS = ("collection", "family")


def holdout_scores(
    prepared: Prepared,
    unit: str,
    config: TrainConfig,
    log: Callable[[str], None] = lambda _: None,
) -> np.ndarray:
    """Out-of-group scores for every record, holding out one ``unit`` value at a time."""
    if unit not in HOLDOUT_UNITS:
        raise ValueError(f"unknown holdout unit {unit!r}; choose from {HOLDOUT_UNITS}")
    keys = np.array([r.collection if unit == "collection" else r.family for r in prepared.records])
    scores = np.zeros(len(keys))
    for key in sorted(set(keys.tolist())):
        test = np.nonzero(keys == key)[0]
        train = np.nonzero(keys != key)[0]
        log(f"holding out {unit}={key}: train {len(train)}, test {len(test)}")
        classifier = DifficultyClassifier(fit(prepared, train, config))
        scores[test] = score_records(classifier, [prepared.records[i] for i in test])
    return scores
