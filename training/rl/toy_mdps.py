"""Small batched environments whose optimum is known exactly — for off-policy unit tests and benchmarks.

All are torch-batched ("vector") environments over N parallel copies with one
small protocol (`VectorEnv`): `reset()` → observations (N, O); `step(action)`
→ `Step(next_obs, reward, terminated, truncated, obs)` where `next_obs` is the
true s' of the transition and `obs` the observation to act on next (equal to
`next_obs` except in envs that ended and were reset automatically).

* `TabularMDP` + `random_mdp` + `TabularMDPEnv` — random finite MDPs (one-hot
  states); Q* by value iteration, V^π of any deterministic policy by solving
  the Bellman equations. Episodes are truncated (never terminated) after
  `horizon` steps and restart in a uniformly random state, so Q* of the
  infinite-horizon discounted MDP is the target. A multi-discrete action
  (sizes (a_1, …, a_N)) indexes the joint action in mixed radix
  (`training.rl.discrete.components_to_joint`).
* `QuadraticBanditEnv` — context s ~ U[−1, 1]^d, action a ∈ [−1, 1]^k,
  reward −‖a − a*(s)‖² (+ noise), a*(s) = 0.8 tanh(W s); one-step episodes.
* `ScalarLQREnv` — discounted linear-quadratic regulator per dimension:
  s' = s + a, r = −(s² + ρ a²), a ∈ [−1, 1]^d, s_0 ~ U[−1, 1]^d. Optimum
  a = −k s with P = 1 + γP − γ²P² / (ρ + γP) (discounted Riccati, scalar) and
  k = γP / (ρ + γP); V*(s) = −P s². Bootstraps over many steps, so critic
  overestimation matters (what TD3's clipped double Q addresses).
* `MemoryEnv` — a cue c ∈ {0…C−1} shown only at t = 0 (one-hot), then zeros;
  the last of T steps pays 1 if the action equals c. Observations carry the
  normalised time t/(T−1). A recurrent policy can score 1; any feed-forward
  policy at most 1/C.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor


class Step(NamedTuple):
    next_obs: Tensor
    reward: Tensor
    terminated: Tensor
    truncated: Tensor
    obs: Tensor


class VectorEnv(Protocol):
    num_envs: int
    obs_size: int

    def reset(self) -> Tensor: ...

    def step(self, action: Tensor) -> Step: ...


# ---------------------------------------------------------------- tabular MDPs


@dataclass(frozen=True)
class TabularMDP:
    """transitions P (S, A, S) rows summing to 1, rewards R (S, A), discount γ; A = Π action_sizes."""

    transitions: np.ndarray
    rewards: np.ndarray
    gamma: float
    action_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        s, a, s2 = self.transitions.shape
        if s != s2 or self.rewards.shape != (s, a):
            raise ValueError(
                f"TabularMDP: transitions (S, A, S) and rewards (S, A) expected, got "
                f"{self.transitions.shape} and {self.rewards.shape}"
            )
        if not np.allclose(self.transitions.sum(-1), 1.0):
            raise ValueError("TabularMDP: every transitions[s, a] row must sum to 1")
        if int(np.prod(self.action_sizes)) != a:
            raise ValueError(f"TabularMDP: action_sizes {self.action_sizes} must multiply to A = {a}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"TabularMDP: gamma must be in [0, 1), got {self.gamma}")

    @property
    def num_states(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_actions(self) -> int:
        return int(self.rewards.shape[1])

    def optimal_q(self, tol: float = 1e-10) -> np.ndarray:
        """Q* (S, A) by value iteration to sup-norm change < tol."""
        q = np.zeros_like(self.rewards)
        while True:
            new = self.rewards + self.gamma * self.transitions @ q.max(axis=1)
            if np.max(np.abs(new - q)) < tol:
                return new
            q = new

    def policy_q(self, policy: np.ndarray) -> np.ndarray:
        """Q^π (S, A) of a deterministic policy (S,) of joint action indices, by a linear solve."""
        s = np.arange(self.num_states)
        p_pi = self.transitions[s, policy]  # (S, S)
        v = np.linalg.solve(np.eye(self.num_states) - self.gamma * p_pi, self.rewards[s, policy])
        return self.rewards + self.gamma * self.transitions @ v


def random_mdp(
    num_states: int, action_sizes: Sequence[int], gamma: float, seed: int, concentration: float = 0.5
) -> TabularMDP:
    """A random MDP: P(·|s, a) ~ Dirichlet(concentration), R(s, a) ~ U[0, 1]."""
    rng = np.random.default_rng(seed)
    num_actions = int(np.prod(action_sizes))
    p = rng.dirichlet(np.full(num_states, concentration), size=(num_states, num_actions))
    r = rng.uniform(0.0, 1.0, size=(num_states, num_actions))
    return TabularMDP(p, r, gamma, tuple(int(a) for a in action_sizes))


class TabularMDPEnv:
    """N copies of a TabularMDP; one-hot observations; truncation after `horizon` steps, uniform restarts.

    `step` takes joint indices (N,) or components (N, len(action_sizes)).
    """

    def __init__(self, mdp: TabularMDP, num_envs: int = 16, horizon: int = 20, seed: int = 0) -> None:
        self.mdp, self.num_envs, self.horizon = mdp, num_envs, horizon
        self.obs_size = mdp.num_states
        self._rng = np.random.default_rng(seed)
        self._cdf = np.cumsum(mdp.transitions, axis=-1)
        self._state = np.zeros(num_envs, dtype=np.int64)
        self._t = np.zeros(num_envs, dtype=np.int64)

    def _one_hot(self, states: np.ndarray) -> Tensor:
        return torch.from_numpy(np.eye(self.obs_size, dtype=np.float32)[states])

    def reset(self) -> Tensor:
        self._state = self._rng.integers(0, self.mdp.num_states, self.num_envs)
        self._t[:] = 0
        return self._one_hot(self._state)

    def step(self, action: Tensor) -> Step:
        a = action.cpu().numpy().astype(np.int64)
        if a.ndim == 2:
            joint = np.zeros(a.shape[0], dtype=np.int64)
            for i, size in enumerate(self.mdp.action_sizes):
                joint = joint * size + a[:, i]
            a = joint
        reward = self.mdp.rewards[self._state, a]
        u = self._rng.random(self.num_envs)[:, None]
        nxt = np.minimum((u > self._cdf[self._state, a]).sum(-1), self.mdp.num_states - 1)
        self._t += 1
        truncated = self._t >= self.horizon
        next_obs = self._one_hot(nxt)
        self._state = np.where(truncated, self._rng.integers(0, self.mdp.num_states, self.num_envs), nxt)
        self._t[truncated] = 0
        return Step(
            next_obs,
            torch.from_numpy(reward.astype(np.float32)),
            torch.zeros(self.num_envs, dtype=torch.bool),
            torch.from_numpy(truncated),
            self._one_hot(self._state),
        )


# ---------------------------------------------------------------- continuous control


class QuadraticBanditEnv:
    """One-step contextual bandit: reward −‖a − a*(s)‖² + noise, a*(s) = 0.8 tanh(W s), a ∈ [−1, 1]^k."""

    def __init__(
        self, obs_size: int = 3, action_size: int = 2, num_envs: int = 16, noise: float = 0.1, seed: int = 0
    ) -> None:
        self.num_envs, self.obs_size, self.action_size, self.noise = num_envs, obs_size, action_size, noise
        self.low, self.high = -1.0, 1.0
        self._generator = torch.Generator().manual_seed(seed)
        self.weights = torch.randn(obs_size, action_size, generator=torch.Generator().manual_seed(10_000 + seed))
        self._obs = torch.zeros(num_envs, obs_size)

    def optimal_action(self, obs: Tensor) -> Tensor:
        return 0.8 * torch.tanh(obs @ self.weights)

    def _draw(self) -> Tensor:
        return torch.rand(self.num_envs, self.obs_size, generator=self._generator) * 2.0 - 1.0

    def reset(self) -> Tensor:
        self._obs = self._draw()
        return self._obs

    def step(self, action: Tensor) -> Step:
        reward = -((action - self.optimal_action(self._obs)) ** 2).sum(-1)
        reward = reward + self.noise * torch.randn(self.num_envs, generator=self._generator)
        done = torch.ones(self.num_envs, dtype=torch.bool)
        next_obs = self._obs  # terminal: never bootstrapped
        self._obs = self._draw()
        return Step(next_obs, reward, done, torch.zeros_like(done), self._obs)


class ScalarLQREnv:
    """d independent discounted scalar LQRs s' = s + a, r = −Σ (s² + ρ a²), truncated after `horizon` steps."""

    def __init__(
        self,
        dims: int = 1,
        control_cost: float = 1.0,
        gamma: float = 0.9,
        num_envs: int = 16,
        horizon: int = 20,
        seed: int = 0,
    ) -> None:
        if control_cost <= 0:
            raise ValueError(f"ScalarLQREnv: control_cost must be > 0, got {control_cost}")
        self.num_envs, self.obs_size, self.action_size = num_envs, dims, dims
        self.control_cost, self.gamma, self.horizon = control_cost, gamma, horizon
        self.low, self.high = -1.0, 1.0
        self._generator = torch.Generator().manual_seed(seed)
        self._state = torch.zeros(num_envs, dims)
        self._t = torch.zeros(num_envs, dtype=torch.long)

    def riccati(self) -> tuple[float, float]:
        """(P, k): V*(s) = −P s² per dimension, optimal action a = −k s."""
        rho, g = self.control_cost, self.gamma
        p = 1.0
        for _ in range(10_000):
            p_next = 1.0 + g * p - g * g * p * p / (rho + g * p)
            if abs(p_next - p) < 1e-13:
                break
            p = p_next
        return p, g * p / (rho + g * p)

    def optimal_action(self, obs: Tensor) -> Tensor:
        return -self.riccati()[1] * obs

    def _draw(self, n: int) -> Tensor:
        return torch.rand(n, self.obs_size, generator=self._generator) * 2.0 - 1.0

    def reset(self) -> Tensor:
        self._state = self._draw(self.num_envs)
        self._t.zero_()
        return self._state.clone()

    def step(self, action: Tensor) -> Step:
        a = torch.clamp(action, self.low, self.high)
        reward = -(self._state**2 + self.control_cost * a**2).sum(-1)
        nxt = torch.clamp(self._state + a, -2.0, 2.0)
        self._t += 1
        truncated = self._t >= self.horizon
        self._state = torch.where(truncated.unsqueeze(-1), self._draw(self.num_envs), nxt)
        self._t[truncated] = 0
        return Step(nxt, reward, torch.zeros_like(truncated), truncated, self._state.clone())

    def discounted_return(self, policy: object, starts: Tensor, steps: int = 200) -> Tensor:
        """Exact discounted return of a deterministic policy (callable obs → action) from each start (B,)."""
        s, total, discount = starts.clone(), torch.zeros(starts.shape[0]), 1.0
        for _ in range(steps):
            with torch.no_grad():
                a = torch.clamp(policy(s), self.low, self.high)  # type: ignore[operator]
            total += discount * -(s**2 + self.control_cost * a**2).sum(-1)
            s = torch.clamp(s + a, -2.0, 2.0)
            discount *= self.gamma
        return total


# ---------------------------------------------------------------- memory


class MemoryEnv:
    """Remember a cue shown at t = 0 until the last step t = T−1; C cues, C actions; reward 1 for the right one."""

    def __init__(self, num_cues: int = 2, length: int = 6, num_envs: int = 16, seed: int = 0) -> None:
        if num_cues < 2 or length < 2:
            raise ValueError(f"MemoryEnv: need num_cues ≥ 2 and length ≥ 2, got {num_cues}, {length}")
        self.num_cues, self.length, self.num_envs = num_cues, length, num_envs
        self.obs_size = num_cues + 1
        self.num_actions = num_cues
        self._generator = torch.Generator().manual_seed(seed)
        self._cue = torch.zeros(num_envs, dtype=torch.long)
        self._t = torch.zeros(num_envs, dtype=torch.long)

    def _observe(self) -> Tensor:
        obs = torch.zeros(self.num_envs, self.obs_size)
        first = self._t == 0
        obs[first, self._cue[first]] = 1.0
        obs[:, -1] = self._t.float() / (self.length - 1)
        return obs

    def reset(self) -> Tensor:
        self._cue = torch.randint(0, self.num_cues, (self.num_envs,), generator=self._generator)
        self._t.zero_()
        return self._observe()

    def step(self, action: Tensor) -> Step:
        last = self._t == self.length - 1
        reward = (last & (action.reshape(-1) == self._cue)).float()
        self._t += 1
        next_obs = self._observe()  # at the end: an observation past the episode (never bootstrapped)
        fresh = torch.randint(0, self.num_cues, (self.num_envs,), generator=self._generator)
        self._cue = torch.where(last, fresh, self._cue)
        self._t[last] = 0
        return Step(next_obs, reward, last, torch.zeros_like(last), self._observe())
