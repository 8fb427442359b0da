"""One-step (contextual-bandit) estimators: DM, IPS, SNIPS, DR, Switch-DR, NCIS.

Each takes the logged rewards for every signal, shape (N, S), and the
evaluation policy's view of the logged decisions; each returns an `Estimate`
with a value and confidence interval per signal. N = logged decisions.

References: Dudík, Langford & Li 2011 (DR); Swaminathan & Joachims 2015
(SNIPS); Wang, Agarwal & Dudík 2017 (Switch); Gilotte et al. 2018 and the
TSCAC / SL-MGAC evaluations (NCIS); Su et al. 2020 (choosing a weight
transformation by estimated mean squared error: `ncis_mse_cap`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.special import ndtr

from training.ope.core import (
    CIMethod,
    Estimate,
    FloatArray,
    Terms,
    as_rewards,
    as_vector,
    make_estimate,
    signal_names,
    standard_error,
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


def _ncis_ratios(
    rewards: npt.ArrayLike, target_log_density: npt.ArrayLike, behaviour_log_density: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, int, int]:
    """(rewards of the used rows (N_used, S), their ratios scaled to mean 1, rows missing, rows with zero density)."""
    r = as_rewards(rewards)
    t = as_vector(target_log_density, "target_log_density", r.shape[0])
    raw = importance_weights(t, behaviour_log_density, log_space=True)
    b = as_vector(behaviour_log_density, "behaviour_log_density", r.shape[0])
    if not raw.used.any():
        raise OPEInputError("behaviour_log_density", "no row has a behaviour log-density; NCIS needs the logged ones")
    # Rescale in log space by the largest log-ratio first to avoid overflow, then to mean 1.
    log_ratio = t[raw.used] - b[raw.used]
    if not np.isfinite(log_ratio.max()):
        raise OPEInputError("target_log_density", "every logged action has zero target density; nothing to weight")
    w = np.exp(log_ratio - log_ratio.max())
    w = w / w.mean()
    d = raw.diagnostics
    return r[raw.used], w, d.n_missing_propensity, d.n_zero_propensity


def _self_normalised_terms(w: FloatArray, r: FloatArray) -> Terms:
    return Terms((w[:, None] * r)[:, None, :], w[:, None])


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
        normalised scale to mean the same for any bandwidth. A fixed cap biases
        the estimate towards the logging policy wherever it binds; `ncis_mse_cap`
        chooses the cap from the data instead.
    """
    if not clip > 0:
        raise OPEInputError("clip", f"expected a positive relative cap, got {clip}")
    r, w, n_missing, n_zero = _ncis_ratios(rewards, target_log_density, behaviour_log_density)
    clipped = w > clip
    w = np.minimum(w, clip)
    diag = weight_diagnostics(w, n_missing, n_zero, clipped)
    return _estimate("ncis", _self_normalised_terms(w, r), signal_names(signals, r.shape[1]), ci, diagnostics=diag)


NCIS_CAP_GRID: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 300.0, 1000.0)
"""Default candidate caps of `ncis_mse_cap`, relative to the mean ratio (the uncapped estimate is always one more)."""


@dataclass(frozen=True)
class CapChoice:
    """How `choose_ncis_cap` scored every candidate cap (rows in the order of `caps`, uncapped last).

    For cap c: V̂_c = Σ min(w, c) r / Σ min(w, c); bias = V̂_c − V̂_∞, the shift the cap causes (estimated
    against the uncapped self-normalised estimate); squared_bias = max(bias² − bias_stderr², 0), unbiased
    for the squared shift; mse = stderr² + squared_bias; score = Σ_signals mse / stderr_∞² (scale-free,
    the uncapped estimate scores S).
    """

    cap: float
    """The chosen cap (relative to the mean ratio); inf = no cap."""
    caps: tuple[float, ...]
    value: FloatArray
    stderr: FloatArray
    bias: FloatArray
    bias_stderr: FloatArray
    squared_bias: FloatArray
    mse: FloatArray
    score: FloatArray
    """value, stderr, bias, bias_stderr, squared_bias, mse: (C, S); score: (C,)."""

    @property
    def index(self) -> int:
        return self.caps.index(self.cap)


def choose_ncis_cap(w: FloatArray, r: FloatArray, caps: Sequence[float] = NCIS_CAP_GRID) -> CapChoice:
    """The cap on mean-1 ratios `w` (N,) with rewards `r` (N, S) that minimises the estimated MSE (`CapChoice`).

    Candidates at or above the largest ratio cap nothing and are the uncapped estimate, which is always
    scored. Standard errors come from the self-normalised estimator's influence function; the shift's from the
    difference of the capped and uncapped influences on the same rows (they are strongly correlated). Ties go
    to the larger cap (less bias).
    """
    grid = sorted({float(c) for c in caps})
    if not grid:
        raise OPEInputError("caps", "expected at least one candidate cap")
    if not all(c > 0 for c in grid):
        raise OPEInputError("caps", f"candidate caps must be positive (relative to the mean ratio), got {grid}")
    if int(np.count_nonzero(w > 0)) < 2:
        raise OPEInputError("target_log_density", "fewer than 2 logged rows have a positive ratio; no variance")
    binding = tuple(c for c in grid if c < w.max()) + (float("inf"),)
    uncapped = _self_normalised_terms(w, r)
    v_inf, psi_inf = uncapped.value(), uncapped.influence()
    rows = []
    for c in binding:
        terms = _self_normalised_terms(np.minimum(w, c), r)
        psi = terms.influence()
        value = terms.value()
        rows.append((value, standard_error(psi), value - v_inf, standard_error(psi - psi_inf)))
    value, stderr, bias, bias_stderr = (np.stack(x) for x in zip(*rows, strict=True))
    squared_bias = np.maximum(bias**2 - bias_stderr**2, 0.0)
    mse = stderr**2 + squared_bias
    var_inf = stderr[-1] ** 2
    score = (mse / np.where(var_inf > 0, var_inf, 1.0)).sum(axis=1)
    best = len(binding) - 1
    for k in range(len(binding) - 2, -1, -1):  # descending caps: a smaller cap must score strictly lower
        if score[k] < score[best]:
            best = k
    return CapChoice(binding[best], binding, value, stderr, bias, bias_stderr, squared_bias, mse, score)


def ncis_mse_cap(
    rewards: npt.ArrayLike,
    target_log_density: npt.ArrayLike,
    behaviour_log_density: npt.ArrayLike,
    *,
    caps: Sequence[float] = NCIS_CAP_GRID,
    signals: Sequence[str] | None = None,
    ci: CIOptions = CIOptions(),
) -> Estimate:
    """NCIS whose cap is chosen from the data by estimated mean squared error, with a bias-aware interval.

    Inputs as `ncis`. Ours (a rule any log admits, in the spirit of Su et al. 2020's MSE-tuned weight
    shrinkage): among `caps` (relative to the mean ratio) and no cap, the cap minimising
    stderr(V̂_c)² + max((V̂_c − V̂_∞)² − stderr(V̂_c − V̂_∞)², 0) — the capped estimate's variance plus an
    unbiased estimate of the squared shift the cap causes, measured against the uncapped self-normalised
    estimate V̂_∞ (consistent, so its shift is the cap's bias up to noise); several signals share one cap,
    chosen on the sum of each signal's MSE relative to its uncapped variance (`choose_ncis_cap`).
    Interval (ours): value ± z·√(stderr² + (V̂_c − V̂_∞)²) — the plain normal interval widened by the measured
    shift (its plug-in square, which overstates the squared bias by the shift's variance: conservative), so
    that a cap chosen while it still moves the estimate does not hide that movement; no cap gives the plain
    self-normalised interval. Closed-form (normal) intervals only. The chosen cap is in the warnings.
    """
    if ci.method != "normal":
        raise OPEInputError("ci", "ncis_mse_cap computes a closed-form (normal) interval; got method 'bootstrap'")
    r, w, n_missing, n_zero = _ncis_ratios(rewards, target_log_density, behaviour_log_density)
    choice = choose_ncis_cap(w, r, caps)
    k = choice.index
    capped = w > choice.cap
    w_cap = np.minimum(w, choice.cap)
    diag = weight_diagnostics(w_cap, n_missing, n_zero, capped)
    cap_text = "no cap" if np.isinf(choice.cap) else f"cap {choice.cap:g} × the mean ratio"
    note = f"{cap_text} chosen by estimated MSE among {len(choice.caps)} candidates"
    est = _estimate(
        "ncis_mse_cap",
        _self_normalised_terms(w_cap, r),
        signal_names(signals, r.shape[1]),
        ci,
        diagnostics=diag,
        warnings=[note],
    )
    stderr = np.sqrt(est.stderr**2 + choice.bias[k] ** 2)
    z = float(stats.norm.ppf(0.5 + ci.confidence / 2))
    return replace(est, stderr=stderr, ci_low=est.value - z * stderr, ci_high=est.value + z * stderr)
