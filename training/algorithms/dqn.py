"""DQN with target network and double-Q targets; joint or per-head multi-discrete actions; recurrent (R2D2-lite).

Papers: Mnih et al. 2015 (DQN: replay, target network, Huber loss, ε-greedy);
van Hasselt et al. 2016 (double DQN: the online net picks, the target net
values); Kapturowski et al. 2019 (R2D2: sequence replay, stored state,
burn-in, n-step). Reads top to bottom: config, networks, loss, act, train.

Action modes for a multi-discrete action with component sizes (a_1 … a_N):
* `joint`    — one Q over the Π a_i joint actions (mixed radix). MaRCA's "DQN"
               baseline (one agent over the joint action).
* `per_head` — one Q head per component (action branching, Tavakoli et al.
               2018): each head regresses to one shared target
               y = r + γ · mean_i Q'_i(s', argmax Q_i(s')), the BDQ "mean" target.
               Ours: no shared state-value stream (BDQ's dueling part).

Deviations, marked:
* Gradient steps per environment step, ε schedule and target period are in
  transitions/gradient updates of our vectorised collector, not Atari frames.
* Adam, not RMSProp (as most modern DQN implementations); no reward clipping
  (rewards stay in the task's units) and no frame stacking (not Atari).
* Recurrent mode: uniform, not prioritised, sequence replay; no invertible value
  rescaling h(x) (R2D2 §2.3); targets from the same stored state with burn-in.
  K heads (MaRCA's ensemble) each regress to their own double-Q target; their
  TD losses are combined by the `head_weights` hook — uniform here, MaRCA
  overrides it with weights ∝ each head's TD loss. Serving uses the heads' mean.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.problems import DiscreteAction, MultiDiscreteAction
from training.rl.discrete import components_to_joint, epsilon_greedy, joint_to_components, linear_epsilon, masked_argmax
from training.rl.functional import n_step_targets, soft_update
from training.rl.offpolicy_functional import dqn_targets
from training.rl.recurrent import RecurrentQNetwork, unroll_with_burn_in
from training.rl.registry import AlgorithmSpec, register_algorithm
from training.rl.replay import NStepWriter, ReplayBuffer, SequenceReplay, SequenceWriter
from training.rl.task import TaskSpec
from training.rl.toy_mdps import VectorEnv

if TYPE_CHECKING:
    from training.rl.trainer import RunConfig, RunResult

ACTION_MODES = ("joint", "per_head")


@dataclass(frozen=True)
class DQNConfig:
    gamma: float = 0.9
    """Discount γ of the return being maximised (the generic `train` uses the task's main-signal γ)."""
    n_step: int = 1
    """Rewards summed before bootstrapping (1 = Mnih et al.; R2D2 uses 5)."""
    double_q: bool = True
    """Double DQN targets (van Hasselt 2016); False = the max over the target net (Mnih 2015)."""
    action_mode: str = "joint"
    """'joint' (one Q over all joint actions) or 'per_head' (one head per action component)."""
    learning_rate: float = 1e-3
    """Adam step size."""
    batch_size: int = 128
    """Transitions (or sequences, in recurrent mode) per gradient step."""
    buffer_capacity: int = 100_000
    """Replay capacity in rows (transitions or sequences)."""
    total_env_steps: int = 20_000
    """Transitions collected over all parallel envs (the generic `train`: iterations × rollout_steps × n_envs)."""
    learning_starts: int = 1_000
    """Transitions collected before the first gradient step."""
    updates_per_step: int = 1
    """Gradient steps per vector-env step."""
    target_update_period: int = 250
    """Gradient steps between hard target copies (ignored when target_tau is set)."""
    target_tau: float | None = None
    """Polyak rate τ for a soft target update after every gradient step; None = hard copies."""
    epsilon_start: float = 1.0
    """ε at the start of the linear schedule."""
    epsilon_end: float = 0.05
    """ε after `epsilon_decay_steps` transitions."""
    epsilon_decay_steps: int = 10_000
    """Transitions over which ε decays linearly."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """ReLU MLP widths (feed-forward Q-network, or the recurrent net's encoder)."""
    huber_delta: float | None = 1.0
    """Huber loss threshold (Mnih 2015 clips the TD error at 1); None = squared error."""
    max_grad_norm: float | None = 10.0
    """Global gradient-norm clip; None = no clipping."""
    recurrent: bool = False
    """Recurrent Q-network on sequence replay with burn-in (R2D2-lite)."""
    cell: str = "gru"
    """'gru' or 'lstm' (recurrent mode)."""
    recurrent_hidden_size: int = 64
    """Cell width (recurrent mode)."""
    num_heads: int = 1
    """K Q-heads (recurrent mode; MaRCA's ensemble)."""
    sequence_length: int = 8
    """Steps per stored sequence, burn-in included (recurrent mode)."""
    sequence_period: int | None = None
    """Steps between consecutive sequence starts; None = sequence_length (no overlap)."""
    burn_in: int = 0
    """Leading steps of a sequence that only refresh the stored state (recurrent mode)."""
    seed: int = 0
    """Seed of the networks, the replay sampler and the exploration (the generic `train`: run.seed)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DQNConfig:
        """From a config file's `algo:` section; unknown keys are refused by name."""
        from training.rl.offpolicy_runner import config_from_dict

        return config_from_dict(cls, data)  # type: ignore[no-any-return]

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"DQNConfig.gamma must be in [0, 1), got {self.gamma}")
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"DQNConfig.action_mode must be one of {ACTION_MODES}, got {self.action_mode!r}")
        for name in (
            "n_step",
            "batch_size",
            "buffer_capacity",
            "total_env_steps",
            "updates_per_step",
            "target_update_period",
            "num_heads",
            "sequence_length",
            "recurrent_hidden_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"DQNConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.target_tau is not None and not 0.0 < self.target_tau <= 1.0:
            raise ValueError(f"DQNConfig.target_tau must be in (0, 1] or None, got {self.target_tau}")
        if not 0.0 <= self.epsilon_end <= 1.0 or not 0.0 <= self.epsilon_start <= 1.0:
            raise ValueError("DQNConfig.epsilon_start and epsilon_end must be in [0, 1]")
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"DQNConfig.cell must be 'gru' or 'lstm', got {self.cell!r}")
        if not 0 <= self.burn_in < self.sequence_length:
            raise ValueError(f"DQNConfig.burn_in must be in [0, sequence_length), got {self.burn_in}")
        if self.recurrent and self.action_mode != "joint":
            raise ValueError("DQNConfig: recurrent mode supports action_mode='joint' only")


# ---------------------------------------------------------------- networks


class QNetwork(nn.Module):
    """Feed-forward Q-network: obs (B, O) → Q (B, H, A_max) with an availability mask (H, A_max).

    `joint`: H = 1 head over Π sizes actions. `per_head`: H = N heads, head i
    over sizes[i] actions (padded to A_max and masked).
    """

    action_mask: Tensor

    def __init__(self, obs_size: int, action_sizes: Sequence[int], mode: str, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        if obs_size < 1 or not action_sizes or min(action_sizes) < 1:
            raise ValueError(
                f"QNetwork: obs_size ≥ 1 and action sizes ≥ 1 needed, got {obs_size}, {list(action_sizes)}"
            )
        self.action_sizes = tuple(int(a) for a in action_sizes)
        head_sizes = [int(torch.tensor(self.action_sizes).prod())] if mode == "joint" else list(self.action_sizes)
        self.num_heads, self.width = len(head_sizes), max(head_sizes)
        layers: list[nn.Module] = []
        prev = obs_size
        for size in hidden_sizes:
            layers += [nn.Linear(prev, size), nn.ReLU()]
            prev = size
        layers.append(nn.Linear(prev, self.num_heads * self.width))
        self.body = nn.Sequential(*layers)
        mask = torch.arange(self.width).unsqueeze(0) < torch.tensor(head_sizes).unsqueeze(1)
        self.register_buffer("action_mask", mask)

    def forward(self, obs: Tensor) -> Tensor:
        q = self.body(obs).reshape(-1, self.num_heads, self.width)
        return q.masked_fill(~self.action_mask, 0.0)


def _td_error_loss(error: Tensor, huber_delta: float | None) -> Tensor:
    """Elementwise Huber (or squared) loss of a TD error; same shape as `error`."""
    if huber_delta is None:
        return 0.5 * error**2
    return F.huber_loss(error, torch.zeros_like(error), reduction="none", delta=huber_delta)


# ---------------------------------------------------------------- loss


class DQNLoss(nn.Module):
    """Online and target Q-networks and the (double) DQN TD loss on n-step transitions.

    Batch fields (from `NStepWriter`): obs (B, O), action (B, N) long
    components, reward (B,), next_obs (B, O), discount (B,) = γ^m (1 − done).
    """

    algorithm: ClassVar[str] = "dqn"

    def __init__(self, q_network: QNetwork, cfg: DQNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.q_network = q_network
        self.target_network = copy.deepcopy(q_network).requires_grad_(False)
        self.action_sizes = q_network.action_sizes

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"q": list(self.q_network.parameters())}

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        q_all = self.q_network(batch["obs"])  # (B, H, A_max)
        with torch.no_grad():
            next_target = self.target_network(batch["next_obs"])
            next_online = self.q_network(batch["next_obs"]) if self.cfg.double_q else None
        zeros = torch.zeros_like(batch["reward"])  # terminations are already folded into `discount`
        if self.cfg.action_mode == "joint":
            action = components_to_joint(batch["action"], self.action_sizes)
            q_taken = q_all[:, 0].gather(-1, action.unsqueeze(-1)).squeeze(-1)
            target = dqn_targets(
                batch["reward"],
                next_target[:, 0],
                zeros,
                batch["discount"],
                None if next_online is None else next_online[:, 0],
            )
            error = q_taken - target
        else:
            mask = self.q_network.action_mask.expand_as(q_all)
            q_taken = q_all.gather(-1, batch["action"].unsqueeze(-1)).squeeze(-1)  # (B, N)
            picker = next_target if next_online is None else next_online
            greedy = masked_argmax(picker, mask)
            next_value = next_target.gather(-1, greedy.unsqueeze(-1)).squeeze(-1).mean(-1)  # BDQ mean target
            target = batch["reward"] + batch["discount"] * next_value
            error = q_taken - target.unsqueeze(-1)
        loss = _td_error_loss(error, self.cfg.huber_delta).mean()
        return {"loss": loss, "q_mean": q_taken.mean().detach(), "td_abs": error.abs().mean().detach()}

    @torch.no_grad()
    def greedy_action(self, obs: Tensor) -> Tensor:
        """Greedy components (B, N) for observations (B, O)."""
        q = self.q_network(obs)
        if self.cfg.action_mode == "joint":
            return joint_to_components(q[:, 0].argmax(-1), self.action_sizes)
        return masked_argmax(q, self.q_network.action_mask.expand_as(q))

    def update_target(self, num_updates: int) -> None:
        """Soft update after every gradient step (τ set), else a hard copy every `target_update_period` steps."""
        if self.cfg.target_tau is not None:
            soft_update(self.target_network, self.q_network, self.cfg.target_tau)
        elif num_updates % self.cfg.target_update_period == 0:
            self.target_network.load_state_dict(self.q_network.state_dict())


class RecurrentDQNLoss(DQNLoss):
    """Recurrent variant: time-major sequence batches, burn-in from the stored state, per-head n-step double-Q.

    Batch fields (from `SequenceReplay.sample`): obs, next_obs (L, B, O),
    action (L, B, 1), reward, terminated, truncated, mask (L, B), hidden (B, S).
    """

    q_network: RecurrentQNetwork  # type: ignore[assignment]
    target_network: RecurrentQNetwork  # type: ignore[assignment]

    def __init__(self, q_network: RecurrentQNetwork, cfg: DQNConfig) -> None:
        nn.Module.__init__(self)
        self.cfg = cfg
        self.q_network = q_network
        self.target_network = copy.deepcopy(q_network).requires_grad_(False)
        self.action_sizes = (q_network.num_actions,)

    def head_weights(self, per_head_td_loss: Tensor) -> Tensor:
        """Weights (K,) summing to 1 that combine the heads' TD losses. Hook: uniform here; MaRCA: ∝ loss."""
        return torch.full_like(per_head_td_loss, 1.0 / per_head_td_loss.shape[0])

    @staticmethod
    def _unroll_with_states(net: RecurrentQNetwork, obs: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """(T, B, O), (B, S) → Q (T, B, K, A) and the states after every step (T, B, S)."""
        qs, states = [], []
        for t in range(obs.shape[0]):
            q, state = net.step(obs[t], state)
            qs.append(q)
            states.append(state)
        return torch.stack(qs), torch.stack(states)

    def _next_q(self, net: RecurrentQNetwork, next_obs: Tensor, states: Tensor) -> Tensor:
        """Q(s_{t+1}) from each step's post-step state: one batched step over all (T·B) rows → (T, B, K, A)."""
        steps, batch = next_obs.shape[:2]
        q, _ = net.step(next_obs.reshape(steps * batch, -1), states.reshape(steps * batch, -1))
        return q.reshape(steps, batch, *q.shape[1:])

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        burn = self.cfg.burn_in
        stored = batch["hidden"]

        def unroll_online(o: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
            q, states = self._unroll_with_states(self.q_network, o, s)
            return torch.cat([q.flatten(2), states], dim=-1), states[-1]

        packed, _ = unroll_with_burn_in(unroll_online, batch["obs"], stored, burn)
        k, a = self.q_network.num_heads, self.q_network.num_actions
        q_online = packed[..., : k * a].reshape(*packed.shape[:2], k, a)  # (T', B, K, A)
        online_states = packed[..., k * a :]
        next_obs = batch["next_obs"][burn:]
        with torch.no_grad():
            target_start = stored
            if burn:
                _, target_start = self.target_network.unroll(batch["obs"][:burn], stored)
            _, target_states = self._unroll_with_states(self.target_network, batch["obs"][burn:], target_start)
            next_target = self._next_q(self.target_network, next_obs, target_states)
            if self.cfg.double_q:
                greedy = self._next_q(self.q_network, next_obs, online_states.detach()).argmax(-1, keepdim=True)
            else:
                greedy = next_target.argmax(-1, keepdim=True)
            next_value = next_target.gather(-1, greedy).squeeze(-1)  # (T', B, K)
            mask = batch["mask"][burn:]
            expand = (*mask.shape, k)
            ends = (batch["terminated"][burn:] | batch["truncated"][burn:]) | (mask == 0)
            target = n_step_targets(
                batch["reward"][burn:].unsqueeze(-1).expand(expand),
                next_value,
                batch["terminated"][burn:].unsqueeze(-1).expand(expand).float(),
                self.cfg.gamma,
                self.cfg.n_step,
                ends=ends.unsqueeze(-1).expand(expand).float(),
            )
        action = batch["action"][burn:].reshape(*mask.shape, 1, 1).expand(*mask.shape, k, 1)
        q_taken = q_online.gather(-1, action).squeeze(-1)  # (T', B, K)
        error = q_taken - target
        per_step = _td_error_loss(error, self.cfg.huber_delta) * mask.unsqueeze(-1)
        per_head = per_step.sum(dim=(0, 1)) / mask.sum().clamp_min(1.0)  # (K,)
        weights = self.head_weights(per_head.detach())
        loss = (weights * per_head).sum()
        valid = mask.unsqueeze(-1).expand_as(error) > 0
        return {"loss": loss, "q_mean": q_taken[valid].mean().detach(), "td_abs": error[valid].abs().mean().detach()}


# ---------------------------------------------------------------- train


@dataclass
class DQNResult:
    loss_module: DQNLoss
    metrics: list[dict[str, float]]
    """One row per logging interval: env_steps, epsilon, loss, q_mean, td_abs, episode_return."""


def build_loss(cfg: DQNConfig, obs_size: int, action_sizes: Sequence[int]) -> DQNLoss:
    torch.manual_seed(cfg.seed)
    if cfg.recurrent:
        if len(action_sizes) != 1:
            raise ValueError(
                f"recurrent DQN takes one discrete action; got sizes {list(action_sizes)} "
                "(flatten them with training.rl.discrete.components_to_joint)"
            )
        net = RecurrentQNetwork(
            obs_size, int(action_sizes[0]), cfg.recurrent_hidden_size, cfg.num_heads, cfg.cell, cfg.hidden_sizes
        )
        return RecurrentDQNLoss(net, cfg)
    return DQNLoss(QNetwork(obs_size, action_sizes, cfg.action_mode, cfg.hidden_sizes), cfg)


def train(
    cfg: DQNConfig,
    env: VectorEnv,
    action_sizes: Sequence[int],
    log_every: int = 2_000,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> DQNResult:
    """Collect with ε-greedy from N parallel envs, learn from replay; returns the loss module (online + target nets).

    Actions are passed to the env as joint indices (N,) for one component and
    as components (N, len(action_sizes)) otherwise. `on_log(row)` sees every
    metrics row as it is made (live curves).
    """
    loss_module = build_loss(cfg, env.obs_size, action_sizes)
    optimiser = torch.optim.Adam(loss_module.parameter_groups()["q"], lr=cfg.learning_rate)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    recurrent = isinstance(loss_module, RecurrentDQNLoss)
    if recurrent:
        replay: ReplayBuffer = SequenceReplay(cfg.buffer_capacity, cfg.sequence_length, cfg.burn_in, cfg.seed)
        seq_writer = SequenceWriter(cfg.sequence_length, cfg.sequence_period)
    else:
        replay = ReplayBuffer(cfg.buffer_capacity, cfg.seed)
        writer = NStepWriter(cfg.n_step, cfg.gamma)
    obs = env.reset()
    n = env.num_envs
    recurrent_net = loss_module.q_network if isinstance(loss_module, RecurrentDQNLoss) else None
    hidden = recurrent_net.initial_state(n) if recurrent_net is not None else torch.zeros(n, 0)
    episode_return, finished_returns = torch.zeros(n), []
    metrics: list[dict[str, float]] = []
    window: list[dict[str, Tensor]] = []
    env_steps = updates = 0
    next_log, started = log_every, time.monotonic()
    while env_steps < cfg.total_env_steps:
        epsilon = linear_epsilon(env_steps, cfg.epsilon_start, cfg.epsilon_end, cfg.epsilon_decay_steps)
        with torch.no_grad():
            if recurrent_net is not None:
                q, next_hidden = recurrent_net.step(obs, hidden)
                joint, _ = epsilon_greedy(q.mean(-2), epsilon, generator)
                components = joint.unsqueeze(-1)
            else:
                q = loss_module.q_network(obs)
                if cfg.action_mode == "joint":
                    joint, _ = epsilon_greedy(q[:, 0], epsilon, generator)
                    components = joint_to_components(joint, action_sizes)
                else:
                    mask = loss_module.q_network.action_mask.expand_as(q)
                    components, _ = epsilon_greedy(q, epsilon, generator, action_mask=mask)
        step = env.step(components[:, 0] if len(action_sizes) == 1 else components)
        record = {
            "obs": obs,
            "action": components,
            "reward": step.reward,
            "next_obs": step.next_obs,
            "terminated": step.terminated,
            "truncated": step.truncated,
        }
        if recurrent:
            sequences = seq_writer.push(record, hidden)
            if sequences is not None:
                replay.add(sequences)
            ended = (step.terminated | step.truncated).float().unsqueeze(-1)
            hidden = next_hidden * (1.0 - ended)
        else:
            transition = writer.push(record)
            if transition is not None:
                replay.add(transition)
        episode_return += step.reward
        done_mask = step.terminated | step.truncated
        finished_returns.extend(episode_return[done_mask].tolist())
        episode_return[done_mask] = 0.0
        obs = step.obs
        env_steps += n
        rows = len(replay) * (cfg.sequence_length if recurrent else 1)
        if rows >= cfg.learning_starts:
            for _ in range(cfg.updates_per_step):
                out = loss_module(replay.sample(cfg.batch_size))
                optimiser.zero_grad(set_to_none=True)
                out["loss"].backward()
                if cfg.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(loss_module.parameter_groups()["q"], cfg.max_grad_norm)
                optimiser.step()
                updates += 1
                loss_module.update_target(updates)
                window.append({k: v.detach() for k, v in out.items()})
        if env_steps >= next_log or env_steps >= cfg.total_env_steps:
            row = {
                "env_steps": float(env_steps),
                "epsilon": epsilon,
                "updates": float(updates),
                "steps_per_s": env_steps / max(time.monotonic() - started, 1e-9),
            }
            if window:
                row.update({k: float(torch.stack([w[k] for w in window]).mean()) for k in window[0]})
            if finished_returns:
                row["episode_return"] = float(sum(finished_returns) / len(finished_returns))
            metrics.append(row)
            if on_log is not None:
                on_log(row)
            window, finished_returns = [], []
            next_log += log_every
    return DQNResult(loss_module, metrics)


@torch.no_grad()
def greedy_success_rate(loss_module: DQNLoss, env: VectorEnv, episodes: int = 512) -> float:
    """Mean episode return of the greedy policy (recurrent or not) over whole episodes of `env`."""
    recurrent_net = loss_module.q_network if isinstance(loss_module, RecurrentDQNLoss) else None
    obs = env.reset()
    hidden = recurrent_net.initial_state(env.num_envs) if recurrent_net is not None else None
    returns: list[float] = []
    running = torch.zeros(env.num_envs)
    while len(returns) < episodes:
        if recurrent_net is not None:
            assert hidden is not None
            q, hidden = recurrent_net.step(obs, hidden)
            action = q.mean(-2).argmax(-1)
        else:
            action = loss_module.greedy_action(obs)[:, 0]
        step = env.step(action)
        running += step.reward
        ended = step.terminated | step.truncated
        returns.extend(running[ended].tolist())
        running[ended] = 0.0
        if hidden is not None:
            hidden = hidden * (1.0 - ended.float().unsqueeze(-1))
        obs = step.obs
    return float(sum(returns[:episodes]) / episodes)


# ---------------------------------------------------------------- registry


def action_sizes_of(task: TaskSpec) -> list[int]:
    """Component sizes of a discrete or multi-discrete task action; a clear error for a box."""
    if isinstance(task.action, DiscreteAction):
        return [task.action.n]
    if isinstance(task.action, MultiDiscreteAction):
        return list(task.action.nvec)
    raise ValueError(f"dqn needs a discrete or multi-discrete action, got {type(task.action).__name__} (try ddpg/td3)")


def fit(task: TaskSpec, source: Any, cfg: DQNConfig, run_cfg: RunConfig) -> RunResult:
    """The generic `train`'s entry: the task's action sizes and main-signal γ, the run's seed and budget."""
    from training.rl.offpolicy_runner import fit_online

    sizes = action_sizes_of(task)
    cfg = replace(cfg, gamma=task.discounts[0], seed=run_cfg.seed)

    def loop(env: VectorEnv, total: int, every: int, on_log: Callable[[dict[str, float]], None]) -> nn.Module:
        return train(replace(cfg, total_env_steps=total), env, sizes, every, on_log).loss_module

    return fit_online("dqn", task, source, run_cfg, loop)


register_algorithm(AlgorithmSpec("dqn", DQNConfig, loss=None, data="online", fit=fit))
