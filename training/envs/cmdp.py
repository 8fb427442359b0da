"""Random tabular constrained MDPs whose answer is known exactly: generator, LP optimum, exact evaluation, env.

Used by `benchmarks/cmdp.py` and the constrained-RL tests: a learner trained on
`CMDPEnv` is scored against the constrained optimum found by linear programming,
with its policy evaluated exactly (no Monte Carlo noise in the score).

Everything is measured per decision, the way `models.problems.Constraint` states
thresholds: the value of a policy π for a signal r is the normalised discounted
return

    J_r(π) = (1 − γ) · E[Σ_t γ^t r(s_t, a_t)] = Σ_{s,a} d_π(s, a) r(s, a),

with d_π the normalised discounted occupancy measure (Σ d_π = 1). `CMDPEnv` ends
each episode after every step with probability 1 − γ (ours: the discount
becomes the episode length instead of a weight on rewards). Then the states an
agent visits follow d_π exactly, and the per-decision mean of a signal over
whole episodes — what the training loop measures and what a constraint bounds —
is J_r(π). So the learner's own discount should be (nearly) 1: `task_spec`
sets 0.999 by default (the task requires γ < 1) — or, better, the learner is
told the end is a truncation and discounts by γ itself (`CMDPPool(...,
random_end="truncate")`, what benchmarks/cmdp.py uses: same expectation, far
less variance in every value target).

Pieces, top to bottom:
* `TabularCMDP` and `random_cmdp(seed, ...)`: S ∈ [4, 10] states, A ∈ [2, 4]
  actions, γ ∈ [0.8, 0.95], one or two auxiliary signals with a ">=" threshold
  each, placed between the signal's value under the unconstrained optimum and
  its maximum, so that every constraint binds (its LP dual is positive).
* `solve_lp(cmdp)`: the occupancy-measure LP (Altman 1999, ch. 3)
      max_d Σ d·r_main  s.t.  Σ_a d(s', a) = (1 − γ) ρ0(s') + γ Σ_{s,a} P(s'|s,a) d(s,a),
                               Σ d·r_k ≥ threshold_k,  d ≥ 0,
  solved by `scipy.optimize.linprog` (HiGHS); its policy is π(a|s) ∝ d(s, a).
* `evaluate(cmdp, policy)`: J of any stochastic policy by solving the Bellman
  equations V = r_π + γ P_π V (one linear solve per signal).
* `CMDPEnv`: a Gymnasium env with a one-hot state observation, a discrete
  action and the vector-reward convention (scalar reward = main signal,
  `info["signals"]` = every signal); `task_spec(cmdp)` describes its signals
  and constraints as a `TaskSpec`. `CMDPPool` steps N copies at once in numpy
  (the training core's `EnvPool` protocol), for benchmarks.

Generator spec (ours): transition rows ~ Dirichlet(0.5) (a few likely
successors per state-action), ρ0 ~ Dirichlet(1), main reward ~ U(0, 1), and
each auxiliary reward = ½ (1 − main) + ½ U(0, 1), so the auxiliary signals
trade off against the main one. A constraint's threshold is
v_k + f_k (max_k − v_k) with f_k ~ U(0.25, 0.75), v_k its value under the
unconstrained LP optimum, max_k its maximum over all policies; a draw is kept
when the LP is feasible, every constraint's dual is > 1e-6 and the constrained
optimum is at least 1 % below the unconstrained one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from scipy.optimize import linprog

from models.problems import Constraint, DiscreteAction
from training.rl.data import PoolStep
from training.rl.task import TaskSignal, TaskSpec

MAIN_SIGNAL = "main"
STATES_RANGE = (4, 10)
ACTIONS_RANGE = (2, 4)
GAMMA_RANGE = (0.8, 0.95)


def aux_signal_name(k: int) -> str:
    """Name of the k-th auxiliary (constrained) signal: aux1, aux2, …"""
    return f"aux{k + 1}"


# ---------------------------------------------------------------------------
# The CMDP and its generator
# ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TabularCMDP:
    """A finite constrained MDP; every constraint is "aux_k's per-decision mean ≥ thresholds[k]"."""

    transitions: np.ndarray
    """P(s' | s, a), shape (S, A, S); rows sum to 1."""
    main_reward: np.ndarray
    """r_main(s, a), shape (S, A)."""
    aux_rewards: np.ndarray
    """r_k(s, a) of every auxiliary signal, shape (K, S, A)."""
    initial: np.ndarray
    """ρ0(s), shape (S,)."""
    gamma: float
    """γ: the discount of the values (and 1 − γ is the env's per-step end probability)."""
    thresholds: np.ndarray
    """Per-decision lower bound of each auxiliary signal, shape (K,)."""

    def __post_init__(self) -> None:
        p = self.transitions
        if p.ndim != 3 or p.shape[0] != p.shape[2]:
            raise ValueError(f"TabularCMDP.transitions: expected shape (S, A, S), got {p.shape}")
        n_states, n_actions = p.shape[:2]
        if not np.allclose(p.sum(-1), 1.0) or (p < 0).any():
            raise ValueError("TabularCMDP.transitions: every row P(·|s, a) must be a probability vector")
        if self.main_reward.shape != (n_states, n_actions):
            raise ValueError(
                f"TabularCMDP.main_reward: expected shape {(n_states, n_actions)}, got {self.main_reward.shape}"
            )
        if self.aux_rewards.ndim != 3 or self.aux_rewards.shape[1:] != (n_states, n_actions):
            raise ValueError(
                f"TabularCMDP.aux_rewards: expected shape (K, {n_states}, {n_actions}), got {self.aux_rewards.shape}"
            )
        if self.initial.shape != (n_states,) or not np.isclose(self.initial.sum(), 1.0) or (self.initial < 0).any():
            raise ValueError(f"TabularCMDP.initial: expected a probability vector of length {n_states}")
        if not 0.0 < self.gamma < 1.0:
            raise ValueError(f"TabularCMDP.gamma: must be in (0, 1), got {self.gamma}")
        if self.thresholds.shape != (self.n_constraints,):
            raise ValueError(
                f"TabularCMDP.thresholds: expected one per auxiliary signal ({self.n_constraints}), "
                f"got shape {self.thresholds.shape}"
            )

    @property
    def n_states(self) -> int:
        return int(self.transitions.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.transitions.shape[1])

    @property
    def n_constraints(self) -> int:
        return int(self.aux_rewards.shape[0])

    @property
    def signal_names(self) -> tuple[str, ...]:
        """Main first, then aux1, aux2, … (the order of `TaskSpec.signals`)."""
        return (MAIN_SIGNAL, *(aux_signal_name(k) for k in range(self.n_constraints)))

    def rewards(self) -> np.ndarray:
        """Every signal's reward table in `signal_names` order, shape (1 + K, S, A)."""
        return np.concatenate([self.main_reward[None], self.aux_rewards], axis=0)

    def with_thresholds(self, thresholds: np.ndarray) -> TabularCMDP:
        return TabularCMDP(
            self.transitions,
            self.main_reward,
            self.aux_rewards,
            self.initial,
            self.gamma,
            np.asarray(thresholds, float),
        )


def random_cmdp(
    seed: int,
    n_states: int | None = None,
    n_actions: int | None = None,
    gamma: float | None = None,
    n_constraints: int = 1,
    max_draws: int = 200,
) -> TabularCMDP:
    """A random CMDP whose every constraint binds (module docstring); sizes drawn from the ranges when None."""
    if n_constraints not in (1, 2):
        raise ValueError(f"random_cmdp: n_constraints must be 1 or 2, got {n_constraints}")
    rng = np.random.default_rng(seed)
    n_states = n_states if n_states is not None else int(rng.integers(STATES_RANGE[0], STATES_RANGE[1] + 1))
    n_actions = n_actions if n_actions is not None else int(rng.integers(ACTIONS_RANGE[0], ACTIONS_RANGE[1] + 1))
    gamma = gamma if gamma is not None else float(rng.uniform(*GAMMA_RANGE))
    if n_states < 1 or n_actions < 2:
        raise ValueError(f"random_cmdp: need n_states >= 1 and n_actions >= 2, got {n_states}, {n_actions}")
    for _ in range(max_draws):
        transitions = rng.dirichlet(np.full(n_states, 0.5), size=(n_states, n_actions))
        main = rng.uniform(0.0, 1.0, (n_states, n_actions))
        aux = 0.5 * (1.0 - main)[None] + 0.5 * rng.uniform(0.0, 1.0, (n_constraints, n_states, n_actions))
        initial = rng.dirichlet(np.ones(n_states))
        unconstrained = TabularCMDP(transitions, main, aux, initial, gamma, np.full(n_constraints, -np.inf))
        free = solve_lp(unconstrained, constrained=False)
        at_free = evaluate(unconstrained, free.policy)[1:]
        best = np.array([_max_signal(unconstrained, k) for k in range(n_constraints)])
        for _ in range(10):
            fractions = rng.uniform(0.25, 0.75, n_constraints)
            cmdp = unconstrained.with_thresholds(at_free + fractions * (best - at_free))
            solution = solve_lp(cmdp)
            binds = solution.feasible and bool((solution.duals > 1e-6).all())
            if binds and solution.main_value <= free.main_value * 0.99:
                return cmdp
    raise RuntimeError(f"random_cmdp(seed={seed}): no instance with binding constraints in {max_draws} draws")


# ---------------------------------------------------------------------------
# Exact answers: the LP optimum and exact policy evaluation
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LPSolution:
    feasible: bool
    policy: np.ndarray
    """π(a|s) ∝ d(s, a), shape (S, A); uniform where d(s, ·) = 0 (states the optimum never visits)."""
    occupancy: np.ndarray
    """d(s, a), shape (S, A); sums to 1."""
    main_value: float
    """J_main of the optimum (per decision)."""
    duals: np.ndarray
    """Lagrange multiplier of each constraint (≥ 0; > 0 where it binds), shape (K,)."""


def solve_lp(cmdp: TabularCMDP, constrained: bool = True) -> LPSolution:
    """The (constrained or unconstrained) optimum of `cmdp` by the occupancy-measure LP (module docstring)."""
    n_s, n_a = cmdp.n_states, cmdp.n_actions
    # Flow constraints, one row per s': Σ_a d(s', a) − γ Σ_{s,a} P(s'|s,a) d(s,a) = (1 − γ) ρ0(s').
    outflow = np.kron(np.eye(n_s), np.ones((1, n_a)))  # (S, S·A): picks d(s', ·)
    inflow = cmdp.transitions.reshape(n_s * n_a, n_s).T  # (S, S·A)
    a_eq = outflow - cmdp.gamma * inflow
    b_eq = (1.0 - cmdp.gamma) * cmdp.initial
    a_ub = b_ub = None
    if constrained and cmdp.n_constraints:
        # Σ d r_k ≥ t_k  ⇔  −Σ d r_k ≤ −t_k
        a_ub = -cmdp.aux_rewards.reshape(cmdp.n_constraints, n_s * n_a)
        b_ub = -cmdp.thresholds
    result = linprog(
        -cmdp.main_reward.reshape(-1), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs"
    )
    if result.status != 0:
        empty = np.full((n_s, n_a), np.nan)
        return LPSolution(False, empty, empty, float("nan"), np.full(cmdp.n_constraints, np.nan))
    occupancy = np.clip(result.x.reshape(n_s, n_a), 0.0, None)
    duals = -result.ineqlin.marginals if a_ub is not None else np.zeros(cmdp.n_constraints)
    return LPSolution(True, policy_from_occupancy(occupancy), occupancy, float(-result.fun), np.asarray(duals))


def policy_from_occupancy(occupancy: np.ndarray) -> np.ndarray:
    """π(a|s) = d(s, a) / Σ_a d(s, a); uniform over actions in states with no occupancy."""
    mass = occupancy.sum(1, keepdims=True)
    uniform = np.full_like(occupancy, 1.0 / occupancy.shape[1])
    return np.where(mass > 1e-12, occupancy / np.maximum(mass, 1e-300), uniform)


def _max_signal(cmdp: TabularCMDP, k: int) -> float:
    """max_π J_k(π) for auxiliary signal k (the unconstrained LP with aux_k as the main reward)."""
    as_main = TabularCMDP(
        cmdp.transitions, cmdp.aux_rewards[k], cmdp.aux_rewards[:0], cmdp.initial, cmdp.gamma, np.zeros(0)
    )
    return solve_lp(as_main, constrained=False).main_value


def evaluate(cmdp: TabularCMDP, policy: np.ndarray) -> np.ndarray:
    """J of every signal (main, aux1, …) under a stochastic policy π(a|s), shape (1 + K,), per decision.

    Solves (I − γ P_π) V = r_π for each signal and returns (1 − γ) ρ0 · V.
    """
    policy = np.asarray(policy, dtype=np.float64)
    if policy.shape != (cmdp.n_states, cmdp.n_actions):
        raise ValueError(f"evaluate: policy must have shape {(cmdp.n_states, cmdp.n_actions)}, got {policy.shape}")
    if (policy < -1e-9).any() or not np.allclose(policy.sum(1), 1.0, atol=1e-6):
        raise ValueError("evaluate: every row of the policy must be a probability vector over actions")
    p_pi = np.einsum("sa,sat->st", policy, cmdp.transitions)
    r_pi = np.einsum("sa,ksa->ks", policy, cmdp.rewards())  # (1 + K, S)
    values = np.linalg.solve(np.eye(cmdp.n_states) - cmdp.gamma * p_pi, r_pi.T)  # (S, 1 + K)
    return (1.0 - cmdp.gamma) * cmdp.initial @ values


def constraint_slacks(cmdp: TabularCMDP, values: np.ndarray) -> np.ndarray:
    """values[1:] − thresholds: ≥ 0 where a constraint holds, shape (K,)."""
    return np.asarray(values)[1:] - cmdp.thresholds


def meets_constraints(cmdp: TabularCMDP, values: np.ndarray, tolerance: float = 0.01) -> bool:
    """Every auxiliary value ≥ its threshold, up to `tolerance` × |threshold| (the benchmark's 1 %)."""
    return bool((constraint_slacks(cmdp, values) >= -tolerance * np.abs(cmdp.thresholds)).all())


# ---------------------------------------------------------------------------
# The Gymnasium env and its task
# ---------------------------------------------------------------------------
def task_spec(cmdp: TabularCMDP, discount: float = 0.999, name: str = "cmdp") -> TaskSpec:
    """Signals (main, aux1, …) and the ">=" constraints of `cmdp`, for the training core.

    `discount` is the learner's γ; keep it near 1 — the env already discounts
    by ending episodes (module docstring).
    """
    return TaskSpec(
        obs_size=cmdp.n_states,
        action=DiscreteAction(n=cmdp.n_actions),
        signals=tuple(TaskSignal(s, discount) for s in cmdp.signal_names),
        constraints=tuple(
            Constraint(aux_signal_name(k), ">=", float(t), description="per-decision mean (normalised discounted)")
            for k, t in enumerate(cmdp.thresholds)
        ),
        name=name,
    )


def task_config(cmdp: TabularCMDP, discount: float = 0.999) -> dict[str, Any]:
    """The `task:` section of a `troupe train --env training.envs.cmdp:CMDPEnv` config file for `cmdp`."""
    return {
        "signals": [{"name": s, "discount": discount} for s in cmdp.signal_names],
        "constraints": [
            {"signal": aux_signal_name(k), "direction": ">=", "threshold": float(t)}
            for k, t in enumerate(cmdp.thresholds)
        ],
    }


RANDOM_ENDS = ("terminate", "truncate")
"""How `CMDPEnv` and `CMDPPool` report the random episode end to the learner (`CMDPPool`'s docstring)."""


class CMDPEnv(gym.Env[np.ndarray, int]):
    """A `TabularCMDP` as a Gymnasium env: one-hot state, discrete action, vector reward.

    Build it from an instance (`CMDPEnv(cmdp=...)`) or from the generator's
    arguments (`CMDPEnv(instance_seed=3, n_constraints=2)`, what a config file
    can name). Each step ends the episode with probability 1 − γ
    (`terminated=True`, or `truncated=True` with `random_end="truncate"`:
    see `CMDPPool`), so per-decision means over episodes are the normalised
    discounted values J (module docstring).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        cmdp: TabularCMDP | None = None,
        *,
        instance_seed: int = 0,
        n_states: int | None = None,
        n_actions: int | None = None,
        gamma: float | None = None,
        n_constraints: int = 1,
        random_end: str = "terminate",
    ) -> None:
        if random_end not in RANDOM_ENDS:
            raise ValueError(f"CMDPEnv.random_end: one of {RANDOM_ENDS}, got {random_end!r}")
        self.random_end = random_end
        self.cmdp = cmdp if cmdp is not None else random_cmdp(instance_seed, n_states, n_actions, gamma, n_constraints)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.cmdp.n_states,), np.float32)
        self.action_space = gym.spaces.Discrete(self.cmdp.n_actions)
        self._state = 0
        self._rewards = self.cmdp.rewards()

    def task(self, discount: float | None = None) -> TaskSpec:
        """The `TaskSpec` of this env (signals and constraints with their thresholds); the learner's discount
        defaults to γ when the end is a truncation, else 0.999 (module docstring)."""
        if discount is None:
            discount = self.cmdp.gamma if self.random_end == "truncate" else 0.999
        return task_spec(self.cmdp, discount)

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.cmdp.n_states, dtype=np.float32)
        obs[self._state] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._state = int(self.np_random.choice(self.cmdp.n_states, p=self.cmdp.initial))
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = int(np.asarray(action).reshape(-1)[0])
        if not 0 <= a < self.cmdp.n_actions:
            raise ValueError(f"CMDPEnv.step: action must be in [0, {self.cmdp.n_actions}), got {a}")
        values = self._rewards[:, self._state, a]
        signals = dict(zip(self.cmdp.signal_names, (float(v) for v in values), strict=True))
        self._state = int(self.np_random.choice(self.cmdp.n_states, p=self.cmdp.transitions[self._state, a]))
        ended = bool(self.np_random.random() >= self.cmdp.gamma)
        terminated, truncated = (ended, False) if self.random_end == "terminate" else (False, ended)
        return self._obs(), signals[MAIN_SIGNAL], terminated, truncated, {"signals": signals}


class CMDPPool:
    """N copies of a `TabularCMDP` stepped together in numpy, auto-reset (the training core's `EnvPool` protocol).

    Same dynamics as `CMDPEnv` (one-hot states, episode end with probability 1 − γ after each
    step), without a Python loop over environments.

    `random_end` says how a learner is told about that end (ours):
    * "terminate" (as `CMDPEnv`): a terminal state; the learner's discount must be ~1 (`task_spec`'s
      0.999) and its value targets are sums of rewards up to a geometric end — unbiased, but the
      episode length's own spread (std ≈ its mean, 1/(1 − γ) ≈ 5–20 steps) is in every target.
    * "truncate": a truncation; the learner bootstraps from the true successor (`next_obs` is s'
      whether or not the episode ends) with discount γ (`task_spec(cmdp, discount=cmdp.gamma)`), so a
      one-step target reads r + γ·V(s') — the same expectation as the random end, E = r + γ·V(s'),
      without the length's spread. The visited states still follow d_π (episodes still restart at
      rate 1 − γ), so per-decision means still measure J.
    """

    def __init__(self, cmdp: TabularCMDP, n_envs: int, random_end: str = "terminate") -> None:
        if n_envs < 1:
            raise ValueError(f"CMDPPool.n_envs: must be >= 1, got {n_envs}")
        if random_end not in RANDOM_ENDS:
            raise ValueError(f"CMDPPool.random_end: one of {RANDOM_ENDS}, got {random_end!r}")
        self.cmdp, self.n_envs = cmdp, n_envs
        self.random_end = random_end
        self._rewards = cmdp.rewards().transpose(1, 2, 0)  # (S, A, 1 + K)
        self._cumulative = np.cumsum(cmdp.transitions, axis=-1)  # (S, A, S)
        self._initial_cumulative = np.cumsum(cmdp.initial)
        self._rng = np.random.default_rng(0)
        self._states = np.zeros(n_envs, dtype=np.int64)

    def _one_hot(self, states: np.ndarray) -> np.ndarray:
        obs = np.zeros((len(states), self.cmdp.n_states), dtype=np.float32)
        obs[np.arange(len(states)), states] = 1.0
        return obs

    def _draw_initial(self, n: int) -> np.ndarray:
        idx = np.searchsorted(self._initial_cumulative, self._rng.random(n), side="right")
        return np.minimum(idx, self.cmdp.n_states - 1)

    def reset(self, seed: int) -> np.ndarray:
        self._rng = np.random.default_rng(seed)
        self._states = self._draw_initial(self.n_envs)
        return self._one_hot(self._states)

    def step(self, actions: np.ndarray) -> PoolStep:
        a = np.rint(np.asarray(actions, dtype=np.float64).reshape(self.n_envs, -1)[:, 0]).astype(np.int64)
        if (a < 0).any() or (a >= self.cmdp.n_actions).any():
            raise ValueError(f"CMDPPool.step: actions must be in [0, {self.cmdp.n_actions}), got {a}")
        rewards = self._rewards[self._states, a]
        rows = self._cumulative[self._states, a]  # (N, S)
        successors = np.minimum((rows < self._rng.random(self.n_envs)[:, None]).sum(1), self.cmdp.n_states - 1)
        ended = self._rng.random(self.n_envs) >= self.cmdp.gamma
        next_obs = self._one_hot(successors)
        self._states = np.where(ended, self._draw_initial(self.n_envs), successors)
        no_end = np.zeros(self.n_envs, bool)
        terminated, truncated = (ended, no_end) if self.random_end == "terminate" else (no_end, ended)
        return PoolStep(next_obs, rewards, terminated, truncated, self._one_hot(self._states))
