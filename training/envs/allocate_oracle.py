"""Exact expectations of the `allocate` world, a reference planner that knows it, and the simple rules it is judged against.

The headroom check (issue #15, benchmarks/headroom_allocate.py) asks whether a
state-aware policy can earn clearly more than the best simple rule at the same
compute. This module holds both sides; every number comes from the response
functions of `training/envs/allocate.py` (`AllocateConfig` methods), so the
expectations here are the simulator's own.

Exact expectations (per request i and joint action a, given the interval's traffic ℓ and utilisation u)
    E[cost]    = C(a)·(1 + κ(ℓ − 1))                                (cost noise has mean 1)
    E[revenue] = v_i·Q(a | H_i, e_i)·degradation(u)·E_ε[P_on_time(C(a)(1 + κ(ℓ − 1))·ε, u)]
               (revenue noise has mean 1; the expectation over the log-normal cost noise ε by
               Gauss–Hermite quadrature, 9 nodes: exact to ~1e-6 for these smooth functions)
    u itself depends on every request of the interval: the planner plans it, the expectations take it as given.

Reference planner (ours; MaRCA's decision rule with an oracle in place of the learned parts)
    a_i = argmax_a E[revenue_i(a)] − λ_t·E[cost(a)]                (MaRCA / DCAF knapsack relaxation)
    λ_t is read from a table λ(ℓ̂) built before the day on a planning sample of requests: for each
    forecast traffic ℓ̂, the smallest λ whose expected utilisation is at most the target u*
    (the on-time probabilities evaluated at u*; λ = 0 and the self-consistent u when even λ = 0
    stays below it). Foresight of the simulator: the forecast is the daily profile times the AR(1)
    noise carried forward from last interval's reading, ℓ̂_t = profile(t)·(ℓ_{t−1}/profile(t−1))^φ,
    and the backlog is recovered from last interval's utilisation reading, B = min(max(0, u_{t−1} − K), B_max)
    (the target for this interval's own demand is u* − B). u* is the one free parameter, chosen on
    separate seeds as the largest that keeps the budget (over-budget intervals ≤ 1 %).

Simple rules (what a controller without a model of the requests does; each has one parameter)
    static            one joint action for every request (the production default is one of them)
    constant λ        a_i = argmax_a v_i·Q̂(a) − λ·C(a), one λ all day
    load-proportional the same with λ_t = λ_0·ℓ_{t−1}/1 (λ follows last interval's traffic reading)
    feedback          the same with λ_t = λ_{t−1}·exp(g·(u_{t−1} − u*)), g fixed, u* the parameter
                      (the feedback controller MaRCA compares its MPC balancer with)
    Q̂(a) is the population mean of Q(a | H, e)·P_on_time at a typical utilisation: what an action-value
    table estimated from logs without the request features would hold. C(a) is the cost table.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from models.problems import ALLOCATE, ALLOCATE_QUEUE_LENGTHS_PRE_RANK, ALLOCATE_QUEUE_LENGTHS_RANK
from training.envs.allocate import NVEC, AllocateConfig, BatchedAllocateSim
from training.envs.world import FloatArray, IntArray

ALL_ACTIONS: IntArray = np.asarray(list(itertools.product(*(range(k) for k in NVEC))), np.int64)
"""Every joint action, (384, 6), spec order."""
_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite_e.hermegauss(9)
_HERMITE_WEIGHTS = _HERMITE_WEIGHTS / _HERMITE_WEIGHTS.sum()
# A utilisation the rules' quality table Q̂(a) is estimated at (near where budget-keeping policies run).
TYPICAL_UTILISATION = 0.85
# Observation columns (models/problems.py order): value, load, utilisation, sin, cos, 3 groups, history, 3 entries.
_VALUE, _LOAD, _UTIL, _SIN, _COS, _HISTORY = 0, 1, 2, 3, 4, 8
_ENTRY = slice(9, 12)


# ---------------------------------------------------------------------------
# Exact expectations
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Requests:
    """The decision-relevant features of N requests, decoded from observations or read from the simulator."""

    value: FloatArray
    history_length: FloatArray
    entry_point: IntArray

    @classmethod
    def from_observation(cls, obs: np.ndarray) -> Requests:
        """Invert models/observations.allocate_observation for the request features (float32 rounding aside)."""
        o = np.asarray(obs, np.float64)
        if o.ndim != 2 or o.shape[1] != ALLOCATE.observation_size:
            raise ValueError(f"allocate observation: expected shape (N, {ALLOCATE.observation_size}), got {o.shape}")
        return cls(
            value=np.expm1(o[:, _VALUE] * 5.0),
            history_length=np.expm1(o[:, _HISTORY] * 8.0),
            entry_point=np.argmax(o[:, _ENTRY], axis=1),
        )


def quality_matrix(config: AllocateConfig, requests: Requests) -> FloatArray:
    """Q(a | H_i, e_i) for every request and joint action, (N, 384).

    The same terms as `AllocateConfig.slate_quality`, factorised over the action components
    (recall of the 8 channel sets × pre-rank × rank × tier) so that N × 384 costs one outer product.
    """
    n = requests.value.shape[0]
    recall = config.channel_recall(requests.history_length, requests.entry_point)  # (N, 3)
    channel_sets = ALL_ACTIONS[:: NVEC[3] * NVEC[4] * NVEC[5], :3].astype(np.float64)  # (8, 3), product order
    miss = np.prod(1.0 - recall[:, None, :] * channel_sets[None, :, :], axis=2)
    recall_term = np.maximum(config.recall_floor, 1.0 - miss) ** 0.7  # (N, 8)
    pre = np.asarray(ALLOCATE_QUEUE_LENGTHS_PRE_RANK, np.float64)
    rank = np.asarray(ALLOCATE_QUEUE_LENGTHS_RANK, np.float64)
    pre_term = 0.4 + 0.6 * (1.0 - np.exp(-pre / config.pre_rank_scale))  # (4,)
    rank_term = 0.3 + 0.7 * (1.0 - np.exp(-rank / config.rank_scale))  # (4,)
    tiers = np.arange(NVEC[5])
    accuracy = config.model_accuracy(tiers[None, :], requests.history_length[:, None])  # (N, 3)
    q = (
        recall_term[:, :, None, None, None]
        * pre_term[None, None, :, None, None]
        * rank_term[None, None, None, :, None]
        * accuracy[:, None, None, None, :]
    )
    out: FloatArray = q.reshape(n, ALL_ACTIONS.shape[0])
    return out


def cost_table(config: AllocateConfig) -> FloatArray:
    """C(a): expected compute units at mean traffic of every joint action, (384,)."""
    out: FloatArray = config.expected_cost(ALL_ACTIONS).astype(np.float64)
    return out


def expected_cost(config: AllocateConfig, traffic: float) -> FloatArray:
    """E[cost] of every joint action at traffic ℓ, (384,)."""
    out: FloatArray = cost_table(config) * config.contention_factor(traffic)
    return out


def expected_on_time(config: AllocateConfig, traffic: float, utilisation: float) -> FloatArray:
    """E_ε[P_on_time] of every joint action at traffic ℓ and utilisation u, (384,)."""
    noise = np.exp(config.cost_noise * _HERMITE_NODES - 0.5 * config.cost_noise**2)
    costs = expected_cost(config, traffic)[:, None] * noise[None, :]
    out: FloatArray = config.on_time_probability(costs, utilisation) @ _HERMITE_WEIGHTS
    return out


def expected_revenue(
    config: AllocateConfig, requests: Requests, traffic: float, utilisation: float, quality: FloatArray | None = None
) -> FloatArray:
    """E[revenue] of every request and joint action, (N, 384), at traffic ℓ and utilisation u."""
    q = quality_matrix(config, requests) if quality is None else quality
    on_time = expected_on_time(config, traffic, utilisation)
    out: FloatArray = requests.value[:, None] * q * (on_time * config.degradation_factor(utilisation))[None, :]
    return out


def sample_requests(config: AllocateConfig, n: int, seed: int) -> Requests:
    """N requests from the simulator's arrival distribution (the planner's planning sample)."""
    sim = BatchedAllocateSim(n, config, seed, autoreset=False)
    sim.reset()
    return Requests(sim.request_value.astype(np.float64), sim.history_length.astype(np.float64), sim.entry_point)


# ---------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------
class AllocatePolicy(Protocol):
    """obs (N, 12) → joint actions (N, 6); `reset()` at the start of each day (controllers keep state)."""

    def reset(self) -> None: ...

    def __call__(self, obs: np.ndarray) -> IntArray: ...


def interval_of(obs: np.ndarray, intervals_per_day: int) -> int:
    """The interval of the day from the hour features of an observation batch."""
    angle = np.arctan2(float(obs[0, _SIN]), float(obs[0, _COS]))
    hour = (angle * 24.0 / (2.0 * np.pi)) % 24.0
    return int(np.floor(hour * intervals_per_day / 24.0)) % intervals_per_day


class ReferencePlanner:
    """The state-aware reference: request-aware argmax E[revenue] − λ_t·E[cost], λ_t planned with foresight (module docstring).

    utilisation_target: u*, the utilisation of the interval budget the plan aims at.
    request_aware=False replaces Q(a | H, e) by its population mean (an ablation: what the features are worth).
    anticipate=False forecasts this interval's traffic by last interval's reading (an ablation: what
    foresight of the daily curve is worth).
    """

    def __init__(
        self,
        config: AllocateConfig,
        utilisation_target: float,
        *,
        planning_requests: int = 256,
        planning_seed: int = 10_007,
        traffic_grid_points: int = 28,
        request_aware: bool = True,
        anticipate: bool = True,
    ) -> None:
        if utilisation_target <= 0:
            raise ValueError(f"ReferencePlanner.utilisation_target: must be > 0, got {utilisation_target}")
        if planning_requests < 8 or traffic_grid_points < 4:
            raise ValueError("ReferencePlanner: planning_requests must be >= 8 and traffic_grid_points >= 4")
        self.lam = float("nan")
        """λ_t of the last interval decided (for plots)."""
        self.config = config
        self.utilisation_target = utilisation_target
        self.request_aware = request_aware
        self.anticipate = anticipate
        self._profile = config.traffic_profile().astype(np.float64)
        plan = sample_requests(config, planning_requests, planning_seed)
        self._plan = plan
        q = quality_matrix(config, plan)
        self._mean_quality = q.mean(axis=0)
        self._plan_quality = q if request_aware else np.broadcast_to(self._mean_quality, q.shape)
        self._cost = cost_table(config)
        # λ(ℓ̂) and planned u(ℓ̂) on a log grid of forecast traffic.
        self._traffic_grid = np.exp(np.linspace(np.log(0.2), np.log(3.0), traffic_grid_points))
        table = [self._plan_interval(m, utilisation_target) for m in self._traffic_grid]
        self._lambda_grid = np.asarray([lam for lam, _ in table])
        self._utilisation_grid = np.asarray([u for _, u in table])

    def reset(self) -> None:
        """Nothing to reset: the plan is a function of the readings in the observation."""

    def _demand(self, revenue: FloatArray, cost: FloatArray, lam: float, traffic: float) -> float:
        choice = np.argmax(revenue - lam * cost[None, :], axis=1)
        return traffic * float(cost[choice].mean()) / self.config.budget_per_request

    def _plan_interval(self, traffic: float, target: float) -> tuple[float, float]:
        """(λ, planned utilisation) for an interval at forecast traffic ℓ̂ aiming at utilisation `target`."""
        cfg = self.config
        cost = self._cost * cfg.contention_factor(traffic)
        revenue = expected_revenue(cfg, self._plan, traffic, target, self._plan_quality)
        if self._demand(revenue, cost, 0.0, traffic) <= target:
            u = target
            for _ in range(8):  # the self-consistent utilisation of the unconstrained choice
                revenue = expected_revenue(cfg, self._plan, traffic, u, self._plan_quality)
                u = self._demand(revenue, cost, 0.0, traffic)
            return 0.0, u
        low, high = 0.0, 1.0
        while self._demand(revenue, cost, high, traffic) > target and high < 1e6:
            low, high = high, high * 4.0
        for _ in range(22):
            mid = 0.5 * (low + high)
            if self._demand(revenue, cost, mid, traffic) > target:
                low = mid
            else:
                high = mid
        return high, target

    def forecast_traffic(self, obs: np.ndarray) -> tuple[int, float]:
        """(interval, ℓ̂_t) from last interval's traffic reading and the AR(1) noise model."""
        per_day = self.config.intervals_per_day
        t = interval_of(obs, per_day)
        last = max(float(obs[0, _LOAD]), 1e-6)
        if not self.anticipate:
            return t, last
        noise = np.log(last / self._profile[(t - 1) % per_day])
        return t, float(self._profile[t] * np.exp(self.config.traffic_noise_persistence * noise))

    def __call__(self, obs: np.ndarray) -> IntArray:
        cfg = self.config
        _, traffic = self.forecast_traffic(obs)
        backlog = min(max(0.0, float(obs[0, _UTIL]) - cfg.capacity), cfg.max_backlog)
        # Carried work eats into this interval's budget: plan as if traffic were that much higher (approximation).
        own_share = max(self.utilisation_target - backlog, 1e-3) / self.utilisation_target
        planning_traffic = traffic / own_share
        log_grid = np.log(self._traffic_grid)
        lam = self.lam = float(np.interp(np.log(planning_traffic), log_grid, self._lambda_grid))
        utilisation = float(np.interp(np.log(planning_traffic), log_grid, self._utilisation_grid))
        requests = Requests.from_observation(obs)
        quality = quality_matrix(cfg, requests) if self.request_aware else self._mean_quality[None, :]
        quality = np.broadcast_to(quality, (requests.value.shape[0], self._cost.shape[0]))
        revenue = expected_revenue(cfg, requests, traffic, utilisation, quality)
        cost = self._cost * cfg.contention_factor(traffic)
        out: IntArray = ALL_ACTIONS[np.argmax(revenue - lam * cost[None, :], axis=1)]
        return out


def rule_quality_table(config: AllocateConfig, n: int = 2048, seed: int = 20_011) -> FloatArray:
    """Q̂(a): population mean of Q(a | H, e)·E[P_on_time] at mean traffic and a typical utilisation, (384,)."""
    q = quality_matrix(config, sample_requests(config, n, seed)).mean(axis=0)
    out: FloatArray = q * expected_on_time(config, 1.0, TYPICAL_UTILISATION)
    return out


@dataclass
class StaticRule:
    """One joint action for every request."""

    action: tuple[int, ...]

    def reset(self) -> None:
        pass

    def __call__(self, obs: np.ndarray) -> IntArray:
        return np.tile(np.asarray(self.action, np.int64), (obs.shape[0], 1))


@dataclass
class ValueCostRule:
    """argmax_a v_i·Q̂(a) − λ_t·C(a) with λ_t from one of three one-parameter schedules (module docstring).

    schedule "constant": λ_t = parameter. "proportional": λ_t = parameter·(last interval's traffic reading).
    "feedback": λ_t = λ_{t−1}·exp(gain·(u_{t−1} − parameter)), parameter the target utilisation.
    """

    quality: FloatArray
    cost: FloatArray
    schedule: str
    parameter: float
    gain: float = 3.0
    initial_lambda: float = 1.0
    lam: float = field(init=False, default=1.0)
    _first: bool = field(init=False, default=True)

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "proportional", "feedback"):
            raise ValueError(
                f"ValueCostRule.schedule: expected 'constant', 'proportional' or 'feedback', got {self.schedule!r}"
            )
        self.reset()

    def reset(self) -> None:
        self.lam = self.initial_lambda
        self._first = True

    def __call__(self, obs: np.ndarray) -> IntArray:
        if self.schedule == "constant":
            self.lam = self.parameter
        elif self.schedule == "proportional":
            self.lam = self.parameter * float(obs[0, _LOAD])
        elif not self._first:  # the first reading of the day is the neutral 0: keep the initial λ
            self.lam = float(np.clip(self.lam * np.exp(self.gain * (float(obs[0, _UTIL]) - self.parameter)), 1e-4, 1e4))
        self._first = False
        value = np.expm1(np.asarray(obs[:, _VALUE], np.float64) * 5.0)
        out: IntArray = ALL_ACTIONS[
            np.argmax(value[:, None] * self.quality[None, :] - self.lam * self.cost[None, :], axis=1)
        ]
        return out


# ---------------------------------------------------------------------------
# Running days with common random numbers
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DayRuns:
    """Per seed (day) and interval: mean revenue per request, traffic, utilisation; (n_seeds, intervals)."""

    revenue: FloatArray
    traffic: FloatArray
    utilisation: FloatArray
    compute: FloatArray
    """Mean compute units per request."""
    lam: FloatArray
    """λ_t the policy used (NaN for policies without one)."""

    @property
    def revenue_per_day(self) -> FloatArray:
        """Traffic-weighted mean revenue per request of each day, (n_seeds,)."""
        out: FloatArray = (self.revenue * self.traffic).sum(axis=1) / self.traffic.sum(axis=1)
        return out

    @property
    def over_budget_fraction(self) -> float:
        return float((self.utilisation > 1.0).mean())

    @property
    def mean_compute(self) -> float:
        return float((self.compute * self.traffic).sum() / self.traffic.sum())


def reset_if_stateful(policy_or_controller: Any) -> None:
    """Call `reset()` on a policy or λ controller that keeps state across a day (a feedback λ, an MPC's load
    history), before the day starts; stateless callables have none."""
    reset = getattr(policy_or_controller, "reset", None)
    if reset is not None:
        reset()


def run_days(
    policy: AllocatePolicy | Callable[[np.ndarray], Any], config: AllocateConfig, n: int, seeds: Sequence[int]
) -> DayRuns:
    """Run `policy` for one day per seed, N requests per interval; the same seed gives every policy the same draws."""
    rows: dict[str, list[list[float]]] = {k: [] for k in ("revenue", "traffic", "utilisation", "compute", "lam")}
    for seed in seeds:
        sim = BatchedAllocateSim(n, config, seed, autoreset=False)
        obs = sim.reset(seed)
        reset_if_stateful(policy)
        day: dict[str, list[float]] = {k: [] for k in rows}
        while True:
            obs, rewards, done, info = sim.step(policy(obs))
            day["lam"].append(float(getattr(policy, "lam", np.nan)))
            day["revenue"].append(float(rewards["revenue"].mean()))
            day["traffic"].append(info["load"])
            day["utilisation"].append(info["utilisation"])
            day["compute"].append(float(rewards["compute_cost"].mean()))
            if done.all():
                break
        for k in rows:
            rows[k].append(day[k])
    return DayRuns(**{k: np.asarray(v) for k, v in rows.items()})
