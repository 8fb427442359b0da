"""The training loop shared by every learner: online (an EnvPool) or offline (logged transitions).

One iteration online = collect `rollout_steps` × `n_envs` transitions with the
current actor, then `Learner.update` on them. One iteration offline =
`offline_steps` minibatch updates on the dataset (after fitting the behaviour
model μ̂ when asked, and warm-starting the actors by behaviour cloning).
A learner with `advantage = "episode_pairs"` asks the pool for antithetic row
pairs (`pair_rows()`, e.g. `BatchedSimPool` on rank) before the first reset.
Rank 0 shows a progress bar, writes metrics (CSV, TensorBoard, PNG curves) and
the final safetensors checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.rl.behaviour import BehaviourModel
from training.rl.data import EnvPool, RolloutCollector, TransitionBatch
from training.rl.learner import Learner
from training.rl.runtime import Dist, MetricsLogger, pick_device, save_checkpoint
from training.rl.task import constraint_report


@dataclass(frozen=True)
class RunConfig:
    """How long and where a training run goes (algorithm hyperparameters live in each algorithm's config)."""

    seed: int = 0
    """Seeds network init, minibatch sampling and (plus the rank) environment resets."""
    iterations: int = 50
    """Collect-and-update rounds online; update rounds offline."""
    rollout_steps: int = 32
    """Online: steps per environment per iteration."""
    n_envs: int = 16
    """Online: environments stepped together (per process)."""
    offline_steps: int = 50
    """Offline: minibatch updates per iteration."""
    learn_behaviour: bool = True
    """Offline: fit μ̂ and use it for importance weights instead of the logged propensities (TSCAC)."""
    behaviour_steps: int = 400
    """Offline: maximum-likelihood steps of μ̂."""
    device: str = "auto"
    """'auto' (CUDA when present), 'cpu' or 'cuda[:N]'."""
    out_dir: str = "var/runs/rank"
    """Where metrics, curves and checkpoints go."""
    progress: bool = True
    """Show a progress bar on rank 0."""
    tensorboard: bool = True
    """Also write TensorBoard event files."""
    cpu_threads: int = 1
    """torch intra-op threads on CPU: the networks are small, and more threads only contend."""

    def __post_init__(self) -> None:
        for name in ("iterations", "rollout_steps", "n_envs", "offline_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"RunConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.cpu_threads < 1:
            raise ValueError(f"RunConfig.cpu_threads: must be >= 1, got {self.cpu_threads}")
        if self.behaviour_steps < 0:
            raise ValueError(f"RunConfig.behaviour_steps: must be >= 0, got {self.behaviour_steps}")


@dataclass
class OnlineSource:
    """Environments to train in: `make_pool(n_envs, seed)` builds this process's EnvPool."""

    make_pool: Callable[[int, int], EnvPool]


@dataclass
class OfflineSource:
    """Logged transitions to train from."""

    batch: TransitionBatch


@dataclass
class RunResult:
    learner: Learner
    history: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path = Path(".")
    transitions: int = 0
    seconds: float = 0.0
    data_range: tuple[Any, Any] | None = None


def run(learner: Learner, run_cfg: RunConfig, source: OnlineSource | OfflineSource) -> RunResult:
    """Train `learner` on `source`; the same call works in one process or under torchrun."""
    dist = Dist(pick_device(run_cfg.device))
    if dist.device.type == "cpu":
        torch.set_num_threads(run_cfg.cpu_threads)
    out = Path(run_cfg.out_dir)
    logger = MetricsLogger(out, enabled=dist.is_main, tensorboard=run_cfg.tensorboard)
    learner.setup(dist)
    gen = torch.Generator().manual_seed(run_cfg.seed)
    result = RunResult(learner, out_dir=out)
    bar = None
    if run_cfg.progress and dist.is_main:
        from tqdm import tqdm

        bar = tqdm(total=run_cfg.iterations, desc=f"{learner.algorithm}", unit="it", leave=False)
    t0 = time.perf_counter()
    try:
        if isinstance(source, OnlineSource):
            learner.offline = False
            pool = source.make_pool(run_cfg.n_envs, run_cfg.seed + 1000 * dist.rank)
            if learner.cfg.advantage == "episode_pairs":
                pair_rows = getattr(pool, "pair_rows", None)
                if pair_rows is None:
                    raise ValueError(
                        f"advantage='episode_pairs' needs an environment pool with antithetic row pairs "
                        f"(BatchedSimPool on rank); {type(pool).__name__} has none — use advantage='gae'"
                    )
                pair_rows()
            collector = RolloutCollector(pool, run_cfg.seed + 1000 * dist.rank)
            for it in range(run_cfg.iterations):
                learner.eval()
                rollout = collector.collect(
                    learner.act, run_cfg.rollout_steps, dist.device, on_ends=learner.episodes_ended
                )
                learner.train()
                batch = rollout.flatten()
                metrics = learner.update(batch, rollout, gen, 0)
                means = dist.mean(batch.rewards).tolist()
                for name, v in zip(learner.task.signal_names, means, strict=True):
                    metrics[f"charts/signal_{name}"] = v
                metrics |= {f"charts/{k}": v for k, v in constraint_report(learner.task, means).items()}
                result.transitions = int(collector.transitions * dist.world_size)
                _tick(result, logger, bar, it, metrics, t0)
        else:
            learner.offline = True
            batch = source.batch
            result.data_range = batch.time_range
            if run_cfg.learn_behaviour or torch.isnan(batch.behaviour_log_prob).any():
                mu = BehaviourModel(learner.task, learner.cfg.hidden, seed=run_cfg.seed)
                nll = mu.fit(batch, steps=max(run_cfg.behaviour_steps, 1), seed=run_cfg.seed)
                batch = mu.fill(batch, overwrite=run_cfg.learn_behaviour)
                logger.log(0, {"losses/behaviour_nll": nll[-1]})
            if learner.cfg.warm_start_steps:
                logger.log(0, {"losses/warm_start_nll": learner.warm_start(batch, gen)})
            for it in range(run_cfg.iterations):
                metrics = learner.update(batch, None, gen, run_cfg.offline_steps)
                result.transitions = (it + 1) * run_cfg.offline_steps * learner.cfg.minibatch_size
                _tick(result, logger, bar, it, metrics, t0)
        result.seconds = time.perf_counter() - t0
        if dist.is_main:
            save_checkpoint(
                out / "checkpoint.safetensors",
                learner.state_tensors(),
                {"algorithm": learner.algorithm, "task": learner.task.name, "config": json.dumps(asdict(learner.cfg))},
            )
    finally:
        if bar is not None:
            bar.close()
        logger.close()
        dist.close()
    return result


def _tick(result: RunResult, logger: MetricsLogger, bar: Any, it: int, metrics: dict[str, float], t0: float) -> None:
    elapsed = time.perf_counter() - t0
    metrics["charts/transitions_per_s"] = result.transitions / max(elapsed, 1e-9)
    result.history.append({"iteration": float(it), **metrics})
    logger.log(it, metrics)
    if bar is not None:
        bar.update(1)
        shown = {k.split("/")[-1]: f"{v:.3g}" for k, v in metrics.items() if k.startswith("charts/signal_")}
        bar.set_postfix(shown, refresh=False)
