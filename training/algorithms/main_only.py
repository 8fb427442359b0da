"""Main-only actor-critic baseline: maximise the main signal and ignore every constraint.

Contents: `MainOnlyConfig`; networks (the shared actor and per-signal critics of
`LossModule` — the auxiliary critics are trained only so their losses can be compared);
the loss (clipped policy-gradient surrogate on the normalised main advantage). Trained by
the generic `training.rl.trainer.train("main_only", ...)`. It is the "greedy" policy the
constraints exist to stop: on `rank` it should violate at least one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from training.rl.losses import LossConfig, LossModule, MiniBatch
from training.rl.registry import register


@dataclass(frozen=True)
class MainOnlyConfig(LossConfig):
    """Shared loss hyperparameters only."""


@register("main_only", config=MainOnlyConfig)
class MainOnlyLoss(LossModule):
    def actor_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        a1 = self.normalised(self.advantage_estimates(mb)[:, 0])
        return self.policy_gradient_loss(self.actor, mb, a1), {}
