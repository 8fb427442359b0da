"""Fitted Q evaluation (Le, Voloshin & Yue 2019) with linear Q-functions, one per signal.

Iterates Q_{k+1} = argmin_Q Σ (Q(s, a) − r − γ_s (1 − done) E_{a'~π_e} Q_k(s', a'))²
over logged transitions. With Q = φ(s, a)ᵀθ (features from reward_models.py,
chosen so E_{a'~π_e} φ(s', a') has a closed form) each iteration is a linear
solve with the same Gram matrix, so the whole loop runs in F × F space after
one pass over the data:

    θ_{k+1} = G⁻¹ (Φᵀ W r + γ ⊙ (Φᵀ W diag(1 − done) Φ'_π) θ_k),   G = ΦᵀWΦ + l2·N·I

Departure from the paper: the regressor is ridge on fixed features rather
than a neural network, and the confidence interval is a bootstrap over
episodes that refits θ on every resample (the paper gives no closed form).

Shapes: M transitions, F features, S signals, N_0 initial states.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from training.ope.core import Estimate, FloatArray, Terms, signal_names
from training.ope.errors import OPEInputError
from training.ope.reward_models import LinearModel, solve_psd


@dataclass(frozen=True)
class FQEConfig:
    """Hyperparameters of linear fitted Q evaluation."""

    l2: float = 1e-4
    """Ridge penalty per transition (scaled by the number of transitions)."""
    max_iterations: int = 500
    """Upper bound on Bellman iterations (γ = 0.95 needs ~ 200 to converge to 1e-4)."""
    tolerance: float = 1e-7
    """Stop when max |θ_{k+1} − θ_k| falls below this."""
    n_bootstrap: int = 50
    """Episode-bootstrap refits for the confidence interval (>= 20)."""
    confidence: float = 0.95
    """Two-sided coverage level of the interval."""
    seed: int = 0
    """Seed of the bootstrap resampling."""

    def __post_init__(self) -> None:
        if self.l2 < 0:
            raise OPEInputError("FQEConfig.l2", f"expected >= 0, got {self.l2}")
        if self.max_iterations < 1:
            raise OPEInputError("FQEConfig.max_iterations", f"expected >= 1, got {self.max_iterations}")
        if self.n_bootstrap < 20:
            raise OPEInputError("FQEConfig.n_bootstrap", f"expected >= 20 refits, got {self.n_bootstrap}")
        if not 0 < self.confidence < 1:
            raise OPEInputError("FQEConfig.confidence", f"expected a level in (0, 1), got {self.confidence}")


def _solve(
    phi: FloatArray,
    rewards: FloatArray,
    next_phi_pi: FloatArray,
    continue_: FloatArray,
    discounts: FloatArray,
    weights: FloatArray,
    cfg: FQEConfig,
) -> FloatArray:
    pw = phi * weights[:, None]
    gram = pw.T @ phi + cfg.l2 * max(float(weights.sum()), 1.0) * np.eye(phi.shape[1])
    b = pw.T @ rewards  # (F, S)
    c = pw.T @ (next_phi_pi * continue_[:, None])  # (F, F)
    a, base = np.split(solve_psd(gram, np.concatenate([c, b], axis=1)), [c.shape[1]], axis=1)
    theta = base.copy()
    for _ in range(cfg.max_iterations):
        new = base + (a @ theta) * discounts[None, :]
        if np.max(np.abs(new - theta)) < cfg.tolerance:
            theta = new
            break
        theta = new
    return theta


def fit_fqe(
    phi: npt.ArrayLike,
    rewards: npt.ArrayLike,
    next_phi_pi: npt.ArrayLike,
    done: npt.ArrayLike,
    discounts: npt.ArrayLike,
    cfg: FQEConfig = FQEConfig(),
    weights: npt.ArrayLike | None = None,
) -> LinearModel:
    """θ of Q^π for every signal.

    phi (M, F): φ(s, a) of the logged transitions; rewards (M, S);
    next_phi_pi (M, F): E_{a'~π_e} φ(s', a'); done (M,): 1 where s' is terminal;
    discounts (S,): γ per signal; weights (M,) optional (bootstrap counts).
    """
    p = np.asarray(phi, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    nxt = np.asarray(next_phi_pi, dtype=np.float64)
    d = np.asarray(done, dtype=np.float64)
    g = np.atleast_1d(np.asarray(discounts, dtype=np.float64))
    m = p.shape[0]
    if p.ndim != 2 or nxt.shape != p.shape:
        raise OPEInputError("next_phi_pi", f"expected the shape of phi {p.shape}, got {nxt.shape}")
    if r.shape[0] != m or d.shape != (m,):
        raise OPEInputError("rewards", f"expected {m} rows in rewards and done, got {r.shape} and {d.shape}")
    if g.shape != (r.shape[1],) or np.any(g < 0) or np.any(g >= 1):
        raise OPEInputError("discounts", f"expected one γ in [0, 1) per signal ({r.shape[1]}), got {g}")
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    return LinearModel(_solve(p, r, nxt, 1.0 - d, g, w, cfg))


def fqe(
    phi: npt.ArrayLike,
    rewards: npt.ArrayLike,
    next_phi_pi: npt.ArrayLike,
    done: npt.ArrayLike,
    discounts: npt.ArrayLike,
    initial_phi_pi: npt.ArrayLike,
    episode_ids: npt.ArrayLike,
    initial_episode_ids: npt.ArrayLike,
    *,
    signals: Sequence[str] | None = None,
    cfg: FQEConfig = FQEConfig(),
) -> tuple[Estimate, LinearModel]:
    """FQE value V̂ = mean over initial states of E_{a~π_e} Q̂(s_0, a), with an episode-bootstrap CI.

    Arguments as `fit_fqe`, plus initial_phi_pi (N_0, F): E_{a~π_e} φ(s_0, a)
    for each episode's first state; episode_ids (M,) and
    initial_episode_ids (N_0,) tie transitions and initial states to episodes
    for the bootstrap. Returns the estimate and the fitted model (for
    sequential DR).
    """
    p = np.asarray(phi, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    init = np.asarray(initial_phi_pi, dtype=np.float64)
    if init.ndim != 2 or init.shape[1] != p.shape[1]:
        raise OPEInputError("initial_phi_pi", f"expected shape (N_0, {p.shape[1]}), got {init.shape}")
    model = fit_fqe(p, r, next_phi_pi, done, discounts, cfg)
    v0 = model.predict(init)  # (N_0, S)
    value = v0.mean(axis=0)

    _, ep = np.unique(np.asarray(episode_ids), return_inverse=True)
    uniq0, ep0 = np.unique(np.asarray(initial_episode_ids), return_inverse=True)
    n_ep = int(ep.max()) + 1
    if len(uniq0) != init.shape[0]:
        raise OPEInputError("initial_episode_ids", "expected one initial state per episode")
    rng = np.random.default_rng(cfg.seed)
    draws = []
    nxt = np.asarray(next_phi_pi, dtype=np.float64)
    d = np.asarray(done, dtype=np.float64)
    g = np.atleast_1d(np.asarray(discounts, dtype=np.float64))
    for _ in range(cfg.n_bootstrap):
        counts = rng.multinomial(n_ep, np.full(n_ep, 1.0 / n_ep)).astype(np.float64)
        theta = _solve(p, r, nxt, 1.0 - d, g, counts[ep], cfg)
        w0 = counts[ep0]
        draws.append((w0[:, None] * (init @ theta)).sum(axis=0) / max(w0.sum(), 1.0))
    arr = np.asarray(draws)
    alpha = 1 - cfg.confidence
    lo, hi = np.percentile(arr, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    est = Estimate(
        estimator="fqe",
        signals=signal_names(signals, r.shape[1]),
        value=value,
        stderr=arr.std(axis=0, ddof=1),
        ci_low=lo,
        ci_high=hi,
        ci_method="bootstrap",
        confidence=cfg.confidence,
        n_rows=init.shape[0],
        # Per-episode initial values: enough for a paired difference of two
        # FQE estimates, which then ignores the refit uncertainty (said in the report).
        terms=Terms.mean(v0),
    )
    return est, model
