"""One-step (contextual-bandit) estimators: DM, IPS, SNIPS, DR, Switch-DR, NCIS.

Each takes the logged rewards for every signal, shape (N, S), and the
evaluation policy's view of the logged decisions; each returns an `Estimate`
with a value and confidence interval per signal. N = logged decisions.

References: Dudík, Langford & Li 2011 (DR); Swaminathan & Joachims 2015
(SNIPS); Wang, Agarwal & Dudík 2017 (Switch); Gilotte et al. 2018 and the
TSCAC / SL-MGAC evaluations (NCIS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

from training.ope.core import (
    CIMethod,
    Estimate,
    Terms,
    as_rewards,
    as_vector,
    make_estimate,
    signal_names,
    weight_diagnostics,
)
from training.ope.errors import OPEInputError
from training.ope.weights import gaussian_log_density, importance_weights


@dataclass(frozen=True)
class CIOptions:
    """How the confidence interval is computed."""

    method: CIMethod = "normal"
    """'normal': closed form from the estimator's influence function (delta method for ratios);
    'bootstrap': percentile bootstrap over logged rows."""
    confidence: float = 0.95
    """Two-sided coverage level in (0, 1)."""
    n_bootstrap: int = 1000
    """Resamples for the bootstrap (>= 20)."""
    seed: int = 0
    """Seed of the bootstrap resampling."""

    def __post_init__(self) -> None:
        if self.method not in ("normal", "bootstrap"):
            raise OPEInputError("CIOptions.method", f"expected 'normal' or 'bootstrap', got {self.method!r}")
        if not 0.0 < self.confidence < 1.0:
            raise OPEInputError("CIOptions.confidence", f"expected a level in (0, 1), got {self.confidence}")
        if self.n_bootstrap < 20:
            raise OPEInputError("CIOptions.n_bootstrap", f"expected >= 20 resamples, got {self.n_bootstrap}")


def _estimate(name: str, terms: Terms, signals: tuple[str, ...], ci: CIOptions, **kw: object) -> Estimate:
    return make_estimate(
        name,
        terms,
        signals,
        ci=ci.method,
        confidence=ci.confidence,
        n_bootstrap=ci.n_bootstrap,
        seed=ci.seed,
        **kw,  # type: ignore[arg-type]
    )


def direct_method(
    reward_pred_target: npt.ArrayLike, *, signals: Sequence[str] | None = None, ci: CIOptions = CIOptions()
) -> Estimate:
    """DM: V̂ = mean_i E_{a~π_e}[q̂(x_i, a)].

    reward_pred_target: shape (N, S), the reward model's expectation under the
        evaluation policy for each logged context (see reward_models.py).
    The CI reflects only the spread over contexts, not the reward model's own
    error — DM is biased exactly where that model is wrong.
    """
    q = as_rewards(reward_pred_target, "reward_pred_target")
    return _estimate("dm", Terms.mean(q), signal_names(signals, q.shape[1]), ci)


def ips(
    rewards: npt.ArrayLike,
    target_prob: npt.ArrayLike,
    behaviour_prob: npt.ArrayLike,
    *,
    signals: Sequence[str] | None = None,
    clip: float | None = None,
    log_space: bool = False,
    ci: CIOptions = CIOptions(),
) -> Estimate:
    """IPS: V̂ = mean_i w_i r_i with w_i = π_e(a_i|x_i) / π_b(a_i|x_i).

    rewards (N, S); target_prob, behaviour_prob (N,) — probabilities of the
    logged actions (log-densities if `log_space`). Unbiased without `clip`.
    """
    r = as_rewards(rewards)
    iw = importance_weights(
        as_vector(target_prob, "target_prob", r.shape[0]), behaviour_prob, clip=clip, log_space=log_space
    )
    terms = Terms.mean(iw.weights[:, None] * r[iw.used])
    return _estimate("ips", terms, signal_names(signals, r.shape[1]), ci, diagnostics=iw.diagnostics)


def snips(
    rewards: npt.ArrayLike,
    target_prob: npt.ArrayLike,
    behaviour_prob: npt.ArrayLike,
    *,
    signals: Sequence[str] | None = None,
    clip: float | None = None,
    log_space: bool = False,
    ci: CIOptions = CIOptions(),
) -> Estimate:
    """Self-normalised IPS: V̂ = Σ w_i r_i / Σ w_i (shapes as `ips`). Biased, consistent, lower variance."""
    r = as_rewards(rewards)
    iw = importance_weights(
        as_vector(target_prob, "target_prob", r.shape[0]), behaviour_prob, clip=clip, log_space=log_space
    )
    terms = Terms((iw.weights[:, None] * r[iw.used])[:, None, :], iw.weights[:, None])
    return _estimate("snips", terms, signal_names(signals, r.shape[1]), ci, diagnostics=iw.diagnostics)


def doubly_robust(
    rewards: npt.ArrayLike,
    target_prob: npt.ArrayLike,
    behaviour_prob: npt.ArrayLike,
    reward_pred_logged: npt.ArrayLike,
    reward_pred_target: npt.ArrayLike,
    *,
    signals: Sequence[str] | None = None,
    clip: float | None = None,
    log_space: bool = False,
    ci: CIOptions = CIOptions(),
) -> Estimate:
    """DR: V̂ = mean_i [ q̂_π(x_i) + w_i (r_i − q̂(x_i, a_i)) ].

    reward_pred_logged (N, S): q̂(x_i, a_i) for the logged action;
    reward_pred_target (N, S): E_{a~π_e} q̂(x_i, a). Unbiased if either the
    weights or the reward model are right (without `clip`).
    """
    return _switch_dr(
        "dr",
        rewards,
        target_prob,
        behaviour_prob,
        reward_pred_logged,
        reward_pred_target,
        signals=signals,
        clip=clip,
        tau=None,
        log_space=log_space,
        ci=ci,
    )


def switch_dr(
    rewards: npt.ArrayLike,
    target_prob: npt.ArrayLike,
    behaviour_prob: npt.ArrayLike,
    reward_pred_logged: npt.ArrayLike,
    reward_pred_target: npt.ArrayLike,
    *,
    tau: float,
    signals: Sequence[str] | None = None,
    log_space: bool = False,
    ci: CIOptions = CIOptions(),
) -> Estimate:
    """Switch-DR: V̂ = mean_i [ q̂_π(x_i) + 1{w_i ≤ τ} w_i (r_i − q̂(x_i, a_i)) ].

    Rows whose weight exceeds τ fall back to the model alone. Departure from
    Wang et al. 2017, who switch per action inside the expectation over π_e:
    this is the per-logged-row form (as in Open Bandit Pipeline), which needs
    only the logged action's weight and so also works for continuous actions.
    """
    if not tau > 0:
        raise OPEInputError("tau", f"expected a positive weight threshold, got {tau}")
    return _switch_dr(
        "switch_dr",
        rewards,
        target_prob,
        behaviour_prob,
        reward_pred_logged,
        reward_pred_target,
        signals=signals,
        clip=None,
        tau=tau,
        log_space=log_space,
        ci=ci,
    )


def _switch_dr(
    name: str,
    rewards: npt.ArrayLike,
    target_prob: npt.ArrayLike,
    behaviour_prob: npt.ArrayLike,
    reward_pred_logged: npt.ArrayLike,
    reward_pred_target: npt.ArrayLike,
    *,
    signals: Sequence[str] | None,
    clip: float | None,
    tau: float | None,
    log_space: bool,
    ci: CIOptions,
) -> Estimate:
    r = as_rewards(rewards)
    n = r.shape[0]
    q_logged = as_rewards(reward_pred_logged, "reward_pred_logged", n)
    q_target = as_rewards(reward_pred_target, "reward_pred_target", n)
    if q_logged.shape != r.shape or q_target.shape != r.shape:
        raise OPEInputError("reward_pred_logged", f"reward predictions must have the rewards' shape {r.shape}")
    iw = importance_weights(as_vector(target_prob, "target_prob", n), behaviour_prob, clip=clip, log_space=log_space)
    w = iw.weights
    warnings: list[str] = []
    if tau is not None:
        keep = w <= tau
        warnings.append(f"{1 - keep.mean():.1%} of rows had weight > τ={tau:g} and used the model only")
        w = np.where(keep, w, 0.0)
    u = iw.used
    per_row = q_target[u] + w[:, None] * (r[u] - q_logged[u])
    return _estimate(
        name, Terms.mean(per_row), signal_names(signals, r.shape[1]), ci, diagnostics=iw.diagnostics, warnings=warnings
    )


def kernel_log_density(
    logged_actions: npt.ArrayLike,
    centres: npt.ArrayLike,
    bandwidth: float,
    low: float | None = None,
    high: float | None = None,
) -> npt.NDArray[np.float64]:
    """log K_σ(a_i − c_i) for a Gaussian kernel of bandwidth σ: actions, centres (N, A) → (N,).

    Smooths a deterministic continuous policy (centre = its action) into a
    density so that an importance ratio exists (NCIS, as TSCAC evaluates).
    With `low`/`high` the kernel is truncated to the action box and
    renormalised, so it is a proper density there: without that, a centre on
    a bound (the default rank weights sit at 1.0) loses half its mass per
    entry and unnormalised estimators (IPS, DR) are scaled down by it —
    self-normalised NCIS is unaffected either way.
    """
    if not bandwidth > 0:
        raise OPEInputError("bandwidth", f"expected a positive kernel bandwidth σ, got {bandwidth}")
    out = gaussian_log_density(logged_actions, centres, np.log(bandwidth))
    if low is None and high is None:
        return out
    c = np.asarray(centres, dtype=np.float64)
    hi = ndtr((high - c) / bandwidth) if high is not None else 1.0
    lo = ndtr((low - c) / bandwidth) if low is not None else 0.0
    mass = np.maximum(np.broadcast_to(hi - lo, c.shape), 1e-300)
    return out - np.log(mass).sum(axis=1)  # type: ignore[no-any-return]


def ncis(
    rewards: npt.ArrayLike,
    target_log_density: npt.ArrayLike,
    behaviour_log_density: npt.ArrayLike,
    *,
    clip: float = 10.0,
    signals: Sequence[str] | None = None,
    ci: CIOptions = CIOptions(),
) -> Estimate:
    """NCIS for continuous actions: kernel density ratios, clipped, self-normalised.

    target_log_density (N,): log π̃_e(a_i|x_i), usually `kernel_log_density`
        of the logged action around the target policy's action (or its own
        Gaussian log-density if it is stochastic).
    behaviour_log_density (N,): logged log π_b(a_i|x_i), or a kernel around
        the behaviour policy's action; NaN = missing (counted, excluded).
    clip: cap on each ratio *relative to the mean ratio*. Departure from a fixed
        absolute cap: kernel ratios in 18 dimensions carry a huge constant
        that self-normalisation cancels, so the cap is stated on the
        normalised scale to mean the same for any bandwidth.
    """
    r = as_rewards(rewards)
    t = as_vector(target_log_density, "target_log_density", r.shape[0])
    raw = importance_weights(t, behaviour_log_density, log_space=True)
    if not clip > 0:
        raise OPEInputError("clip", f"expected a positive relative cap, got {clip}")
    # Rescale in log space by the largest log-ratio first to avoid overflow, then to mean 1.
    b = as_vector(behaviour_log_density, "behaviour_log_density", r.shape[0])
    if not raw.used.any():
        raise OPEInputError("behaviour_log_density", "no row has a behaviour log-density; NCIS needs the logged ones")
    log_ratio = t[raw.used] - b[raw.used]
    w = np.exp(log_ratio - log_ratio.max())
    w = w / w.mean()
    clipped = w > clip
    w = np.minimum(w, clip)
    diag = weight_diagnostics(w, raw.diagnostics.n_missing_propensity, raw.diagnostics.n_zero_propensity, clipped)
    terms = Terms((w[:, None] * r[raw.used])[:, None, :], w[:, None])
    return _estimate("ncis", terms, signal_names(signals, r.shape[1]), ci, diagnostics=diag)
