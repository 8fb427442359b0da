"""Small CPU training runs for the learner tests: one RunConfig shape, quiet, into the test's folder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

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


def one_step_rank_columns(
    observations: np.ndarray, actions: np.ndarray, log_density: np.ndarray, rewards: dict[str, Any]
) -> dict[str, Any]:
    """Columns of a transitions.parquet of one-step `rank` sessions (every row ends its session), as the
    dataset job writes them: logged by a continuous policy (`log_density`, no `propensity`), one reward
    column per signal (`rewards` maps each of RANK.signal_names to an array or a constant column)."""
    n = len(observations)
    return {
        "observation": [v.tolist() for v in observations],
        "action": [v.tolist() for v in actions],
        **{f"reward_{name}": value for name, value in rewards.items()},
        "next_observation": [v.tolist() for v in observations],
        "done": np.ones(n, bool),
        "propensity": pa.array([None] * n, pa.float64()),
        "log_density": log_density,
        "session_id": [f"s{i}" for i in range(n)],
        "timestamp": pa.array([dt.datetime(2026, 11, 21, tzinfo=dt.UTC)] * n, pa.timestamp("us", tz="UTC")),
    }
