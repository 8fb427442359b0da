"""Linear reward / Q models for the direct method, doubly robust estimators and FQE.

q̂_s(x, a) = φ(x, a)ᵀ θ_s, ridge-fitted for all S signals in one solve. The
feature maps are chosen so that the *expected* features under the evaluation
policy have a closed form, which gives E_{a~π}[q̂(x, a)] = E_π[φ(x, a)]ᵀ θ
without sampling:

* categorical actions (discrete and multi-discrete): one-hot of each component
  ⊗ [1, x]; under a product-of-categoricals policy E_π[φ] = π_k(·|x) ⊗ [1, x];
* continuous actions: [1, x, a, a², x ⊗ a]; under a diagonal Gaussian
  N(μ, σ²): E[a] = μ, E[a²] = μ² + σ², E[x ⊗ a] = x ⊗ μ (σ = 0 for a
  deterministic policy).

Shapes: N rows, D observation size, C categorical components, A action size,
F features, S signals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from training.ope.core import FloatArray
from training.ope.errors import OPEInputError


def _with_bias(x: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise OPEInputError("observations", f"expected shape (N, D), got {arr.shape}")
    return np.concatenate([np.ones((arr.shape[0], 1)), arr], axis=1)


def categorical_features(x: npt.ArrayLike, actions: npt.ArrayLike, nvec: Sequence[int]) -> FloatArray:
    """x (N, D), actions (N,) or (N, C) integers, nvec (C,) → φ (N, Σ_k n_k · (D+1))."""
    xb = _with_bias(x)
    a = np.asarray(actions)
    if a.ndim == 1:
        a = a[:, None]
    if a.shape != (xb.shape[0], len(nvec)):
        raise OPEInputError("actions", f"expected shape ({xb.shape[0]}, {len(nvec)}), got {a.shape}")
    ai = np.rint(a).astype(np.int64)
    blocks = []
    for k, n in enumerate(nvec):
        if ai[:, k].min() < 0 or ai[:, k].max() >= n:
            raise OPEInputError(
                "actions", f"component {k} must be an integer in [0, {n}), got {ai[:, k].min()}..{ai[:, k].max()}"
            )
        onehot = np.zeros((xb.shape[0], n))
        onehot[np.arange(xb.shape[0]), ai[:, k]] = 1.0
        blocks.append((onehot[:, :, None] * xb[:, None, :]).reshape(xb.shape[0], -1))
    return np.concatenate(blocks, axis=1)


def categorical_expected_features(x: npt.ArrayLike, probs: Sequence[npt.ArrayLike]) -> FloatArray:
    """E_{a~π}[φ(x, a)]: x (N, D), probs one (N, n_k) array per component → (N, Σ_k n_k · (D+1))."""
    xb = _with_bias(x)
    blocks = []
    for p in probs:
        pk = np.asarray(p, dtype=np.float64)
        if pk.ndim != 2 or pk.shape[0] != xb.shape[0]:
            raise OPEInputError("probs", f"expected shape ({xb.shape[0]}, n_actions), got {pk.shape}")
        blocks.append((pk[:, :, None] * xb[:, None, :]).reshape(xb.shape[0], -1))
    return np.concatenate(blocks, axis=1)


def gaussian_features(x: npt.ArrayLike, actions: npt.ArrayLike, interactions: bool = True) -> FloatArray:
    """x (N, D), actions (N, A) → [1, x, a, a², x⊗a], shape (N, 1 + D + 2A + D·A).

    interactions=False drops x⊗a (F = 1 + D + 2A): for wide observations
    (rank's 72-wide stage logs) the D·A block would dominate the cost.
    """
    xb = _with_bias(x)
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != xb.shape[0]:
        raise OPEInputError("actions", f"expected shape ({xb.shape[0]}, A), got {a.shape}")
    blocks = [xb, a, a * a]
    if interactions:
        blocks.append((xb[:, 1:, None] * a[:, None, :]).reshape(xb.shape[0], -1))
    return np.concatenate(blocks, axis=1)


def gaussian_expected_features(
    x: npt.ArrayLike, mean: npt.ArrayLike, std: npt.ArrayLike | float = 0.0, interactions: bool = True
) -> FloatArray:
    """E_{a~N(mean, std²)}[gaussian_features(x, a)]; mean (N, A), std (N, A), (A,) or scalar."""
    xb = _with_bias(x)
    m = np.asarray(mean, dtype=np.float64)
    s = np.broadcast_to(np.asarray(std, dtype=np.float64), m.shape)
    blocks = [xb, m, m * m + s * s]
    if interactions:
        blocks.append((xb[:, 1:, None] * m[:, None, :]).reshape(xb.shape[0], -1))
    return np.concatenate(blocks, axis=1)


@dataclass(frozen=True)
class LinearModel:
    """θ of a ridge regression, shape (F, S); predict(φ (N, F)) → (N, S)."""

    theta: FloatArray

    def predict(self, phi: npt.ArrayLike) -> FloatArray:
        p = np.asarray(phi, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != self.theta.shape[0]:
            raise OPEInputError("features", f"expected shape (N, {self.theta.shape[0]}), got {p.shape}")
        return p @ self.theta


def fit_ridge(
    phi: npt.ArrayLike, targets: npt.ArrayLike, l2: float = 1e-3, weights: npt.ArrayLike | None = None
) -> LinearModel:
    """Ridge regression of targets (N, S) on φ (N, F): θ = (ΦᵀWΦ + l2·N·I)⁻¹ ΦᵀWy.

    The penalty scales with N so `l2` means the same thing for any data size.
    """
    p = np.asarray(phi, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if p.ndim != 2 or y.shape[0] != p.shape[0]:
        raise OPEInputError("targets", f"expected {p.shape[0]} rows matching the features, got {y.shape}")
    if l2 < 0:
        raise OPEInputError("l2", f"expected a penalty >= 0, got {l2}")
    w = np.ones(p.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    gram = (p * w[:, None]).T @ p + l2 * p.shape[0] * np.eye(p.shape[1])
    rhs = (p * w[:, None]).T @ y
    return LinearModel(solve_psd(gram, rhs))


def solve_psd(gram: FloatArray, rhs: FloatArray) -> FloatArray:
    """Solve gram · θ = rhs for a symmetric positive (semi-)definite gram (F, F), rhs (F, K).

    Cholesky first; least squares only when gram is singular (a one-hot block
    never visited with l2 = 0). Not pinv/lstsq by default: their SVD was ~100×
    slower than Cholesky for F ≈ 170 on the project's machines.
    """
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    try:
        return np.asarray(cho_solve(cho_factor(gram), rhs), dtype=np.float64)
    except LinAlgError:
        return np.asarray(np.linalg.lstsq(gram, rhs, rcond=None)[0], dtype=np.float64)
