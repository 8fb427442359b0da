"""MaRCA for `allocate`: AWRQ-Mixer agents per cascade stage, trained online in the simulator (CTDE).

Paper: MaRCA (JD, arXiv 2512.24325), summarised in shared/PAPERS.md. Reads top
to bottom: config, the agent split, the learner (networks + loss + hooks), the
baselines (one hook each), the decision rule, the online training loop, `fit`.

What the paper fixes, and how it is done here
* One agent per cascade stage — the agent split of models/problems.py:
  `retrieval` (3 channels on/off → 8 actions), `pre_rank` (queue length → 4),
  `rank` (queue length × model tier → 12). Each is a GRU Q-network with K heads
  (`training.rl.recurrent.RecurrentQNetwork`).
* Head weights η_k ∝ each head's TD loss in training (`head_weights`), the
  plain mean of the heads at serving (`RecurrentStep`).
* A QMIX-style hypernetwork mixer with softplus (monotone) weights
  (`training.rl.mixers.MonotoneMixer`): Q_tot(s, a) = mix(q_retrieval, q_pre_rank, q_rank; s).
* Variance-guided credit assignment: each agent's reward is scaled by the
  variance of E[R | a_agent = j] over its actions j (`credit_shares`).
* CTDE: the mixer sees the global state in training only; each agent acts on
  its own Q at serving.
* Decision rule a* = argmax_a Q(s, a) − λ·C(s, a) (knapsack relaxation, as in
  DCAF), factorised per agent (`MarcaPolicy`).

Our spec where the paper is vague (each marked "ours")
* Reward and horizon: a request is one decision whose revenue is known once it
  is answered, so the TD target is the reward itself (γ = 0, no bootstrapping,
  no target network). The revenue is divided by a fixed `reward_scale` (the
  mean revenue of the first interval's random actions) so losses are O(1); Q is
  scaled back to cents before it meets λ·C.
* Recurrence: in this world requests are independent, so the GRU runs along the
  cascade within a request — retrieval → pre-rank → rank, each agent's GRU
  starting from the previous stage's hidden state (the stage's view of what
  upstream saw). At serving each stage receives the upstream hidden state with
  the request, exactly what the ONNX step (`observation`, `hidden_state`) →
  (`q_values`, `next_hidden_state`) carries.
* Mixer state: the request's observation (value, lagged load and utilisation,
  hour, activity group, history, entry point) — the global state of CTDE.
* Variance-guided credit: per agent k, m_k(j) = running mean of R/v (revenue per
  unit of request value, so the request's value does not swamp the action's
  effect) over the rows where a_k = j; the share c_k = Var_j m_k(j) / Σ_m Var_j m_m(j).
  Each agent's own Q (heads' mean, chosen action) regresses to c_k·r with
  weight `credit_weight`, beside the team TD loss — the agents whose choice
  moves the revenue most carry most of it.
* Factorised decision: Q_tot is monotone but not additive, so the per-agent rule
  uses the mixer's local slope w_k(s) = ∂Q_tot/∂q_k at the agents' current
  choice: a_k = argmax_j w_k(s)·q_k(s, j) − λ·C_k(j), iterated twice (the slope
  re-read at the new choice). For VDN w_k = 1 and the rule is exact. C(s, a) is
  additive over the stages in this world (channels + pre-rank items + rank items
  × tier); C_k comes from the cost table and the contention factor of the last
  load reading (`CostTable`, or the AutoBucket table of training/algorithms/marca_cost.py).
* λ: set per interval by a controller (a feedback controller here; the MPC
  balancer in serving/balancer.py in the quality benchmark).

Baselines (issue #16): each subclasses the previous one and overrides ONE hook.
  QMIX  = MaRCA − `awrq_refinements` (one head, no variance guidance)
  VDN   = QMIX  − `build_mixer` (sum mixer)
  DQN   = VDN   − `agent_split` (one agent over the 384 joint actions)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from models.problems import ALLOCATE, ALLOCATE_AGENTS, ALLOCATE_QUEUE_LENGTHS_PRE_RANK, ALLOCATE_QUEUE_LENGTHS_RANK
from training.envs.allocate import AGENT_COMPONENTS, NVEC, AllocateConfig, BatchedAllocateSim
from training.envs.allocate_oracle import reset_if_stateful
from training.rl.mixers import MonotoneMixer, SumMixer
from training.rl.recurrent import RecurrentQNetwork, RecurrentStep, export_recurrent_step
from training.rl.registry import AlgorithmSpec, register_algorithm

if TYPE_CHECKING:
    from training.rl.task import TaskSpec
    from training.rl.trainer import RunConfig, RunResult

OBS_SIZE = ALLOCATE.observation_size
_VALUE, _LOAD, _UTIL = 0, 1, 2  # observation columns (models/problems.py order)


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MarcaConfig:
    """Hyperparameters of MaRCA's AWRQ-Mixer and its online training in the `allocate` simulator."""

    num_heads: int = 4
    """K: Q-heads per agent (AWRQ ensemble). The QMIX/VDN/DQN baselines use 1."""
    hidden_size: int = 32
    """GRU hidden size per agent (also the size of the state passed along the cascade)."""
    encoder_size: int = 64
    """Width of each agent's ReLU encoder before the GRU."""
    mixer_embed_size: int = 32
    """E: embedding of the monotone hypernetwork mixer."""
    credit_weight: float = 0.1
    """Weight of the variance-guided per-agent credit loss beside the team TD loss (ours)."""
    learning_rate: float = 3e-3
    """Adam step size."""
    final_learning_rate_fraction: float = 1.0
    """Online training: Adam's step size falls linearly from `learning_rate` to this fraction of it over the
    gradient steps (ours; 1 = constant, as until 2026-12-05)."""
    loss_value_power: float = 0.0
    """p: each row's squared error weighted by v^p, normalised to mean 1 in the batch (ours; 0 = unweighted, as
    until 2026-12-05). The decision compares v·q(a) − λ·C(a), so an error in q costs in proportion to v."""
    batch_size: int = 512
    """Rows per gradient step."""
    buffer_capacity: int = 200_000
    """Replay capacity in rows (one row = one request)."""
    requests_per_interval: int = 256
    """N: requests the simulator draws per interval while training."""
    train_intervals: int = 192
    """Intervals of simulated traffic to train on (96 = one day)."""
    updates_per_interval: int = 8
    """Gradient steps after each interval."""
    learning_starts: int = 1_024
    """Rows collected before the first gradient step."""
    epsilon_start: float = 1.0
    """Exploration: probability of a random action per agent at the start."""
    epsilon_end: float = 0.1
    """… at the end of the decay."""
    epsilon_decay_fraction: float = 0.5
    """Share of the training intervals over which ε decays linearly."""
    utilisation_target: float = 0.85
    """u*: the feedback λ controller's target utilisation while collecting (the best feedback rule's,
    benchmarks/headroom_allocate.py; 0.82 until 2026-12-05, when its search moved off the reported days)."""
    feedback_gain: float = 1.5
    """g: λ_t = λ_{t−1}·exp(g·(u_{t−1} − u*)) while collecting."""
    seed: int = 0
    """Seeds network init, replay sampling, exploration and the simulator."""

    def __post_init__(self) -> None:
        for name in (
            "num_heads",
            "hidden_size",
            "encoder_size",
            "mixer_embed_size",
            "batch_size",
            "buffer_capacity",
            "requests_per_interval",
            "train_intervals",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"MarcaConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.final_learning_rate_fraction <= 1.0:
            raise ValueError(
                f"MarcaConfig.final_learning_rate_fraction: must be in (0, 1], got {self.final_learning_rate_fraction}"
            )
        if not 0.0 <= self.loss_value_power <= 2.0:
            raise ValueError(f"MarcaConfig.loss_value_power: must be in [0, 2], got {self.loss_value_power}")
        if self.credit_weight < 0 or self.learning_rate <= 0:
            raise ValueError("MarcaConfig: credit_weight must be >= 0 and learning_rate > 0")
        if not 0.0 <= self.epsilon_end <= self.epsilon_start <= 1.0:
            raise ValueError(
                f"MarcaConfig: need 0 <= epsilon_end <= epsilon_start <= 1, got {self.epsilon_end}, {self.epsilon_start}"
            )
        if not 0.0 < self.epsilon_decay_fraction <= 1.0:
            raise ValueError(
                f"MarcaConfig.epsilon_decay_fraction: must be in (0, 1], got {self.epsilon_decay_fraction}"
            )
        if self.utilisation_target <= 0 or self.feedback_gain < 0:
            raise ValueError("MarcaConfig: utilisation_target must be > 0 and feedback_gain >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MarcaConfig:
        from training.rl.offpolicy_runner import config_from_dict

        out: MarcaConfig = config_from_dict(cls, data)
        return out


# ---------------------------------------------------------------------------
# The agent split: which components of the joint action (N, 6) each agent owns
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AgentSplit:
    """Agents, each owning a slice of the joint action's components; agent actions are mixed-radix indices."""

    names: tuple[str, ...]
    components: tuple[slice, ...]

    @property
    def sizes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(NVEC[c] for c in self.components)

    @property
    def num_actions(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s)) for s in self.sizes)

    def to_agent_actions(self, joint: np.ndarray) -> np.ndarray:
        """Joint actions (N, 6) → agent action indices (N, agents)."""
        cols = [np.ravel_multi_index(tuple(joint[:, c].T), s) for c, s in zip(self.components, self.sizes, strict=True)]
        return np.stack(cols, axis=1).astype(np.int64)

    def to_joint(self, agent_actions: np.ndarray) -> np.ndarray:
        """Agent action indices (N, agents) → joint actions (N, 6)."""
        parts = [np.stack(np.unravel_index(agent_actions[:, i], s), axis=1) for i, s in enumerate(self.sizes)]
        return np.concatenate(parts, axis=1).astype(np.int64)


STAGE_SPLIT = AgentSplit(tuple(ALLOCATE_AGENTS), tuple(AGENT_COMPONENTS[a] for a in ALLOCATE_AGENTS))
"""MaRCA's agents: retrieval (8), pre_rank (4), rank (12) — models/problems.py's split."""
JOINT_SPLIT = AgentSplit(("joint",), (slice(0, len(NVEC)),))
"""The DQN baseline's single agent over the 384 joint actions."""


# ---------------------------------------------------------------------------
# Cost per agent action: C(s, a) = Σ_k C_k(a_k) · contention(load)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CostTable:
    """Compute units of each agent action at mean traffic (a list of (A_k,) arrays), and the contention slope κ.

    `from_simulator` reads the simulator's own cost function (the ground truth);
    training/algorithms/marca_cost.py builds the same table by AutoBucket load tests.
    """

    per_agent: tuple[np.ndarray, ...]
    contention: float

    @classmethod
    def from_simulator(cls, config: AllocateConfig, split: AgentSplit) -> CostTable:
        tables = []
        for comp, sizes in zip(split.components, split.sizes, strict=True):
            grid = np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1)
            tables.append(component_cost(config, comp, grid))
        return cls(tuple(tables), config.contention)

    def at_load(self, load: float) -> tuple[np.ndarray, ...]:
        factor = max(0.0, 1.0 + self.contention * (load - 1.0))
        return tuple(t * factor for t in self.per_agent)


def component_cost(config: AllocateConfig, components: slice, values: np.ndarray) -> np.ndarray:
    """Cost at mean traffic of the action components `components` (a slice of the 6) taking `values` (M, width).

    The simulator's cost is additive over the stages (AllocateConfig.expected_cost):
    Σ channel_cost·on + k_pre·L_pre + k_tier·L_rank, so each stage's share is its own terms.
    """
    full = np.zeros((values.shape[0], len(NVEC)), np.int64)
    full[:, components] = values
    owned = set(range(len(NVEC))[components])
    pre = np.asarray(ALLOCATE_QUEUE_LENGTHS_PRE_RANK, np.float64)[full[:, 3]]
    rank = np.asarray(ALLOCATE_QUEUE_LENGTHS_RANK, np.float64)[full[:, 4]]
    cost = np.zeros(values.shape[0])
    if owned & {0, 1, 2}:
        cost += full[:, :3] @ np.asarray(config.channel_cost)
    if 3 in owned:
        cost += config.pre_rank_cost_per_item * pre
    if owned & {4, 5}:
        if not {4, 5} <= owned:
            raise ValueError("component_cost: the rank queue length and the model tier belong to one stage")
        cost += np.asarray(config.rank_cost_per_item)[full[:, 5]] * rank
    return cost


# ---------------------------------------------------------------------------
# Verified math: head weights and credit shares (each has its own unit test)
# ---------------------------------------------------------------------------
def head_weights(td_losses: Tensor) -> Tensor:
    """η_k = L_k / Σ_j L_j: AWRQ's head weights ∝ each head's TD loss (K,) → (K,), no gradient through η."""
    losses = td_losses.detach().clamp_min(0.0)
    total = losses.sum()
    if float(total) <= 0.0:
        return torch.full_like(losses, 1.0 / losses.numel())
    return losses / total


def credit_shares(conditional_means: Sequence[np.ndarray]) -> np.ndarray:
    """c_k = Var_j m_k(j) / Σ_m Var_j m_m(j) from each agent's conditional mean reward m_k (A_k,) → (agents,).

    Equal shares when no agent's choice moves the mean (all variances 0).
    """
    variances = np.asarray([float(np.var(m)) for m in conditional_means])
    total = variances.sum()
    if total <= 0.0 or not np.isfinite(total):
        return np.full(len(variances), 1.0 / len(variances))
    out: np.ndarray = variances / total
    return out


class ConditionalRewardMeans:
    """Running E[R/v | a_k = j] per agent and action, from every row the learner sees (ours: see module docstring)."""

    def __init__(self, num_actions: Sequence[int]) -> None:
        self.sums = [np.zeros(a) for a in num_actions]
        self.counts = [np.zeros(a) for a in num_actions]

    def update(self, agent_actions: np.ndarray, reward_per_value: np.ndarray) -> None:
        for k, (s, c) in enumerate(zip(self.sums, self.counts, strict=True)):
            np.add.at(s, agent_actions[:, k], reward_per_value)
            np.add.at(c, agent_actions[:, k], 1.0)

    def means(self) -> list[np.ndarray]:
        """m_k (A_k,) over the actions seen at least once (unseen actions left out of the variance)."""
        return [s[c > 0] / c[c > 0] for s, c in zip(self.sums, self.counts, strict=True)]


# ---------------------------------------------------------------------------
# The learner: agents, mixer, loss — and the hooks the baselines override
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AwrqRefinements:
    """What AWRQ adds to QMIX: K heads weighted by their TD loss, and variance-guided credit."""

    num_heads: int
    variance_guided: bool


class MarcaLearner(nn.Module):
    """AWRQ-Mixer: one GRU Q-network with K heads per agent, chained along the cascade, mixed monotonically.

    forward-free API: `agent_q(obs)` → per agent Q (B, K, A_k); `team_q(obs, agent_actions)` → (B, K);
    `loss(obs, agent_actions, reward)` → (scalar, logs).
    """

    variant: ClassVar[str] = "marca"

    def __init__(self, cfg: MarcaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.split = self.agent_split()
        self.refinements = self.awrq_refinements(cfg)
        heads = self.refinements.num_heads
        self.agents = nn.ModuleList(
            RecurrentQNetwork(OBS_SIZE, a, cfg.hidden_size, heads, "gru", (cfg.encoder_size,))
            for a in self.split.num_actions
        )
        self.mixer = self.build_mixer(len(self.split.names), cfg)
        self.credit = ConditionalRewardMeans(self.split.num_actions)
        self.register_buffer("reward_scale", torch.ones(()))

    # -- hooks (each baseline overrides exactly one) --
    def agent_split(self) -> AgentSplit:
        """Who decides what: one agent per cascade stage."""
        return STAGE_SPLIT

    def awrq_refinements(self, cfg: MarcaConfig) -> AwrqRefinements:
        """K heads (η ∝ TD loss) and variance-guided credit assignment."""
        return AwrqRefinements(num_heads=cfg.num_heads, variance_guided=True)

    def build_mixer(self, num_agents: int, cfg: MarcaConfig) -> nn.Module:
        """The QMIX-style monotone hypernetwork mixer (softplus weights)."""
        return MonotoneMixer(num_agents, OBS_SIZE, cfg.mixer_embed_size)

    # -- networks --
    def agent_q(self, obs: Tensor) -> list[Tensor]:
        """Per agent Q (B, K, A_k) in reward-scale units, the GRU state passed from stage to stage."""
        state = self.agents[0].initial_state(obs.shape[0], obs.device)
        out = []
        for net in self.agents:
            q, state = net.step(obs, state)
            out.append(q)
        return out

    def mix(self, chosen: Tensor, obs: Tensor) -> Tensor:
        """Chosen-action agent Q (B, K, N) → team Q (B, K), the mixer applied per head."""
        b, k, n = chosen.shape
        return self.mixer(chosen.reshape(b * k, n), obs.repeat_interleave(k, dim=0)).reshape(b, k)

    def chosen_q(self, obs: Tensor, agent_actions: Tensor) -> Tensor:
        """(B, K, N): each agent's Q of its action in `agent_actions` (B, N)."""
        qs = self.agent_q(obs)
        cols = [q.gather(2, agent_actions[:, i].view(-1, 1, 1).expand(-1, q.shape[1], 1)) for i, q in enumerate(qs)]
        return torch.cat(cols, dim=2)

    def loss(self, obs: Tensor, agent_actions: Tensor, reward: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Team TD loss (γ = 0: target = reward / reward_scale), heads weighted by η, plus the credit loss."""
        target = reward / self.reward_unit(obs)
        weight = self.row_weights(obs)[:, None]  # (B, 1)
        chosen = self.chosen_q(obs, agent_actions)  # (B, K, N)
        team = self.mix(chosen, obs)  # (B, K)
        head_losses = (weight * (team - target[:, None]) ** 2).mean(dim=0)  # (K,)
        eta = head_weights(head_losses)
        total = (eta * head_losses).sum()
        logs = {"td_loss": float(head_losses.detach().mean()), "head_weight_max": float(eta.max())}
        if self.refinements.variance_guided and self.cfg.credit_weight > 0:
            shares = torch.as_tensor(credit_shares(self.credit.means()), dtype=obs.dtype, device=obs.device)
            local = chosen.mean(dim=1)  # (B, N): heads' mean, as at serving
            credit_loss = (weight * (local - shares[None, :] * target[:, None]) ** 2).mean()
            total = total + self.cfg.credit_weight * credit_loss
            logs["credit_loss"] = float(credit_loss.detach())
            logs.update({f"credit_share_{n}": float(s) for n, s in zip(self.split.names, shares, strict=True)})
        return total, logs

    def row_weights(self, obs: Tensor) -> Tensor:
        """(B,): v^p normalised to mean 1 in the batch (`MarcaConfig.loss_value_power`; all ones at p = 0)."""
        if self.cfg.loss_value_power == 0.0:
            return torch.ones(obs.shape[0], dtype=obs.dtype, device=obs.device)
        weight = torch.expm1(obs[:, _VALUE] * 5.0).clamp_min(1e-6) ** self.cfg.loss_value_power
        return weight / weight.mean()

    def reward_unit(self, obs: Tensor) -> Tensor:
        """(B,): cents per unit of Q — request value v × `reward_scale` (ours: the agents learn revenue per unit
        of request value, the part their choice controls; the value multiplies it back at decision time)."""
        value = torch.expm1(obs[:, _VALUE] * 5.0).clamp_min(1e-6)  # models/observations.py: log1p(v)/5
        return value * self.reward_scale

    # -- serving-side views (CTDE: these use the agents only, plus the mixer's slope) --
    @torch.no_grad()
    def serving_q(self, obs: Tensor) -> list[Tensor]:
        """Per agent Q (B, A_k) in Q units: the heads' plain mean (serving rule); × `reward_unit` gives cents."""
        return [q.mean(dim=1) for q in self.agent_q(obs)]

    def mixer_slopes(self, chosen: Tensor, obs: Tensor) -> Tensor:
        """w_k(s) = ∂Q_tot/∂q_k at the agents' chosen Q (B, N) → (B, N), ≥ 0 by monotonicity."""
        with torch.enable_grad():
            q = chosen.detach().clone().requires_grad_(True)
            team = self.mixer(q, obs)
            (grad,) = torch.autograd.grad(team.sum(), q)
        return grad.detach()

    @torch.no_grad()
    def joint_action_values(self, obs: Tensor) -> Tensor:
        """Q_tot(s, a) in cents for every joint action (B, 384, spec order): for the Spearman check against the oracle."""
        from training.envs.allocate_oracle import ALL_ACTIONS

        qs = [q.mean(dim=1) for q in self.agent_q(obs)]
        idx = torch.as_tensor(self.split.to_agent_actions(ALL_ACTIONS))  # (384, N)
        b = obs.shape[0]
        chosen = torch.stack([q[:, idx[:, i]] for i, q in enumerate(qs)], dim=2)  # (B, 384, N)
        team = self.mixer(chosen.reshape(b * idx.shape[0], -1), obs.repeat_interleave(idx.shape[0], dim=0))
        return team.reshape(b, idx.shape[0]) * self.reward_unit(obs)[:, None]


class QmixLearner(MarcaLearner):
    """QMIX baseline: one head, no variance guidance."""

    variant: ClassVar[str] = "qmix"

    def awrq_refinements(self, cfg: MarcaConfig) -> AwrqRefinements:
        return AwrqRefinements(num_heads=1, variance_guided=False)


class VdnLearner(QmixLearner):
    """VDN baseline: the team Q is the sum of the agents' Q."""

    variant: ClassVar[str] = "vdn"

    def build_mixer(self, num_agents: int, cfg: MarcaConfig) -> nn.Module:
        return SumMixer(num_agents)


class DqnLearner(VdnLearner):
    """DQN baseline: one agent over the 384 joint actions (the sum over one agent is its Q)."""

    variant: ClassVar[str] = "dqn"

    def agent_split(self) -> AgentSplit:
        return JOINT_SPLIT


VARIANTS: dict[str, type[MarcaLearner]] = {c.variant: c for c in (MarcaLearner, QmixLearner, VdnLearner, DqnLearner)}
"""Learner class by variant name: marca (AWRQ-Mixer), qmix, vdn, dqn."""
HOOKS = ("agent_split", "awrq_refinements", "build_mixer")
"""The named hooks the baselines override, one each."""


# ---------------------------------------------------------------------------
# The decision rule: a_k = argmax_j w_k(s)·q_k(s, j) − λ·C_k(j), λ from a controller
# ---------------------------------------------------------------------------
class FeedbackLambda:
    """λ_t = λ_{t−1}·exp(g·(u_{t−1} − u*)) — the feedback controller MaRCA's MPC balancer is compared with."""

    def __init__(self, utilisation_target: float, gain: float, initial: float = 1.0) -> None:
        self.utilisation_target, self.gain, self.initial = utilisation_target, gain, initial
        self.lam = initial
        self._first = True

    def reset(self) -> None:
        self.lam, self._first = self.initial, True

    def __call__(self, obs: np.ndarray) -> float:
        if not self._first:  # the first reading of a day is the neutral 0: keep the initial λ
            error = float(obs[0, _UTIL]) - self.utilisation_target
            self.lam = float(np.clip(self.lam * np.exp(self.gain * error), 1e-4, 1e4))
        self._first = False
        return self.lam


class MarcaPolicy:
    """obs (N, 12) → joint actions (N, 6): each agent's argmax of w_k·q_k − λ·C_k (an `AllocatePolicy`).

    `controller(obs) → λ` is called once per interval; `cost` gives C_k at mean traffic (scaled by the
    contention of last interval's load reading). `epsilon` > 0 explores: each agent independently takes
    a uniform random action with that probability.
    """

    def __init__(
        self,
        learner: MarcaLearner,
        cost: CostTable,
        controller: Callable[[np.ndarray], float],
        *,
        epsilon: float = 0.0,
        seed: int = 0,
        slope_iterations: int = 2,
    ) -> None:
        self.learner, self.cost, self.controller = learner, cost, controller
        self.epsilon = epsilon
        self.slope_iterations = slope_iterations
        self.rng = np.random.default_rng(seed)
        self.lam = float("nan")

    def reset(self) -> None:
        reset_if_stateful(self.controller)

    def agent_actions(self, obs: np.ndarray) -> np.ndarray:
        """(N, agents) agent action indices."""
        lam = self.lam = float(self.controller(obs))
        costs = self.cost.at_load(float(obs[0, _LOAD]))
        obs_t = torch.as_tensor(np.asarray(obs, np.float32))
        qs = self.learner.serving_q(obs_t)
        unit = self.learner.reward_unit(obs_t)[:, None]  # cents per Q unit, (N, 1)
        choice = torch.stack([q.argmax(dim=1) for q in qs], dim=1)  # the λ = 0 choice
        for _ in range(self.slope_iterations):
            chosen = torch.stack([q.gather(1, choice[:, i : i + 1]).squeeze(1) for i, q in enumerate(qs)], dim=1)
            slopes = self.learner.mixer_slopes(chosen, obs_t) * unit
            choice = torch.stack(
                [
                    (slopes[:, i : i + 1] * q - lam * torch.as_tensor(c, dtype=q.dtype)[None, :]).argmax(dim=1)
                    for i, (q, c) in enumerate(zip(qs, costs, strict=True))
                ],
                dim=1,
            )
        actions = choice.numpy().astype(np.int64)
        if self.epsilon > 0:
            for i, a in enumerate(self.learner.split.num_actions):
                explore = self.rng.random(actions.shape[0]) < self.epsilon
                actions[explore, i] = self.rng.integers(0, a, int(explore.sum()))
        return actions

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.learner.split.to_joint(self.agent_actions(obs))


# ---------------------------------------------------------------------------
# Online training in the simulator
# ---------------------------------------------------------------------------
class RowReplay:
    """Ring buffer of (obs (12,), agent actions (N,), revenue) rows."""

    def __init__(self, capacity: int, num_agents: int) -> None:
        self.obs = np.zeros((capacity, OBS_SIZE), np.float32)
        self.actions = np.zeros((capacity, num_agents), np.int64)
        self.reward = np.zeros(capacity, np.float32)
        self.capacity, self.size, self._next = capacity, 0, 0

    def add(self, obs: np.ndarray, actions: np.ndarray, reward: np.ndarray) -> None:
        idx = (self._next + np.arange(obs.shape[0])) % self.capacity
        self.obs[idx], self.actions[idx], self.reward[idx] = obs, actions, reward
        self._next = int((self._next + obs.shape[0]) % self.capacity)
        self.size = min(self.capacity, self.size + obs.shape[0])

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor]:
        idx = rng.integers(0, self.size, batch)
        return torch.as_tensor(self.obs[idx]), torch.as_tensor(self.actions[idx]), torch.as_tensor(self.reward[idx])


@dataclass
class MarcaResult:
    learner: MarcaLearner
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def train(
    cfg: MarcaConfig,
    variant: str = "marca",
    env_config: AllocateConfig | None = None,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> MarcaResult:
    """Train one variant online in BatchedAllocateSim: ε-greedy factorised decisions under a feedback λ,
    replay of single-request rows, `updates_per_interval` Adam steps after each interval."""
    if variant not in VARIANTS:
        raise ValueError(f"marca.train: variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    env_config = env_config or AllocateConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 7])
    learner = VARIANTS[variant](cfg)
    optimiser = torch.optim.Adam(learner.parameters(), lr=cfg.learning_rate)
    first = max(0, -(-cfg.learning_starts // cfg.requests_per_interval) - 1)  # first interval with gradient steps
    total_steps = max(1, (cfg.train_intervals - first) * cfg.updates_per_interval)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear to final_learning_rate_fraction (1 = constant)
        optimiser, lambda step: 1.0 - (1.0 - cfg.final_learning_rate_fraction) * min(1.0, step / total_steps)
    )
    replay = RowReplay(cfg.buffer_capacity, len(learner.split.names))
    cost = CostTable.from_simulator(env_config, learner.split)
    controller = FeedbackLambda(cfg.utilisation_target, cfg.feedback_gain)
    policy = MarcaPolicy(learner, cost, controller, epsilon=cfg.epsilon_start, seed=cfg.seed)
    sim = BatchedAllocateSim(cfg.requests_per_interval, env_config, cfg.seed, autoreset=True)
    obs = sim.reset(cfg.seed)
    policy.reset()
    history: list[dict[str, float]] = []
    started = time.monotonic()
    decay = max(1, int(cfg.epsilon_decay_fraction * cfg.train_intervals))
    for interval in range(cfg.train_intervals):
        policy.epsilon = max(
            cfg.epsilon_end, cfg.epsilon_start + (cfg.epsilon_end - cfg.epsilon_start) * interval / decay
        )
        agent_actions = policy.agent_actions(obs)
        next_obs, rewards, done, info = sim.step(learner.split.to_joint(agent_actions))
        revenue = rewards["revenue"]
        value = np.maximum(np.asarray(info["request_value"], np.float64), 1e-6)
        if interval == 0:  # ours: a fixed reward scale from the first (random-action) interval
            learner.reward_scale.fill_(max(float((revenue / value).mean()), 1e-3))
        replay.add(obs, agent_actions, revenue)
        learner.credit.update(agent_actions, revenue / value)
        if done.all():
            policy.reset()
        obs = next_obs
        logs: dict[str, float] = {}
        if replay.size >= cfg.learning_starts:
            for _ in range(cfg.updates_per_interval):
                batch_obs, batch_actions, batch_reward = replay.sample(cfg.batch_size, rng)
                loss, logs = learner.loss(batch_obs, batch_actions, batch_reward)
                optimiser.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(learner.parameters(), 10.0)
                optimiser.step()
                schedule.step()
        row = {
            "interval": float(interval),
            "epsilon": policy.epsilon,
            "lambda": policy.lam,
            "utilisation": float(info["utilisation"]),
            "revenue_per_request": float(revenue.mean()),
            **logs,
        }
        history.append(row)
        if on_log is not None:
            on_log(row)
    learner.eval()
    return MarcaResult(learner, history, time.monotonic() - started)


def train_offline(
    cfg: MarcaConfig,
    observations: np.ndarray,
    joint_actions: np.ndarray,
    revenue: np.ndarray,
    steps: int,
    variant: str = "marca",
) -> MarcaResult:
    """Train from logged rows (the data plane's trajectories): obs (N, 12), joint actions (N, 6), revenue (N,).

    Same loss as online (γ = 0: a request's revenue is known once answered); `steps` Adam steps on
    minibatches drawn from the rows; reward_scale = mean revenue per unit of request value in the log (ours:
    online training takes it from the first random interval, the log's behaviour policy stands in for it).
    """
    if variant not in VARIANTS:
        raise ValueError(f"marca.train_offline: variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    obs = np.asarray(observations, np.float32)
    joint = np.rint(np.asarray(joint_actions, np.float64)).astype(np.int64)
    rev = np.asarray(revenue, np.float32)
    if obs.ndim != 2 or obs.shape[1] != OBS_SIZE:
        raise ValueError(f"observation: expected shape (N, {OBS_SIZE}), got {obs.shape}")
    if joint.shape != (obs.shape[0], len(NVEC)) or (joint < 0).any() or (joint >= np.asarray(NVEC)).any():
        raise ValueError(f"action: expected (N, {len(NVEC)}) components within {NVEC}, got shape {joint.shape}")
    if rev.shape != (obs.shape[0],) or not np.isfinite(rev).all():
        raise ValueError(f"revenue: expected {obs.shape[0]} finite values, got shape {rev.shape}")
    if obs.shape[0] < 2 or steps < 1:
        raise ValueError(f"train_offline: need ≥ 2 rows and ≥ 1 step, got {obs.shape[0]} rows, {steps} steps")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 11])
    learner = VARIANTS[variant](cfg)
    value = np.maximum(np.expm1(obs[:, _VALUE].astype(np.float64) * 5.0), 1e-6)
    learner.reward_scale.fill_(max(float((rev / value).mean()), 1e-3))
    agent_actions = learner.split.to_agent_actions(joint)
    learner.credit.update(agent_actions, rev / value)
    optimiser = torch.optim.Adam(learner.parameters(), lr=cfg.learning_rate)
    obs_t, act_t, rev_t = torch.as_tensor(obs), torch.as_tensor(agent_actions), torch.as_tensor(rev)
    history: list[dict[str, float]] = []
    started = time.monotonic()
    for step in range(steps):
        idx = torch.as_tensor(rng.integers(0, obs.shape[0], min(cfg.batch_size, obs.shape[0])))
        loss, logs = learner.loss(obs_t[idx], act_t[idx], rev_t[idx])
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(learner.parameters(), 10.0)
        optimiser.step()
        history.append({"step": float(step), **logs})
    learner.eval()
    return MarcaResult(learner, history, time.monotonic() - started)


# ---------------------------------------------------------------------------
# Export: one ONNX step per agent (the serving side chains them along the cascade)
# ---------------------------------------------------------------------------
def export_agents(learner: MarcaLearner, directory: Path) -> dict[str, float]:
    """Write <agent>.onnx for each agent — inputs `observation` (B, 12), `hidden_state` (B, H); outputs
    `q_values` (B, A_k) (heads' mean, reward-scale units: multiply by `reward_scale`) and `next_hidden_state`.
    Returns the parity error per agent (raises above 1e-5)."""
    out = {}
    for name, net in zip(learner.split.names, learner.agents, strict=True):
        out[name] = export_recurrent_step(
            RecurrentStep(net),  # type: ignore[arg-type]
            (OBS_SIZE, net.state_size),
            RecurrentStep.input_names,
            RecurrentStep.output_names,
            Path(directory) / f"{name}.onnx",
        )
    return out


# ---------------------------------------------------------------------------
# The generic `train` entry (registry)
# ---------------------------------------------------------------------------
def fit(task: TaskSpec, source: Any, cfg: MarcaConfig, run_cfg: RunConfig) -> RunResult:
    """`troupe train` entry: MaRCA learns online in the `allocate` simulator (its own collector); one
    metrics row per interval; `run_cfg.iterations` intervals; checkpoint under the run's out_dir."""
    from training.rl.runtime import MetricsLogger, save_checkpoint
    from training.rl.trainer import RunResult, default_out_dir

    if task.name != "allocate":
        raise ValueError(f"marca allocates compute in the 'allocate' problem's simulator; got task {task.name!r}")
    cfg = replace(cfg, seed=run_cfg.seed, train_intervals=run_cfg.iterations)
    torch.set_num_threads(run_cfg.cpu_threads)
    out_dir = Path(run_cfg.out_dir) if run_cfg.out_dir else default_out_dir(task.name, "marca")
    logger = MetricsLogger(out_dir, tensorboard=run_cfg.tensorboard, plots=run_cfg.plots)
    history: list[dict[str, float]] = []

    def on_log(row: dict[str, float]) -> None:
        metrics = {
            ("charts/" if k in ("epsilon", "lambda", "utilisation", "revenue_per_request") else "losses/") + k: v
            for k, v in row.items()
            if k != "interval" and not math.isnan(v)
        }
        logger.log(len(history), metrics)
        history.append({"iteration": float(len(history)), **metrics})

    try:
        result = train(cfg, "marca", on_log=on_log)
    finally:
        logger.close()
    save_checkpoint(out_dir / "checkpoint.safetensors", result.learner.state_dict(), {"algorithm": "marca"})
    return RunResult(
        learner=result.learner,  # type: ignore[arg-type]
        history=history,
        out_dir=out_dir,
        transitions=cfg.train_intervals * cfg.requests_per_interval,
        seconds=result.seconds,
    )


register_algorithm(AlgorithmSpec("marca", MarcaConfig, loss=None, multi_agent=True, data="online", fit=fit))
