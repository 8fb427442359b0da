"""Small CPU training runs for the learner tests: one RunConfig shape, quiet, into the test's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.rl.losses import LossConfig, LossModule
from training.rl.runtime import seed_everything
from training.rl.task import TaskSpec
from training.rl.trainer import OfflineSource, OnlineSource, RunConfig, RunResult, Trainer


def quick_run(out_dir: Path, iterations: int = 30, **overrides: Any) -> RunConfig:
    """Seed 0, 8 envs × 16 steps per iteration on the CPU, no progress bar or TensorBoard files."""
    fields: dict[str, Any] = {
        "seed": 0,
        "iterations": iterations,
        "rollout_steps": 16,
        "n_envs": 8,
        "device": "cpu",
        "out_dir": str(out_dir),
        "progress": False,
        "tensorboard": False,
        "plots": False,
    }
    return RunConfig(**{**fields, **overrides})


def fit(
    loss_cls: type[LossModule],
    cfg: LossConfig,
    run_cfg: RunConfig,
    task: TaskSpec,
    source: OnlineSource | OfflineSource,
    init_mean: tuple[float, ...] | None = None,
) -> RunResult:
    """Seed, build the loss module and train it with the `Trainer` (what `trainer.train` does from a name)."""
    seed_everything(run_cfg.seed)
    return Trainer(loss_cls(task, cfg, init_mean), run_cfg).fit(source)
