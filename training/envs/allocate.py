"""`allocate` — how much computation the cascade spends on each request.

Time runs in intervals (`intervals_per_day`, 15 minutes by default). Each
step is one interval: N requests arrive together (a sample of the interval's
traffic), each gets an allocation — retrieval channels on/off, pre-rank and
rank queue lengths, rank model tier — and earns revenue from the quality of
its final slate. What the interval's requests spend, scaled up by the
interval's traffic, is compared with the interval's compute budget.

Equations (docs/simulators.md):

* traffic          load(h) = normalised 1 + s·cos(2π(h − 14)/24) + P·exp(−(h − h_peak)²/(2·1.5²)),
                   mean 1 over the day, times per-interval noise
* slate quality    Q = recall^0.7 · (0.4 + 0.6·(1 − e^(−L_pre/s_pre))) · (0.3 + 0.7·(1 − e^(−L_rank/s_rank))) · acc_tier
                   recall = max(floor, 1 − Π_c (1 − r_c·on_c))
* cost             C = Σ_c cost_c·on_c + k_pre·L_pre + k_tier·L_rank, × log-normal measurement noise
* utilisation      u_t = load_t · mean_i C_i / budget_per_request
* overload (u > 1) a request is served in time with P = 1/u (the rest time out: no revenue),
                   and served slates lose quality × (1 − degradation·min(1, u − 1))
* revenue          value_i · Q_i · overload factors · log-normal noise
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv

from models.observations import allocate_observation
from models.problems import (
    ALLOCATE,
    ALLOCATE_AGENTS,
    ALLOCATE_QUEUE_LENGTHS_PRE_RANK,
    ALLOCATE_QUEUE_LENGTHS_RANK,
    MultiDiscreteAction,
)
from training.envs.world import N_GROUPS, BoolArray, EpisodeSeeds, FloatArray, IntArray, WorldConfig, observation_box

ACTION = cast(MultiDiscreteAction, ALLOCATE.action)
NVEC: tuple[int, ...] = ACTION.nvec
# Which components of the joint action each agent owns (spec order).
AGENT_COMPONENTS: dict[str, slice] = {"retrieval": slice(0, 3), "pre_rank": slice(3, 4), "rank": slice(4, 6)}


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
    """σ of the per-interval log-normal traffic noise."""
    value_median_cents: float = 2.0
    """Median request value in cents (log-normal)."""
    value_sigma: float = 1.0
    """σ of log request value."""
    value_group_factor: tuple[float, ...] = (0.6, 1.0, 1.8)
    """Request value multiplier per activity group (low, medium, high)."""
    channel_recall: tuple[float, float, float] = (0.55, 0.4, 0.25)
    """r_c: share of the good items each channel (collaborative, content, trending) finds."""
    recall_floor: float = 0.1
    """Recall of the fallback list when every channel is off."""
    pre_rank_scale: float = 250.0
    """s_pre: pre-rank queue length at which its quality term reaches 1 − 1/e."""
    rank_scale: float = 50.0
    """s_rank: rank queue length at which its quality term reaches 1 − 1/e."""
    tier_accuracy: tuple[float, float, float] = (0.7, 0.85, 0.95)
    """acc_tier: slate quality factor of the small, medium and large rank model."""
    channel_cost: tuple[float, float, float] = (0.08, 0.065, 0.04)
    """Compute units per request of each retrieval channel."""
    pre_rank_cost_per_item: float = 0.00065
    """k_pre: compute units per pre-ranked item."""
    rank_cost_per_item: tuple[float, float, float] = (0.002, 0.0045, 0.006)
    """k_tier: compute units per ranked item with the small, medium and large model."""
    cost_noise: float = 0.1
    """σ of the log-normal measurement noise on cost."""
    budget_per_request: float = ALLOCATE.constraints[0].threshold
    """Compute units per request the budget affords at mean traffic (the spec's constraint threshold)."""
    degradation: float = 0.3
    """Quality lost by served requests when the interval is 100 % or more over budget."""
    revenue_noise: float = 0.3
    """σ of the log-normal noise on revenue."""

    def __post_init__(self) -> None:
        if self.days < 1 or self.intervals_per_day < 1:
            raise ValueError(
                f"AllocateConfig: days and intervals_per_day must be >= 1, got {self.days}, {self.intervals_per_day}"
            )
        if len(self.value_group_factor) != N_GROUPS:
            raise ValueError(f"AllocateConfig.value_group_factor: expected {N_GROUPS} entries")
        if self.budget_per_request <= 0:
            raise ValueError(f"AllocateConfig.budget_per_request: must be > 0, got {self.budget_per_request}")
        if not 0.0 <= self.degradation <= 1.0:
            raise ValueError(f"AllocateConfig.degradation: must be in [0, 1], got {self.degradation}")
        if self.traffic_swing < 0 or self.evening_peak < 0 or self.traffic_swing >= 1:
            raise ValueError("AllocateConfig: traffic_swing must be in [0, 1), evening_peak >= 0")

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

    def slate_quality(self, actions: IntArray) -> FloatArray:
        """Q of joint actions (N, 6) → (N,)."""
        on = actions[:, :3].astype(np.float64)
        miss = np.prod(1.0 - np.asarray(self.channel_recall) * on, axis=1)
        recall = np.maximum(self.recall_floor, 1.0 - miss)
        pre = np.asarray(ALLOCATE_QUEUE_LENGTHS_PRE_RANK, dtype=np.float64)[actions[:, 3]]
        rank = np.asarray(ALLOCATE_QUEUE_LENGTHS_RANK, dtype=np.float64)[actions[:, 4]]
        quality = (
            recall**0.7
            * (0.4 + 0.6 * (1.0 - np.exp(-pre / self.pre_rank_scale)))
            * (0.3 + 0.7 * (1.0 - np.exp(-rank / self.rank_scale)))
            * np.asarray(self.tier_accuracy)[actions[:, 5]]
        )
        out: FloatArray = quality.astype(np.float32)
        return out

    def expected_cost(self, actions: IntArray) -> FloatArray:
        """Noise-free compute cost of joint actions (N, 6) → (N,): the cost table."""
        pre = np.asarray(ALLOCATE_QUEUE_LENGTHS_PRE_RANK, dtype=np.float64)[actions[:, 3]]
        rank = np.asarray(ALLOCATE_QUEUE_LENGTHS_RANK, dtype=np.float64)[actions[:, 4]]
        cost = (
            actions[:, :3] @ np.asarray(self.channel_cost)
            + self.pre_rank_cost_per_item * pre
            + np.asarray(self.rank_cost_per_item)[actions[:, 5]] * rank
        )
        out: FloatArray = cost.astype(np.float32)
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

    reset(seed) → obs (N, 8); step(actions (N, 6) ints) → (obs, rewards, done, info)
    with rewards = {"revenue": (N,), "compute_cost": (N,)} (main: "revenue").
    All rows share the clock, so `done` is all-True at the end of the episode.
    """

    spec = ALLOCATE

    def __init__(self, n: int, config: AllocateConfig | None = None, seed: int = 0, *, autoreset: bool = True) -> None:
        if n < 1:
            raise ValueError(f"BatchedAllocateSim: n must be >= 1, got {n}")
        self.n = n
        self.config = config or AllocateConfig()
        self.autoreset = autoreset
        self._seed = seed
        self.rng = np.random.default_rng(seed)
        self._profile = self.config.traffic_profile()
        self._horizon = self.config.days * self.config.intervals_per_day
        self.t = 0
        self.episode_over = False
        self.previous_utilisation = 0.0
        self._load = 1.0
        self._value: FloatArray = np.zeros(n, np.float32)
        self._group: IntArray = np.zeros(n, np.int64)
        self._user: IntArray = np.zeros(n, np.int64)

    def reset(self, seed: int | None = None) -> FloatArray:
        if seed is not None:
            self._seed = seed
        self.rng = np.random.default_rng(self._seed)
        self._start_episode()
        return self.observe()

    def _start_episode(self) -> None:
        self.t = 0
        self.episode_over = False
        # The controller starts from a neutral reading of last interval's utilisation.
        self.previous_utilisation = 0.0
        self._arrivals()

    @property
    def hour(self) -> float:
        per_day = self.config.intervals_per_day
        return float(((self.t % per_day) + 0.5) * 24.0 / per_day)

    def _arrivals(self) -> None:
        cfg = self.config
        per_day = cfg.intervals_per_day
        self._load = float(self._profile[self.t % per_day] * np.exp(cfg.traffic_noise * self.rng.standard_normal()))
        self._group = self.rng.choice(N_GROUPS, size=self.n, p=np.asarray(cfg.world.activity_group_probs))
        value = cfg.value_median_cents * np.exp(cfg.value_sigma * self.rng.standard_normal(self.n))
        self._value = (value * np.asarray(cfg.value_group_factor)[self._group]).astype(np.float32)
        self._user = self.rng.integers(0, cfg.user_population, size=self.n)

    def observe(self) -> FloatArray:
        """(N, 8). budget_utilisation is the previous interval's (the reading a controller has when requests arrive)."""
        n = self.n
        return allocate_observation(
            self._value,
            np.full(n, self._load, np.float32),
            np.full(n, self.previous_utilisation, np.float32),
            np.full(n, self.hour, np.float32),
            self._group,
        )

    def step(self, actions: Any) -> tuple[FloatArray, dict[str, FloatArray], BoolArray, dict[str, Any]]:
        if self.episode_over:
            raise RuntimeError("BatchedAllocateSim.step: the episode is over (autoreset=False); call reset()")
        a = validate_actions(actions, self.n)
        cfg, n = self.config, self.n
        cost = cfg.expected_cost(a) * np.exp(cfg.cost_noise * self.rng.standard_normal(n) - 0.5 * cfg.cost_noise**2)
        utilisation = self._load * float(cost.mean()) / cfg.budget_per_request
        over = max(0.0, utilisation - 1.0)
        served = self.rng.random(n) < min(1.0, 1.0 / max(utilisation, 1e-9))
        quality = cfg.slate_quality(a) * (1.0 - cfg.degradation * min(1.0, over))
        noise = np.exp(cfg.revenue_noise * self.rng.standard_normal(n) - 0.5 * cfg.revenue_noise**2)
        revenue = (self._value * quality * served * noise).astype(np.float32)
        rewards: dict[str, FloatArray] = {"revenue": revenue, "compute_cost": cost.astype(np.float32)}
        info: dict[str, Any] = {
            "signals": rewards,
            "interval": self.t,
            "hour": self.hour,
            "load": self._load,
            "utilisation": utilisation,
            "served": served,
            "request_value": self._value.copy(),
            "user_group": self._group.copy(),
            "user_id": self._user.copy(),
        }
        self.previous_utilisation = utilisation
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
    utilisation is that request's cost × load: noisier than the batched
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
