"""Off-policy evaluation on anyone's bandit logs: the common bandit-feedback layout in, estimates with CIs out.

    from training.ope import BanditFeedback, evaluate_logs
    feedback = BanditFeedback(context=X, action=a, reward=r, pscore=p, action_dist=pi_e, position=pos)
    estimates = evaluate_logs(feedback, reward_model="logistic")      # name → Estimate
    estimates["sndr"].for_signal("reward")                              # value, stderr, ci_low, ci_high

The layout is the one public bandit datasets and Open Bandit Pipeline (obp)
use: per logged round i a context x_i, the logged action a_i, its slot
(position) k_i in a list of `len_list` slots, the reward r_i, the logging
policy's propensity p_i = π_b(a_i | x_i, k_i), and the evaluation ("target")
policy's distribution over actions π_e(· | x_i, k) — shape
(n_rounds, n_actions, len_list), as obp's `action_dist`. Optionally a reward
model's per-action predictions q̂(x_i, a, k) of the same shape
(obp's `estimated_rewards_by_reg_model`); without them one is cross-fitted here.

Estimators (per-row terms in core.py's form, so every one has a closed-form and
a bootstrap CI; w_i = π_e(a_i | x_i, k_i) / p_i, q̂_π(x_i) = Σ_a π_e(a | x_i, k_i) q̂(x_i, a, k_i)):

    ips     mean_i w_i r_i
    snips   Σ w_i r_i / Σ w_i                                          (Swaminathan & Joachims 2015)
    dm      mean_i q̂_π(x_i)
    dr      mean_i [ q̂_π(x_i) + w_i (r_i − q̂(x_i, a_i, k_i)) ]         (Dudík, Langford & Li 2011)
    sndr    mean_i q̂_π(x_i) + Σ w_i (r_i − q̂(x_i, a_i, k_i)) / Σ w_i   (self-normalised DR)
    dr_os   DR with w_i replaced by λ w_i / (w_i² + λ)                  (Su et al. 2020, "optimistic shrinkage")

These are the same formulas as obp 0.5.7's estimators of the same names
(InverseProbabilityWeighting, SelfNormalizedInverseProbabilityWeighting,
DirectMethod, DoublyRobust, SelfNormalizedDoublyRobust,
DoublyRobustWithShrinkage); tests/unit/test_ope_logs_vs_obp.py checks the
values agree to 1e-9 on obp's synthetic data given the same reward predictions.

Ours (where the papers leave a choice):
- the shrinkage λ, when not given, is picked from a grid by the estimated mean
  squared error var(terms)/n + (mean((w − ŵ)(r − q̂)))² — the sample-bias form
  of Su et al.'s criterion (obp's DoublyRobustWithShrinkageTuning with
  tuning_method="mse" and no high-probability bias bound);
- the reward model is cross-fitted (K folds: each row's prediction comes from a
  model that never saw it), one model per position like obp's RegressionModel,
  on features [context, one-hot(action)];
- the default CI is the percentile bootstrap with 1,000 resamples over rounds.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.ope.core import Estimate, FloatArray, Terms, make_estimate, weight_diagnostics
from training.ope.errors import OPEInputError
from training.ope.one_step import CIOptions

ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dm", "dr", "sndr", "dr_os")
REWARD_MODELS: tuple[str, ...] = ("logistic", "gradient_boosting", "ridge")
SHRINKAGE_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1_000.0, 10_000.0, float("inf"))
DEFAULT_CI = CIOptions(method="bootstrap", n_bootstrap=1000)
IntArray = npt.NDArray[np.int64]


# ---------------------------------------------------------------------------
# the input
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BanditFeedback:
    """Logged bandit feedback, checked on construction; every error names the field.

    context: (n_rounds, n_features) floats.
    action: (n_rounds,) integers in [0, n_actions).
    reward: (n_rounds,) finite floats.
    pscore: (n_rounds,) logging propensities of the logged actions, in (0, 1].
    action_dist: (n_rounds, n_actions, len_list) the target policy's probabilities;
        a (n_rounds, n_actions) array is read as len_list = 1.
    position: (n_rounds,) integers in [0, len_list), or None when len_list = 1.
    estimated_rewards: optional (n_rounds, n_actions, len_list) reward predictions
        q̂(x_i, a, k), e.g. from your own model; (n_rounds, n_actions) = one slot.
    """

    context: FloatArray
    action: IntArray
    reward: FloatArray
    pscore: FloatArray
    action_dist: FloatArray
    position: IntArray | None = None
    estimated_rewards: FloatArray | None = None

    def __post_init__(self) -> None:
        reward = np.asarray(self.reward, dtype=np.float64)
        if reward.ndim != 1 or reward.shape[0] == 0:
            raise OPEInputError("reward", f"expected a non-empty 1-D array (n_rounds,), got shape {reward.shape}")
        n = reward.shape[0]
        if not np.all(np.isfinite(reward)):
            raise OPEInputError("reward", f"rewards must be finite; row {int(np.argmin(np.isfinite(reward)))} is not")
        context = np.asarray(self.context, dtype=np.float64)
        if context.ndim == 1:
            context = context[:, None]
        if context.ndim != 2 or context.shape[0] != n:
            raise OPEInputError("context", f"expected shape ({n}, n_features), got {context.shape}")
        dist = _three_d(self.action_dist, "action_dist", n)
        n_actions, len_list = dist.shape[1], dist.shape[2]
        action = _integers(self.action, "action", n, n_actions)
        position = (
            np.zeros(n, dtype=np.int64) if self.position is None else _integers(self.position, "position", n, len_list)
        )
        pscore = np.asarray(self.pscore, dtype=np.float64)
        if pscore.shape != (n,):
            raise OPEInputError("pscore", f"expected shape ({n},) (one propensity per round), got {pscore.shape}")
        if not np.all(np.isfinite(pscore)) or np.any(pscore <= 0) or np.any(pscore > 1 + 1e-9):
            raise OPEInputError(
                "pscore",
                f"propensities must lie in (0, 1]; got min {np.nanmin(pscore):.4g}, max {np.nanmax(pscore):.4g}",
            )
        if not np.all(np.isfinite(dist)) or np.any(dist < 0):
            raise OPEInputError("action_dist", "target probabilities must be finite and >= 0")
        sums = dist.sum(axis=1)
        if np.any(np.abs(sums - 1.0) > 1e-6):
            i, k = np.unravel_index(int(np.argmax(np.abs(sums - 1.0))), sums.shape)
            raise OPEInputError(
                "action_dist",
                f"each (round, position) must sum to 1 over actions; round {i}, position {k}: {sums[i, k]:.6g}",
            )
        q = None
        if self.estimated_rewards is not None:
            q = _three_d(self.estimated_rewards, "estimated_rewards", n)
            if q.shape != dist.shape:
                raise OPEInputError("estimated_rewards", f"expected action_dist's shape {dist.shape}, got {q.shape}")
            if not np.all(np.isfinite(q)):
                raise OPEInputError("estimated_rewards", "reward predictions must be finite")
        for name, value in (("context", context), ("action", action), ("reward", reward), ("pscore", pscore),
                            ("action_dist", dist), ("position", position), ("estimated_rewards", q)):  # fmt: skip
            object.__setattr__(self, name, value)

    @property
    def n_rounds(self) -> int:
        return int(self.reward.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.action_dist.shape[1])

    @property
    def len_list(self) -> int:
        return int(self.action_dist.shape[2])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], action_dist: npt.ArrayLike | None = None) -> BanditFeedback:
        """From obp's dict layout (context, action, reward, pscore, position, optional action_dist)."""
        dist = action_dist if action_dist is not None else data.get("action_dist")
        if dist is None:
            raise OPEInputError("action_dist", "give the target policy's action distribution")
        missing = [k for k in ("context", "action", "reward", "pscore") if k not in data]
        if missing:
            raise OPEInputError(missing[0], f"missing from the feedback; it has {sorted(data)}")
        return cls(
            context=data["context"],
            action=data["action"],
            reward=data["reward"],
            pscore=data["pscore"],
            action_dist=dist,  # type: ignore[arg-type]
            position=data.get("position"),
            estimated_rewards=data.get("estimated_rewards_by_reg_model", data.get("estimated_rewards")),
        )

    # -- per-round views at the logged position ---------------------------
    def _rows(self) -> IntArray:
        return np.arange(self.n_rounds)

    def target_at_position(self) -> FloatArray:
        """π_e(· | x_i, k_i): (n_rounds, n_actions)."""
        return self.action_dist[self._rows(), :, self.position]  # type: ignore[no-any-return, index]

    def importance_weights(self) -> FloatArray:
        """w_i = π_e(a_i | x_i, k_i) / p_i: (n_rounds,)."""
        return self.action_dist[self._rows(), self.action, self.position] / self.pscore  # type: ignore[no-any-return, index]


def _three_d(x: npt.ArrayLike, name: str, n: int) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[0] != n:
        raise OPEInputError(name, f"expected shape ({n}, n_actions, len_list) or ({n}, n_actions), got {arr.shape}")
    return arr


def _integers(x: npt.ArrayLike, name: str, n: int, upper: int) -> IntArray:
    arr = np.asarray(x)
    if arr.shape != (n,):
        raise OPEInputError(name, f"expected shape ({n},), got {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise OPEInputError(name, "expected integer indices")
    out = arr.astype(np.int64)
    if np.any(out < 0) or np.any(out >= upper):
        raise OPEInputError(name, f"indices must lie in [0, {upper}); got min {out.min()}, max {out.max()}")
    return out


# ---------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------
def read_bandit_feedback(
    path: str | Path,
    *,
    target: str = "action_dist",
    reward_predictions: str | None = None,
) -> BanditFeedback:
    """A Parquet file (or folder) in the bandit-feedback layout → BanditFeedback.

    Columns: `action` (int), `reward`, `pscore`, optional `position` (int);
    the context either as one list column `context` or as numeric columns
    named `context_0`, `context_1`, …; the target's distribution in column
    `target` as a list of n_actions probabilities (its distribution at the
    round's logged position) or a list of n_actions lists of len_list;
    optional reward predictions in column `reward_predictions`, same shape.
    """
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.exists():
        raise OPEInputError("logs", f"{p} does not exist")
    table = pq.read_table(p)
    columns = set(table.column_names)
    for required in ("action", "reward", "pscore", target):
        if required not in columns:
            what = "--target: the target policy's action distribution" if required == target else required
            raise OPEInputError(required, f"column missing from {p} ({what}); columns: {sorted(columns)}")
    if "context" in columns:
        context = np.asarray(table.column("context").to_pylist(), dtype=np.float64)
    else:
        names = sorted((c for c in columns if c.startswith("context_")), key=lambda c: int(c.split("_")[1]))
        if not names:
            raise OPEInputError(
                "context", f"expected a list column 'context' or columns context_0, context_1, … in {p}"
            )
        context = np.column_stack([table.column(c).to_numpy().astype(np.float64) for c in names])
    n = table.num_rows
    position = table.column("position").to_numpy() if "position" in columns else None

    def per_action(column: str) -> FloatArray:
        values = np.asarray(table.column(column).to_pylist(), dtype=np.float64)
        if values.ndim == 2 and position is not None and int(np.max(position)) > 0:
            # one list of n_actions per round, at its logged position: (n, n_actions, len_list) whose other
            # positions (never read by the estimators) hold a valid uniform distribution
            full = np.full((n, values.shape[1], int(np.max(position)) + 1), 1.0 / values.shape[1])
            full[np.arange(n), :, position.astype(np.int64)] = values
            return full
        return values

    if reward_predictions and reward_predictions not in columns:
        raise OPEInputError(
            "reward_predictions", f"column {reward_predictions!r} not in {p}; columns: {sorted(columns)}"
        )
    q = per_action(reward_predictions) if reward_predictions else None
    return BanditFeedback(
        context=context,
        action=table.column("action").to_numpy(),
        reward=table.column("reward").to_numpy().astype(np.float64),
        pscore=table.column("pscore").to_numpy().astype(np.float64),
        action_dist=per_action(target),
        position=position,
        estimated_rewards=q,
    )


# ---------------------------------------------------------------------------
# reward models, cross-fitted
# ---------------------------------------------------------------------------
def make_reward_model(spec: str | Any, binary: bool, seed: int = 0) -> Any:
    """'logistic' | 'gradient_boosting' | 'ridge' | 'package.module:Class' | an unfitted scikit-learn estimator."""
    if not isinstance(spec, str):
        if not (hasattr(spec, "fit") and (hasattr(spec, "predict") or hasattr(spec, "predict_proba"))):
            raise OPEInputError(
                "reward_model", f"expected a scikit-learn estimator (fit/predict), got {type(spec).__name__}"
            )
        return spec
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    if spec == "logistic":
        if not binary:
            raise OPEInputError("reward_model", "'logistic' needs 0/1 rewards; use 'gradient_boosting' or 'ridge'")
        return LogisticRegression(max_iter=1000)
    if spec == "gradient_boosting":
        return (
            HistGradientBoostingClassifier(random_state=seed)
            if binary
            else HistGradientBoostingRegressor(random_state=seed)
        )
    if spec == "ridge":
        return Ridge(alpha=1.0)
    module, sep, attr = spec.partition(":")
    if sep:
        try:
            return getattr(importlib.import_module(module), attr)()
        except (ImportError, AttributeError) as err:
            raise OPEInputError("reward_model", f"cannot load {spec!r}: {err}") from None
    raise OPEInputError("reward_model", f"expected one of {', '.join(REWARD_MODELS)} or 'module:Class', got {spec!r}")


def _features(context: FloatArray, action: IntArray, n_actions: int) -> FloatArray:
    return np.hstack([context, np.eye(n_actions)[action]])


def _predict(model: Any, x: FloatArray) -> FloatArray:
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(x)
        classes = list(model.classes_)
        return proba[:, classes.index(1)] if 1 in classes else np.zeros(x.shape[0])  # type: ignore[no-any-return]
    return np.asarray(model.predict(x), dtype=np.float64)


def cross_fitted_rewards(
    feedback: BanditFeedback, reward_model: str | Any = "logistic", *, n_folds: int = 3, seed: int = 0
) -> FloatArray:
    """q̂(x_i, a, k_i) for every action: (n_rounds, n_actions, len_list), each row predicted out of fold.

    One model per position (as obp's RegressionModel), features [context, one-hot(action)];
    only the logged position's slice is filled (the estimators read nothing else).
    """
    from sklearn.base import clone
    from sklearn.model_selection import KFold

    if n_folds < 2:
        raise OPEInputError("n_folds", f"cross-fitting needs at least 2 folds, got {n_folds}")
    binary = bool(np.all(np.isin(feedback.reward, (0.0, 1.0))))
    template = make_reward_model(reward_model, binary, seed)
    n, n_actions = feedback.n_rounds, feedback.n_actions
    q = np.zeros((n, n_actions, feedback.len_list))
    for k in range(feedback.len_list):
        rows = np.flatnonzero(feedback.position == k)
        if rows.size == 0:
            continue
        if rows.size < n_folds:
            raise OPEInputError("n_folds", f"position {k} has {rows.size} rounds, fewer than the {n_folds} folds")
        for train, test in KFold(n_folds, shuffle=True, random_state=seed).split(rows):
            tr, te = rows[train], rows[test]
            model = clone(template)
            y = feedback.reward[tr]
            if binary and np.unique(y).size < 2:  # a fold of one class: its rate is the best prediction
                q[te, :, k] = float(y.mean())
                continue
            model.fit(_features(feedback.context[tr], feedback.action[tr], n_actions), y)
            for a in range(n_actions):
                q[te, a, k] = _predict(model, _features(feedback.context[te], np.full(te.size, a), n_actions))
    return q


# ---------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------
def _model_terms(feedback: BanditFeedback, q: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(q̂_π(x_i), q̂(x_i, a_i, k_i)), each (n_rounds,)."""
    rows = np.arange(feedback.n_rounds)
    q_at = q[rows, :, feedback.position]
    q_pi = np.sum(feedback.target_at_position() * q_at, axis=1)
    return q_pi, q_at[rows, feedback.action]


def shrink_weights(weights: FloatArray, lam: float) -> FloatArray:
    """Optimistic shrinkage ŵ = λ w / (w² + λ) (Su et al. 2020, eq. 9); λ = inf gives w back, λ = 0 gives 0."""
    if not lam >= 0:
        raise OPEInputError("shrinkage_lambda", f"expected λ >= 0, got {lam}")
    if np.isinf(lam):
        return weights
    if lam == 0:
        return np.zeros_like(weights)
    return lam * weights / (weights**2 + lam)  # type: ignore[no-any-return]


def tune_shrinkage(
    feedback: BanditFeedback, q: FloatArray, grid: Sequence[float] = SHRINKAGE_GRID
) -> tuple[float, dict[float, float]]:
    """λ minimising var(terms)/n + (mean((w − ŵ)(r − q̂)))² over `grid` (module docstring); returns (λ, scores)."""
    w = feedback.importance_weights()
    q_pi, q_logged = _model_terms(feedback, q)
    residual = feedback.reward - q_logged
    scores: dict[float, float] = {}
    for lam in grid:
        w_hat = shrink_weights(w, lam)
        per_row = q_pi + w_hat * residual
        bias = float(np.mean((w - w_hat) * residual))
        scores[lam] = float(np.var(per_row, ddof=1) / feedback.n_rounds + bias**2)
    return min(scores, key=scores.__getitem__), scores


def estimator_terms(
    name: str, feedback: BanditFeedback, q: FloatArray | None = None, *, shrinkage_lambda: float = float("inf")
) -> Terms:
    """The per-row terms of one estimator (see the module docstring for the formulas)."""
    w = feedback.importance_weights()
    r = feedback.reward
    if name == "ips":
        return Terms.mean((w * r)[:, None])
    if name == "snips":
        return Terms((w * r)[:, None, None], w[:, None])
    if q is None:
        raise OPEInputError("estimated_rewards", f"{name} needs reward predictions (or a reward model to fit)")
    q_pi, q_logged = _model_terms(feedback, q)
    if name == "dm":
        return Terms.mean(q_pi[:, None])
    if name == "dr":
        return Terms.mean((q_pi + w * (r - q_logged))[:, None])
    if name == "dr_os":
        return Terms.mean((q_pi + shrink_weights(w, shrinkage_lambda) * (r - q_logged))[:, None])
    if name == "sndr":
        # two "time steps" in core's ratio form: the model's mean (den 1) + the self-normalised correction (den w)
        num = np.stack([q_pi, w * (r - q_logged)], axis=1)[:, :, None]
        den = np.stack([np.ones_like(w), w], axis=1)
        return Terms(num, den)
    raise OPEInputError("estimators", f"unknown estimator {name!r}; known: {', '.join(ESTIMATORS)}")


def evaluate_logs(
    feedback: BanditFeedback,
    *,
    estimators: Sequence[str] = ESTIMATORS,
    reward_model: str | Any = "logistic",
    n_folds: int = 3,
    shrinkage_lambda: float | None = None,
    ci: CIOptions = DEFAULT_CI,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Every requested estimator's value and CI for the target policy on `feedback`; name → Estimate.

    Reward predictions: feedback.estimated_rewards when given, else a model
    cross-fitted here (`reward_model`, `n_folds`). `shrinkage_lambda` None =
    tuned (module docstring). Each Estimate's one signal is called "reward".
    """
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown or not estimators:
        raise OPEInputError("estimators", f"unknown {unknown or 'empty list'}; choose from {', '.join(ESTIMATORS)}")
    needs_model = any(e not in ("ips", "snips") for e in estimators)
    q = feedback.estimated_rewards
    if q is None and needs_model:
        q = cross_fitted_rewards(feedback, reward_model, n_folds=n_folds, seed=seed)
    warnings: list[str] = []
    lam = float("inf")
    if "dr_os" in estimators:
        if shrinkage_lambda is None:
            assert q is not None
            lam, _ = tune_shrinkage(feedback, q)
            warnings.append(f"shrinkage λ = {lam:g}, tuned by estimated MSE")
        else:
            lam = float(shrinkage_lambda)
    w = feedback.importance_weights()
    diagnostics = weight_diagnostics(w)
    out: dict[str, Estimate] = {}
    for name in estimators:
        terms = estimator_terms(name, feedback, q, shrinkage_lambda=lam)
        out[name] = make_estimate(
            name,
            terms,
            ("reward",),
            ci=ci.method,
            confidence=ci.confidence,
            n_bootstrap=ci.n_bootstrap,
            seed=ci.seed,
            diagnostics=diagnostics if name != "dm" else None,
            warnings=warnings if name == "dr_os" else (),
        )
    return out
