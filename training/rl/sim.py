"""Glue between the learners and Troupe's simulators (training/envs): pools, behaviour logs, evaluation.

* `BatchedSimPool` — an `EnvPool` over `make_batched(problem, n)`; single view
  (observation (N, obs)) or, for `rank`, the multi-agent view (joint
  observation = the three stages' local observations concatenated, (N, 72);
  the joint action is the same (N, 18) vector in stage order). In the
  multi-agent view the stages act in turn (`act_in_turn`, which
  `RolloutCollector` calls when a pool has it): each stage observes the pool
  the upstream stages actually kept with the actions they just took, as in
  `RankSequentialEnv` and serving — no preview pool.
  The simulator's `done` is the end of a user's `days`-day horizon; the
  ground-truth evaluation counts nothing past it, so the learners treat it as
  a termination (no bootstrap) — exactly the finite-horizon objective.
  `pair_rows()` (rank) turns on `RankConfig.paired_rows` for the learners'
  antithetic episode pairs (`LossConfig.advantage = "episode_pairs"`).
* `behaviour_rollout` — logged transitions of the simulator's behaviour policy
  with its exact log-densities (BC's data; offline TSCAC's data in benchmarks).
* `actor_policy` — a numpy policy (obs → action) from a trained actor for
  `evaluate_policy` (deterministic: the Gaussian mean, as serving uses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from training.rl.data import PoolStep, Rollout, RolloutCollector
from training.rl.networks import Actor, CategoricalActor
from training.rl.task import TaskSpec


class BatchedSimPool:
    """N simulator rows as an EnvPool (see module docstring)."""

    def __init__(
        self,
        problem: str,
        n_envs: int,
        task: TaskSpec,
        multi_agent: bool = False,
        world_seed: int | None = None,
        **overrides: Any,
    ) -> None:
        """`world_seed` fixes the simulated world (its catalog, streams, schedules) for good: `reset(seed)` then
        draws only the users and the dynamics from `seed`. None (the default, as before): `reset(seed)` builds
        the world from `seed` too, so every reset seed is another world."""
        from training.envs import make_batched

        self.problem, self.task, self.multi_agent = problem, task, multi_agent
        self.n_envs = n_envs
        self.overrides = overrides
        self.world_seed = world_seed
        self.sim: Any = make_batched(problem, n_envs, 0 if world_seed is None else world_seed, **overrides)

    def pair_rows(self) -> None:
        """Rows 2k and 2k+1 simulate the same users with common random numbers from the next reset on
        (`RankConfig.paired_rows`; `LossConfig.advantage = "episode_pairs"` asks for it)."""
        if self.problem != "rank":
            raise ValueError(
                f"paired rows: only the rank simulator has them (RankConfig.paired_rows), not {self.problem!r}"
            )
        self.overrides = {**self.overrides, "paired_rows": True}

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        """The single view's observation; multi-agent: the joint observation before any stage has acted —
        pre-rank's real block, and pre-rank's observation again in the later stages' blocks as
        placeholders that `act_in_turn` replaces with what those stages really see."""
        if not self.multi_agent:
            return np.asarray(obs, np.float32)
        return np.tile(np.asarray(obs, np.float32), (1, len(self.task.agents)))

    def act_in_turn(
        self,
        act: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
        generator: torch.Generator,
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """Multi-agent rank: the stages act in turn on the current request; (joint observation, action, log_prob).

        Stage k observes the pool stages < k kept with the actions they just sampled. `act` is the joint
        actor's sampler, in which agent k's action columns depend only on observation block k and on the
        generator's draws: it is called once per stage from the same generator state on the joint
        observation known so far, and stage k's columns are taken from call k. The last call sees every
        block as it really is, so its (action, log_prob) are the joint ones (the pool's `step` re-runs
        the cascade with that action and keeps the same pools: the stages are deterministic)."""
        if not self.multi_agent:
            raise ValueError("act_in_turn: the multi-agent view only (BatchedSimPool(..., multi_agent=True))")
        from models.problems import RANK_STAGES
        from training.envs.rank import N_SIGNALS

        names = [a.name for a in self.task.agents]
        if self.problem != "rank" or names != list(RANK_STAGES):
            raise ValueError(f"act_in_turn: the rank cascade's stages {list(RANK_STAGES)} in order, got {names}")
        d = self.sim.stage_observation(0, None).shape[1]
        joint = self._observe(self.sim.stage_observation(0, None))
        state = generator.get_state()
        positions = None
        for k in range(len(names)):
            if k > 0:
                joint[:, k * d : (k + 1) * d] = self.sim.stage_observation(k, positions)
            generator.set_state(state)
            action, logp = act(torch.from_numpy(joint), generator)
            if k < len(names) - 1:
                weights = self.sim.check_actions(action.cpu().numpy(), self.n_envs)[
                    :, k * N_SIGNALS : (k + 1) * N_SIGNALS
                ]
                positions = self.sim.run_stage(k, weights, positions)
        return joint, action, logp

    def reset(self, seed: int) -> np.ndarray:
        from training.envs import make_batched

        if self.world_seed is None:
            self.sim = make_batched(self.problem, self.n_envs, seed, **self.overrides)
            return self._observe(self.sim.reset())
        # The world stays the one of `world_seed` (its catalog is drawn from the constructor's seed); the
        # users and the dynamics follow `seed`.
        self.sim = make_batched(self.problem, self.n_envs, self.world_seed, **self.overrides)
        return self._observe(self.sim.reset(seed))

    def _discrete(self, actions: np.ndarray) -> np.ndarray:
        """Float action columns → the simulator's ints: (N,) for one component, (N, K) for several."""
        ints = np.rint(actions).astype(np.int64)
        return ints[:, 0] if self.task.action_dim == 1 else ints

    def step(self, actions: np.ndarray) -> PoolStep:
        a = actions if self.task.continuous else self._discrete(actions)
        obs, rewards, done, info = self.sim.step(a)
        obs = self._observe(obs)
        next_obs = obs.copy()
        if done.any() and "final_observation" in info and not self.multi_agent:
            next_obs[done] = info["final_observation"][done]
            # multi-agent: the finished rows' stage observations are gone; they are
            # terminal (no bootstrap), so V(s') of those rows is never used.
        r = np.stack([np.asarray(rewards[s], np.float64) for s in self.task.signal_names], axis=1)
        return PoolStep(next_obs, r, np.asarray(done, bool), np.zeros(len(done), bool), obs)


def behaviour_rollout(problem: str, task: TaskSpec, n_envs: int, steps: int, seed: int, **overrides: Any) -> Rollout:
    """`steps` × `n_envs` transitions of the problem's behaviour policy with exact log-probabilities."""
    from training.envs import behaviour_policy

    mu = behaviour_policy(problem, seed=seed)

    def act(obs: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        actions, prob = mu.sample(obs.numpy())
        a = torch.as_tensor(np.asarray(actions, np.float32).reshape(obs.shape[0], -1))
        lp = np.asarray(prob, np.float64)
        if getattr(mu, "probability_kind", "log_density") == "propensity":
            lp = np.log(np.maximum(lp, 1e-300))
        return a, torch.as_tensor(lp, dtype=torch.float32)

    collector = RolloutCollector(BatchedSimPool(problem, n_envs, task, **overrides), seed)
    return collector.collect(act, steps)


def actor_policy(actor: Actor, deterministic: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """obs (N, obs) → action (N, A) numpy policy from a trained actor (CPU, no grad)."""
    actor = actor.cpu().eval()

    def policy(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs, np.float32))
            if deterministic:
                a = actor.mode(x)
            else:
                a, _ = actor.sample(x)
        out = a.numpy()
        if not isinstance(actor, CategoricalActor):
            return out
        # a categorical actor's action is its index stored as float columns; simulators take (N,) or (N, K) ints
        return out[:, 0].astype(np.int64) if len(actor.nvec) == 1 else out.astype(np.int64)

    return policy


def multi_agent_policy(actor: Actor, problem: str = "rank") -> Callable[[np.ndarray], np.ndarray]:
    """A joint actor evaluated through the single view: every stage actor sees the single observation.

    Serving has one observation per request, so this is how the exported
    combined model acts; `evaluate_policy` drives the single view.
    """
    actor = actor.cpu().eval()
    n_agents = len(getattr(actor, "agents", []))

    def policy(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs, np.float32))
            return torch.cat([agent.mode(x) for agent in actor.agents], dim=1).numpy()  # type: ignore[union-attr]

    if n_agents == 0:
        raise ValueError("multi_agent_policy needs a JointActor")
    return policy


StagePolicy = Callable[[int, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(stage index, stage observation (N, O), message state (N, S)) → (stage weights (N, 6), next state (N, S))."""


def evaluate_sequential(
    policy: StagePolicy,
    state_size: int,
    n_users: int,
    days: int,
    seed: int = 0,
    *,
    user_seed: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Ground truth for stage agents in the `rank` sequential view: each stage acts on the pool the upstream
    stages actually kept, and a per-row state (MA-RDPG's message; size 0 for stateless agents) is passed
    stage to stage and carried across a session's requests, zeroed when a session ends.

    Same report as `training.envs.evaluate.evaluate_policy`, with the same
    common random numbers as `evaluate_policy` (user k of a seed is the same person under every policy).
    `user_seed` (as `evaluate_policy`'s): the users of world `seed` are drawn from it; None: the world's own.
    """
    from models.problems import RANK
    from training.envs import make_batched
    from training.envs.evaluate import _rows

    names = RANK.signal_names
    overrides = {"common_random_numbers": True, **overrides}
    sim: Any = make_batched("rank", _rows(n_users), seed, max_users=n_users, days=days, **overrides)
    sim.reset(user_seed)
    state = np.zeros((sim.n, state_size), np.float32)
    totals = np.zeros((n_users * days, len(names)))
    decisions = 0
    while not sim.all_done:
        positions = None
        for k in range(len(RANK.agents)):
            weights, state = policy(k, sim.stage_observation(k, positions), state)
            positions = sim.run_stage(k, np.clip(np.asarray(weights, np.float32), 0.0, 1.0), positions)
        _, rewards, done, info = sim.serve_page(positions)
        state = np.where((np.asarray(done, bool) | np.asarray(info["session_end"], bool))[:, None], 0.0, state)
        state = state.astype(np.float32)
        live = info["active"]
        flat = info["user_id"][live] * days + info["day"][live]
        np.add.at(totals, flat, np.stack([rewards[s][live] for s in names], axis=1))
        decisions += int(live.sum())
    per_user = totals.reshape(n_users, days, len(names)).mean(axis=1)
    per_decision = {s: float(totals[:, i].sum() / max(decisions, 1)) for i, s in enumerate(names)}
    return {"per_user_day": {s: per_user[:, i] for i, s in enumerate(names)}, "per_decision": per_decision}


def joint_actor_stage_policy(actor: Actor) -> StagePolicy:
    """A stateless stage policy from a `JointActor` (the MA cascade): stage k's agent, deterministic."""
    actor = actor.cpu().eval()

    def policy(stage: int, obs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            return actor.agents[stage].mode(torch.as_tensor(obs)).numpy(), state  # type: ignore[index]

    return policy
