"""Two small hand-built constrained environments whose optimum is known (tests, docs, CLI smoke runs).

Both follow the vector-reward convention: the scalar reward is the main
signal, `info["signals"]` holds every signal. Episodes last `horizon` steps
and end by truncation; observations are a context vector the rewards ignore,
so the optimal policy is the same in every state.

* `TradeoffBanditEnv` (continuous): action a ∈ [0, 1];
  main = a, safety = 1 − a (plus Gaussian noise). Constraint safety ≥ 0.4
  → constrained optimum a* = 0.6, main* = 0.6. Main-only drives a → 1 (safety 0).
* `TradeoffArmsEnv` (discrete): arms A, B, C with (main, safety) means
  (1, 0), (0.6, 0.6), (0, 1). Constraint safety ≥ 0.5 → the best stationary
  policy mixes A (1/6) and B (5/6): main* = 2/3; main-only picks A (safety 0).
* `TradeoffChoicesEnv` (multi-discrete): two components, the arm (as above)
  and a boost ∈ {off, on} that adds 0.2 to main and costs no safety. Same
  constraint → optimum: boost always on, arms mixed as above, main* = 2/3 + 0.2.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from models.problems import BoxAction, Constraint, DiscreteAction, MultiDiscreteAction
from training.rl.task import TaskSignal, TaskSpec

_ARMS = np.array([[1.0, 0.0], [0.6, 0.6], [0.0, 1.0]])


class _Base(gym.Env[np.ndarray, Any]):
    def __init__(self, horizon: int = 8, noise: float = 0.05) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.horizon, self.noise = horizon, noise
        self._t = 0

    def _obs(self) -> np.ndarray:
        return self.np_random.uniform(-1, 1, 3).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def _finish(self, main: float, safety: float) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._t += 1
        main += float(self.np_random.normal(0, self.noise))
        safety += float(self.np_random.normal(0, self.noise))
        return self._obs(), main, False, self._t >= self.horizon, {"signals": {"main": main, "safety": safety}}


class TradeoffBanditEnv(_Base):
    def __init__(self, horizon: int = 8, noise: float = 0.05) -> None:
        super().__init__(horizon, noise)
        self.action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], 0.0, 1.0))
        return self._finish(a, 1.0 - a)


class TradeoffArmsEnv(_Base):
    def __init__(self, horizon: int = 8, noise: float = 0.05) -> None:
        super().__init__(horizon, noise)
        self.action_space = gym.spaces.Discrete(3)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        main, safety = _ARMS[int(action)]
        return self._finish(float(main), float(safety))


class TradeoffChoicesEnv(_Base):
    BOOST = 0.2

    def __init__(self, horizon: int = 8, noise: float = 0.05) -> None:
        super().__init__(horizon, noise)
        self.action_space = gym.spaces.MultiDiscrete([3, 2])

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        arm, boost = (int(v) for v in np.asarray(action).reshape(-1)[:2])
        main, safety = _ARMS[arm]
        return self._finish(float(main) + self.BOOST * boost, float(safety))


def bandit_task(threshold: float = 0.4) -> TaskSpec:
    return TaskSpec(
        obs_size=3,
        action=BoxAction(size=1, low=0.0, high=1.0),
        signals=(TaskSignal("main", 0.5), TaskSignal("safety", 0.5)),
        constraints=(Constraint("safety", ">=", threshold),),
        name="tradeoff_bandit",
    )


def arms_task(threshold: float = 0.5) -> TaskSpec:
    return TaskSpec(
        obs_size=3,
        action=DiscreteAction(n=3),
        signals=(TaskSignal("main", 0.5), TaskSignal("safety", 0.5)),
        constraints=(Constraint("safety", ">=", threshold),),
        name="tradeoff_arms",
    )


def choices_task(threshold: float = 0.5) -> TaskSpec:
    return TaskSpec(
        obs_size=3,
        action=MultiDiscreteAction(nvec=(3, 2), names=("arm", "boost")),
        signals=(TaskSignal("main", 0.5), TaskSignal("safety", 0.5)),
        constraints=(Constraint("safety", ">=", threshold),),
        name="tradeoff_choices",
    )


class TradeoffTeamEnv:
    """PettingZoo ParallelEnv: agents "first" and "second" each choose a ∈ [0, 1] on their own observation;
    shared team reward main = mean(a), safety = 1 − mean(a). Constraint safety ≥ 0.4 → optimum mean(a) = 0.6."""

    metadata: dict[str, Any] = {"name": "tradeoff_team_v0"}

    def __init__(self, horizon: int = 8, noise: float = 0.05) -> None:
        self.possible_agents = ["first", "second"]
        self.agents: list[str] = []
        self.horizon, self.noise = horizon, noise
        self._rng = np.random.default_rng(0)
        self._t = 0

    def observation_space(self, agent: str) -> gym.spaces.Box:
        return gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

    def action_space(self, agent: str) -> gym.spaces.Box:
        return gym.spaces.Box(0.0, 1.0, (1,), np.float32)

    def _obs(self) -> dict[str, np.ndarray]:
        return {a: self._rng.uniform(-1, 1, 3).astype(np.float32) for a in self.possible_agents}

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._t = 0
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[Any, Any, Any, Any, Any]:
        a = float(np.mean([np.clip(np.asarray(actions[k]).reshape(-1)[0], 0, 1) for k in self.possible_agents]))
        self._t += 1
        main = a + float(self._rng.normal(0, self.noise))
        safety = 1.0 - a + float(self._rng.normal(0, self.noise))
        done = self._t >= self.horizon
        info = {"signals": {"main": main, "safety": safety}}
        obs = self._obs()
        if done:
            self.agents = []
        agents = self.possible_agents
        return (
            obs,
            dict.fromkeys(agents, main),
            dict.fromkeys(agents, False),
            dict.fromkeys(agents, done),
            {k: info for k in agents},
        )


def team_task(threshold: float = 0.4) -> TaskSpec:
    from training.rl.task import AgentSlice

    return TaskSpec(
        obs_size=6,
        action=BoxAction(size=2, low=0.0, high=1.0),
        signals=(TaskSignal("main", 0.5), TaskSignal("safety", 0.5)),
        constraints=(Constraint("safety", ">=", threshold),),
        agents=(AgentSlice("first", 3, 1), AgentSlice("second", 3, 1)),
        name="tradeoff_team",
    )
