"""Ground-truth evaluation of a policy in the simulators, and logged-data generation.

* `evaluate_policy(problem, policy, n_users, days, seed)` runs a policy on
  fresh users (rank, slot) or a day of traffic (allocate) and reports every
  signal with a 95 % confidence interval, the constraint values against their
  thresholds, the next-day return rate, and for allocate revenue,
  utilisation and over-utilisation of the compute budget.
* `generate_logs(problem, policy, n_users, days, seed)` runs a logging policy
  and returns one columnar record per decision, ready to be turned into
  DecisionEvent / FeedbackEvent (models/events.py); `iter_records` yields them
  one by one.

A policy is any callable `obs (N, obs_size) float32 → actions` (rank (N, 18),
slot (N,), allocate (N, 6)), e.g. an ONNX session wrapped in a function. A
reference planner that reads hidden state may also define
`bind_simulator(sim)`: rank and slot evaluations hand it the batched simulator
before the first step (what it reads is no observation a served policy gets).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from models.problems import get_problem
from training.envs import make_batched
from training.envs.allocate import BatchedAllocateSim
from training.envs.behaviour import LoggingPolicy

Policy = Callable[[np.ndarray], Any]
Z95 = 1.959963984540054
DEFAULT_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# Rows stepped at once when evaluating many users: large enough for numpy to
# amortise its per-call cost, small enough to keep per-row tables in cache. A
# row serves several users in turn (autoreset), so few rows idle while the
# longest users finish.
MAX_ROWS = 2048
USERS_PER_ROW = 8


def _rows(n_users: int) -> int:
    return min(n_users, max(256, n_users // USERS_PER_ROW), MAX_ROWS)


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95 % normal-approximation confidence interval."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    """Number of independent units the interval is computed over (users, or intervals for allocate)."""


@dataclass(frozen=True)
class ConstraintValue:
    signal: str
    direction: str
    threshold: float
    value: float
    """Mean of the signal per decision (what the spec's thresholds are stated in)."""
    satisfied: bool


@dataclass(frozen=True)
class AllocateMetrics:
    revenue_per_request: Estimate
    """Traffic-weighted mean revenue per request, cents."""
    utilisation: float
    """Mean over intervals of compute spent / interval budget (MaRCA's μ)."""
    over_utilisation: float
    """Mean over intervals of max(0, utilisation − 1) (MaRCA's ν)."""
    over_budget_fraction: float
    """Share of intervals over budget."""
    peak_utilisation: float
    """Mean utilisation over the intervals at the day's traffic peak."""
    utilisation_by_interval: list[float] = field(default_factory=list)
    """Mean utilisation of each interval of the day (for plots)."""
    load_by_interval: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class EvaluationResult:
    problem: str
    unit: str
    """What `signals` are means of: "user-day" (rank, slot) or "request" (allocate)."""
    signals: dict[str, Estimate]
    per_decision: dict[str, float]
    """Mean of each signal per decision."""
    per_day: dict[str, list[float]]
    """rank/slot: mean per user of each signal on day 0, 1, … (users who did not come back count as 0)."""
    constraints: list[ConstraintValue]
    return_rate: float | None
    """rank/slot: P(active on day d+1 | active on day d), pooled over days and users."""
    decisions: int
    allocate: AllocateMetrics | None = None

    @property
    def constraints_satisfied(self) -> bool:
        return all(c.satisfied for c in self.constraints)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _estimate(values: np.ndarray, weights: np.ndarray | None = None) -> Estimate:
    n = int(values.shape[0])
    if weights is None:
        mean = float(values.mean())
        se = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    else:
        w = weights / weights.sum()
        mean = float(np.sum(w * values))
        se = float(np.sqrt(np.sum(w * w * (values - mean) ** 2) * n / max(n - 1, 1)))
    return Estimate(mean, mean - Z95 * se, mean + Z95 * se, n)


def _constraints(problem: str, per_decision: dict[str, float]) -> list[ConstraintValue]:
    spec = get_problem(problem)
    return [
        ConstraintValue(c.signal, c.direction, c.threshold, per_decision[c.signal], c.satisfied(per_decision[c.signal]))
        for c in spec.constraints
    ]


def evaluate_policy(
    problem: str,
    policy: Policy,
    n_users: int,
    days: int,
    seed: int = 0,
    *,
    user_seed: int | None = None,
    **overrides: Any,
) -> EvaluationResult:
    """Run `policy` in the problem's simulator and report ground-truth metrics.

    rank/slot: `n_users` fresh users for `days` days each, in the world of `seed`; `user_seed` draws other users
    of that world (None: the users of `seed`). allocate: `n_users` requests per interval for `days` days.
    `overrides` go to the simulator config.
    """
    if n_users < 2 or days < 1:
        raise ValueError(f"evaluate_policy: need n_users >= 2 and days >= 1, got {n_users}, {days}")
    spec = get_problem(problem)
    if spec.name == "allocate":
        return _evaluate_allocate(policy, n_users, days, seed, overrides)
    names = spec.signal_names
    per_user_day, act, decisions = _user_days(spec.name, policy, n_users, days, seed, overrides, user_seed)
    signals = {s: _estimate(per_user_day[:, :, i].mean(axis=1)) for i, s in enumerate(names)}
    per_decision = {s: float(per_user_day[:, :, i].sum() / max(decisions, 1)) for i, s in enumerate(names)}
    return_rate = float((act[:, :-1] & act[:, 1:]).sum() / max(act[:, :-1].sum(), 1)) if days > 1 else None
    return EvaluationResult(
        problem=spec.name,
        unit="user-day",
        signals=signals,
        per_decision=per_decision,
        per_day={s: per_user_day[:, :, i].mean(axis=0).tolist() for i, s in enumerate(names)},
        constraints=_constraints(spec.name, per_decision),
        return_rate=return_rate,
        decisions=decisions,
    )


def _user_days(
    problem: str,
    policy: Policy,
    n_users: int,
    days: int,
    seed: int,
    overrides: dict[str, Any],
    user_seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Run `policy` on users 0 … n_users−1 of `seed` (drawn from `user_seed` when given): (signal sums per user and day (U, D, S), active days (U, D),
    decisions). `rank` draws common random numbers unless the overrides say otherwise, so two policies run on
    the same seed meet the same users with the same luck (rows of `compare_policies` are paired)."""
    spec = get_problem(problem)
    names = spec.signal_names
    if spec.name == "rank":
        overrides = {"common_random_numbers": True, **overrides}
    sim = make_batched(spec.name, _rows(n_users), seed, max_users=n_users, days=days, **overrides)
    bind = getattr(policy, "bind_simulator", None)
    if bind is not None:  # a planner that reads the simulator's hidden state (benchmarks/headroom_rank.py)
        bind(sim)
    obs = sim.reset(user_seed)  # None keeps the constructor's seed
    totals = np.zeros((n_users * days, len(names)))
    active_days = np.zeros(n_users * days, np.bool_)
    decisions = 0
    while not sim.all_done:  # type: ignore[union-attr]
        obs, rewards, _, info = sim.step(policy(obs))
        live = info["active"]
        flat = info["user_id"][live] * days + info["day"][live]
        np.add.at(totals, flat, np.stack([rewards[s][live] for s in names], axis=1))
        active_days[flat] = True
        decisions += int(live.sum())
    return totals.reshape(n_users, days, len(names)), active_days.reshape(n_users, days), decisions


@dataclass(frozen=True)
class PairedComparison:
    """A policy against a baseline on the same users with common random numbers (`compare_policies`)."""

    policy: str
    baseline: str
    mean: float
    """The policy's main signal per user-day."""
    baseline_mean: float
    lift: float
    """mean / baseline_mean − 1."""
    ci_low: float
    ci_high: float
    """95 % CI of the lift from the paired per-user differences (delta method for a ratio of means)."""
    n: int
    per_decision: dict[str, float]
    constraints_satisfied: bool
    baseline_constraints_satisfied: bool

    @property
    def ci_width(self) -> float:
        return self.ci_high - self.ci_low


def paired_lift(values: np.ndarray, baseline: np.ndarray) -> tuple[float, float, float]:
    """(lift, ci_low, ci_high) of mean(values)/mean(baseline) − 1 over paired units (users), 95 %.

    Delta method: the ratio R = x̄/ȳ has se ≈ sd(x − R·y) / (√n · ȳ); pairing makes x − R·y small
    where the same user's luck moves both policies alike."""
    x, y = np.asarray(values, np.float64), np.asarray(baseline, np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.shape[0] < 2:
        raise ValueError(f"paired_lift: need two equal 1-d arrays of >= 2 paired units, got {x.shape}, {y.shape}")
    ratio = x.mean() / y.mean()
    se = float(np.std(x - ratio * y, ddof=1) / (np.sqrt(x.shape[0]) * abs(y.mean())))
    return float(ratio - 1.0), float(ratio - 1.0 - Z95 * se), float(ratio - 1.0 + Z95 * se)


def compare_policies(
    problem: str,
    policies: dict[str, Policy],
    baseline: str,
    n_users: int,
    days: int,
    seed: int = 0,
    **overrides: Any,
) -> dict[str, PairedComparison]:
    """Every policy against `policies[baseline]` on the same `n_users` users of `seed` (rank, slot).

    For `rank` the simulator draws common random numbers (`RankConfig.common_random_numbers`): user k
    is the same person with the same luck under every policy, so per-user differences carry only the
    policies' effect and the paired CI is several times narrower than two independent ones.
    """
    spec = get_problem(problem)
    if spec.name == "allocate":
        raise ValueError("compare_policies: rank and slot only (allocate has its own paired evaluation)")
    if baseline not in policies:
        raise ValueError(f"compare_policies: baseline {baseline!r} is not one of the policies {sorted(policies)}")
    main = spec.signal_names.index(spec.main_signal)
    runs = {name: _user_days(spec.name, p, n_users, days, seed, overrides) for name, p in policies.items()}

    def per_decision(run: tuple[np.ndarray, np.ndarray, int]) -> dict[str, float]:
        totals, _, decisions = run
        return {s: float(totals[:, :, i].sum() / max(decisions, 1)) for i, s in enumerate(spec.signal_names)}

    base_run = runs[baseline]
    base_user = base_run[0][:, :, main].mean(axis=1)
    base_ok = all(c.satisfied for c in _constraints(spec.name, per_decision(base_run)))
    out = {}
    for name, run in runs.items():
        user = run[0][:, :, main].mean(axis=1)
        lift, lo, hi = paired_lift(user, base_user)
        pd = per_decision(run)
        out[name] = PairedComparison(
            policy=name,
            baseline=baseline,
            mean=float(user.mean()),
            baseline_mean=float(base_user.mean()),
            lift=lift,
            ci_low=lo,
            ci_high=hi,
            n=n_users,
            per_decision=pd,
            constraints_satisfied=all(c.satisfied for c in _constraints(spec.name, pd)),
            baseline_constraints_satisfied=base_ok,
        )
    return out


def _evaluate_allocate(policy: Policy, n: int, days: int, seed: int, overrides: dict[str, Any]) -> EvaluationResult:
    spec = get_problem("allocate")
    sim = make_batched("allocate", n, seed, autoreset=False, days=days, **overrides)
    assert isinstance(sim, BatchedAllocateSim)
    obs = sim.reset()
    means: dict[str, list[float]] = {s: [] for s in spec.signal_names}
    load, util, interval = [], [], []
    while True:
        obs, rewards, done, info = sim.step(policy(obs))
        for s in spec.signal_names:
            means[s].append(float(rewards[s].mean()))
        load.append(info["load"])
        util.append(info["utilisation"])
        interval.append(info["interval"] % sim.config.intervals_per_day)
        if done.all():
            break
    w = np.asarray(load)
    u = np.asarray(util)
    per_interval = {s: np.asarray(v) for s, v in means.items()}
    signals = {s: _estimate(v, w) for s, v in per_interval.items()}
    per_decision = {s: e.mean for s, e in signals.items()}
    idx = np.asarray(interval)
    per_day = sim.config.intervals_per_day
    util_by = np.bincount(idx, u, per_day) / np.maximum(np.bincount(idx, minlength=per_day), 1)
    profile = sim.config.traffic_profile()
    peak = profile >= np.quantile(profile, 0.95)
    metrics = AllocateMetrics(
        revenue_per_request=signals["revenue"],
        utilisation=float(u.mean()),
        over_utilisation=float(np.maximum(u - 1.0, 0.0).mean()),
        over_budget_fraction=float((u > 1.0).mean()),
        peak_utilisation=float(util_by[peak].mean()),
        utilisation_by_interval=util_by.tolist(),
        load_by_interval=profile.tolist(),
    )
    return EvaluationResult(
        problem="allocate",
        unit="request",
        signals=signals,
        per_decision=per_decision,
        per_day={},
        constraints=_constraints("allocate", per_decision),
        return_rate=None,
        decisions=n * len(load),
        allocate=metrics,
    )


# ---------------------------------------------------------------------------
# Logged data
# ---------------------------------------------------------------------------
def generate_logs(
    problem: str,
    policy: LoggingPolicy,
    n_users: int,
    days: int,
    seed: int = 0,
    *,
    epoch: dt.datetime = DEFAULT_EPOCH,
    **overrides: Any,
) -> dict[str, Any]:
    """Run a logging policy and return its decisions as columns (one entry per decision, time-ordered per user).

    Keys:
      "problem"      str
      "decision_id"  (n,) int64, unique, in the order decisions were taken
      "user_id"      (n,) int64
      "session_id"   (n,) int64, unique per session (-1 for allocate, which has none)
      "timestamp"    (n,) datetime64[ms], UTC, `epoch` + simulated time
      "observation"  (n, obs_size) float32, the vector the policy saw (spec field order)
      "action"       (n, action_size) float32, flat, spec order (discrete choices as whole numbers)
      "propensity"   (n,) float64, probability of the action (NaN for continuous policies)
      "log_density"  (n,) float64, log-density of the action (NaN for discrete policies)
      "signals"      {signal: (n,) float32} every signal of the spec
      "session_end"  (n,) bool, the session ended after this decision
    rank/slot: `n_users` users for `days` days. allocate: `n_users` requests per interval.
    """
    spec = get_problem(problem)
    if policy.probability_kind not in ("propensity", "log_density"):
        raise ValueError(
            f"generate_logs: policy.probability_kind must be 'propensity' or 'log_density', got {policy.probability_kind!r}"
        )
    if spec.name == "allocate":
        sim: Any = make_batched("allocate", n_users, seed, autoreset=False, days=days, **overrides)
    else:
        sim = make_batched(spec.name, _rows(n_users), seed, max_users=n_users, days=days, **overrides)
    obs = sim.reset()
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("user_id", "session_id", "seconds", "obs", "action", "prob", "end")
    }
    sig: dict[str, list[np.ndarray]] = {s: [] for s in spec.signal_names}
    time_rng = np.random.default_rng([seed, 2])
    while True:
        actions, prob = policy.sample(obs)
        next_obs, rewards, done, info = sim.step(actions)
        if spec.name == "allocate":
            live = np.ones(sim.n, np.bool_)
            per_day = sim.config.intervals_per_day
            interval_s = 86_400.0 / per_day
            start = info["interval"] * interval_s
            cols["user_id"].append(info["user_id"])
            cols["session_id"].append(np.full(sim.n, -1, np.int64))
            cols["seconds"].append(np.sort(start + time_rng.random(sim.n) * interval_s))
            cols["end"].append(np.zeros(sim.n, np.bool_))
        else:
            live = info["active"]
            cols["user_id"].append(info["user_id"][live])
            cols["session_id"].append(info["session_id"][live])
            cols["seconds"].append(info["timestamp"][live])
            cols["end"].append(info["session_end"][live])
        cols["obs"].append(np.asarray(obs, np.float32)[live])
        cols["action"].append(np.asarray(actions, np.float32).reshape(sim.n, -1)[live])
        cols["prob"].append(np.asarray(prob, np.float64)[live])
        for s in spec.signal_names:
            sig[s].append(rewards[s][live])
        obs = next_obs
        if (spec.name == "allocate" and done.all()) or (spec.name != "allocate" and sim.all_done):
            break
    n = int(sum(c.shape[0] for c in cols["user_id"]))
    prob_all = np.concatenate(cols["prob"])
    nan = np.full(n, np.nan)
    epoch_ms = np.datetime64(epoch.astimezone(dt.UTC).replace(tzinfo=None), "ms")
    seconds = np.concatenate(cols["seconds"])
    return {
        "problem": spec.name,
        "decision_id": np.arange(n, dtype=np.int64),
        "user_id": np.concatenate(cols["user_id"]).astype(np.int64),
        "session_id": np.concatenate(cols["session_id"]).astype(np.int64),
        "timestamp": epoch_ms + np.round(seconds * 1000.0).astype("timedelta64[ms]"),
        "observation": np.concatenate(cols["obs"]),
        "action": np.concatenate(cols["action"]),
        "propensity": prob_all if policy.probability_kind == "propensity" else nan,
        "log_density": prob_all if policy.probability_kind == "log_density" else nan,
        "signals": {s: np.concatenate(v).astype(np.float32) for s, v in sig.items()},
        "session_end": np.concatenate(cols["end"]),
    }


def iter_records(logs: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The decisions of `generate_logs` one by one, as plain Python values (timestamps as aware UTC datetimes)."""
    kind = "propensity" if np.isfinite(logs["propensity"]).any() else "log_density"
    names = list(logs["signals"])
    for i in range(logs["decision_id"].shape[0]):
        ts = logs["timestamp"][i].astype("datetime64[ms]").astype(dt.datetime).replace(tzinfo=dt.UTC)
        yield {
            "problem": logs["problem"],
            "decision_id": int(logs["decision_id"][i]),
            "user_id": int(logs["user_id"][i]),
            "session_id": int(logs["session_id"][i]),
            "timestamp": ts,
            "observation": logs["observation"][i].tolist(),
            "action": logs["action"][i].tolist(),
            "propensity": float(logs["propensity"][i]) if kind == "propensity" else None,
            "log_density": float(logs["log_density"][i]) if kind == "log_density" else None,
            "signals": {s: float(logs["signals"][s][i]) for s in names},
            "session_end": bool(logs["session_end"][i]),
        }


# ---------------------------------------------------------------------------
# allocate with a controller (a policy that keeps state across intervals)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AllocateControlledResult:
    """Days of `allocate` under one controller, one seed per day (common random numbers across controllers).

    Per-day arrays pair with another controller's result on the same seeds.
    """

    seeds: list[int]
    revenue_per_request_by_day: list[float]
    """Traffic-weighted mean revenue per request of each day, cents."""
    revenue_per_request: Estimate
    """Over days (95 % normal interval over the days)."""
    utilisation: float
    """Mean over intervals of compute spent / interval budget (MaRCA's μ, against the budget)."""
    over_utilisation: float
    """Mean over intervals of max(0, utilisation − 1) (MaRCA's ν)."""
    over_budget_fraction: float
    """Share of intervals over budget (issue #15: ≤ 1 %)."""
    compute_per_request: float
    """Traffic-weighted mean compute units per request (the spec's constraint: ≤ its threshold)."""
    utilisation_by_interval: list[list[float]] = field(default_factory=list)
    """(days, intervals) utilisation, for plots."""
    lambda_by_interval: list[list[float]] = field(default_factory=list)
    """(days, intervals) the controller's `lam` attribute after each interval (NaN when it has none)."""


def evaluate_allocate_controlled(
    policy: Any, seeds: list[int], requests_per_interval: int, **overrides: Any
) -> AllocateControlledResult:
    """Run an `allocate` controller for one day per seed and report revenue and budget metrics.

    `policy`: obs (N, obs_size) → actions (N, 6), with an optional `reset()`
    called at the start of each day (controllers such as a λ balancer keep
    state across intervals) and an optional `lam` attribute (recorded).
    Each seed fixes the day's requests and noise whatever the actions, so two
    controllers on the same seeds are paired (training/envs/allocate.py).
    """
    from training.envs.allocate import AllocateConfig
    from training.envs.allocate_oracle import run_days
    from training.envs.world import apply_overrides

    if requests_per_interval < 1 or not seeds:
        raise ValueError(
            f"evaluate_allocate_controlled: need requests_per_interval >= 1 and at least one seed, "
            f"got {requests_per_interval}, {seeds}"
        )
    config = apply_overrides(AllocateConfig(), overrides)
    runs = run_days(policy, config, requests_per_interval, seeds)
    by_day = runs.revenue_per_day
    return AllocateControlledResult(
        seeds=list(seeds),
        revenue_per_request_by_day=by_day.tolist(),
        revenue_per_request=_estimate(by_day),
        utilisation=float(runs.utilisation.mean()),
        over_utilisation=float(np.maximum(runs.utilisation - 1.0, 0.0).mean()),
        over_budget_fraction=runs.over_budget_fraction,
        compute_per_request=runs.mean_compute,
        utilisation_by_interval=runs.utilisation.tolist(),
        lambda_by_interval=runs.lam.tolist(),
    )
