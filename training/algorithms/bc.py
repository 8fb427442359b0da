"""Behaviour cloning baseline: the actor maximises the log-likelihood of the logged actions.

Contents: `BCConfig`; networks (the shared actor, no critics); the loss (−mean log π(a|s)).
Trained offline on logged transitions only (registered with `data="offline"`); `--sim`
generates those logs with the simulator's behaviour policy first (training/train.py). With a
box actor it recovers the logging policy's fusion weights — the reference TSCAC must beat.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from training.rl.losses import LossConfig, LossModule, MiniBatch
from training.rl.registry import register


@dataclass(frozen=True)
class BCConfig(LossConfig):
    """Shared loss hyperparameters; warm starting is meaningless here and is switched off."""

    warm_start_steps: int = 0


@register("bc", config=BCConfig, data="offline")
class BCLoss(LossModule):
    uses_critics = False

    def actor_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        nll = -self.actor.log_prob(mb.obs, mb.action).mean()
        return nll, {"losses/bc_nll": nll.item()}
