"""`LossModule`: the networks of one algorithm and the losses that train them (TorchRL's split).

A loss module owns its networks and nothing else: no optimiser, no data loop, no
exploration state. The `Trainer` (training/rl/trainer.py) builds the optimiser
from `parameter_groups()`, wraps the module in DDP, computes advantages with the
hooks below, calls `forward(minibatch)` for the total loss and applies
`target_pairs()` soft updates. Every algorithm file defines one subclass.

What the base class provides
* `actor` — the policy being trained (`make_actor`: tanh-Gaussian or Beta for boxes,
  factorised categorical for (multi-)discrete, `JointActor` for multi-agent tasks).
* `shipped_actor()` — the policy that ships: `actor` here; the constrained losses (RCPO, TSCAC, the MA
  cascade) override it with their best feasible iterate or window average. Export and benchmarks read
  it through `shipped_policy(learner)`, never `learner.actor`.
* `critics` / `target_critics` — one V_i per reward signal with its own γ_i (when
  `uses_critics`), regressed on TD(λ) returns online and one-step TD targets offline.
* `reward_scales` — per-signal reward std frozen at the first batch, so one learning
  rate and one multiplier fit watch time in seconds and interaction rates alike.

Named hooks for variants (override the one whose name says what changes):
* `build()`                       — extra networks (stage-one actors, a Q head, a centralised critic)
* `parameter_groups()`            — optimiser groups; call super() and append yours
* `target_pairs()`                — (target, source) pairs the trainer soft-updates
* `policies()`                    — every policy network (warm-started together offline)
* `on_batch_start(batch)`         — per-batch work (a dual step, diagnostics); returns metrics
* `fit_standardisers(obs, action)` — once, first batch: the networks' input statistics (`obs_standardise`)
* `on_train_end()`                — once after the last online batch, before the checkpoint (fit what ships)
* `advantage_estimates(mb)`       — per-signal advantages the actor loss reads (CTDE overrides it)
* `actor_loss(mb)`                — the policy objective: the part that differs per algorithm
* `extra_critic_loss(mb)`         — losses of extra critics

Advantages and critic targets
* online: GAE(λ) per signal with the signal's own γ_i, critic target = TD(λ) return
  (`online_targets`), computed once per batch before the minibatch loop.
* offline (logged transitions): one-step TD with the target critics,
  y_i = r_i + γ_i (1 − done) V̄_i(s'), A_i = y_i − V_i(s), per minibatch; critic regression
  weighted by clipped self-normalised π/μ (`offline_minibatch`; one-step correction — an
  approximation of the per-decision IS the sequential problem would need).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from training.rl.data import Rollout, TransitionBatch
from training.rl.functional import clipped_surrogate, gae, importance_weights, td_targets
from training.rl.networks import ACTION_DISTRIBUTIONS, Actor, CloneConfig, SignalCritics, make_actor
from training.rl.runtime import Dist
from training.rl.task import TaskSpec

EXPLORATIONS = ("per_step", "per_episode", "antithetic", "antithetic_state")
PAIRED_EXPLORATIONS = ("antithetic", "antithetic_state")
"""The explorations whose rows 2k and 2k + 1 play opposite noise (what `advantage = "episode_pairs"` needs)."""
ADVANTAGES = ("gae", "episode_pairs")


@dataclass(frozen=True)
class LossConfig:
    """Hyperparameters every loss module shares (algorithm configs subclass it)."""

    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of actors and critics."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor(s)."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critics."""
    gae_lambda: float = 0.95
    """λ of GAE / TD(λ) in online training."""
    tau: float = 0.01
    """Soft target-update rate τ of the critics' target copies (offline TD)."""
    is_clip: float = 10.0
    """Upper clip of importance weights before self-normalisation."""
    ppo_clip: float = 0.2
    """ε of the clipped policy-gradient surrogate (trust region around the data's policy)."""
    minibatch_size: int = 256
    """Rows per gradient step (the global minibatch; split over torchrun ranks)."""
    epochs: int = 4
    """Passes over each online rollout."""
    init_std: float = 0.1
    """Initial action-space standard deviation of box actors (at the box's centre)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip."""
    entropy_coef: float = 0.0
    """Entropy bonus of the shipped actor."""
    warm_start_steps: int = 300
    """Offline only: behaviour-cloning steps that start the actors at the logging policy."""
    warm_start_lr: float = 3e-3
    """Offline only: Adam step size of behaviour cloning at its first step; it decays linearly to 0."""
    action_distribution: str = "tanh_normal"
    """Box actions: "tanh_normal" (tanh-squashed Gaussian, exact log-det) or "beta" (scaled Beta)."""
    exploration: str = "per_step"
    """Online exploration noise of box actors (collector side, training/rl/exploration.py):
    "per_step" — a fresh draw every step (the papers); "per_episode" — each environment row holds
    its noise z ~ N(0, I) until its episode ends (action = squash(loc(s) + σ·z)); "antithetic" —
    per-episode noise where rows 2k and 2k+1 play +z and −z. DEPARTURE (ours) for the last two: on
    `rank` a weight's long-run effect (longer sessions, next-day returns) is invisible under
    per-step noise — one request barely moves them — but a whole user-episode played with the
    same offset shows it. "antithetic_state" — DEPARTURE (ours, issue 18): antithetic per-episode
    noise matrices E, each step playing z = E·u(s) for a unit vector u of the standardised
    observation, so the offset varies with the state inside the episode (`state_noise_share`;
    `AntitheticStateNoise`). Each step's marginal is unchanged, so the stored log-probabilities are
    exact. Offline training refuses anything but "per_step" (there is no exploration to hold)."""
    state_noise_share: float = 0.5
    """`exploration = "antithetic_state"` only: ρ in [0, 1], the share of the exploration variance that depends
    on the state (two steps' offsets correlate by (1 − ρ) + ρ·cos(ŝ, ŝ')); 0 plays exactly "antithetic"."""
    advantage: str = "gae"
    """Online advantage of the actor(s): "gae" (per step, per signal, from the critics) or
    "episode_pairs" — DEPARTURE (ours): needs `exploration = "antithetic"` (or "antithetic_state") and a pool with
    common-random-number row pairs (`RankConfig.paired_rows`); every step of an episode gets, per
    signal, half the difference between its episode's outcome and the partner episode's
    (`episode_pair_advantages`), standardised per signal over the batch. Outcome per signal: the
    main signal's undiscounted episode return, every other signal's per-decision mean. Offline
    training refuses it (logged episodes have no antithetic partners); single process only."""
    entropy_halflife: float = 0.0
    """Ours: the entropy bonus halves every `entropy_halflife` iterations (0 = constant). Early
    exploration keeps every action sampled while a constraint's multiplier drags the policy
    around, so the policy can still come back once the multiplier falls; the late iterates (what
    ships) are no longer held stochastic by the bonus."""
    lr_anneal: bool = False
    """Every learning rate decays linearly from its value to 0 over the run's iterations (CleanRL's
    `anneal_lr`), so the last iterates settle instead of keeping the full step size to the end."""
    discounts: tuple[float, ...] = ()
    """γ per signal in the task's order (main first), overriding the task's; empty = the task's."""
    start_action: tuple[float, ...] = ()
    """Ours (warm start at the incumbent): box actors start playing exactly this action in every state
    (`Actor.start_constant`: last layer's weights zeroed, bias at the action; σ from `init_std`), and every
    other policy of the loss (TSCAC's stage-one actors, the best-feasible copy) starts as a copy of it.
    On `rank` the benchmark passes the best constant fusion weights of the fixed-fusion search, so a learner
    starts feasible at the incumbent rule and spends its budget on state-dependent deviations from it.
    Empty = the task's default action (the production weights). Offline behaviour cloning replaces it."""
    obs_standardise: bool = False
    """Ours (issue 18, twentieth round; TSCAC and the MA cascade): every network of the learner — the actor(s),
    each MA cascade stage agent, the stage-one actors and the critics — reads its input through a
    `Standardise` layer whose per-column statistics are fitted ONCE from the inputs it reads in the run's first
    batch (`LossModule.fit_standardisers`, called by the Trainer before the first update; offline: the logged
    batch, before behaviour cloning) and fixed after that. Observation normalisation is common practice
    (e.g. PPO implementations keep running statistics); ours are fixed, so a network is a fixed function of its
    parameters. Why: the rank observation's columns differ in std by two orders of magnitude (0.013–3.1), so
    the networks barely see the smallest (the user's sociability, the completion EMA). The first batch is
    unchanged (each layer is the identity until fitted); the statistics are buffers, so they are exported."""

    def __post_init__(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden: expected positive layer widths, got {self.hidden}")
        for name in ("actor_lr", "critic_lr", "is_clip", "ppo_clip", "init_std", "max_grad_norm", "warm_start_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda: must be in [0, 1], got {self.gae_lambda}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau: must be in (0, 1], got {self.tau}")
        if self.minibatch_size < 2 or self.epochs < 1 or self.warm_start_steps < 0 or self.entropy_coef < 0:
            raise ValueError("minibatch_size >= 2, epochs >= 1, warm_start_steps >= 0 and entropy_coef >= 0 required")
        if self.entropy_halflife < 0:
            raise ValueError(f"entropy_halflife: must be >= 0 (0 = constant bonus), got {self.entropy_halflife}")
        if any(not 0.0 <= g < 1.0 for g in self.discounts):
            raise ValueError(f"discounts: every γ must be in [0, 1), got {self.discounts}")
        if self.action_distribution not in ACTION_DISTRIBUTIONS:
            raise ValueError(f"action_distribution: one of {ACTION_DISTRIBUTIONS}, got {self.action_distribution!r}")
        if self.exploration not in EXPLORATIONS:
            raise ValueError(f"exploration: one of {EXPLORATIONS}, got {self.exploration!r}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage: one of {ADVANTAGES}, got {self.advantage!r}")
        if any(not math.isfinite(v) for v in self.start_action):
            raise ValueError(f"start_action: every value must be finite, got {self.start_action}")
        if not 0.0 <= self.state_noise_share <= 1.0:
            raise ValueError(
                f"state_noise_share: must be in [0, 1] (the state-dependent share), got {self.state_noise_share}"
            )
        if self.advantage == "episode_pairs" and self.exploration not in PAIRED_EXPLORATIONS:
            raise ValueError(
                f"advantage='episode_pairs' needs exploration='antithetic' or 'antithetic_state' (partner rows play "
                f"opposite noise), got {self.exploration!r}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build from a mapping (a config file); unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; allowed: {sorted(known)}")
        vals = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**vals)


@dataclass
class MiniBatch:
    """One (shard of a) minibatch with everything the losses need; tensors (B, …)."""

    obs: Tensor
    action: Tensor
    rewards: Tensor
    next_obs: Tensor
    done: Tensor
    behaviour_log_prob: Tensor
    advantages: Tensor  # (B, m) raw per-signal advantages
    targets: Tensor  # (B, m) critic regression targets
    weights: Tensor  # (B,) IS weights π/μ for the critic (ones online)


@dataclass
class ParamGroup:
    """One optimiser group: a name (for logs and errors), its parameters and learning rate."""

    name: str
    params: list[nn.Parameter]
    lr: float


class LossModule(nn.Module):
    """Actor + per-signal critics + named hooks. Subclasses implement `actor_loss`."""

    algorithm: ClassVar[str] = "loss"
    uses_critics: ClassVar[bool] = True
    fits_every_standardiser: ClassVar[bool] = False
    """True where `fit_standardisers` reaches every network the loss builds (`LossConfig.obs_standardise`)."""
    gammas: Tensor
    reward_scales: Tensor
    scales_frozen: Tensor
    critics: SignalCritics
    target_critics: SignalCritics

    def __init__(self, task: TaskSpec, cfg: LossConfig, init_mean: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.task, self.cfg = task, cfg
        self.dist: Dist = Dist(torch.device("cpu"))  # replaced by the trainer (`bind`)
        self.offline = False  # set by the trainer: offline losses weight by π/μ
        self.entropy_weight = cfg.entropy_coef  # the trainer decays it (`entropy_halflife`)
        if cfg.obs_standardise and not self.fits_every_standardiser:
            raise ValueError(
                f"obs_standardise: {self.algorithm} does not fit the inputs of all its networks; "
                "expected False (TSCAC and the MA cascade only)"
            )
        self.actor: Actor = make_actor(
            task, cfg.hidden, init_mean, cfg.init_std, cfg.action_distribution, cfg.obs_standardise
        )
        if cfg.start_action:
            if len(cfg.start_action) != task.action_dim:
                raise ValueError(f"start_action: {len(cfg.start_action)} values for an action of {task.action_dim}")
            # Before `build()`, so the policies it copies from the actor start at the constant too.
            self.actor.start_constant(torch.tensor(cfg.start_action, dtype=torch.float32))
        if cfg.discounts and len(cfg.discounts) != len(task.signals):
            raise ValueError(
                f"discounts: {len(cfg.discounts)} values for {len(task.signals)} signals {task.signal_names}"
            )
        self.register_buffer("gammas", torch.tensor(cfg.discounts or task.discounts, dtype=torch.float32))
        self.register_buffer("reward_scales", torch.ones(len(task.signals)))
        self.register_buffer("scales_frozen", torch.zeros((), dtype=torch.bool))
        if self.uses_critics:
            self.critics = SignalCritics(task.obs_size, len(task.signals), cfg.hidden, standardise=cfg.obs_standardise)
            self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.build()

    # -- hooks ---------------------------------------------------------------
    def build(self) -> None:
        """Create extra networks."""

    def parameter_groups(self) -> list[ParamGroup]:
        """Optimiser groups; every trainable parameter must sit in exactly one (the trainer checks)."""
        groups = [ParamGroup("actor", list(self.actor.parameters()), self.cfg.actor_lr)]
        if self.uses_critics:
            groups.append(ParamGroup("critic", list(self.critics.parameters()), self.cfg.critic_lr))
        return groups

    def target_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(target, source) pairs: soft-updated (τ) after every offline step, copied after every online batch."""
        return [(self.target_critics, self.critics)] if self.uses_critics else []

    def policies(self) -> list[Actor]:
        """Every policy network this loss trains (warm-started together offline)."""
        return [self.actor]

    def on_batch_start(self, batch: TransitionBatch) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def fit_standardisers(self, obs: Tensor, action: Tensor) -> None:
        """Hook (ours, `LossConfig.obs_standardise`): fit every network's input `Standardise` layer on what that
        network reads in the run's first batch — observations `obs` (B, O), actions `action` (B, A). The Trainer
        calls it once; subclasses with more networks call super() and fit theirs."""
        for policy in self.policies():
            policy.fit_standardiser(obs)
        if self.uses_critics:
            self.critics.fit_standardiser(obs)
            self.target_critics.fit_standardiser(obs)

    def start_policy(self, obs: Tensor, actions: Tensor, clone: CloneConfig) -> float:
        """Hook (ours, `training.rl.trainer.PolicyStart`): start the actor at a state-dependent rule — its mode
        fitted to `actions` at `obs` (`Actor.start_policy`) — and every policy the loss built as a copy of the
        actor as that copy again; returns the fit's final mean squared error. The base refuses: a loss takes a
        policy start only where it says which of its policies copy the actor."""
        raise NotImplementedError(f"{self.algorithm}: no warm start at a rule (LossModule.start_policy)")

    def on_train_end(self) -> dict[str, float]:
        """Once after the last online batch, before the checkpoint is written; returns metrics."""
        return {}

    def shipped_actor(self) -> Actor:
        """The policy that ships (exported, evaluated): the trained actor, unless a subclass keeps a better one."""
        return self.actor

    def advantage_estimates(self, mb: MiniBatch) -> Tensor:
        """Per-signal advantages (B, m) the actor losses use; default: GAE / TD advantages."""
        return mb.advantages

    def actor_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def extra_critic_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        return torch.zeros((), device=mb.obs.device), {}

    # -- helpers for losses ------------------------------------------------------
    def bind(self, dist: Dist) -> None:
        """Move to the trainer's device and use its global reductions (all ranks)."""
        self.dist = dist
        self.to(dist.device)

    def normalised(self, x: Tensor) -> Tensor:
        """(x − mean) / std with moments over the global minibatch (all ranks)."""
        m, s = self.dist.moments(x)
        return (x - m) / (s + 1e-8)

    def global_is(self, log_ratio: Tensor, clip: float) -> Tensor:
        """Clipped importance weights self-normalised by the global (all-rank) mean."""
        raw = importance_weights(log_ratio.detach(), clip, self_normalise=False)
        total = (self.dist.sum(raw.sum()), self.dist.sum(torch.tensor(float(raw.shape[0]), device=raw.device)))
        return importance_weights(log_ratio.detach(), clip, self_normalise=True, total=total)

    def policy_gradient_loss(self, actor: Actor, mb: MiniBatch, adv: Tensor) -> Tensor:
        """−mean clipped surrogate of `actor` on the logged actions against the data's policy μ."""
        logp = actor.log_prob(mb.obs, mb.action)
        return -clipped_surrogate(logp, mb.behaviour_log_prob, adv, self.cfg.ppo_clip).mean()

    # -- advantages and targets (called by the trainer) ----------------------------------
    @torch.no_grad()
    def freeze_reward_scales(self, rewards: Tensor) -> None:
        """Per-signal reward std of the first batch, frozen for the run (a fixed point for the losses)."""
        if bool(self.scales_frozen):
            return
        _, std = self.dist.moments(rewards)
        self.reward_scales.copy_(std.clamp_min(1e-6))
        self.scales_frozen.fill_(True)

    @torch.no_grad()
    def online_targets(self, rollout: Rollout) -> tuple[Tensor, Tensor]:
        """GAE advantages and TD(λ) critic targets per signal, flattened to (T·N, m)."""
        t, n = rollout.obs.shape[:2]
        m = len(self.task.signals)
        if not self.uses_critics:
            zeros = torch.zeros(t * n, m, device=rollout.obs.device)
            return zeros, zeros
        v = self.critics(rollout.obs.reshape(t * n, -1)).reshape(t, n, -1)
        v_next = self.critics(rollout.next_obs.reshape(t * n, -1)).reshape(t, n, -1)
        done = rollout.terminated[..., None].expand(-1, -1, m)
        ends = rollout.ends[..., None].expand(-1, -1, m)
        adv = gae(rollout.rewards / self.reward_scales, v, v_next, done, self.gammas, self.cfg.gae_lambda, ends)
        return adv.reshape(t * n, m), (adv + v).reshape(t * n, m)

    def online_minibatch(self, batch: TransitionBatch, idx: Tensor, adv: Tensor, tgt: Tensor) -> MiniBatch:
        b = batch.index(idx)
        ones = torch.ones(len(b), device=b.obs.device)
        return MiniBatch(b.obs, b.action, b.rewards, b.next_obs, b.done, b.behaviour_log_prob, adv[idx], tgt[idx], ones)

    def offline_minibatch(self, batch: TransitionBatch, idx: Tensor) -> MiniBatch:
        """One-step TD targets from the target critics and π/μ critic weights (module docstring)."""
        b = batch.index(idx)
        m = len(self.task.signals)
        if not self.uses_critics:
            zeros = torch.zeros(len(b), m, device=b.obs.device)
            ones = torch.ones(len(b), device=b.obs.device)
            return MiniBatch(b.obs, b.action, b.rewards, b.next_obs, b.done, b.behaviour_log_prob, zeros, zeros, ones)
        with torch.no_grad():
            y = td_targets(
                b.rewards / self.reward_scales,
                self.target_critics(b.next_obs),
                b.done[:, None].expand(-1, m),
                self.gammas,
            )
            a = y - self.critics(b.obs)
            w = self.global_is(self.actor.log_prob(b.obs, b.action) - b.behaviour_log_prob, self.cfg.is_clip)
        return MiniBatch(b.obs, b.action, b.rewards, b.next_obs, b.done, b.behaviour_log_prob, a, y, w)

    # -- the total loss --------------------------------------------------------------
    def forward(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        """Critic losses (per signal, IS-weighted) + extra critics + the actor loss (+ entropy bonus)."""
        metrics: dict[str, float] = {}
        loss = torch.zeros((), device=mb.obs.device)
        if self.uses_critics:
            err = (self.critics(mb.obs) - mb.targets).pow(2) * mb.weights[:, None]
            per_signal = err.mean(0)
            loss = loss + per_signal.sum()
            for name, v in zip(self.task.signal_names, per_signal.detach().tolist(), strict=True):
                metrics[f"losses/critic_{name}"] = v
            extra, em = self.extra_critic_loss(mb)
            loss = loss + extra
            metrics |= em
        actor_loss, am = self.actor_loss(mb)
        metrics |= am
        if self.entropy_weight > 0:
            ent = self.actor.entropy(mb.obs).mean()
            actor_loss = actor_loss - self.entropy_weight * ent
            metrics["charts/entropy"] = ent.item()
        metrics["losses/actor"] = actor_loss.item()
        return loss + actor_loss, metrics

    # -- artefacts -------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        return dict(self.state_dict().items())

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.load_state_dict(tensors)


def shipped_policy(learner: Any) -> Any:
    """What ships from a trained learner: its `shipped_actor()` (a `LossModule`'s, which constrained losses
    override with their best feasible iterate), else its `actor` (learners outside this hierarchy). The one
    accessor of the export path (training/train.py, pipelines/jobs) and the benchmarks."""
    ship = getattr(learner, "shipped_actor", None)
    return ship() if callable(ship) else learner.actor


def module_parameters(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """Trainable parameters of several modules, in order (for `ParamGroup`)."""
    return [p for m in modules for p in m.parameters() if p.requires_grad]
