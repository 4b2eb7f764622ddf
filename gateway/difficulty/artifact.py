"""The trained model as plain numpy arrays in one ``.npz`` file (no pickle)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

DEFAULT_ARTIFACT = Path(__file__).parent / "artifacts" / "difficulty-v2.npz"
HISTOGRAM_BINS = 200

# Hand-set logit offsets for request structure the training data never shows (all of it
# is single-turn, tool-less, free text). They encode the prior that agentic, structured
# and multi-turn requests are where small open models fall behind most; kept small so
# they nudge rather than decide, and stored in the artifact so changing them bumps its id.
DEFAULT_PRIORS: dict[str, float] = {
    "tools": 0.35,
    "tool_results": 0.15,
    "json_schema": 0.25,
    "json_object": 0.1,
    "per_prior_turn": 0.08,
    "images": 0.3,
    "long_system_prompt": 0.1,
    "long_output": 0.15,
    "short_output": -0.2,
    "small_talk": -0.6,  # a greeting or thank-you of a few words
}


@dataclass(slots=True)
class Residual:
    """A deployment's correction on top of the trained model (``gateway classify adapt``).

    logit = scale * base logit + bias + dense_w[bin of each statistic] + word weights of the
    prompt's words in ``vocab`` (L2-normalised like the base's).
    """

    scale: float
    bias: float
    dense_w: np.ndarray  # same layout as ``Artifact.dense_w``
    vocab: list[str]
    word_w: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)  # labels used, validation result


@dataclass(slots=True)
class Artifact:
    """Weights of the difficulty model; see ``classifier.DifficultyClassifier``."""

    vocab: list[str]
    unigram_w: np.ndarray
    dense_edges: list[np.ndarray]
    dense_w: np.ndarray
    bias: float
    score_prior: np.ndarray  # histogram of training scores, HISTOGRAM_BINS bins over [0, 1]
    priors: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PRIORS))
    meta: dict[str, Any] = field(default_factory=dict)
    residual: Residual | None = None

    def _meta(self) -> dict[str, Any]:
        meta = dict(self.meta, priors=self.priors, bias=self.bias)
        res = self.residual
        if res is not None:
            meta["residual"] = {"scale": res.scale, "bias": res.bias, "meta": res.meta}
        return meta

    def to_bytes(self) -> bytes:
        """Serialise to ``.npz`` bytes."""
        lengths = np.array([len(e) for e in self.dense_edges], dtype=np.int64)
        edges = np.concatenate(self.dense_edges) if self.dense_edges else np.zeros(0)
        arrays: dict[str, Any] = {
            "vocab": np.array(self.vocab, dtype=np.str_),
            "unigram_w": self.unigram_w.astype(np.float32),
            "dense_edges": edges.astype(np.float64),
            "dense_lengths": lengths,
            "dense_w": self.dense_w.astype(np.float32),
            "score_prior": self.score_prior.astype(np.float64),
            "meta": np.frombuffer(
                orjson.dumps(self._meta(), option=orjson.OPT_SORT_KEYS), dtype=np.uint8
            ),
        }
        res = self.residual
        if res is not None:
            arrays["res_vocab"] = np.array(res.vocab, dtype=np.str_)
            arrays["res_word_w"] = res.word_w.astype(np.float32)
            arrays["res_dense_w"] = res.dense_w.astype(np.float32)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    def save(self, path: Path) -> str:
        """Write the artifact; returns its content id."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.to_bytes())
        return self.digest()

    def digest(self) -> str:
        """Short stable id of the model's content (zip timestamps do not count)."""
        h = hashlib.sha256()
        h.update("\x00".join(self.vocab).encode("utf-8", "surrogatepass"))
        # Hash the stored dtypes so a loaded artifact has the id its writer reported.
        for arr in (self.unigram_w, self.dense_w):
            h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
        for edges in self.dense_edges:
            h.update(np.ascontiguousarray(edges, dtype=np.float64).tobytes())
        if self.residual is not None:
            h.update(b"\x00residual\x00" + "\x00".join(self.residual.vocab).encode())
            for arr in (self.residual.word_w, self.residual.dense_w):
                h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
        h.update(orjson.dumps(self._meta(), option=orjson.OPT_SORT_KEYS))
        return h.hexdigest()[:12]

    @classmethod
    def from_bytes(cls, data: bytes) -> Artifact:
        """Parse ``.npz`` bytes written by ``to_bytes``."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta: dict[str, Any] = orjson.loads(z["meta"].tobytes())
            lengths = z["dense_lengths"].tolist()
            flat = z["dense_edges"]
            bounds = np.cumsum([0, *lengths])
            edges = [flat[bounds[i] : bounds[i + 1]] for i in range(len(lengths))]
            residual = None
            res_meta = meta.pop("residual", None)
            if res_meta is not None:
                residual = Residual(
                    scale=float(res_meta["scale"]),
                    bias=float(res_meta["bias"]),
                    dense_w=z["res_dense_w"].astype(np.float64),
                    vocab=z["res_vocab"].tolist(),
                    word_w=z["res_word_w"].astype(np.float64),
                    meta=dict(res_meta.get("meta") or {}),
                )
            return cls(
                vocab=z["vocab"].tolist(),
                unigram_w=z["unigram_w"].astype(np.float64),
                dense_edges=edges,
                dense_w=z["dense_w"].astype(np.float64),
                bias=float(meta.pop("bias")),
                score_prior=z["score_prior"],
                priors={str(k): float(v) for k, v in meta.pop("priors").items()},
                meta=meta,
                residual=residual,
            )
