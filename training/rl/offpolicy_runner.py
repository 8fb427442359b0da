"""The off-policy algorithms (dqn, ddpg, td3) through the generic `train` and `troupe train --env`.

The `Trainer` (training/rl/trainer.py) is built around on-policy rollouts; DQN
and DDPG keep their own collect-and-replay loops (`dqn.train`, `ddpg.train`)
and register a `fit` in the registry. This module is what those `fit`s share:

* `PoolVectorEnv` — any `EnvPool` (numpy, vector rewards in the task's signal
  order; `GymEnvPool` for `--env`, the problems' batched simulators) seen as the
  torch `VectorEnv` the loops step; the reward is the task's main signal.
* `fit_online` — budget from `RunConfig` (iterations × rollout_steps × n_envs
  transitions; one metrics row per iteration), metrics written live under
  `out_dir` (metrics.jsonl, TensorBoard; metrics.csv and curves.png at the
  end) with the trainer's stable keys, `checkpoint.safetensors`, a `RunResult`.

Ours (no paper covers it): the off-policy algorithms are unconstrained and
refuse a task with constraints rather than ignore them; they run on one CPU
process (no DDP, `run.device` ignored); the discount is the task's main-signal γ.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from training.rl.runtime import MetricsLogger, save_checkpoint
from training.rl.task import TaskSpec
from training.rl.toy_mdps import Step
from training.rl.trainer import OnlineSource, RunConfig, RunResult, default_out_dir


class PoolVectorEnv:
    """An `EnvPool` as a torch `VectorEnv`: main-signal reward, actions (N,) or (N, k) passed as (N, k) floats."""

    def __init__(self, pool: Any, task: TaskSpec, seed: int) -> None:
        self.pool, self.task, self.seed = pool, task, seed
        self.num_envs = int(pool.n_envs)
        self.obs_size = task.obs_size

    def reset(self) -> Tensor:
        return torch.as_tensor(np.asarray(self.pool.reset(self.seed), dtype=np.float32))

    def step(self, action: Tensor) -> Step:
        out = self.pool.step(action.detach().cpu().numpy().reshape(self.num_envs, -1).astype(np.float64))
        return Step(
            torch.as_tensor(np.asarray(out.next_obs, dtype=np.float32)),
            torch.as_tensor(np.asarray(out.rewards)[:, 0], dtype=torch.float32),
            torch.as_tensor(np.asarray(out.terminated, dtype=bool)),
            torch.as_tensor(np.asarray(out.truncated, dtype=bool)),
            torch.as_tensor(np.asarray(out.obs, dtype=np.float32)),
        )


TrainLoop = Callable[[PoolVectorEnv, int, int, Callable[[dict[str, float]], None]], nn.Module]
"""(env, total transitions, transitions per log row, on_log) → the trained loss module."""

_ROW_KEYS = {"env_steps": "charts/env_steps", "epsilon": "charts/epsilon", "steps_per_s": "charts/transitions_per_s"}


def fit_online(algorithm: str, task: TaskSpec, source: Any, run_cfg: RunConfig, loop: TrainLoop) -> RunResult:
    """Run `loop` on the source's environments with the run's budget; log, checkpoint, return a RunResult."""
    if not isinstance(source, OnlineSource):
        raise ValueError(f"{algorithm} learns online from an environment (its own replay); got logged transitions")
    if task.constraints:
        names = [f"{c.signal} {c.direction} {c.threshold}" for c in task.constraints]
        raise ValueError(
            f"{algorithm} is unconstrained and would ignore the task's constraints {names}; remove them from the "
            "config's task section or choose a constrained algorithm (rcpo, tscac)"
        )
    torch.set_num_threads(run_cfg.cpu_threads)
    env = PoolVectorEnv(source.make_pool(run_cfg.n_envs, run_cfg.seed), task, run_cfg.seed)
    per_row = run_cfg.rollout_steps * env.num_envs
    total = run_cfg.iterations * per_row
    out_dir = Path(run_cfg.out_dir) if run_cfg.out_dir else default_out_dir(task.name, algorithm)
    logger = MetricsLogger(out_dir, tensorboard=run_cfg.tensorboard, plots=run_cfg.plots)
    history: list[dict[str, float]] = []

    def on_log(row: dict[str, float]) -> None:
        metrics = {_ROW_KEYS.get(k, f"losses/{k}"): v for k, v in row.items() if k != "episode_return"}
        metrics[f"charts/episode_return_{task.main_signal}"] = row.get("episode_return", math.nan)
        logger.log(len(history), metrics)
        history.append({"iteration": float(len(history)), **metrics})

    started = time.monotonic()
    try:
        loss_module = loop(env, total, per_row, on_log)
    finally:
        logger.close()
    save_checkpoint(out_dir / "checkpoint.safetensors", loss_module.state_dict(), {"algorithm": algorithm})
    return RunResult(
        learner=loss_module,  # type: ignore[arg-type]
        history=history,
        out_dir=out_dir,
        transitions=total,
        seconds=time.monotonic() - started,
    )


def config_from_dict(cls: type[Any], data: dict[str, Any]) -> Any:
    """A frozen config dataclass from a mapping (a config file's `algo:` section); unknown keys refused by name."""
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; allowed: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
