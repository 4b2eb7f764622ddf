"""Difficulty score of a request: the estimated chance the open model falls short.

The model is a logistic regression over three groups of signals, added in logit space:

- binned prompt statistics (length, digits, maths/code symbols, CJK share, ...), which
  act like a small additive model and carry most of what transfers across task types;
- word presence, L2-normalised so long prompts are not louder;
- hand-set priors for request structure the training data lacks (tools, JSON schema,
  images, conversation depth, ``max_tokens``); see ``artifact.DEFAULT_PRIORS``.

An adapted artifact (``gateway classify adapt``) adds a deployment's residual: the base
logit rescaled, plus its own bin weights and words (``artifact.Residual``).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

from gateway.difficulty.artifact import DEFAULT_ARTIFACT, Artifact
from gateway.difficulty.features import DENSE_NAMES, dense_values, tokenize
from gateway.difficulty.request import RequestView, view_request

__all__ = ["DifficultyClassifier", "prior_terms"]


# A short message with one of these words is a greeting or a thank-you, not a task.
SMALL_TALK = frozenset(b"hi hello hey hiya thanks thank thx ty bye goodbye cheers".split())
SMALL_TALK_MAX_TOKENS = 8


def prior_terms(
    view: RequestView, priors: Mapping[str, float], distinct: Set[bytes] = frozenset()
) -> list[tuple[str, float]]:
    """Logit offsets for request structure, as ``(signal, contribution)`` pairs."""
    terms: list[tuple[str, float]] = []
    if len(distinct) <= SMALL_TALK_MAX_TOKENS and not SMALL_TALK.isdisjoint(distinct):
        terms.append(("small_talk", priors.get("small_talk", 0.0)))
    if view.n_tools:
        terms.append(("tools", priors.get("tools", 0.0)))
    if view.n_tool_messages:
        terms.append(("tool_results", priors.get("tool_results", 0.0)))
    if view.json_mode == 2:
        terms.append(("json_schema", priors.get("json_schema", 0.0)))
    elif view.json_mode == 1:
        terms.append(("json_object", priors.get("json_object", 0.0)))
    if view.n_assistant:
        turns = min(view.n_assistant, 5)
        terms.append((f"prior_turns={turns}", turns * priors.get("per_prior_turn", 0.0)))
    if view.n_images:
        terms.append(("images", priors.get("images", 0.0)))
    if view.system_chars > 2_000:
        terms.append(("long_system_prompt", priors.get("long_system_prompt", 0.0)))
    if view.max_tokens is not None:
        if view.max_tokens >= 2_048:
            terms.append(("long_output", priors.get("long_output", 0.0)))
        elif 0 < view.max_tokens <= 32:
            terms.append(("short_output", priors.get("short_output", 0.0)))
    return terms


def _encode(items: list[str]) -> list[bytes]:
    return [item.encode() for item in items]


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class DifficultyClassifier:
    """Scores OpenAI request bodies in [0, 1]; higher means the strong model is needed."""

    def __init__(self, artifact: Artifact) -> None:
        names = artifact.meta.get("dense_names")
        if names != list(DENSE_NAMES) or len(artifact.dense_edges) != len(DENSE_NAMES):
            # Fail at startup, not on the first request: the features changed under it.
            raise ValueError("artifact was trained with different prompt statistics; retrain it")
        self.artifact = artifact
        self.version: str = f"{artifact.meta.get('name', 'difficulty')}-{artifact.digest()}"
        # Plain dicts keyed by the tokenizer's bytes: for the few hundred lookups a request
        # needs they beat numpy indexing, whose per-call overhead dominates at this size.
        self._uw: dict[bytes, float] = dict(
            zip(_encode(artifact.vocab), artifact.unigram_w.tolist(), strict=True)
        )
        self._edges: list[list[float]] = [e.tolist() for e in artifact.dense_edges]
        offsets = [0]
        for edges in self._edges:
            offsets.append(offsets[-1] + len(edges) + 1)
        self._offsets = offsets
        self._dw: list[float] = artifact.dense_w.tolist()
        self._bias = artifact.bias
        self._priors = dict(artifact.priors)
        res = artifact.residual
        if res is not None and len(res.dense_w) != len(self._dw):
            raise ValueError("artifact residual does not match its model's statistics")
        self._res_scale = res.scale if res is not None else 1.0
        self._res_bias = res.bias if res is not None else 0.0
        self._res_dw: list[float] | None = res.dense_w.tolist() if res is not None else None
        self._res_w: dict[bytes, float] = (
            dict(zip(_encode(res.vocab), res.word_w.tolist(), strict=True)) if res else {}
        )

    @property
    def score_prior(self) -> list[float]:
        """Histogram of training scores (bins over [0, 1]): the calibration prior."""
        return [float(c) for c in self.artifact.score_prior]

    @classmethod
    def load(cls, path: Path | None = None) -> DifficultyClassifier:
        """Load an artifact file; ``None`` means the one shipped in the package."""
        return cls(Artifact.from_bytes((path or DEFAULT_ARTIFACT).read_bytes()))

    def _logit_parts(
        self, view: RequestView
    ) -> tuple[list[float], list[int], set[bytes], set[bytes], float]:
        tokens = tokenize(view.text)
        distinct = set(tokens)
        values = dense_values(view, tokens, distinct)
        bins = [bisect_right(edges, v) for edges, v in zip(self._edges, values, strict=True)]
        words = self._uw.keys() & distinct
        scale = 1.0 / math.sqrt(len(words)) if words else 0.0
        return values, bins, distinct, words, scale

    def features(self, body: Mapping[str, Any]) -> tuple[float, list[int], set[bytes]]:
        """The base model's logit (without any residual), statistic bins and distinct tokens.

        What ``gateway classify adapt`` fits a residual on.
        """
        view = view_request(body)
        _, bins, distinct, words, scale = self._logit_parts(view)
        return self._base_logit(view, bins, distinct, words, scale), bins, distinct

    def _base_logit(
        self,
        view: RequestView,
        bins: list[int],
        distinct: set[bytes],
        words: set[bytes],
        scale: float,
    ) -> float:
        dw, offsets = self._dw, self._offsets
        total = self._bias + sum(dw[offsets[f] + b] for f, b in enumerate(bins))
        # fsum is exact, so the result does not depend on set order (bytes hashes are
        # salted per process): the same body scores the same in every worker.
        total += math.fsum(map(self._uw.__getitem__, words)) * scale
        for _, value in prior_terms(view, self._priors, distinct):
            total += value
        return total

    def _residual(self, bins: list[int], distinct: set[bytes]) -> float:
        rdw, offsets = self._res_dw, self._offsets
        if rdw is None:
            return 0.0
        total = self._res_bias + sum(rdw[offsets[f] + b] for f, b in enumerate(bins))
        words = self._res_w.keys() & distinct
        if words:
            total += math.fsum(map(self._res_w.__getitem__, words)) / math.sqrt(len(words))
        return total

    def logit(self, body: Mapping[str, Any]) -> float:
        """Score before the sigmoid."""
        view = view_request(body)
        _, bins, distinct, words, scale = self._logit_parts(view)
        total = self._base_logit(view, bins, distinct, words, scale)
        if self._res_dw is None:
            return total
        return self._res_scale * total + self._residual(bins, distinct)

    def score(self, body: Mapping[str, Any]) -> float:
        """Estimated probability in [0, 1] that the open tier falls short on ``body``."""
        return _sigmoid(self.logit(body))

    def explain(self, body: Mapping[str, Any], top: int = 8) -> list[tuple[str, float]]:
        """The ``top`` signals with the largest signed logit contributions."""
        view = view_request(body)
        values, bins, distinct, words, scale = self._logit_parts(view)
        terms: list[tuple[str, float]] = []
        for f, b in enumerate(bins):
            weight = self._dw[self._offsets[f] + b]
            terms.append((f"{DENSE_NAMES[f]}={values[f]:.3g}", weight))
        for word in words:
            terms.append((f"word:{word.decode()}", self._uw[word] * scale))
        terms.extend(prior_terms(view, self._priors, distinct))
        if self._res_dw is not None:
            terms = [(name, value * self._res_scale) for name, value in terms]
            terms.append(("adapted:residual", self._residual(bins, distinct)))
        terms.sort(key=lambda t: (-abs(t[1]), t[0]))
        return terms[: max(0, top)]
