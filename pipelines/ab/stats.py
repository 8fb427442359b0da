"""A/B statistics over arrays: means and ratios with CIs, lifts, SRM, CUPED, an always-valid test.

numpy/scipy only, independent of how the logs are stored. The unit of
randomisation is the user, so per-decision metrics (e.g. likes per request)
are *ratio metrics*: Σ_u signal_u / Σ_u decisions_u, whose variance comes from
the delta method over units rather than from treating decisions as
independent (Deng, Lu & Litz 2018, "Applying the Delta Method in Metric
Analytics").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]

SRM_ALERT_P = 1e-3


class ABInputError(ValueError):
    """A/B analysis input with the wrong shape or range; the message names the argument."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def _vec(x: npt.ArrayLike, name: str, min_len: int = 2) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ABInputError(name, f"expected a 1-D array (one value per unit), got shape {arr.shape}")
    if arr.shape[0] < min_len:
        raise ABInputError(name, f"expected at least {min_len} units, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ABInputError(name, "values must be finite")
    return arr


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ABInputError("confidence", f"expected a level in (0, 1), got {confidence}")
    return float(stats.norm.ppf(0.5 + confidence / 2))


@dataclass(frozen=True)
class Interval:
    """A point estimate with its standard error and a two-sided normal CI."""

    value: float
    stderr: float
    ci_low: float
    ci_high: float
    n_units: int

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def _interval(value: float, se: float, n: int, confidence: float) -> Interval:
    z = _z(confidence)
    return Interval(value, se, value - z * se, value + z * se, n)


def mean_ci(values: npt.ArrayLike, confidence: float = 0.95) -> Interval:
    """Mean of per-unit values, shape (N,), with the CLT interval."""
    v = _vec(values, "values")
    return _interval(float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size)), v.size, confidence)


def ratio_ci(numerator: npt.ArrayLike, denominator: npt.ArrayLike, confidence: float = 0.95) -> Interval:
    """Σ num / Σ den over units (each shape (N,)) with the delta-method interval.

    Var(R̂) ≈ (σ²_n − 2R σ_nd + R² σ²_d) / (N μ_d²).
    """
    num = _vec(numerator, "numerator")
    den = _vec(denominator, "denominator")
    if num.shape != den.shape:
        raise ABInputError("denominator", f"expected {num.shape[0]} units like the numerator, got {den.shape[0]}")
    mu_d = den.mean()
    if mu_d <= 0:
        raise ABInputError("denominator", "the mean denominator must be positive")
    r = float(num.sum() / den.sum())
    cov = np.cov(num, den, ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (num.size * mu_d**2)
    return _interval(r, float(np.sqrt(max(var, 0.0))), num.size, confidence)


@dataclass(frozen=True)
class Lift:
    """Treatment vs control: absolute difference and relative lift (t / c − 1), each with a CI."""

    absolute: Interval
    relative: Interval
    p_value: float

    def to_dict(self) -> dict[str, object]:
        return {"absolute": self.absolute.to_dict(), "relative": self.relative.to_dict(), "p_value": self.p_value}


def lift(treatment: Interval, control: Interval, confidence: float = 0.95) -> Lift:
    """Lift from two independent arm estimates.

    Relative lift by the delta method on the ratio of means:
    Var(t/c) ≈ se_t²/c² + t² se_c²/c⁴.
    """
    t, c = treatment.value, control.value
    diff = t - c
    se_diff = float(np.hypot(treatment.stderr, control.stderr))
    n = treatment.n_units + control.n_units
    absolute = _interval(diff, se_diff, n, confidence)
    if c == 0:
        # A signal the control arm never produced has no relative lift; report NaN, not an error.
        relative = Interval(float("nan"), float("nan"), float("nan"), float("nan"), n)
    else:
        se_rel = float(np.sqrt((treatment.stderr / c) ** 2 + (t * control.stderr / c**2) ** 2))
        relative = _interval(t / c - 1.0, se_rel, n, confidence)
    p = float(2 * stats.norm.sf(abs(diff) / se_diff)) if se_diff > 0 else (0.0 if diff else 1.0)
    return Lift(absolute, relative, p)


@dataclass(frozen=True)
class SRMResult:
    """Sample-ratio-mismatch chi-square test of unit counts against the configured weights."""

    counts: dict[str, int]
    expected: dict[str, float]
    chi2: float
    p_value: float
    alert: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def srm_test(counts: Mapping[str, int], weights: Mapping[str, float], alert_p: float = SRM_ALERT_P) -> SRMResult:
    """χ² goodness of fit of units per arm vs weights; alert when p < alert_p (default 0.001).

    An SRM means assignment or logging is broken; no lift should be read until it is explained.
    """
    arms = list(weights)
    if set(counts) - set(arms):
        raise ABInputError("counts", f"arms {sorted(set(counts) - set(arms))} have no configured weight")
    w = np.array([weights[a] for a in arms], dtype=np.float64)
    if np.any(w < 0) or w.sum() <= 0:
        raise ABInputError("weights", f"expected non-negative weights with a positive sum, got {dict(weights)}")
    obs = np.array([counts.get(a, 0) for a in arms], dtype=np.float64)
    total = obs.sum()
    if total == 0:
        raise ABInputError("counts", "no units in any arm")
    keep = w > 0
    exp = total * w / w.sum()
    chi2, p = stats.chisquare(obs[keep], exp[keep])
    return SRMResult(
        counts={a: int(c) for a, c in zip(arms, obs, strict=True)},
        expected={a: float(e) for a, e in zip(arms, exp, strict=True)},
        chi2=float(chi2),
        p_value=float(p),
        alert=bool(p < alert_p),
    )


def cuped_theta(y: npt.ArrayLike, x: npt.ArrayLike) -> float:
    """θ = Cov(y, x) / Var(x), pooled over all arms (Deng et al. 2013, CUPED)."""
    yy, xx = _vec(y, "metric"), _vec(x, "covariate")
    if yy.shape != xx.shape:
        raise ABInputError("covariate", f"expected {yy.shape[0]} units like the metric, got {xx.shape[0]}")
    var = xx.var(ddof=1)
    return float(np.cov(yy, xx, ddof=1)[0, 1] / var) if var > 0 else 0.0


def cuped_adjust(y: npt.ArrayLike, x: npt.ArrayLike, theta: float, x_mean: float) -> FloatArray:
    """y − θ (x − E[x]): same mean, less variance when x predicts y. y, x shape (N,)."""
    return np.asarray(y, dtype=np.float64) - theta * (np.asarray(x, dtype=np.float64) - x_mean)


def cuped_lift(
    y_treatment: npt.ArrayLike,
    x_treatment: npt.ArrayLike,
    y_control: npt.ArrayLike,
    x_control: npt.ArrayLike,
    confidence: float = 0.95,
) -> tuple[Lift, float]:
    """Lift of the per-unit mean after CUPED with a pre-period covariate; returns (lift, θ).

    θ and E[x] are pooled over both arms so the adjustment is the same
    function for everyone and cannot create a difference.
    """
    yt, xt, yc, xc = (
        _vec(y_treatment, "y_treatment"),
        _vec(x_treatment, "x_treatment"),
        _vec(y_control, "y_control"),
        _vec(x_control, "x_control"),
    )
    theta = cuped_theta(np.r_[yt, yc], np.r_[xt, xc])
    x_mean = float(np.r_[xt, xc].mean())
    t = mean_ci(cuped_adjust(yt, xt, theta, x_mean), confidence)
    c = mean_ci(cuped_adjust(yc, xc, theta, x_mean), confidence)
    return lift(t, c, confidence), theta


@dataclass(frozen=True)
class SequentialResult:
    """mSPRT always-valid p-values at each look (Johari, Pekelis & Walsh 2017)."""

    looks: list[int]
    differences: list[float]
    p_values: list[float]
    rejected: bool
    first_rejection_look: int | None
    alpha: float
    tau: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def msprt_p_values(differences: npt.ArrayLike, variances: npt.ArrayLike, tau: float) -> FloatArray:
    """Always-valid p-values from a sequence of looks.

    differences (L,): the difference in means at each look; variances (L,):
    its variance at that look (σ_t²/n_t + σ_c²/n_c). With a N(0, τ²) mixture
    over the true difference the likelihood ratio is

        Λ = sqrt(v / (v + τ²)) · exp(τ² Δ² / (2 v (v + τ²)))

    (Johari et al. 2017, eq. 11 written with v = σ²/n so unequal arms work),
    and p_n = min(p_{n−1}, 1/Λ_n). Rejecting when p_n ≤ α keeps the false
    positive rate ≤ α however often the report is read.
    """
    d = np.asarray(differences, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    if d.shape != v.shape or d.ndim != 1:
        raise ABInputError("variances", f"expected one variance per look, got {v.shape} for {d.shape}")
    if not tau > 0:
        raise ABInputError("tau", f"expected a positive mixture scale, got {tau}")
    v = np.maximum(v, 1e-300)
    t2 = tau * tau
    log_lr = 0.5 * np.log(v / (v + t2)) + t2 * d * d / (2 * v * (v + t2))
    p = np.minimum(1.0, np.exp(-log_lr))
    out: FloatArray = np.minimum.accumulate(p)
    return out


def sequential_test(
    treatment_by_look: Sequence[npt.ArrayLike],
    control_by_look: Sequence[npt.ArrayLike],
    *,
    alpha: float = 0.05,
    tau: float | None = None,
) -> SequentialResult:
    """mSPRT over cumulative looks: element k of each list holds the per-unit values seen by look k.

    tau: mixture scale on the difference; default 0.1 × the pooled standard
    deviation at the first look — effects of about a tenth of a standard
    deviation are the ones a product A/B test hopes to find.
    """
    if len(treatment_by_look) != len(control_by_look) or not treatment_by_look:
        raise ABInputError("control_by_look", "expected the same positive number of looks for both arms")
    if not 0 < alpha < 1:
        raise ABInputError("alpha", f"expected a level in (0, 1), got {alpha}")
    diffs, vars_, looks = [], [], []
    for k, (t_raw, c_raw) in enumerate(zip(treatment_by_look, control_by_look, strict=True)):
        t, c = _vec(t_raw, f"treatment_by_look[{k}]"), _vec(c_raw, f"control_by_look[{k}]")
        diffs.append(float(t.mean() - c.mean()))
        vars_.append(float(t.var(ddof=1) / t.size + c.var(ddof=1) / c.size))
        looks.append(int(t.size + c.size))
    if tau is None:
        t0, c0 = np.asarray(treatment_by_look[0], dtype=np.float64), np.asarray(control_by_look[0], dtype=np.float64)
        tau = 0.1 * float(np.sqrt((t0.var(ddof=1) + c0.var(ddof=1)) / 2)) or 1.0
    p = msprt_p_values(diffs, vars_, tau)
    hits = np.flatnonzero(p <= alpha)
    return SequentialResult(
        looks=looks,
        differences=diffs,
        p_values=[float(x) for x in p],
        rejected=bool(hits.size),
        first_rejection_look=int(hits[0]) if hits.size else None,
        alpha=alpha,
        tau=float(tau),
    )
