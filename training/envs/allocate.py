"""`allocate` — how much computation the cascade spends on each request.

Time runs in intervals (`intervals_per_day`, 15 minutes by default). Each
step is one interval: N requests arrive together (a sample of the interval's
traffic), each gets an allocation — retrieval channels on/off, pre-rank and
rank queue lengths, rank model tier — and earns revenue from the quality of
its final slate if it is answered in time. What the interval's requests
spend, scaled up by the interval's traffic, is compared with the interval's
compute budget.

Sources (docs/simulators.md has the equations and plots):

* MaRCA (JD, arXiv 2512.24325): diurnal traffic with an evening peak, a
  compute budget per interval that the revenue–cost multiplier λ must track,
  a cost that depends on the load it is measured at (AutoBucket load-tests
  each bucket at a fixed QPS), degradation under overload, the controller's
  utilisation reading one interval old.
* RecFlow (Kuaishou): multi-stage cascade logs with the request's context;
  which retrieval channel contributes the items that survive the cascade
  depends on the request (the user's history, the page it comes from).
* Queueing (Kingman's G/G/1 approximation, here its M/M/1 case): time in
  system T ~ Exp((1 − ρ)/s), so P(T > d) = exp(−(1 − ρ)·d/s) — late answers
  grow sharply as utilisation ρ of the hardware approaches 1.

Equations (interval t, request i; "ours" where a source gives no formula):

* traffic          ℓ_t = profile(t)·exp(z_t), profile(h) = normalised
                   1 + s·cos(2π(h − 14)/24) + P·exp(−(h − h_peak)²/(2·1.5²)) (mean 1 over the day);
                   z_t = φ·z_{t−1} + σ·√(1 − φ²)·ε_t (ours: AR(1) noise, so last interval's reading is informative)
* request          value v_i (log-normal × group factor), activity group g_i, history length
                   H_i (log-normal, median per group), entry point e_i ∈ {home_feed, related, push};
                   the N requests of an interval are a randomised quasi-Monte-Carlo sample of these
                   inputs (scrambled Sobol' points through the inverse CDFs; ours, see below)
* personalisation  p_i = H_i / (H_i + H_0)
* channel recall   r_collab = r_cf·p_i² (collaborative filtering needs history),
                   r_content = r_ct[e_i] (item-to-item pays off on the related page),
                   r_trend = r_tr[e_i] + r_cold·(1 − p_i)² (popular items serve cold users and push landings);
                   recall = max(floor, 1 − Π_c (1 − r_c·on_c))                                        (ours)
* slate quality    Q = recall^0.7 · (0.4 + 0.6·(1 − e^(−L_pre/s_pre))) · (0.3 + 0.7·(1 − e^(−L_rank/s_rank))) · acc
                   acc = acc_small + (acc_tier − acc_small)·(0.2 + 0.8·p_i) (a bigger model pays off with history; ours)
* cost             c_i = C(a_i)·(1 + κ·(ℓ_t − 1))·log-normal noise: the cost table C(a) measured at mean
                   traffic, inflated by contention when traffic is high (ours, after AutoBucket's fixed-load tests)
* utilisation      u_t = ℓ_t·mean_i c_i / b + B_{t−1}       (b: budget per request at mean traffic; B: backlog)
* hardware         ρ_t = u_t / K (K: capacity in budget units, above the budget: the budget is what the
                   operator pays for, K what the cluster can do before queues explode)
* backlog          B_t = min(max(0, u_t − K), B_max): work beyond capacity waits for the next interval
                   (and is answered late); the queue rejects beyond B_max (ours)
* on time          P_i = min(1, K/u_t)·(1 − exp(−(1 − min(ρ_t, ρ_max))·d/s_i)), s_i = c_i
                   (service time in units of a 1-unit request's; d: the deadline in those units)
* degradation      over capacity (ρ_t > 1) served slates lose quality × (1 − degradation·min(1, ρ_t − 1))
* revenue          v_i·Q_i·1[on time]·degradation·log-normal noise

The controller sees ℓ_{t−1} (system_load) and u_{t−1} (budget_utilisation),
never the current interval's: a λ that only follows last interval's reading
is late on the evening ramp.

The N requests stand for an interval of 10⁵–10⁶ real ones, whose mean cost at
a fixed λ hardly varies from interval to interval. With N i.i.d. requests
(N = 256) the sample's mean cost varied by a relative std of 0.04 — as much
as the traffic the controller cannot know (issue #16, docs/simulators.md).
So the requests' inputs (group, value, history, entry point) come from one
scrambled Sobol' point per request, and the log-normal cost noise from a
stratified sample (one draw per 1/N quantile slice, shuffled): every request
still has exactly the old marginal distribution (unbiased), the interval's
mean cost has almost no sample noise, and each request is still decided and
rewarded one by one. `stratified_arrivals=False` restores i.i.d. requests
(the world before that fix). DEPARTURE from the sources' setting, which is
silent on this: a simulation device for fidelity, ours.

Outcome draws (cost noise, lateness, revenue noise) come from a stream
separate from the arrivals, with the same number of draws whatever the
actions: two policies run with one seed see the same requests and the same
noise (common random numbers, paired comparisons).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from pettingzoo import ParallelEnv
from scipy.special import ndtri
from scipy.stats import qmc

from models.observations import allocate_observation
from models.problems import (
    ALLOCATE,
    ALLOCATE_AGENTS,
    ALLOCATE_DEFAULT_HISTORY_LENGTH,
    ALLOCATE_ENTRY_POINTS,
    ALLOCATE_QUEUE_LENGTHS_PRE_RANK,
    ALLOCATE_QUEUE_LENGTHS_RANK,
    MultiDiscreteAction,
)
from training.envs.world import N_GROUPS, BoolArray, EpisodeSeeds, FloatArray, IntArray, WorldConfig, observation_box

ACTION = cast(MultiDiscreteAction, ALLOCATE.action)
NVEC: tuple[int, ...] = ACTION.nvec
N_ENTRY_POINTS = len(ALLOCATE_ENTRY_POINTS)
# Which components of the joint action each agent owns (spec order).
AGENT_COMPONENTS: dict[str, slice] = {"retrieval": slice(0, 3), "pre_rank": slice(3, 4), "rank": slice(4, 6)}
Float64Array = npt.NDArray[np.float64]
SOBOL_BITS = 30
"""Resolution of the scrambled Sobol' points (scipy's default): points lie on a 2⁻³⁰ grid, read at cell midpoints."""


def sobol_uniforms(rng: np.random.Generator, n: int, dims: int) -> Float64Array:
    """n scrambled Sobol' points in (0, 1)^dims: each point uniform, the n together evenly spread.

    The first n points of a 2^m-point net (m = ⌈log₂ n⌉): a power of two keeps scipy's balance
    guarantee; for other n the points are still each uniform (Owen scrambling), just less even.
    Midpoints of the 2⁻³⁰ grid cells keep the inverse CDFs finite.
    """
    m = max(0, int(np.ceil(np.log2(n))))
    points = qmc.Sobol(d=dims, scramble=True, bits=SOBOL_BITS, rng=rng).random_base2(m)[:n]
    out: Float64Array = points + 0.5 * 2.0**-SOBOL_BITS
    return out


def stratified_normals(rng: np.random.Generator, n: int) -> Float64Array:
    """n standard normals, one from each 1/n quantile slice, in random order (each one still N(0, 1))."""
    out: Float64Array = ndtri((rng.permutation(n) + rng.random(n)) / n)
    return out


def categorical(uniforms: Float64Array, probs: tuple[float, ...]) -> IntArray:
    """Inverse CDF of a categorical distribution: index k where cumsum(probs)[k−1] ≤ u < cumsum(probs)[k]."""
    bounds = np.cumsum(probs)[:-1]
    out: IntArray = np.searchsorted(bounds, uniforms, side="right").astype(np.int64)
    return out


@dataclass(frozen=True)
class AllocateConfig:
    """Parameters of the `allocate` simulator."""

    world: WorldConfig = field(default_factory=WorldConfig)
    """The shared world (activity groups of the users behind the requests)."""
    days: int = 1
    """Days per episode."""
    intervals_per_day: int = 96
    """Budget intervals per day (96 = 15 minutes)."""
    traffic_swing: float = 0.45
    """s: amplitude of the daily traffic cycle (peak in the afternoon)."""
    evening_peak: float = 0.6
    """P: height of the evening peak on top of the cycle."""
    evening_peak_hour: float = 20.5
    """h_peak: hour of the evening peak."""
    user_population: int = 1_000_000
    """Requests come from users drawn uniformly from this many ids (for logs and A/B units)."""
    traffic_noise: float = 0.05
    """σ: stationary standard deviation of log traffic around the daily profile."""
    traffic_noise_persistence: float = 0.7
    """φ: AR(1) coefficient of the log-traffic noise from one interval to the next."""
    value_median_cents: float = 2.0
    """Median request value in cents (log-normal)."""
    value_sigma: float = 1.0
    """σ of log request value."""
    value_group_factor: tuple[float, ...] = (0.6, 1.0, 1.8)
    """Request value multiplier per activity group (low, medium, high)."""
    history_median: tuple[float, ...] = (15.0, 80.0, 300.0)
    """Median user history length (past interactions) per activity group."""
    history_sigma: float = 1.0
    """σ of log history length."""
    personalisation_half_history: float = 60.0
    """H_0: history length at which personalisation p reaches 1/2."""
    entry_point_probs: tuple[float, ...] = (0.6, 0.25, 0.15)
    """P(home_feed), P(related), P(push) of a request's entry point."""
    collaborative_recall: float = 0.85
    """r_cf: recall of the collaborative channel for a user with full personalisation (× p)."""
    content_recall: tuple[float, ...] = (0.08, 0.75, 0.08)
    """r_ct: recall of the content (item-to-item) channel per entry point."""
    trending_recall: tuple[float, ...] = (0.05, 0.05, 0.4)
    """r_tr: recall of the trending channel per entry point."""
    trending_cold_recall: float = 0.45
    """r_cold: extra recall of the trending channel for a user without history (× (1 − p))."""
    recall_floor: float = 0.1
    """Recall of the fallback list when every channel is off."""
    pre_rank_scale: float = 250.0
    """s_pre: pre-rank queue length at which its quality term reaches 1 − 1/e."""
    rank_scale: float = 50.0
    """s_rank: rank queue length at which its quality term reaches 1 − 1/e."""
    tier_accuracy: tuple[float, float, float] = (0.7, 0.85, 0.95)
    """acc_tier: slate quality factor of the small, medium and large rank model for a fully personalised user."""
    channel_cost: tuple[float, float, float] = (0.13, 0.09, 0.05)
    """Compute units per request of each retrieval channel (collaborative, content, trending)."""
    pre_rank_cost_per_item: float = 0.00065
    """k_pre: compute units per pre-ranked item."""
    rank_cost_per_item: tuple[float, float, float] = (0.002, 0.0045, 0.006)
    """k_tier: compute units per ranked item with the small, medium and large model."""
    contention: float = 0.15
    """κ: relative rise of a request's cost per unit of traffic above the mean."""
    cost_noise: float = 0.1
    """σ of the log-normal measurement noise on cost."""
    budget_per_request: float = ALLOCATE.constraints[0].threshold
    """b: compute units per request the budget affords at mean traffic (the spec's constraint threshold)."""
    capacity: float = 1.25
    """K: hardware capacity in units of the interval budget (queues explode at u = K)."""
    max_backlog: float = 0.5
    """B_max: most work (budget units) carried into the next interval; the queue rejects the rest."""
    deadline: float = 30.0
    """d: answer deadline in service times of a 1-unit request at zero load."""
    max_queue_utilisation: float = 0.99
    """ρ_max: the queueing formula's utilisation is capped here (beyond, the min(1, K/u) share takes over)."""
    degradation: float = 0.3
    """Quality lost by served requests when the hardware is 100 % or more over capacity."""
    revenue_noise: float = 0.3
    """σ of the log-normal noise on revenue."""
    stratified_arrivals: bool = True
    """Requests' inputs and cost noise as stratified (randomised quasi-Monte-Carlo) samples, so an interval's
    mean cost has almost no sample noise, as in a real interval of 10⁵–10⁶ requests; False: i.i.d. (the old world)."""

    def __post_init__(self) -> None:
        if self.days < 1 or self.intervals_per_day < 1:
            raise ValueError(
                f"AllocateConfig: days and intervals_per_day must be >= 1, got {self.days}, {self.intervals_per_day}"
            )
        for name, size in (
            ("value_group_factor", N_GROUPS),
            ("history_median", N_GROUPS),
            ("entry_point_probs", N_ENTRY_POINTS),
            ("content_recall", N_ENTRY_POINTS),
            ("trending_recall", N_ENTRY_POINTS),
        ):
            if len(getattr(self, name)) != size:
                raise ValueError(f"AllocateConfig.{name}: expected {size} entries, got {getattr(self, name)}")
        if abs(sum(self.entry_point_probs) - 1.0) > 1e-6 or min(self.entry_point_probs) < 0:
            raise ValueError(
                f"AllocateConfig.entry_point_probs: must be non-negative and sum to 1, got {self.entry_point_probs}"
            )
        if self.budget_per_request <= 0:
            raise ValueError(f"AllocateConfig.budget_per_request: must be > 0, got {self.budget_per_request}")
        if not 0.0 <= self.degradation <= 1.0:
            raise ValueError(f"AllocateConfig.degradation: must be in [0, 1], got {self.degradation}")
        if self.traffic_swing < 0 or self.evening_peak < 0 or self.traffic_swing >= 1:
            raise ValueError("AllocateConfig: traffic_swing must be in [0, 1), evening_peak >= 0")
        if not 0.0 <= self.traffic_noise_persistence < 1.0:
            raise ValueError(
                f"AllocateConfig.traffic_noise_persistence: must be in [0, 1), got {self.traffic_noise_persistence}"
            )
        if self.capacity <= 0 or self.max_backlog < 0 or self.deadline <= 0:
            raise ValueError("AllocateConfig: capacity and deadline must be > 0, max_backlog >= 0")
        if not 0.0 < self.max_queue_utilisation < 1.0:
            raise ValueError(
                f"AllocateConfig.max_queue_utilisation: must be in (0, 1), got {self.max_queue_utilisation}"
            )
        if self.contention < 0 or self.personalisation_half_history <= 0:
            raise ValueError("AllocateConfig: contention must be >= 0 and personalisation_half_history > 0")

    def traffic_profile(self) -> FloatArray:
        """Mean traffic per interval relative to the day's mean, (intervals_per_day,)."""
        hour = (np.arange(self.intervals_per_day) + 0.5) * 24.0 / self.intervals_per_day
        load = (
            1.0
            + self.traffic_swing * np.cos(2.0 * np.pi * (hour - 14.0) / 24.0)
            + self.evening_peak * np.exp(-((hour - self.evening_peak_hour) ** 2) / (2.0 * 1.5**2))
        )
        out: FloatArray = (load / load.mean()).astype(np.float32)
        return out

    # -- the response functions (shared with allocate_oracle.py, so its expectations are exact) --
    def personalisation(self, history_length: Any) -> Float64Array:
        """p = H / (H + H_0), (N,)."""
        h = np.asarray(history_length, np.float64)
        out: Float64Array = h / (h + self.personalisation_half_history)
        return out

    def channel_recall(self, history_length: Any, entry_point: Any) -> Float64Array:
        """r_c per request and channel (collaborative, content, trending), (N, 3)."""
        p = self.personalisation(history_length)
        e = np.asarray(entry_point, np.int64)
        out: Float64Array = np.stack(
            [
                self.collaborative_recall * p**2,
                np.asarray(self.content_recall)[e],
                np.asarray(self.trending_recall)[e] + self.trending_cold_recall * (1.0 - p) ** 2,
            ],
            axis=1,
        )
        return out

    def slate_quality(self, actions: IntArray, history_length: Any = None, entry_point: Any = None) -> FloatArray:
        """Q of joint actions (N, 6) for requests with the given features → (N,).

        Features default to the observation defaults of models/problems.py (a
        medium-history home-feed request) when not given.
        """
        n = actions.shape[0]
        h = np.full(n, ALLOCATE_DEFAULT_HISTORY_LENGTH) if history_length is None else np.asarray(history_length)
        e = np.zeros(n, np.int64) if entry_point is None else np.asarray(entry_point, np.int64)
        on = actions[:, :3].astype(np.float64)
        miss = np.prod(1.0 - self.channel_recall(h, e) * on, axis=1)
        recall = np.maximum(self.recall_floor, 1.0 - miss)
        pre = np.asarray(ALLOCATE_QUEUE_LENGTHS_PRE_RANK, dtype=np.float64)[actions[:, 3]]
        rank = np.asarray(ALLOCATE_QUEUE_LENGTHS_RANK, dtype=np.float64)[actions[:, 4]]
        quality = (
            recall**0.7
            * (0.4 + 0.6 * (1.0 - np.exp(-pre / self.pre_rank_scale)))
            * (0.3 + 0.7 * (1.0 - np.exp(-rank / self.rank_scale)))
            * self.model_accuracy(actions[:, 5], h)
        )
        out: FloatArray = quality.astype(np.float32)
        return out

    def model_accuracy(self, tier: Any, history_length: Any) -> Float64Array:
        """acc_small + (acc_tier − acc_small)·(0.2 + 0.8·p), (N,) for tiers (N,) (or (N, k) with history (N, 1))."""
        acc = np.asarray(self.tier_accuracy, np.float64)
        p = self.personalisation(history_length)
        out: Float64Array = acc[0] + (acc[np.asarray(tier)] - acc[0]) * (0.2 + 0.8 * p)
        return out

    def expected_cost(self, actions: IntArray) -> FloatArray:
        """Noise-free compute cost at mean traffic of joint actions (N, 6) → (N,): the cost table C(a)."""
        pre = np.asarray(ALLOCATE_QUEUE_LENGTHS_PRE_RANK, dtype=np.float64)[actions[:, 3]]
        rank = np.asarray(ALLOCATE_QUEUE_LENGTHS_RANK, dtype=np.float64)[actions[:, 4]]
        cost = (
            actions[:, :3] @ np.asarray(self.channel_cost)
            + self.pre_rank_cost_per_item * pre
            + np.asarray(self.rank_cost_per_item)[actions[:, 5]] * rank
        )
        out: FloatArray = cost.astype(np.float32)
        return out

    def contention_factor(self, traffic: float) -> float:
        """1 + κ·(ℓ − 1): how much more a request costs at traffic ℓ than at mean traffic (≥ 0)."""
        return max(0.0, 1.0 + self.contention * (traffic - 1.0))

    def on_time_probability(self, cost: Any, utilisation: float) -> Any:
        """P(answered before the deadline) of requests costing `cost` in an interval at utilisation u (budget units)."""
        rho = utilisation / self.capacity
        served_share = min(1.0, self.capacity / max(utilisation, 1e-9))
        headroom = 1.0 - min(rho, self.max_queue_utilisation)
        service = np.maximum(np.asarray(cost, np.float64), 1e-6)
        return served_share * (1.0 - np.exp(-headroom * self.deadline / service))

    def degradation_factor(self, utilisation: float) -> float:
        """Quality kept by served slates at utilisation u: 1 − degradation·min(1, ρ − 1) over capacity."""
        over = max(0.0, utilisation / self.capacity - 1.0)
        return 1.0 - self.degradation * min(1.0, over)


def cost_noise_factors(config: AllocateConfig, rng: np.random.Generator, n: int) -> Float64Array:
    """Log-normal cost noise of n requests, mean 1: stratified when `config.stratified_arrivals` (module docstring)."""
    z = stratified_normals(rng, n) if config.stratified_arrivals else rng.standard_normal(n)
    out: Float64Array = np.exp(config.cost_noise * z - 0.5 * config.cost_noise**2)
    return out


def validate_actions(actions: Any, n: int) -> IntArray:
    """(N, 6) integer actions within the spec's nvec, or a ValueError naming the component."""
    a = np.asarray(actions)
    if a.shape != (n, len(NVEC)):
        raise ValueError(
            f"allocate actions: expected shape ({n}, {len(NVEC)}) with components {ACTION.names}, got {a.shape}"
        )
    if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
        raise ValueError("allocate actions: expected whole numbers")
    a = a.astype(np.int64)
    for i, (name, k) in enumerate(zip(ACTION.names, NVEC, strict=True)):
        if a[:, i].min() < 0 or a[:, i].max() >= k:
            raise ValueError(f"allocate actions: component {name!r} must be in 0..{k - 1}, got {np.unique(a[:, i])}")
    return a


def join_agent_actions(actions: dict[str, Any]) -> IntArray:
    """{agent: (N, k) or (N,)} multi-view actions → joint (N, 6), spec order."""
    missing = [a for a in ALLOCATE_AGENTS if a not in actions]
    if missing:
        raise ValueError(f"allocate actions: missing agents {missing}; expected {ALLOCATE_AGENTS}")
    parts = []
    for agent in ALLOCATE_AGENTS:
        width = AGENT_COMPONENTS[agent].stop - AGENT_COMPONENTS[agent].start
        parts.append(np.asarray(actions[agent]).reshape(-1, width))
    return np.concatenate(parts, axis=1).astype(np.int64)


class BatchedAllocateSim:
    """N requests per interval of the `allocate` problem, stepped one interval at a time.

    reset(seed) → obs (N, 12); step(actions (N, 6) ints) → (obs, rewards, done, info)
    with rewards = {"revenue": (N,), "compute_cost": (N,)} (main: "revenue").
    All rows share the clock, so `done` is all-True at the end of the episode.

    Public state of the current interval (what a request carries, read by
    pipelines/traffic.py and the oracle): `request_value`, `user_group`,
    `history_length`, `entry_point`, `user_id` (N,); `observed_load` and
    `previous_utilisation` (the lagged readings the observation shows);
    `traffic` and `backlog` (hidden: the current interval's traffic, the work
    carried in from the last interval).
    """

    spec = ALLOCATE

    def __init__(self, n: int, config: AllocateConfig | None = None, seed: int = 0, *, autoreset: bool = True) -> None:
        if n < 1:
            raise ValueError(f"BatchedAllocateSim: n must be >= 1, got {n}")
        self.n = n
        self.config = config or AllocateConfig()
        self.autoreset = autoreset
        self._seed = seed
        self._profile = self.config.traffic_profile()
        self._horizon = self.config.days * self.config.intervals_per_day
        self.t = 0
        self.episode_over = False
        self.previous_utilisation = 0.0
        self.observed_load = 1.0
        self.traffic = 1.0
        self.backlog = 0.0
        self._log_noise = 0.0
        self.request_value: FloatArray = np.zeros(n, np.float32)
        self.user_group: IntArray = np.zeros(n, np.int64)
        self.history_length: FloatArray = np.zeros(n, np.float32)
        self.entry_point: IntArray = np.zeros(n, np.int64)
        self.user_id: IntArray = np.zeros(n, np.int64)
        self._seed_streams(seed)

    def _seed_streams(self, seed: int) -> None:
        # Two streams: arrivals (traffic, requests) and outcomes (cost, lateness, revenue noise).
        self._arrival_rng = np.random.default_rng([seed, 0])
        self._outcome_rng = np.random.default_rng([seed, 1])

    def reset(self, seed: int | None = None) -> FloatArray:
        if seed is not None:
            self._seed = seed
        self._seed_streams(self._seed)
        self._start_episode()
        return self.observe()

    def _start_episode(self) -> None:
        cfg = self.config
        self.t = 0
        self.episode_over = False
        self.previous_utilisation = 0.0  # a neutral reading: nothing was spent before the episode
        self.backlog = 0.0
        # Last night's final interval, with the noise drawn from its stationary distribution.
        self._log_noise = float(cfg.traffic_noise * self._arrival_rng.standard_normal())
        self.observed_load = float(self._profile[-1] * np.exp(self._log_noise))
        self._arrivals()

    @property
    def hour(self) -> float:
        per_day = self.config.intervals_per_day
        return float(((self.t % per_day) + 0.5) * 24.0 / per_day)

    def _arrivals(self) -> None:
        cfg, rng, n = self.config, self._arrival_rng, self.n
        phi = cfg.traffic_noise_persistence
        self._log_noise = phi * self._log_noise + cfg.traffic_noise * np.sqrt(1.0 - phi**2) * rng.standard_normal()
        self.traffic = float(self._profile[self.t % cfg.intervals_per_day] * np.exp(self._log_noise))
        if cfg.stratified_arrivals:
            # One Sobol' point per request: (group, log value, log history, entry point) through inverse CDFs.
            u = sobol_uniforms(rng, n, 4)
            self.user_group = categorical(u[:, 0], cfg.world.activity_group_probs)
            value_z, history_z = ndtri(u[:, 1]), ndtri(u[:, 2])
            self.entry_point = categorical(u[:, 3], cfg.entry_point_probs)
        else:
            self.user_group = rng.choice(N_GROUPS, size=n, p=np.asarray(cfg.world.activity_group_probs))
            value_z = rng.standard_normal(n)
            history_z = rng.standard_normal(n)
        value = cfg.value_median_cents * np.exp(cfg.value_sigma * value_z)
        self.request_value = (value * np.asarray(cfg.value_group_factor)[self.user_group]).astype(np.float32)
        history = np.asarray(cfg.history_median)[self.user_group] * np.exp(cfg.history_sigma * history_z)
        self.history_length = np.floor(history).astype(np.float32)
        if not cfg.stratified_arrivals:
            self.entry_point = rng.choice(N_ENTRY_POINTS, size=n, p=np.asarray(cfg.entry_point_probs))
        self.user_id = rng.integers(0, cfg.user_population, size=n)

    def observe(self) -> FloatArray:
        """(N, 12). system_load and budget_utilisation are the previous interval's (what a controller has)."""
        n = self.n
        return allocate_observation(
            self.request_value,
            np.full(n, self.observed_load, np.float32),
            np.full(n, self.previous_utilisation, np.float32),
            np.full(n, self.hour, np.float32),
            self.user_group,
            self.history_length,
            self.entry_point,
        )

    def step(self, actions: Any) -> tuple[FloatArray, dict[str, FloatArray], BoolArray, dict[str, Any]]:
        if self.episode_over:
            raise RuntimeError("BatchedAllocateSim.step: the episode is over (autoreset=False); call reset()")
        a = validate_actions(actions, self.n)
        cfg, n, rng = self.config, self.n, self._outcome_rng
        cost_noise = cost_noise_factors(cfg, rng, n)
        lateness_draw = rng.random(n)
        revenue_noise = np.exp(cfg.revenue_noise * rng.standard_normal(n) - 0.5 * cfg.revenue_noise**2)

        cost = cfg.expected_cost(a) * cfg.contention_factor(self.traffic) * cost_noise
        backlog_in = self.backlog
        utilisation = self.traffic * float(cost.mean()) / cfg.budget_per_request + backlog_in
        on_time = lateness_draw < cfg.on_time_probability(cost, utilisation)
        quality = cfg.slate_quality(a, self.history_length, self.entry_point) * cfg.degradation_factor(utilisation)
        revenue = (self.request_value * quality * on_time * revenue_noise).astype(np.float32)
        self.backlog = min(max(0.0, utilisation - cfg.capacity), cfg.max_backlog)

        rewards: dict[str, FloatArray] = {"revenue": revenue, "compute_cost": cost.astype(np.float32)}
        info: dict[str, Any] = {
            "signals": rewards,
            "interval": self.t,
            "hour": self.hour,
            "load": self.traffic,
            "utilisation": utilisation,
            "backlog_in": backlog_in,
            "served": on_time,
            "request_value": self.request_value.copy(),
            "user_group": self.user_group.copy(),
            "history_length": self.history_length.copy(),
            "entry_point": self.entry_point.copy(),
            "user_id": self.user_id.copy(),
        }
        self.previous_utilisation = utilisation
        self.observed_load = self.traffic
        self.t += 1
        done_now = self.t >= self._horizon
        if done_now:
            if self.autoreset:
                info["final_observation"] = self.observe()
                self._start_episode()
            else:
                self.episode_over = True
                return self.observe(), rewards, np.ones(n, np.bool_), info
        else:
            self._arrivals()
        return self.observe(), rewards, np.full(n, done_now, np.bool_), info


class AllocateEnv(gym.Env[np.ndarray, np.ndarray]):
    """Single-agent `allocate`: one request per interval (N = 1), one day per episode.

    The one request stands for its interval's traffic, so the interval's
    utilisation is that request's cost × traffic: noisier than the batched
    simulator, the same in expectation.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, config: AllocateConfig | None = None, seed: int = 0) -> None:
        self.config = config or AllocateConfig()
        self.observation_space = observation_box(ALLOCATE.observation_size)
        self.action_space = gym.spaces.MultiDiscrete(np.asarray(NVEC))
        self._episode_seed = EpisodeSeeds(seed)
        self.sim = BatchedAllocateSim(1, self.config, seed, autoreset=False)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return self.sim.reset(self._episode_seed(seed))[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, rewards, done, info = self.sim.step(np.asarray(action).reshape(1, len(NVEC)))
        signals = {k: float(v[0]) for k, v in rewards.items()}
        out = {"signals": signals, "utilisation": info["utilisation"], "load": info["load"]}
        return obs[0], signals[ALLOCATE.main_signal], False, bool(done[0]), out


class AllocateParallelEnv(ParallelEnv[str, np.ndarray, Any]):  # type: ignore[misc]
    """Multi-agent `allocate`: agents retrieval, pre_rank, rank share the observation and the team reward (revenue)."""

    metadata: dict[str, Any] = {"render_modes": [], "name": "troupe_allocate_v1"}

    def __init__(self, config: AllocateConfig | None = None, seed: int = 0) -> None:
        self.config = config or AllocateConfig()
        self.possible_agents = list(ALLOCATE_AGENTS)
        self.agents: list[str] = []
        self._obs_space = observation_box(ALLOCATE.observation_size)
        self._act_space: dict[str, gym.Space[Any]] = {}
        for spec in ALLOCATE.agents:
            act = spec.action
            if act.kind == "discrete":
                self._act_space[spec.name] = gym.spaces.Discrete(act.n)
            else:
                self._act_space[spec.name] = gym.spaces.MultiDiscrete(np.asarray(act.nvec))  # type: ignore[union-attr]
        self._episode_seed = EpisodeSeeds(seed)
        self.sim = BatchedAllocateSim(1, self.config, seed, autoreset=False)

    def observation_space(self, agent: str) -> gym.spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> gym.Space[Any]:
        return self._act_space[agent]

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        obs = self.sim.reset(self._episode_seed(seed))[0]
        self.agents = list(self.possible_agents)
        return {a: obs for a in self.agents}, {a: {} for a in self.agents}

    def step(
        self, actions: dict[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, bool], dict[str, bool], dict[str, dict[str, Any]]]:
        obs, rewards, done, info = self.sim.step(join_agent_actions(actions))
        signals = {k: float(v[0]) for k, v in rewards.items()}
        agents = self.agents
        truncated = bool(done[0])
        out = (
            {a: obs[0] for a in agents},
            dict.fromkeys(agents, signals[ALLOCATE.main_signal]),
            dict.fromkeys(agents, False),
            dict.fromkeys(agents, truncated),
            {a: {"signals": signals, "utilisation": info["utilisation"]} for a in agents},
        )
        if truncated:
            self.agents = []
        return out
