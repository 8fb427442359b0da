"""Shared machinery of every estimator: per-row terms, values, confidence intervals, diagnostics.

Every estimator in this package reduces to *per-row terms* (a row is one logged
decision for one-step estimators, one episode for sequential ones)::

    value[s] = Σ_t  Σ_i num[i, t, s] / Σ_i den[i, t]

* plain means (IPS, DM, DR, Switch-DR, PDIS, sequential DR): ``den = 1`` and
  ``T = 1`` or the per-episode sum already folded into ``num``;
* self-normalised estimators (SNIPS, NCIS): ``T = 1``, ``den`` = the weights;
* weighted per-decision IS (WPDIS): one self-normalised ratio per time step t.

From that one form come the value, a closed-form standard error through the
estimator's influence function (the delta method for the ratio forms) and the
bootstrap over rows — both for a single policy and for the *paired* difference
of two policies evaluated on the same logs (same rows, same resamples).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from training.ope.errors import OPEInputError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
CIMethod = Literal["normal", "bootstrap"]

# Bootstrap resamples are drawn in chunks so that the (chunk, N) count matrix
# stays small (20 × 1M rows ≈ 160 MB of int64 at worst).
_BOOTSTRAP_CHUNK = 20


# ---------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------
def as_vector(x: npt.ArrayLike, name: str, n: int | None = None) -> FloatArray:
    """A 1-D float array, shape (N,); raises naming `name` otherwise."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise OPEInputError(name, f"expected a 1-D array of shape (N,), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise OPEInputError(name, f"expected {n} rows (one per logged decision), got {arr.shape[0]}")
    return arr


def as_rewards(x: npt.ArrayLike, name: str = "rewards", n: int | None = None) -> FloatArray:
    """Rewards per signal, shape (N, S); a 1-D array is one signal."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise OPEInputError(name, f"expected shape (N, n_signals) or (N,), got {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise OPEInputError(name, f"expected {n} rows, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise OPEInputError(name, f"rewards must be finite; row {bad} is not")
    if arr.shape[0] == 0:
        raise OPEInputError(name, "at least one logged row is required")
    return arr


def signal_names(signals: Sequence[str] | None, n_signals: int) -> tuple[str, ...]:
    if signals is None:
        return tuple(f"signal_{i}" for i in range(n_signals))
    names = tuple(signals)
    if len(names) != n_signals:
        raise OPEInputError("signals", f"{len(names)} names given for {n_signals} reward columns")
    return names


def check_probabilities(p: FloatArray, name: str) -> None:
    """Probabilities of the evaluation policy: finite and in [0, 1] (missing is not allowed here)."""
    if not np.all(np.isfinite(p)):
        raise OPEInputError(name, "evaluation-policy probabilities must be finite (no missing values)")
    if np.any(p < 0) or np.any(p > 1 + 1e-9):
        raise OPEInputError(name, f"probabilities must lie in [0, 1]; got min {p.min():.4g}, max {p.max():.4g}")


# ---------------------------------------------------------------------------
# terms → value, influence, bootstrap
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Terms:
    """Per-row terms: ``value[s] = Σ_t Σ_i num[i,t,s] / Σ_i den[i,t]``.

    num: shape (N, T, S) — N rows (decisions or episodes), T time steps, S signals.
    den: shape (N, T).
    """

    num: FloatArray
    den: FloatArray

    def __post_init__(self) -> None:
        if self.num.ndim != 3 or self.den.ndim != 2 or self.num.shape[:2] != self.den.shape:
            raise OPEInputError("terms", f"num (N,T,S) and den (N,T) disagree: {self.num.shape} vs {self.den.shape}")
        if self.num.shape[0] == 0:
            raise OPEInputError("terms", "no usable rows (every row lacked a propensity?)")

    @classmethod
    def mean(cls, per_row: FloatArray) -> Terms:
        """Terms of a plain mean of per-row values, per_row shape (N, S)."""
        return cls(per_row[:, None, :], np.ones((per_row.shape[0], 1)))

    @property
    def n(self) -> int:
        return int(self.num.shape[0])

    @staticmethod
    def _ratio(num_sum: FloatArray, den_sum: FloatArray) -> FloatArray:
        """Σ_t num_sum[..., t, s] / den_sum[..., t]; a time step with zero total weight adds 0."""
        safe = np.where(den_sum == 0, 1.0, den_sum)
        return np.where(den_sum[..., None] == 0, 0.0, num_sum / safe[..., None]).sum(axis=-2)  # type: ignore[no-any-return]

    def value(self) -> FloatArray:
        """Shape (S,)."""
        return self._ratio(self.num.sum(axis=0), self.den.sum(axis=0))

    def influence(self) -> FloatArray:
        """Influence of each row, shape (N, S): value ≈ v + mean_i ψ_i (delta method for ratios)."""
        n = self.n
        den_sum = self.den.sum(axis=0)  # (T,)
        ratio_t = np.where(
            den_sum[:, None] == 0, 0.0, self.num.sum(axis=0) / np.where(den_sum == 0, 1.0, den_sum)[:, None]
        )
        den_mean = np.where(den_sum == 0, 1.0, den_sum / n)  # (T,)
        psi = (self.num - ratio_t[None] * self.den[..., None]) / den_mean[None, :, None]
        return psi.sum(axis=1)  # type: ignore[no-any-return]

    def bootstrap(self, counts: npt.NDArray[np.int64]) -> FloatArray:
        """Values under row resampling; counts shape (B, N) → values shape (B, S)."""
        num_b = np.einsum("bn,nts->bts", counts, self.num)
        den_b = counts @ self.den
        return self._ratio(num_b, den_b)


def standard_error(influence: FloatArray) -> FloatArray:
    """Closed-form standard error of the mean influence, shape (S,)."""
    n = influence.shape[0]
    if n < 2:
        return np.full(influence.shape[1], np.nan)
    return influence.std(axis=0, ddof=1) / np.sqrt(n)  # type: ignore[no-any-return]


def bootstrap_draws(terms: Sequence[Terms], n_bootstrap: int, seed: int) -> list[FloatArray]:
    """Bootstrap values of several term sets resampled with *the same* row counts, each (B, S)."""
    n = terms[0].n
    if any(t.n != n for t in terms):
        raise OPEInputError("terms", "paired bootstrap needs the same rows for every estimate")
    rng = np.random.default_rng(seed)
    out: list[list[FloatArray]] = [[] for _ in terms]
    done = 0
    while done < n_bootstrap:
        b = min(_BOOTSTRAP_CHUNK, n_bootstrap - done)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)
        for k, t in enumerate(terms):
            out[k].append(t.bootstrap(counts))  # type: ignore[arg-type]
        done += b
    return [np.concatenate(o, axis=0) for o in out]


# ---------------------------------------------------------------------------
# diagnostics
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightDiagnostics:
    """What the importance weights look like; read these before trusting an IS-based value.

    Rows whose behaviour propensity is missing or zero cannot be importance-
    weighted; they are excluded from the IS estimators and counted here.
    """

    n_rows: int
    n_used: int
    n_missing_propensity: int
    n_zero_propensity: int
    effective_sample_size: float
    weight_mean: float
    weight_max: float
    weight_p50: float
    weight_p90: float
    weight_p99: float
    share_clipped: float

    @property
    def share_missing_propensity(self) -> float:
        return self.n_missing_propensity / self.n_rows if self.n_rows else 0.0

    @property
    def share_zero_propensity(self) -> float:
        return self.n_zero_propensity / self.n_rows if self.n_rows else 0.0

    @property
    def ess_share(self) -> float:
        """ESS / rows used: 1 for on-policy logs, near 0 when a few rows carry all the weight."""
        return self.effective_sample_size / self.n_used if self.n_used else 0.0

    def to_dict(self) -> dict[str, float]:
        d: dict[str, float] = {k: float(v) for k, v in self.__dict__.items()}
        d["share_missing_propensity"] = self.share_missing_propensity
        d["share_zero_propensity"] = self.share_zero_propensity
        d["ess_share"] = self.ess_share
        return d


def weight_diagnostics(
    weights: FloatArray, n_missing: int = 0, n_zero: int = 0, clipped: BoolArray | None = None
) -> WeightDiagnostics:
    """Diagnostics of the (used) weights, shape (N_used,); Kish ESS = (Σw)² / Σw²."""
    w = np.asarray(weights, dtype=np.float64)
    n_used = int(w.shape[0])
    sq = float(np.sum(w * w))
    ess = float(np.sum(w)) ** 2 / sq if sq > 0 else 0.0
    q = np.percentile(w, [50, 90, 99]) if n_used else np.zeros(3)
    return WeightDiagnostics(
        n_rows=n_used + n_missing + n_zero,
        n_used=n_used,
        n_missing_propensity=n_missing,
        n_zero_propensity=n_zero,
        effective_sample_size=ess,
        weight_mean=float(w.mean()) if n_used else 0.0,
        weight_max=float(w.max()) if n_used else 0.0,
        weight_p50=float(q[0]),
        weight_p90=float(q[1]),
        weight_p99=float(q[2]),
        share_clipped=float(np.mean(clipped)) if clipped is not None and clipped.size else 0.0,
    )


# ---------------------------------------------------------------------------
# the result
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """An estimator's value per signal with its confidence interval and diagnostics.

    value, stderr, ci_low, ci_high: shape (S,), in the order of `signals`.
    """

    estimator: str
    signals: tuple[str, ...]
    value: FloatArray
    stderr: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    ci_method: str
    confidence: float
    n_rows: int
    diagnostics: WeightDiagnostics | None = None
    warnings: tuple[str, ...] = ()
    terms: Terms | None = field(default=None, repr=False, compare=False)

    def index(self, signal: str) -> int:
        try:
            return self.signals.index(signal)
        except ValueError:
            raise OPEInputError("signal", f"{signal!r} not estimated; signals: {list(self.signals)}") from None

    def for_signal(self, signal: str) -> dict[str, float]:
        i = self.index(signal)
        return {
            "value": float(self.value[i]),
            "stderr": float(self.stderr[i]),
            "ci_low": float(self.ci_low[i]),
            "ci_high": float(self.ci_high[i]),
        }

    def covers(self, truth: npt.ArrayLike) -> BoolArray:
        t = np.asarray(truth, dtype=np.float64)
        return (self.ci_low <= t) & (t <= self.ci_high)

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "ci_method": self.ci_method,
            "confidence": self.confidence,
            "n_rows": self.n_rows,
            "signals": {s: self.for_signal(s) for s in self.signals},
            "diagnostics": self.diagnostics.to_dict() if self.diagnostics else None,
            "warnings": list(self.warnings),
        }


def _check_ci(ci: str, confidence: float, n_bootstrap: int) -> None:
    if ci not in ("normal", "bootstrap"):
        raise OPEInputError("ci", f"expected 'normal' (closed form) or 'bootstrap', got {ci!r}")
    if not 0.0 < confidence < 1.0:
        raise OPEInputError("confidence", f"expected a level in (0, 1), e.g. 0.95, got {confidence}")
    if ci == "bootstrap" and n_bootstrap < 20:
        raise OPEInputError("n_bootstrap", f"at least 20 resamples are needed for a percentile CI, got {n_bootstrap}")


def _interval(
    value: FloatArray, se: FloatArray, draws: FloatArray | None, confidence: float
) -> tuple[FloatArray, FloatArray]:
    if draws is None:
        z = float(stats.norm.ppf(0.5 + confidence / 2))
        return value - z * se, value + z * se
    alpha = 1.0 - confidence
    lo, hi = np.percentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return lo, hi


def make_estimate(
    estimator: str,
    terms: Terms,
    signals: tuple[str, ...],
    *,
    ci: CIMethod = "normal",
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int = 0,
    diagnostics: WeightDiagnostics | None = None,
    warnings: Sequence[str] = (),
) -> Estimate:
    """Value, standard error (influence function) and CI (closed form or percentile bootstrap)."""
    _check_ci(ci, confidence, n_bootstrap)
    value = terms.value()
    se = standard_error(terms.influence())
    draws = bootstrap_draws([terms], n_bootstrap, seed)[0] if ci == "bootstrap" else None
    if draws is not None:
        se = draws.std(axis=0, ddof=1)
    lo, hi = _interval(value, se, draws, confidence)
    warns = list(warnings)
    if diagnostics is not None:
        warns.extend(_diagnostic_warnings(diagnostics))
    return Estimate(
        estimator=estimator,
        signals=signals,
        value=value,
        stderr=se,
        ci_low=lo,
        ci_high=hi,
        ci_method=ci,
        confidence=confidence,
        n_rows=terms.n,
        diagnostics=diagnostics,
        warnings=tuple(warns),
        terms=terms,
    )


def _diagnostic_warnings(d: WeightDiagnostics) -> list[str]:
    out: list[str] = []
    if d.n_missing_propensity or d.n_zero_propensity:
        out.append(
            f"{d.n_missing_propensity} rows without and {d.n_zero_propensity} rows with zero behaviour "
            f"propensity ({d.share_missing_propensity + d.share_zero_propensity:.1%}) were excluded from weighting"
        )
    if d.n_used and d.ess_share < 0.01:
        out.append(f"effective sample size {d.effective_sample_size:.0f} is under 1% of {d.n_used} rows")
    if d.share_clipped > 0.05:
        out.append(f"{d.share_clipped:.1%} of the weights were clipped; the estimate is biased towards the logs")
    return out


def paired_difference(
    a: Estimate,
    b: Estimate,
    *,
    ci: CIMethod = "normal",
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Estimate:
    """a − b for two estimates on the *same* logged rows, with a paired CI.

    Pairing matters: both policies are evaluated on the same decisions, so
    their errors are correlated and the difference is much tighter than two
    independent intervals suggest. Closed form: influence(a) − influence(b);
    bootstrap: both re-estimated on the same resamples.
    """
    if a.terms is None or b.terms is None:
        raise OPEInputError("estimate", "both estimates must carry their per-row terms")
    if a.terms.n != b.terms.n:
        raise OPEInputError(
            "estimate", f"paired difference needs the same rows: {a.terms.n} vs {b.terms.n} (different exclusions?)"
        )
    if a.signals != b.signals:
        raise OPEInputError("estimate", f"signals differ: {a.signals} vs {b.signals}")
    _check_ci(ci, confidence, n_bootstrap)
    value = a.terms.value() - b.terms.value()
    se = standard_error(a.terms.influence() - b.terms.influence())
    draws = None
    if ci == "bootstrap":
        da, db = bootstrap_draws([a.terms, b.terms], n_bootstrap, seed)
        draws = da - db
        se = draws.std(axis=0, ddof=1)
    lo, hi = _interval(value, se, draws, confidence)
    return Estimate(
        estimator=f"{a.estimator}.difference",
        signals=a.signals,
        value=value,
        stderr=se,
        ci_low=lo,
        ci_high=hi,
        ci_method=ci,
        confidence=confidence,
        n_rows=a.terms.n,
        warnings=tuple(dict.fromkeys((*a.warnings, *b.warnings))),
    )
