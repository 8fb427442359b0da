"""DDPG and TD3: a deterministic actor trained through ∇ₐQ, critics on replay with target networks.

Papers: Lillicrap et al. 2016 (DDPG; deterministic policy gradient of Silver
et al. 2014: ∇_θ J = E[∇ₐ Q(s, a)|_{a=μ(s)} ∇_θ μ(s)]); Fujimoto et al. 2018
(TD3: clipped double-Q, target policy smoothing, delayed policy updates). One
config covers both: `td3_config()` switches on the three TD3 pieces. Reads top
to bottom: config, networks, loss, train, export.

Deviations, marked:
* Exploration is Gaussian noise N(0, σ²) clipped to the action box, not the
  Ornstein–Uhlenbeck process of Lillicrap et al. (as Fujimoto et al.'s own
  "our DDPG" baseline; OU noise brings nothing on these tasks).
* DDPG here has no batch norm and uses the same network sizes as TD3 (ours:
  so the comparison isolates TD3's three changes, as in Fujimoto's ablation).
* Targets come from the n-step writer (y = R + discount · Q'), n = 1 by
  default (both papers use one-step targets).
* The actor's last layer is tanh scaled to [low, high] (both papers), so the
  ONNX "action" output is inside the box.

Hooks for the multi-agent and recurrent variants (MA-RDPG's centralised
critic Q(h, o, a), MADDPG's per-agent critics):
* `critic_input(obs, action)` — what every critic reads (default: [obs; action]);
* `actor_input(obs)`          — what the actor reads (default: obs).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.problems import BoxAction
from training.rl.functional import soft_update
from training.rl.offpolicy_functional import clipped_double_q_targets, target_policy_smoothing
from training.rl.registry import AlgorithmSpec, register_algorithm
from training.rl.replay import NStepWriter, ReplayBuffer
from training.rl.task import TaskSpec

if TYPE_CHECKING:
    from training.rl.trainer import RunConfig, RunResult


@dataclass(frozen=True)
class DDPGConfig:
    gamma: float = 0.9
    """Discount γ."""
    tau: float = 0.005
    """Polyak rate τ of the target actor and critics (both papers: 0.001 / 0.005)."""
    actor_lr: float = 1e-3
    """Adam step size of the actor."""
    critic_lr: float = 1e-3
    """Adam step size of the critic(s)."""
    batch_size: int = 128
    """Transitions per gradient step."""
    buffer_capacity: int = 100_000
    """Replay capacity (transitions)."""
    total_env_steps: int = 20_000
    """Transitions collected over all parallel envs."""
    learning_starts: int = 1_000
    """Transitions collected (with uniform random actions) before the first gradient step."""
    updates_per_step: int = 1
    """Critic gradient steps per vector-env step."""
    exploration_std: float = 0.1
    """σ of the Gaussian exploration noise, as a fraction of the half-width of the action box."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """ReLU MLP widths of the actor and the critics."""
    n_step: int = 1
    """Rewards summed before bootstrapping."""
    twin_critics: bool = False
    """TD3's clipped double-Q: two critics, target = min of the two target critics."""
    target_policy_noise: float = 0.0
    """TD3's target policy smoothing σ (fraction of the half-width); 0 = off (DDPG)."""
    target_noise_clip: float = 0.5
    """TD3's clip c of the smoothing noise (fraction of the half-width)."""
    policy_delay: int = 1
    """Critic steps per actor and target update (TD3: 2; DDPG: 1)."""
    seed: int = 0
    """Seed of the networks, the replay sampler and the exploration noise (the generic `train`: run.seed)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"DDPGConfig.gamma must be in [0, 1), got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"DDPGConfig.tau must be in (0, 1], got {self.tau}")
        for name in ("batch_size", "buffer_capacity", "total_env_steps", "updates_per_step", "policy_delay", "n_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"DDPGConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("exploration_std", "target_policy_noise", "target_noise_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"DDPGConfig.{name} must be ≥ 0, got {getattr(self, name)}")
        if self.actor_lr <= 0 or self.critic_lr <= 0:
            raise ValueError("DDPGConfig.actor_lr and critic_lr must be > 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DDPGConfig:
        """From a config file's `algo:` section; unknown keys are refused by name."""
        from training.rl.offpolicy_runner import config_from_dict

        return config_from_dict(cls, data)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class TD3Config(DDPGConfig):
    """TD3's settings (Fujimoto et al. 2018, §5): twin critics, smoothing σ = 0.2 clipped at 0.5, delay 2."""

    twin_critics: bool = True
    target_policy_noise: float = 0.2
    target_noise_clip: float = 0.5
    policy_delay: int = 2


def td3_config(**overrides: Any) -> TD3Config:
    """`TD3Config` with `overrides`."""
    return TD3Config(**overrides)


# ---------------------------------------------------------------- networks


def _mlp(in_size: int, out_size: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = in_size
    for size in hidden:
        layers += [nn.Linear(prev, size), nn.ReLU()]
        prev = size
    layers.append(nn.Linear(prev, out_size))
    return nn.Sequential(*layers)


class DeterministicActor(nn.Module):
    """μ(s) = low + (high − low)(tanh(f(s)) + 1)/2: observation (B, O) → action (B, d) inside [low, high]."""

    low: Tensor
    high: Tensor

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        hidden: Sequence[int],
        low: float | Sequence[float],
        high: float | Sequence[float],
    ) -> None:
        super().__init__()
        if obs_size < 1 or action_size < 1:
            raise ValueError(f"DeterministicActor: obs_size and action_size must be ≥ 1, got {obs_size}, {action_size}")
        low_t = torch.as_tensor(low, dtype=torch.float32).expand(action_size).clone()
        high_t = torch.as_tensor(high, dtype=torch.float32).expand(action_size).clone()
        if bool((high_t <= low_t).any()):
            raise ValueError(f"DeterministicActor: need high > low, got low {low_t.tolist()}, high {high_t.tolist()}")
        self.obs_size, self.action_size = obs_size, action_size
        self.body = _mlp(obs_size, action_size, hidden)
        self.register_buffer("low", low_t)
        self.register_buffer("high", high_t)

    def forward(self, obs: Tensor) -> Tensor:
        return self.low + (self.high - self.low) * (torch.tanh(self.body(obs)) + 1.0) / 2.0


class MessageActor(nn.Module):
    """A deterministic actor with a recurrent message (MA-RDPG's stage agent), one step at a time.

    step: observation (B, O), message state (B, S) → action (B, d), next message state (B, S) with
        a_t = μ([o_t; h_{t−1}])             (the actor reads its local observation and the message)
        state_t = LSTM(state_{t−1}, [o_t; a_t])   (h = the first H entries of the packed [h; c] state)
    — the message update of MA-RDPG (Feng et al. 2018) with the action fed in. The state is the last
    input and output, so `training.rl.recurrent.export_recurrent_step(actor, [O, S], ("observation",
    "message"), ("action", "next_message"), path)` exports it with a parity check over chained steps.
    Ours: a GRU is allowed too (`cell="gru"`, S = H); the paper uses an LSTM.
    """

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        hidden: Sequence[int],
        low: float | Sequence[float],
        high: float | Sequence[float],
        message_size: int = 32,
        cell: str = "lstm",
    ) -> None:
        super().__init__()
        from training.rl.recurrent import make_cell

        self.cell = make_cell(cell, obs_size + action_size, message_size)
        self.message_size = message_size
        self.state_size = self.cell.state_size
        self.policy = DeterministicActor(obs_size + message_size, action_size, hidden, low, high)

    def initial_state(self, batch_size: int) -> Tensor:
        return torch.zeros(batch_size, self.state_size)

    def forward(self, observation: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        message = state[..., : self.message_size]
        action = self.policy(torch.cat([observation, message], dim=-1))
        return action, self.cell(torch.cat([observation, action], dim=-1), state)


class QCritic(nn.Module):
    """Q(x) for a critic input x (B, I) — by default [obs; action] → (B,)."""

    def __init__(self, input_size: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.body = _mlp(input_size, 1, hidden)

    def forward(self, critic_input: Tensor) -> Tensor:
        return self.body(critic_input).squeeze(-1)


# ---------------------------------------------------------------- loss


class DDPGLoss(nn.Module):
    """Actor, critic(s) and their targets; `critic_loss` and `actor_loss` on n-step transitions.

    Batch fields (from `NStepWriter`): obs (B, O), action (B, d), reward (B,),
    next_obs (B, O), discount (B,) = γ^m (1 − done).
    """

    def __init__(self, actor: DeterministicActor, critics: Sequence[QCritic], cfg: DDPGConfig) -> None:
        super().__init__()
        if len(critics) != (2 if cfg.twin_critics else 1):
            raise ValueError(f"DDPGLoss: {2 if cfg.twin_critics else 1} critic(s) expected, got {len(critics)}")
        self.cfg = cfg
        self.algorithm = "td3" if isinstance(cfg, TD3Config) else "ddpg"
        self.actor = actor
        self.critics = nn.ModuleList(critics)
        self.target_actor = copy.deepcopy(actor).requires_grad_(False)
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)

    # -- hooks ---------------------------------------------------------------
    def critic_input(self, obs: Tensor, action: Tensor) -> Tensor:
        """What the critics read. MA-RDPG overrides it with [message h; obs; joint action]."""
        return torch.cat([obs, action], dim=-1)

    def actor_input(self, obs: Tensor) -> Tensor:
        """What the actor reads. MA-RDPG overrides it with [local obs; message]."""
        return obs

    # -- losses --------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"actor": list(self.actor.parameters()), "critic": list(self.critics.parameters())}

    def critic_loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Σ_i mean (Q_i(s, a) − y)², y = R + discount · min_i Q'_i(s', ã') (one critic: no min; σ = 0: ã' = μ'(s'))."""
        with torch.no_grad():
            next_action = self.target_actor(self.actor_input(batch["next_obs"]))
            if self.cfg.target_policy_noise > 0:
                half_width = (self.actor.high - self.actor.low) / 2.0
                # the noise is specified relative to the box; smoothing works in units of the half-width
                scaled = target_policy_smoothing(
                    next_action / half_width,
                    self.cfg.target_policy_noise,
                    self.cfg.target_noise_clip,
                    self.actor.low / half_width,
                    self.actor.high / half_width,
                    generator,
                )
                next_action = scaled * half_width
            next_in = self.critic_input(batch["next_obs"], next_action)
            next_q = [critic(next_in) for critic in self.target_critics]
            target = clipped_double_q_targets(
                batch["reward"],
                next_q[0],
                next_q[1] if len(next_q) > 1 else None,
                torch.zeros_like(batch["reward"]),
                batch["discount"],
            )
        current_in = self.critic_input(batch["obs"], batch["action"])
        qs = [critic(current_in) for critic in self.critics]
        loss = sum(F.mse_loss(q, target) for q in qs)
        assert isinstance(loss, Tensor)
        return {"critic_loss": loss, "q_mean": qs[0].mean().detach(), "target_mean": target.mean().detach()}

    def actor_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """−mean Q_1(s, μ(s)): its gradient is the deterministic policy gradient ∇ₐQ ∇_θ μ (TD3 uses Q_1 only)."""
        action = self.actor(self.actor_input(batch["obs"]))
        q = self.critics[0](self.critic_input(batch["obs"], action))
        return {"actor_loss": -q.mean()}

    def update_targets(self) -> None:
        soft_update(self.target_actor, self.actor, self.cfg.tau)
        soft_update(self.target_critics, self.critics, self.cfg.tau)


def build_loss(
    cfg: DDPGConfig, obs_size: int, action_size: int, low: float | Sequence[float], high: float | Sequence[float]
) -> DDPGLoss:
    torch.manual_seed(cfg.seed)
    actor = DeterministicActor(obs_size, action_size, cfg.hidden_sizes, low, high)
    critics = [QCritic(obs_size + action_size, cfg.hidden_sizes) for _ in range(2 if cfg.twin_critics else 1)]
    return DDPGLoss(actor, critics, cfg)


# ---------------------------------------------------------------- train


@dataclass
class DDPGResult:
    loss_module: DDPGLoss
    metrics: list[dict[str, float]]
    """One row per logging interval: env_steps, critic_loss, actor_loss, q_mean, episode_return."""


def train(
    cfg: DDPGConfig, env: Any, log_every: int = 2_000, on_log: Callable[[dict[str, float]], None] | None = None
) -> DDPGResult:
    """Train on a `training.rl.toy_mdps.VectorEnv` with a box action (`env.action_size`, `env.low`, `env.high`).

    `on_log(row)` sees every metrics row as it is made (live curves).
    """
    loss_module = build_loss(cfg, env.obs_size, env.action_size, env.low, env.high)
    groups = loss_module.parameter_groups()
    actor_opt = torch.optim.Adam(groups["actor"], lr=cfg.actor_lr)
    critic_opt = torch.optim.Adam(groups["critic"], lr=cfg.critic_lr)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    replay = ReplayBuffer(cfg.buffer_capacity, cfg.seed)
    writer = NStepWriter(cfg.n_step, cfg.gamma)
    low, high = loss_module.actor.low, loss_module.actor.high
    half_width = (high - low) / 2.0
    obs = env.reset()
    n = env.num_envs
    episode_return, finished = torch.zeros(n), []
    metrics: list[dict[str, float]] = []
    window: list[dict[str, Tensor]] = []
    env_steps = critic_updates = 0
    next_log, started = log_every, time.monotonic()
    while env_steps < cfg.total_env_steps:
        with torch.no_grad():
            if env_steps < cfg.learning_starts:
                action = low + (high - low) * torch.rand(n, env.action_size, generator=generator)
            else:
                noise = torch.randn(n, env.action_size, generator=generator) * cfg.exploration_std * half_width
                action = loss_module.actor(loss_module.actor_input(obs)) + noise
                action = torch.maximum(torch.minimum(action, high), low)
        step = env.step(action)
        transition = writer.push(
            {
                "obs": obs,
                "action": action,
                "reward": step.reward,
                "next_obs": step.next_obs,
                "terminated": step.terminated,
                "truncated": step.truncated,
            }
        )
        if transition is not None:
            replay.add(transition)
        episode_return += step.reward
        ended = step.terminated | step.truncated
        finished.extend(episode_return[ended].tolist())
        episode_return[ended] = 0.0
        obs = step.obs
        env_steps += n
        if len(replay) >= cfg.learning_starts:
            for _ in range(cfg.updates_per_step):
                batch = replay.sample(cfg.batch_size)
                out = loss_module.critic_loss(batch, generator)
                critic_opt.zero_grad(set_to_none=True)
                out["critic_loss"].backward()
                critic_opt.step()
                critic_updates += 1
                if critic_updates % cfg.policy_delay == 0:  # TD3 §5.2: delayed actor and target updates
                    out.update(loss_module.actor_loss(batch))
                    actor_opt.zero_grad(set_to_none=True)
                    out["actor_loss"].backward()
                    actor_opt.step()
                    loss_module.update_targets()
                window.append({k: v.detach() for k, v in out.items()})
        if env_steps >= next_log or env_steps >= cfg.total_env_steps:
            row = {
                "env_steps": float(env_steps),
                "critic_updates": float(critic_updates),
                "steps_per_s": env_steps / max(time.monotonic() - started, 1e-9),
            }
            for key in ("critic_loss", "actor_loss", "q_mean", "target_mean"):
                vals = [w[key] for w in window if key in w]
                if vals:
                    row[key] = float(torch.stack(vals).mean())
            if finished:
                row["episode_return"] = float(sum(finished) / len(finished))
            metrics.append(row)
            if on_log is not None:
                on_log(row)
            window, finished = [], []
            next_log += log_every
    return DDPGResult(loss_module, metrics)


# ---------------------------------------------------------------- export


def export_actor(actor: DeterministicActor, path: Path) -> float:
    """ONNX: input "observation" (batch, O) → output "action" (batch, d), parity ≤ 1e-5 checked; returns max |diff|."""
    from training.export import export_module

    return export_module(actor, actor.obs_size, ["action"], path).max_abs_diff


# ---------------------------------------------------------------- registry


def fit(task: TaskSpec, source: Any, cfg: DDPGConfig, run_cfg: RunConfig) -> RunResult:
    """The generic `train`'s entry: the task's box and main-signal γ, the run's seed and budget."""
    from training.rl.offpolicy_runner import fit_online

    if not isinstance(task.action, BoxAction):
        raise ValueError(f"ddpg/td3 need a box (continuous) action, got {type(task.action).__name__} (try dqn)")
    box = task.action
    cfg = replace(cfg, gamma=task.discounts[0], seed=run_cfg.seed)

    class _BoxEnv:  # the pool's env with the box the loop needs
        def __init__(self, env: Any) -> None:
            self.env, self.num_envs, self.obs_size = env, env.num_envs, env.obs_size
            self.action_size, self.low, self.high = box.size, box.low, box.high
            self.reset, self.step = env.reset, env.step

    def loop(env: Any, total: int, every: int, on_log: Callable[[dict[str, float]], None]) -> nn.Module:
        return train(replace(cfg, total_env_steps=total), _BoxEnv(env), every, on_log).loss_module

    name = "td3" if isinstance(cfg, TD3Config) else "ddpg"
    return fit_online(name, task, source, run_cfg, loop)


register_algorithm(AlgorithmSpec("ddpg", DDPGConfig, loss=None, data="online", fit=fit))
register_algorithm(AlgorithmSpec("td3", TD3Config, loss=None, data="online", fit=fit))
