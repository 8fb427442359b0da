"""Sequential estimators over episodes: PDIS, weighted PDIS, sequential doubly robust.

Episodes are padded to a common length T. Shapes: N episodes, T steps,
S signals. Each signal has its own discount γ_s (ProblemSpec.signals), so
every value is Σ_t γ_s^t E[r_{t,s}] under the evaluation policy.

Padding convention (Thomas 2015): after an episode ends it sits in an
absorbing state with reward 0 and per-step ratio 1, so its cumulative weight
ρ stays what it was at the end — that is what the weighted estimator needs to
normalise every time step over all episodes.

References: Precup, Sutton & Singh 2000 (PDIS, WPDIS); Jiang & Li 2016 and
Thomas & Brunskill 2016 (sequential DR).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from training.ope.core import (
    BoolArray,
    Estimate,
    FloatArray,
    Terms,
    WeightDiagnostics,
    signal_names,
    weight_diagnostics,
)
from training.ope.errors import OPEInputError
from training.ope.one_step import CIOptions, _estimate


@dataclass(frozen=True)
class EpisodeWeights:
    """Cumulative importance weights of the usable episodes.

    rho: shape (N_used, T), ρ_{0:t} = Π_{k≤t} π_e(a_k|s_k) / π_b(a_k|s_k).
    rho_prev: shape (N_used, T), ρ_{0:t−1} (1 at t = 0).
    used: shape (N,), False for episodes with any missing or zero propensity.
    """

    rho: FloatArray
    rho_prev: FloatArray
    used: BoolArray
    n_missing_steps: int
    n_zero_steps: int


def pad_episodes(episode_ids: npt.ArrayLike, *arrays: npt.ArrayLike) -> tuple[BoolArray, list[FloatArray]]:
    """Group flat transitions (sorted by episode, then time) into padded episodes.

    episode_ids: shape (M,); each array shape (M, ...) → (N, T, ...), padded with 0.
    Returns (mask (N, T), padded arrays).
    """
    ids = np.asarray(episode_ids)
    if ids.ndim != 1 or ids.size == 0:
        raise OPEInputError("episode_ids", f"expected a non-empty 1-D array, got shape {ids.shape}")
    starts = np.r_[True, ids[1:] != ids[:-1]]
    if len(np.unique(ids)) != int(starts.sum()):
        raise OPEInputError("episode_ids", "transitions must be sorted so each episode's steps are contiguous")
    ep = np.cumsum(starts) - 1
    step = np.arange(ids.size) - np.flatnonzero(starts)[ep]
    n, t = int(ep[-1]) + 1, int(step.max()) + 1
    mask = np.zeros((n, t), dtype=bool)
    mask[ep, step] = True
    out = []
    for a in arrays:
        arr = np.asarray(a, dtype=np.float64)
        if arr.shape[0] != ids.size:
            raise OPEInputError("arrays", f"expected {ids.size} rows like episode_ids, got {arr.shape[0]}")
        padded = np.zeros((n, t, *arr.shape[1:]))
        padded[ep, step] = arr
        out.append(padded)
    return mask, out


def _check(
    rewards: npt.ArrayLike, mask: npt.ArrayLike, discounts: npt.ArrayLike
) -> tuple[FloatArray, BoolArray, FloatArray]:
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim == 2:
        r = r[..., None]
    if r.ndim != 3:
        raise OPEInputError("rewards", f"expected shape (N_episodes, T, n_signals), got {r.shape}")
    m = np.asarray(mask, dtype=bool)
    if m.shape != r.shape[:2]:
        raise OPEInputError("mask", f"expected shape {r.shape[:2]}, got {m.shape}")
    if np.any(m[:, 1:] & ~m[:, :-1]):
        raise OPEInputError("mask", "each episode's valid steps must come first (no gaps)")
    g = np.atleast_1d(np.asarray(discounts, dtype=np.float64))
    if g.shape != (r.shape[2],) or np.any(g < 0) or np.any(g > 1):
        raise OPEInputError("discounts", f"expected one γ in [0, 1] per signal, shape ({r.shape[2]},), got {g}")
    if not np.all(np.isfinite(r[m])):
        raise OPEInputError("rewards", "rewards must be finite")
    return np.where(m[..., None], r, 0.0), m, g


def cumulative_weights(
    target_prob: npt.ArrayLike,
    behaviour_prob: npt.ArrayLike,
    mask: BoolArray,
    *,
    log_space: bool = False,
    clip: float | None = None,
) -> EpisodeWeights:
    """ρ_{0:t} per episode from per-step probabilities of the logged actions, each (N, T).

    Episodes with a missing (NaN) or zero behaviour propensity at any valid
    step are excluded and counted. `clip` caps ρ_{0:t} (not the per-step ratio).
    """
    t = np.asarray(target_prob, dtype=np.float64)
    b = np.asarray(behaviour_prob, dtype=np.float64)
    if t.shape != mask.shape or b.shape != mask.shape:
        raise OPEInputError("target_prob", f"expected shape {mask.shape} like the mask, got {t.shape} and {b.shape}")
    missing = mask & np.isnan(b)
    zero = mask & ~missing & (np.isneginf(b) if log_space else b <= 0)
    used: BoolArray = np.asarray(~(missing | zero).any(axis=1), dtype=bool)
    if log_space:
        step = np.where(mask, np.exp(np.clip(np.nan_to_num(t - b), -700, 700)), 1.0)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(mask, t / b, 1.0)
    step = step[used]
    rho: FloatArray = np.cumprod(step, axis=1, dtype=np.float64)
    if clip is not None:
        rho = np.minimum(rho, clip)
    rho_prev = np.concatenate([np.ones((rho.shape[0], 1)), rho[:, :-1]], axis=1)
    return EpisodeWeights(rho, rho_prev, used, int(missing.sum()), int(zero.sum()))


def _diag(w: EpisodeWeights, clip: float | None) -> WeightDiagnostics:
    final = w.rho[:, -1]
    clipped = final >= clip if clip is not None else None
    return weight_diagnostics(final, w.n_missing_steps, w.n_zero_steps, clipped)


def pdis(
    rewards: npt.ArrayLike,
    mask: npt.ArrayLike,
    target_prob: npt.ArrayLike,
    behaviour_prob: npt.ArrayLike,
    discounts: npt.ArrayLike,
    *,
    signals: Sequence[str] | None = None,
    clip: float | None = None,
    log_space: bool = False,
    ci: CIOptions = CIOptions(),
) -> Estimate:
    """Per-decision IS: V̂ = mean_i Σ_t γ^t ρ_{i,0:t} r_{i,t}.

    rewards (N, T, S), mask (N, T), target_prob / behaviour_prob (N, T) of
    the logged actions, discounts (S,). Diagnostics are on the final ρ of each
    episode; "missing"/"zero" counts are *steps* (their episodes are excluded).
    """
    r, m, g = _check(rewards, mask, discounts)
    w = cumulative_weights(target_prob, behaviour_prob, m, log_space=log_space, clip=clip)
    disc = g[None, :] ** np.arange(r.shape[1])[:, None]  # (T, S)
    per_episode = (w.rho[..., None] * r[w.used] * disc[None]).sum(axis=1)
    return _estimate("pdis", Terms.mean(per_episode), signal_names(signals, r.shape[2]), ci, diagnostics=_diag(w, clip))


def wpdis(
    rewards: npt.ArrayLike,
    mask: npt.ArrayLike,
    target_prob: npt.ArrayLike,
    behaviour_prob: npt.ArrayLike,
    discounts: npt.ArrayLike,
    *,
    signals: Sequence[str] | None = None,
    clip: float | None = None,
    log_space: bool = False,
    ci: CIOptions = CIOptions(),
) -> Estimate:
    """Weighted per-decision IS: V̂ = Σ_t γ^t Σ_i ρ_{i,0:t} r_{i,t} / Σ_i ρ_{i,0:t} (shapes as `pdis`)."""
    r, m, g = _check(rewards, mask, discounts)
    w = cumulative_weights(target_prob, behaviour_prob, m, log_space=log_space, clip=clip)
    disc = g[None, :] ** np.arange(r.shape[1])[:, None]
    terms = Terms(w.rho[..., None] * r[w.used] * disc[None], w.rho)
    return _estimate("wpdis", terms, signal_names(signals, r.shape[2]), ci, diagnostics=_diag(w, clip))


def sequential_doubly_robust(
    rewards: npt.ArrayLike,
    mask: npt.ArrayLike,
    target_prob: npt.ArrayLike,
    behaviour_prob: npt.ArrayLike,
    discounts: npt.ArrayLike,
    q_logged: npt.ArrayLike,
    v_target: npt.ArrayLike,
    *,
    signals: Sequence[str] | None = None,
    clip: float | None = None,
    log_space: bool = False,
    ci: CIOptions = CIOptions(),
) -> Estimate:
    """Sequential DR (Jiang & Li 2016, Thomas & Brunskill 2016):

        V̂ = mean_i Σ_t γ^t [ ρ_{0:t} (r_t − q̂(s_t, a_t)) + ρ_{0:t−1} v̂(s_t) ]

    q_logged (N, T, S): q̂ at the logged state-action; v_target (N, T, S):
    E_{a~π_e} q̂(s_t, a). Other shapes as `pdis`. Unbiased if the weights are
    right; low variance when q̂ is good (e.g. from FQE).
    """
    r, m, g = _check(rewards, mask, discounts)
    q = np.where(m[..., None], np.asarray(q_logged, dtype=np.float64).reshape(r.shape), 0.0)
    v = np.where(m[..., None], np.asarray(v_target, dtype=np.float64).reshape(r.shape), 0.0)
    w = cumulative_weights(target_prob, behaviour_prob, m, log_space=log_space, clip=clip)
    disc = g[None, :] ** np.arange(r.shape[1])[:, None]
    u = w.used
    per_step = w.rho[..., None] * (r[u] - q[u]) + w.rho_prev[..., None] * v[u]
    per_episode = (per_step * disc[None]).sum(axis=1)
    return _estimate(
        "sequential_dr", Terms.mean(per_episode), signal_names(signals, r.shape[2]), ci, diagnostics=_diag(w, clip)
    )
