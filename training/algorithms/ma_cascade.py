"""Multi-agent cascade: one actor per stage, a centralised critic, TSCAC's constraint scheme (CTDE).

Contents: `MACascadeConfig`; networks (`JointActor` — agent k acts on
its own local observation only, so each stage's actor exports and serves on
its own — plus centralised per-signal critics Q_i(o, a) over the joint
observation o and joint action a, and V_i(o) over the joint observation);
the loss (TSCAC's two stages with the centralised advantages); `ParallelEnvPool`
(PettingZoo → joint pool). Trained by the generic `training.rl.trainer.train("ma_cascade", ...)`.
Agents may act on boxes (tanh-Gaussian / Beta) or on (multi-)discrete actions (one factorised
categorical per agent; the joint action is the task's MultiDiscreteAction, agent k owning its
`action_size` components).

Centralised training, decentralised execution (MADDPG, Lowe et al. 2017):
the critics see everything, the actors only their own observation. The team
reward vector (every signal of the shared reward) goes through the TSCAC
scheme unchanged: stage-one joint policies per constrained signal, stage two
projects the closed form onto the joint actor.

DEPARTURES from MADDPG, marked: stochastic actors trained with the
TSCAC losses instead of deterministic actors trained through ∂Q/∂a; the
centralised Q_i(o, a) is used for the advantage A_i(o, a) = Q_i(o, a) − V_i(o)
(a counterfactual-free CTDE baseline), trained on the same TD / TD(λ) targets
as V_i. One centralised critic per signal shared by all agents (cooperative
team reward) instead of one per agent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.problems import BoxAction
from training.algorithms.tscac import TSCACConfig, TSCACLoss
from training.rl.data import PoolStep
from training.rl.losses import MiniBatch, ParamGroup, module_parameters
from training.rl.networks import SignalCritics
from training.rl.registry import register
from training.rl.task import TaskSpec


@dataclass(frozen=True)
class MACascadeConfig(TSCACConfig):
    """TSCAC hyperparameters; the actor is per agent because the task lists agents."""

    lambda_control: str = "fixed"
    """The cascade keeps the paper's fixed λ (TSCAC's measured-slack control is not tried on it yet)."""

    centralised_advantage: bool = True
    """Use A_i = Q_i(o, a) − V_i(o) from the centralised critic (else the plain TD / GAE advantage)."""


@register("ma_cascade", config=MACascadeConfig, multi_agent=True)
class MACascadeLoss(TSCACLoss):
    cfg: MACascadeConfig

    def build(self) -> None:
        if not self.task.agents:
            raise ValueError(
                "ma_cascade needs a multi-agent task (TaskSpec.agents, e.g. TaskSpec.from_problem(spec, multi_agent=True))"
            )
        super().build()
        self.q_critics = SignalCritics(
            self.task.obs_size + self.task.action_dim,
            len(self.task.signals),
            self.cfg.hidden,
            standardise=self.cfg.obs_standardise,
        )

    def fit_standardisers(self, obs: Tensor, action: Tensor) -> None:
        """Ours (`LossConfig.obs_standardise`): TSCAC's networks (each stage agent on its own observation block,
        `JointActor.fit_standardiser`) and the centralised Q_i on what it reads, [joint obs; joint action]."""
        super().fit_standardisers(obs, action)
        self.q_critics.fit_standardiser(torch.cat([obs, action], -1))

    def parameter_groups(self) -> list[ParamGroup]:
        return [
            *super().parameter_groups(),
            ParamGroup("central_q", module_parameters([self.q_critics]), self.cfg.critic_lr),
        ]

    def extra_critic_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        q = self.q_critics(torch.cat([mb.obs, mb.action], -1))
        per_signal = ((q - mb.targets).pow(2) * mb.weights[:, None]).mean(0)
        metrics = {f"losses/central_q_{n}": v for n, v in zip(self.task.signal_names, per_signal.tolist(), strict=True)}
        return per_signal.sum(), metrics

    def advantage_estimates(self, mb: MiniBatch) -> Tensor:
        if not self.cfg.centralised_advantage:
            return mb.advantages
        with torch.no_grad():
            return self.q_critics(torch.cat([mb.obs, mb.action], -1)) - self.critics(mb.obs)


class ParallelEnvPool:
    """N PettingZoo ParallelEnvs as one joint pool: observations and actions concatenated in agent order,
    the team reward vector read from the first agent's `info["signals"]` (shared reward)."""

    def __init__(self, env_fns: Sequence[Callable[[], Any]], task: TaskSpec) -> None:
        self.envs = [fn() for fn in env_fns]
        self.task = task
        self.n_envs = len(self.envs)
        self.agent_names = [a.name for a in task.agents]
        self._splits = np.cumsum([a.action_size for a in task.agents])[:-1]

    def _joint(self, obs: dict[str, Any]) -> np.ndarray:
        return np.concatenate([np.asarray(obs[a], dtype=np.float32) for a in self.agent_names])

    def reset(self, seed: int) -> np.ndarray:
        return np.stack([self._joint(e.reset(seed=seed + i)[0]) for i, e in enumerate(self.envs)])

    def step(self, actions: np.ndarray) -> PoolStep:
        box = self.task.action
        n = self.n_envs
        discrete = not isinstance(box, BoxAction)
        next_obs = np.empty((n, self.task.obs_size), np.float32)
        obs = np.empty_like(next_obs)
        rewards = np.empty((n, len(self.task.signals)))
        term, trunc = np.zeros(n, bool), np.zeros(n, bool)
        for i, env in enumerate(self.envs):
            joint = (
                actions[i].astype(np.int64) if discrete else np.clip(actions[i], box.low, box.high).astype(np.float32)
            )  # type: ignore[union-attr]
            parts = [p[0] if discrete and len(p) == 1 else p for p in np.split(joint, self._splits)]
            o, r, te, tr, info = env.step(dict(zip(self.agent_names, parts, strict=True)))
            first = self.agent_names[0]
            term[i], trunc[i] = bool(te[first]), bool(tr[first])
            rewards[i] = self.task.signal_vector(r[first], info[first])
            next_obs[i] = self._joint(o) if o else next_obs[i]
            obs[i] = self._joint(env.reset()[0]) if (term[i] or trunc[i] or not env.agents) else next_obs[i]
        return PoolStep(next_obs, rewards, term, trunc, obs)
