"""Semantic cache index: near-duplicate last user turns within one exact context.

The vector is a hashed bag of words, word pairs and character trigrams (L2-normalised), so
similarity catches rewordings, casing, punctuation and small edits of the same question; it
is not a neural paraphrase detector. The index is in-process and bounded per worker (Redis
here has no vector search module): it maps vectors to exact-cache keys, and the answers
themselves stay in the shared cache. A context is everything except the last user turn —
system prompt, earlier turns, tools, response format, sampling parameters, tenant, model and
policy version — so a hit never crosses system prompts or tools.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import zlib
from collections import OrderedDict
from typing import Any

import numpy as np
import orjson

DIM = 256
MAX_PER_CONTEXT = 256
MAX_CONTEXTS = 256
_WORD = re.compile(r"\w+")
_NOT_IN_CONTEXT = frozenset({"stream", "stream_options", "user", "metadata", "store", "messages"})


def embed(text: str) -> np.ndarray:
    """A unit vector of hashed word, word-pair and character-trigram counts."""
    vec = np.zeros(DIM, dtype=np.float32)
    words = _WORD.findall(text.lower())
    grams = list(words)
    grams += [f"{a} {b}" for a, b in itertools.pairwise(words)]
    joined = " ".join(words)
    grams += ["#" + joined[i : i + 3] for i in range(max(len(joined) - 2, 0))]
    for gram in grams:
        h = zlib.crc32(gram.encode())
        vec[h % DIM] += 1.0 if h & 0x80000000 else -1.0
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm else vec


def split_last_turn(body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """(context, last user text), or None when the request does not end with a user text."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    content = last.get("content")
    if not isinstance(content, str) or not content.strip():
        return None
    context = {k: v for k, v in body.items() if k not in _NOT_IN_CONTEXT}
    context["messages"] = messages[:-1]
    return context, content


def context_id(partition: str, model: str, policy_version: str, context: dict[str, Any]) -> str:
    """The exact-match part of a semantic lookup."""
    raw = orjson.dumps([partition, model, policy_version, context], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()


class _Context:
    __slots__ = ("keys", "next", "vectors")

    def __init__(self) -> None:
        self.vectors = np.zeros((MAX_PER_CONTEXT, DIM), dtype=np.float32)
        self.keys: list[str | None] = [None] * MAX_PER_CONTEXT
        self.next = 0


class SemanticIndex:
    """Bounded: MAX_CONTEXTS contexts (least recently used dropped), each a ring of entries."""

    def __init__(self) -> None:
        self._contexts: OrderedDict[str, _Context] = OrderedDict()

    def search(
        self, context: str, vector: np.ndarray, threshold: float
    ) -> tuple[str, float] | None:
        """The exact-cache key of the most similar entry at or above `threshold`."""
        found = self._contexts.get(context)
        if found is None:
            return None
        self._contexts.move_to_end(context)
        similarities = found.vectors @ vector
        best = int(np.argmax(similarities))
        key = found.keys[best]
        score = float(similarities[best])
        return (key, score) if key is not None and score >= threshold else None

    def add(self, context: str, vector: np.ndarray, key: str) -> None:
        """Remember that `key` answers a turn embedded as `vector`."""
        found = self._contexts.get(context)
        if found is None:
            found = self._contexts[context] = _Context()
            if len(self._contexts) > MAX_CONTEXTS:
                self._contexts.popitem(last=False)
        self._contexts.move_to_end(context)
        slot = found.next % MAX_PER_CONTEXT
        found.vectors[slot] = vector
        found.keys[slot] = key
        found.next += 1

    def purge(self) -> None:
        """Forget everything (after an admin purge)."""
        self._contexts.clear()
