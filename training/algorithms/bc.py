"""Behaviour cloning baseline: the actor maximises the log-likelihood of the logged actions.

Contents: `BCConfig`; networks (the shared actor, no critics); the loss
(−mean log π(a|s)); `train(cfg, run_cfg, task, source)`. Trained offline on
logged transitions; `--sim` generates those logs with the simulator's behaviour
policy first (see training/train.py). With a Gaussian actor it recovers the
logging policy's mean fusion weights — the reference TSCAC must beat.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor

from training.rl.learner import Learner, LearnerConfig, MiniBatch
from training.rl.loop import OfflineSource, RunConfig, RunResult, run
from training.rl.runtime import seed_everything
from training.rl.task import TaskSpec


@dataclass(frozen=True)
class BCConfig(LearnerConfig):
    """Shared learner hyperparameters; warm starting is meaningless here and is switched off."""

    warm_start_steps: int = 0


class BCLearner(Learner):
    algorithm = "bc"
    uses_critics = False

    def actor_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        nll = -self.actor.log_prob(mb.obs, mb.action).mean()
        return nll, {"losses/bc_nll": nll.item()}


def train(
    cfg: BCConfig,
    run_cfg: RunConfig,
    task: TaskSpec,
    source: OfflineSource,
    init_mean: tuple[float, ...] | None = None,
) -> RunResult:
    if not isinstance(source, OfflineSource):
        raise ValueError(
            "bc trains from logged transitions: pass an OfflineSource (CLI: --data, or --sim to log first)"
        )
    seed_everything(run_cfg.seed)
    # μ̂ is not needed: cloning uses no importance weights.
    return run(BCLearner(task, cfg, init_mean), replace(run_cfg, learn_behaviour=False), source)
