"""Importance weights: probability ratios, log-density ratios, Gaussian kernels for continuous actions.

Shapes: N logged decisions, A action dimensions (continuous).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from training.ope.core import BoolArray, FloatArray, WeightDiagnostics, as_vector, weight_diagnostics
from training.ope.errors import OPEInputError


@dataclass(frozen=True)
class ImportanceWeights:
    """Weights of the usable rows and which rows they came from.

    weights: shape (N_used,), already clipped if a clip was asked for.
    used: shape (N,), True where the behaviour propensity was present and > 0.
    clipped: shape (N_used,), True where the raw weight exceeded the clip.
    """

    weights: FloatArray
    used: BoolArray
    clipped: BoolArray
    diagnostics: WeightDiagnostics


def importance_weights(
    target: npt.ArrayLike,
    behaviour: npt.ArrayLike,
    *,
    clip: float | None = None,
    log_space: bool = False,
) -> ImportanceWeights:
    """w_i = π_e(a_i|x_i) / π_b(a_i|x_i) for the logged actions.

    target: shape (N,), the evaluation policy's probability (or log-density if
        `log_space`) of each logged action.
    behaviour: shape (N,), the logged propensity (or log-density). NaN means
        the row was logged without one; such rows and rows with propensity 0
        are excluded from the weighted estimate and counted in the diagnostics
        — never silently dropped.
    clip: cap on each weight (None = no cap); clipping trades variance for
        bias towards the behaviour policy.
    """
    t = as_vector(target, "target")
    b = as_vector(behaviour, "behaviour", n=t.shape[0])
    if clip is not None and not clip > 0:
        raise OPEInputError("clip", f"expected a positive weight cap or None, got {clip}")
    missing = np.isnan(b)
    if log_space:
        zero = np.isneginf(b)
        if np.any(np.isnan(t)) or np.any(np.isposinf(t)):
            raise OPEInputError("target", "log-densities must be finite or -inf")
    else:
        zero = ~missing & (b <= 0)
        if np.any(~missing & (b > 1 + 1e-9)):
            raise OPEInputError("behaviour", f"propensities must lie in (0, 1]; max is {np.nanmax(b):.4g}")
        if not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(t > 1 + 1e-9):
            raise OPEInputError("target", "evaluation-policy probabilities must be finite and in [0, 1]")
    used = ~missing & ~zero
    raw = np.exp(np.clip(t[used] - b[used], -700.0, 700.0)) if log_space else t[used] / b[used]
    clipped = raw > clip if clip is not None else np.zeros(raw.shape, dtype=bool)
    w = np.minimum(raw, clip) if clip is not None else raw
    diag = weight_diagnostics(w, int(missing.sum()), int(zero.sum()), clipped)
    return ImportanceWeights(w, used, clipped, diag)


def gaussian_log_density(actions: npt.ArrayLike, mean: npt.ArrayLike, log_std: npt.ArrayLike) -> FloatArray:
    """Diagonal-Gaussian log-density of each action: actions, mean, log_std shape (N, A) → (N,).

    `log_std` may also be shape (A,) or a scalar (a fixed kernel bandwidth).
    """
    a = np.asarray(actions, dtype=np.float64)
    m = np.asarray(mean, dtype=np.float64)
    if a.ndim != 2 or a.shape != m.shape:
        raise OPEInputError(
            "actions", f"expected actions and means of the same shape (N, A), got {a.shape} and {m.shape}"
        )
    ls = np.broadcast_to(np.asarray(log_std, dtype=np.float64), a.shape)
    z = (a - m) / np.exp(ls)
    return -0.5 * np.sum(z * z, axis=1) - np.sum(ls, axis=1) - 0.5 * a.shape[1] * np.log(2 * np.pi)  # type: ignore[no-any-return]


def softmax(logits: npt.ArrayLike, axis: int = -1) -> FloatArray:
    """Numerically stable softmax along `axis`."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)  # type: ignore[no-any-return]
