"""A tiny custom Gymnasium env for the `troupe train --env` test (vector-reward convention).

Three arms with (reward, cost) = (1, 1), (0.5, 0.1), (0, 0); episodes of 4 steps, random
observations. Constraint used by the test: per-decision cost <= 0.3. Constrained optimum (by hand):
play arm 0 with probability 2/9 and arm 1 otherwise — cost exactly 0.3, reward 11/18 ≈ 0.611.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

ARMS = np.array([[1.0, 1.0], [0.5, 0.1], [0.0, 0.0]])  # (reward, cost) per arm


class BudgetArmsEnv(gym.Env[np.ndarray, int]):
    def __init__(self, horizon: int = 4) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.horizon = horizon
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward, cost = ARMS[int(action)]
        self._t += 1
        obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return obs, float(reward), False, self._t >= self.horizon, {"signals": {"reward": reward, "cost": cost}}
