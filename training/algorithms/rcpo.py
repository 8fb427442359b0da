"""RCPO baseline — Reward Constrained Policy Optimisation (Tessler et al., ICLR 2019): a Lagrangian with dual ascent.

Contents: `RCPOConfig`; networks (shared actor + per-signal critics, one
multiplier ν_i ≥ 0 per constraint kept as a buffer); the loss (clipped
surrogate on A_1 + Σ_i ν_i s_i A_i, s_i = +1 for ">=" and −1 for "<=").
Trained by the generic `training.rl.trainer.train("rcpo", ...)`.

Dual ascent, once per batch: ν_i ← max(0, ν_i + η · s_i · (C_i − Ĵ_i) / |C_i|),
Ĵ_i the batch's per-decision mean of signal i (online: the rollout's mean;
offline: the self-normalised IS estimate under the current actor).
DEPARTURES: advantages are normalised per signal before mixing and the
violation is divided by |C_i|, so one dual rate η fits signals of any scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from training.rl.data import TransitionBatch
from training.rl.functional import constraint_slack
from training.rl.losses import LossConfig, LossModule, MiniBatch
from training.rl.registry import register


@dataclass(frozen=True)
class RCPOConfig(LossConfig):
    """RCPO hyperparameters (plus the shared ones)."""

    dual_lr: float = 0.5
    """η: step of the multipliers per batch, on the relative violation."""
    initial_multiplier: float = 0.0
    """ν_i at the start."""
    max_multiplier: float = 100.0
    """Upper cap of every ν_i (keeps the mixed advantage finite)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dual_lr <= 0 or self.initial_multiplier < 0 or self.max_multiplier <= 0:
            raise ValueError("dual_lr > 0, initial_multiplier >= 0 and max_multiplier > 0 required")


@register("rcpo", config=RCPOConfig)
class RCPOLoss(LossModule):
    cfg: RCPOConfig
    multipliers: Tensor

    def build(self) -> None:
        if not self.task.constraints:
            raise ValueError("RCPO needs at least one constraint in the task (TaskSpec.constraints)")
        self.register_buffer("multipliers", torch.full((len(self.task.constraints),), self.cfg.initial_multiplier))

    def on_batch_start(self, batch: TransitionBatch) -> dict[str, float]:
        with torch.no_grad():
            if self.offline:
                w = self.global_is(
                    self.actor.log_prob(batch.obs, batch.action) - batch.behaviour_log_prob, self.cfg.is_clip
                )
                means = self.dist.mean(batch.rewards * w[:, None])
            else:
                means = self.dist.mean(batch.rewards)
            values = means[list(self.task.constrained_signals)].double().cpu()
            slack = constraint_slack(
                values, self.task.constraint_thresholds(), self.task.constraint_senses(), relative=True
            )
            metrics: dict[str, float] = {}
            for k, c in enumerate(self.task.constraints):
                violation = -float(slack[k])
                new = min(max(float(self.multipliers[k]) + self.cfg.dual_lr * violation, 0.0), self.cfg.max_multiplier)
                self.multipliers[k] = new
                metrics[f"charts/multiplier_{c.signal}"] = new
        return metrics

    def actor_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        adv = self.advantage_estimates(mb)
        mixed = self.normalised(adv[:, 0])
        for k, (c, idx) in enumerate(zip(self.task.constraints, self.task.constrained_signals, strict=True)):
            mixed = mixed + self.multipliers[k] * self.task.constraint_sign(c) * self.normalised(adv[:, idx])
        return self.policy_gradient_loss(self.actor, mb, self.normalised(mixed)), {}
