"""Main-only actor-critic baseline: maximise the main signal and ignore every constraint.

Contents: `MainOnlyConfig`; networks (the shared actor and per-signal critics —
the auxiliary critics are trained only so their losses can be compared);
the loss (clipped policy-gradient surrogate on the normalised main advantage);
`train(cfg, run_cfg, task, source)`. It is the "greedy" policy the constraints
exist to stop: on `rank` it should violate at least one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from training.rl.learner import Learner, LearnerConfig, MiniBatch
from training.rl.loop import OfflineSource, OnlineSource, RunConfig, RunResult, run
from training.rl.runtime import seed_everything
from training.rl.task import TaskSpec


@dataclass(frozen=True)
class MainOnlyConfig(LearnerConfig):
    """Shared learner hyperparameters only."""


class MainOnlyLearner(Learner):
    algorithm = "main_only"

    def actor_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        a1 = self.normalised(self.advantage_estimates(mb)[:, 0])
        return self.policy_gradient_loss(self.actor, mb, a1), {}


def train(
    cfg: MainOnlyConfig,
    run_cfg: RunConfig,
    task: TaskSpec,
    source: OnlineSource | OfflineSource,
    init_mean: tuple[float, ...] | None = None,
) -> RunResult:
    seed_everything(run_cfg.seed)
    return run(MainOnlyLearner(task, cfg, init_mean), run_cfg, source)
