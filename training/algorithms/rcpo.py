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
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from training.rl.data import TransitionBatch
from training.rl.lagrangian import ConstraintController, PIDLagrangianConfig, measured_constraint_values
from training.rl.losses import LossModule, MiniBatch
from training.rl.networks import Actor
from training.rl.policy_average import BestFeasibleConfig, ShippedPolicy
from training.rl.registry import register


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

    def on_batch_start(self, batch: TransitionBatch) -> dict[str, float]:
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
        adv = self.advantage_estimates(mb)
        mixed = self.normalised(adv[:, 0])
        for k, (c, idx) in enumerate(zip(self.task.constraints, self.task.constrained_signals, strict=True)):
            mixed = mixed + self.multipliers[k] * self.task.constraint_sign(c) * self.normalised(adv[:, idx])
        return self.policy_gradient_loss(self.actor, mb, self.normalised(mixed)), {}

    def on_train_end(self) -> dict[str, float]:
        """With `best_feasible_ship: window_average`, fit the kept window's average into `best_actor`."""
        best = self.controller.tracker.best
        return self.shipping.finish(self.best_actor, best.state) if best is not None else {}

    def shipped_actor(self) -> Actor:
        """The best feasible iterate when one was found, else the last iterate."""
        return self.best_actor if bool(self.has_best_feasible) else self.actor
