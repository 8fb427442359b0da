"""RCPO — Reward Constrained Policy Optimisation (Tessler et al., ICLR 2019), with a PID multiplier and a best feasible iterate.

Contents: `RCPOConfig`; the loss (`RCPOLoss`: shared actor + per-signal critics,
one multiplier ν_i ≥ 0 per constraint kept as a buffer; clipped surrogate on
A_1 + Σ_i ν_i s_i A_i, s_i = +1 for ">=" and −1 for "<="). Trained by the
generic `training.rl.trainer.train("rcpo", ...)`.

Multipliers, once per batch, from the batch's measured per-decision mean Ĵ_i of
every constrained signal (online: the rollout's mean; offline: the
self-normalised IS estimate under the current actor):
    Δ_i = s_i (C_i − Ĵ_i) / |C_i| + margin            relative violation (> 0 = violated)
    ν_i = PID(Δ_i)                                    `training.rl.lagrangian.PIDLagrangian`
DEPARTURES (ours):
* The paper's multiplier is plain dual ascent ν_i ← max(0, ν_i + η Δ_i): the
  integral term alone. It lags the policy, and the multiplier and the policy
  swing between the two regimes (issue 14: a period of 50–100 iterations, the
  constraint met in 3 of 9 runs). The PID multiplier of Stooke et al. (2020)
  adds a proportional term that damps the swing (`multiplier_kp`); `dual_lr` is
  the integral gain, so `multiplier_kp = 0` is the paper's update.
* `margin` aims every constraint slightly inside its threshold, so a policy
  that jitters around its set point still meets it.
* Best feasible iterate: `best_actor` (a frozen copy of the actor, saved in the
  checkpoint with everything else) holds the iterate with the highest main
  value among those whose measured slacks, averaged over the last
  `best_feasible_window` batches, all held (`BestFeasibleTracker`), from batch
  `best_feasible_start` on; the paper ships the last iterate. `has_best_feasible` says whether one was found.
* `best_feasible_ship: window_average`: ship the average of the kept window's
  iterates instead of its last one — the policy whose occupancy is the mean of
  theirs, i.e. the one the window's averaged measurements describe — fitted into
  `best_actor` when training ends (`training.rl.policy_average`; off by default).
* Advantages are normalised per signal before mixing and the violation is
  divided by |C_i|, so one set of gains fits signals of any scale.
* `policy_step: exact` (discrete actions only; off by default) — DEPARTURE: the
  paper's actor step is a (clipped) policy gradient on the penalised reward. The
  exact step is the natural-policy-gradient primal-dual step of Ding et al.
  (NeurIPS 2020, "Natural Policy Gradient Primal-Dual Method for Constrained
  MDPs"), which for a softmax policy is a mirror-descent / soft policy-iteration
  step on the Lagrangian: the actor is fitted (exact KL over every action) to
      π_target(·|s) ∝ π_old(·|s) · exp(η (A_1(s, ·) + Σ_i ν_i s_i A_i(s, ·)))
  with π_old the actor that collected the batch and A_i(s, ·) for every action
  from one Q head per signal (`training.rl.action_values`: dueling heads on the
  one-step target, in reward-std units, not normalised per minibatch). Why
  (issue 14, tabular CMDPs with exact evaluation): the sampled gradient
  vanishes on actions the policy has nearly dropped, so RCPO's iterates sat on
  near-deterministic corners wrong for any multiplier (Lagrangian gap ~0.10 to
  the end) while ν swung. `exact_min_action_prob` keeps a floor on every action
  of the target so each action's A_i stays measured. The step's fixed points for
  a fixed ν are the Lagrangian's greedy policies; the constrained optimum is a
  mixture of them, which is why this step is meant to ship the window average
  (`best_feasible_ship: window_average`; Ding et al.'s bounds are on the average
  over iterates). Measured on the tabular CMDPs it did not beat the policy
  gradient (its learned all-action advantages are noisier than GAE's; with the
  random end as a truncation 0.019 against the gradient's 0.007; docs/training.md),
  so `benchmarks/cmdp.py` does not use it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from models.problems import DiscreteAction
from training.rl.action_values import action_value_loss, advantages_all_actions, exact_kl, floor_actions
from training.rl.data import TransitionBatch
from training.rl.lagrangian import ConstraintController, PIDLagrangianConfig, measured_constraint_values
from training.rl.losses import LossModule, MiniBatch, ParamGroup, module_parameters
from training.rl.networks import Actor, SignalCritics
from training.rl.policy_average import BestFeasibleConfig, ShippedPolicy
from training.rl.registry import register

POLICY_STEPS = ("gradient", "exact")


@dataclass(frozen=True)
class RCPOConfig(BestFeasibleConfig):
    """RCPO hyperparameters (plus the shared `BestFeasibleConfig` and `LossConfig` ones)."""

    dual_lr: float = 0.5
    """K_I: integral gain of the multipliers per batch, on the relative violation (the paper's dual step η)."""
    multiplier_kp: float = 3.0
    """K_P: proportional gain (ours, Stooke et al. 2020); 0 = the paper's plain dual ascent."""
    multiplier_kd: float = 0.0
    """K_D: derivative gain, on a rising violation only."""
    multiplier_smoothing: float = 1.0
    """α of the violation's EMA that the P and D terms read (1 = the raw per-batch violation)."""
    initial_multiplier: float = 0.0
    """ν_i at the start."""
    max_multiplier: float = 100.0
    """Upper cap of every ν_i (keeps the mixed advantage finite; also the integral's anti-windup limit)."""
    margin: float = 0.0
    """Relative margin the multipliers aim inside every threshold (0.01 = 1 % of the threshold)."""
    policy_step: str = "gradient"
    """"gradient": the paper's clipped policy gradient on the mixed advantage; "exact" (ours, discrete
    actions): fit the actor to π_old · exp(η (A_1 + Σ ν_i s_i A_i)) over every action (module docstring)."""
    exact_step_size: float = 1.0
    """η of the exact step, per reward std of advantage (ν_i weighs A_i in the same units)."""
    exact_min_action_prob: float = 0.0
    """Exact step: every action keeps at least this probability in the target (capped at 0.5/n)."""
    exact_entropy: float = 0.0
    """τ of the entropy-regularised exact step (ours, Cen et al. 2021): the target's logits are
    (1 − ητ) log π_old + η A_L, so old steps fade by (1 − ητ) per batch instead of adding up, and the
    step's fixed point for a fixed ν is softmax(A_L/τ); 0 = the unregularised step. Needs ητ ≤ 1."""
    exact_q_target: str = "one_step"
    """Exact step: the Q heads' online target, "one_step" r_i + γ_i V̄_i(s') or "lambda_return" (the critics'
    TD(λ) target; with the dueling heads, the head is regressed on the GAE advantage)."""
    exact_balance_clip: float = 0.0
    """Exact step: the Q heads' regression weighs each row by 1/(n π_old(a|s)), clipped here (0 = off;
    `training.rl.action_values.action_value_loss`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dual_lr <= 0 or self.initial_multiplier < 0 or self.max_multiplier <= 0:
            raise ValueError("dual_lr > 0, initial_multiplier >= 0 and max_multiplier > 0 required")
        if self.multiplier_kp < 0 or self.multiplier_kd < 0:
            raise ValueError(
                f"multiplier_kp and multiplier_kd: must be >= 0, got {self.multiplier_kp}, {self.multiplier_kd}"
            )
        if self.margin < 0:
            raise ValueError(f"margin: must be >= 0, got {self.margin}")
        if self.policy_step not in POLICY_STEPS:
            raise ValueError(f"policy_step: one of {POLICY_STEPS}, got {self.policy_step!r}")
        if self.exact_step_size <= 0:
            raise ValueError(f"exact_step_size: must be > 0, got {self.exact_step_size}")
        if not 0 <= self.exact_entropy * self.exact_step_size <= 1 or self.exact_entropy < 0:
            raise ValueError(
                f"exact_entropy: need 0 <= exact_entropy · exact_step_size <= 1, got {self.exact_entropy}, {self.exact_step_size}"
            )
        if self.exact_q_target not in ("one_step", "lambda_return"):
            raise ValueError(f"exact_q_target: 'one_step' or 'lambda_return', got {self.exact_q_target!r}")
        if self.exact_balance_clip < 0:
            raise ValueError(f"exact_balance_clip: must be >= 0 (0 = off), got {self.exact_balance_clip}")
        if not 0 <= self.exact_min_action_prob < 0.5:
            raise ValueError(f"exact_min_action_prob: must be in [0, 0.5), got {self.exact_min_action_prob}")
        self.pid_config()  # validates smoothing and the initial multiplier

    def pid_config(self) -> PIDLagrangianConfig:
        return PIDLagrangianConfig(
            kp=self.multiplier_kp,
            ki=self.dual_lr,
            kd=self.multiplier_kd,
            smoothing=self.multiplier_smoothing,
            max_multiplier=self.max_multiplier,
            initial_multiplier=self.initial_multiplier,
        )


@register("rcpo", config=RCPOConfig)
class RCPOLoss(LossModule):
    cfg: RCPOConfig
    multipliers: Tensor
    best_actor: Actor
    has_best_feasible: Tensor

    def build(self) -> None:
        if not self.task.constraints:
            raise ValueError("RCPO needs at least one constraint in the task (TaskSpec.constraints)")
        cfg = self.cfg
        self.register_buffer("multipliers", torch.full((len(self.task.constraints),), cfg.initial_multiplier))
        self.controller = ConstraintController(
            self.task,
            cfg.pid_config(),
            cfg.best_feasible_window,
            cfg.margin,
            recency=cfg.best_feasible_recency,
            best_feasible_start=cfg.best_feasible_start,
        )
        self.best_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.shipping = ShippedPolicy.from_config(cfg)
        self.register_buffer("has_best_feasible", torch.zeros((), dtype=torch.bool))
        if cfg.policy_step == "exact":
            if not isinstance(self.task.action, DiscreteAction):
                raise ValueError("policy_step 'exact': needs one discrete action (the task's is not DiscreteAction)")
            # A_i(s, ·) of the main and every constrained signal (head k ↔ q_head_signals[k]), and the
            # actor that collected the batch (π_old of the step), refreshed per batch.
            self.q_head_signals = (0, *self.task.constrained_signals)
            self.q_heads = SignalCritics(
                self.task.obs_size, len(self.q_head_signals), cfg.hidden, out_per_signal=self.task.nvec[0]
            )
            self.previous_actor = copy.deepcopy(self.actor).requires_grad_(False)

    @property
    def exact_step(self) -> bool:
        return self.cfg.policy_step == "exact"

    def parameter_groups(self) -> list[ParamGroup]:
        groups = super().parameter_groups()
        if self.exact_step:
            groups.append(ParamGroup("q_heads", module_parameters([self.q_heads]), self.cfg.critic_lr))
        return groups

    def extra_critic_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        if not self.exact_step:
            return super().extra_critic_loss(mb)
        loss = action_value_loss(
            self.q_heads,
            self.q_head_signals,
            self,
            mb,
            dueling=True,
            one_step=self.cfg.exact_q_target == "one_step",
            balance_clip=self.cfg.exact_balance_clip,
        )
        return loss, {"losses/critic_q_heads": loss.item()}

    def on_batch_start(self, batch: TransitionBatch) -> dict[str, float]:
        if self.exact_step:
            self.previous_actor.load_state_dict(self.actor.state_dict())
        values = measured_constraint_values(self, batch)
        main_value = float(self.dist.mean(batch.rewards[:, :1]).item()) if not self.offline else float("nan")
        # Offline the batch is the log, not this actor's rollout: no best-iterate judgement there.
        actor_state = self.shipping.candidate(self.actor, batch.obs) if not self.offline else None
        multipliers, metrics, improved = self.controller.step(values, main_value, actor_state)
        self.multipliers.copy_(torch.as_tensor(multipliers, dtype=self.multipliers.dtype))
        if improved and self.controller.tracker.best is not None:
            self.best_actor.load_state_dict(self.shipping.newest_state(self.controller.tracker.best.state))
            self.has_best_feasible.fill_(True)
        return metrics

    def actor_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        if self.exact_step:
            return exact_kl(self.exact_target(mb.obs), self.actor(mb.obs)), {}
        adv = self.advantage_estimates(mb)
        mixed = self.normalised(adv[:, 0])
        for k, (c, idx) in enumerate(zip(self.task.constraints, self.task.constrained_signals, strict=True)):
            mixed = mixed + self.multipliers[k] * self.task.constraint_sign(c) * self.normalised(adv[:, idx])
        return self.policy_gradient_loss(self.actor, mb, self.normalised(mixed)), {}

    @torch.no_grad()
    def exact_target(self, obs: Tensor) -> Tensor:
        """log π_target(·|s) of the exact step: log softmax((1 − ητ) log π_old + η (A_1 + Σ_i ν_i s_i A_i)), floored."""
        adv = advantages_all_actions(self.q_heads, self.q_head_signals, self, obs, dueling=True)
        lagrangian = adv[:, 0]
        for k, c in enumerate(self.task.constraints):
            lagrangian = lagrangian + self.multipliers[k] * self.task.constraint_sign(c) * adv[:, 1 + k]
        eta = self.cfg.exact_step_size
        logits = (1 - eta * self.cfg.exact_entropy) * self.previous_actor(obs) + eta * lagrangian
        return floor_actions(torch.log_softmax(logits, dim=-1), self.cfg.exact_min_action_prob)

    def on_train_end(self) -> dict[str, float]:
        """With `best_feasible_ship: window_average`, fit the kept window's average into `best_actor`."""
        best = self.controller.tracker.best
        return self.shipping.finish(self.best_actor, best.state) if best is not None else {}

    def shipped_actor(self) -> Actor:
        """The best feasible iterate when one was found, else the last iterate."""
        return self.best_actor if bool(self.has_best_feasible) else self.actor
