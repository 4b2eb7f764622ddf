"""A minimal CSR matrix and an L-BFGS logistic regression, in numpy only.

Training needs nothing beyond numpy this way, and the fit is deterministic: no random
initialisation, no threads racing over sums.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class CsrRows:
    """Row-compressed sparse matrix: row ``i`` is ``data[indptr[i]:indptr[i+1]]``."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    n_cols: int
    _row_of: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self._row_of = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))

    def dot(self, x: np.ndarray) -> np.ndarray:
        """``X @ x``."""
        products = self.data * x[self.indices]
        return np.bincount(self._row_of, weights=products, minlength=len(self.indptr) - 1)

    def tdot(self, g: np.ndarray) -> np.ndarray:
        """``X.T @ g``."""
        return np.bincount(self.indices, weights=self.data * g[self._row_of], minlength=self.n_cols)


def _lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    max_iter: int,
    log: Callable[[str], None],
    memory: int = 10,
    tol: float = 1e-7,
) -> np.ndarray:
    x = x0.copy()
    fx, g = fun(x)
    steps: list[tuple[np.ndarray, np.ndarray, float]] = []
    for it in range(max_iter):
        q = g.copy()
        alphas: list[float] = []
        for s, y, rho in reversed(steps):
            a = rho * float(s @ q)
            q -= a * y
            alphas.append(a)
        if steps:
            s, y, _ = steps[-1]
            q *= float(s @ y) / float(y @ y)
        else:
            q /= max(1.0, float(np.linalg.norm(g)))
        for (s, y, rho), a in zip(steps, reversed(alphas), strict=True):
            q += s * (a - rho * float(y @ q))
        d = -q
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            steps.clear()
            d, slope = -g, -float(g @ g)
        t = 1.0
        while True:
            x_new = x + t * d
            f_new, g_new = fun(x_new)
            if f_new <= fx + 1e-4 * t * slope or t < 1e-12:
                break
            t *= 0.5
        s, y = x_new - x, g_new - g
        sy = float(s @ y)
        if sy > 1e-12:
            steps.append((s, y, 1.0 / sy))
            del steps[:-memory]
        improvement = fx - f_new
        x, fx, g = x_new, f_new, g_new
        if it % 50 == 0:
            log(f"iter {it} loss {fx:.6f}")
        if 0 <= improvement < tol * max(1.0, abs(fx)):
            break
    log(f"done loss {fx:.6f}")
    return x


def fit_logistic(
    rows: CsrRows,
    y: np.ndarray,
    w: np.ndarray,
    l2: np.ndarray,
    max_iter: int,
    log: Callable[[str], None] = lambda _: None,
    offset: np.ndarray | None = None,
) -> np.ndarray:
    """Weighted logistic regression with soft labels ``y`` and per-column L2 penalty.

    ``offset`` is added to every row's logit (a fixed term, not fitted).
    """
    total = float(w.sum())
    shift = np.zeros(len(y)) if offset is None else offset

    def fun(coef: np.ndarray) -> tuple[float, np.ndarray]:
        z = rows.dot(coef) + shift
        loss = float(w @ (np.logaddexp(0.0, z) - y * z)) / total
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free sigmoid
        grad = rows.tdot(w * (p - y)) / total
        return loss + 0.5 * float(l2 @ (coef * coef)), grad + l2 * coef

    return _lbfgs(fun, np.zeros(rows.n_cols), max_iter, log)
