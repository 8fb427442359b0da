"""Run-time plumbing: seeds, device, torchrun/DDP, metrics (CSV + TensorBoard + PNG), safetensors checkpoints.

Under `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) `Dist`
initialises the process group — NCCL when CUDA is present, gloo otherwise — and
offers the few global reductions the learners need so that a minibatch split
over ranks is normalised exactly as the whole minibatch would be in one process.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
from torch import Tensor, nn


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' → CUDA when present, else CPU; 'cpu' / 'cuda' / 'cuda:N' as given."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={requested!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(requested)


class Dist:
    """Process-group facts and global reductions; a no-op shell in a single process."""

    def __init__(self, device: torch.device) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = device
        self.enabled = self.world_size > 1
        self._owns_group = False
        if self.enabled and not tdist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(self.local_rank)
                self.device = torch.device("cuda", self.local_rank)
            tdist.init_process_group(backend=backend)
            self._owns_group = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel around `module` under torchrun, the module itself otherwise."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def shard(self, idx: Tensor) -> Tensor:
        """This rank's equal share of a global minibatch of indices (its length must divide by world size)."""
        if not self.enabled:
            return idx
        if len(idx) % self.world_size:
            raise ValueError(f"minibatch of {len(idx)} rows does not split over {self.world_size} processes")
        return idx.reshape(self.world_size, -1)[self.rank]

    def sum(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        y = x.detach().clone()
        tdist.all_reduce(y, op=tdist.ReduceOp.SUM)
        return y

    def max(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        y = x.detach().clone()
        tdist.all_reduce(y, op=tdist.ReduceOp.MAX)
        return y

    def mean(self, x: Tensor) -> Tensor:
        """Global mean over axis 0 of rows sharded across ranks."""
        s = self.sum(x.detach().sum(0))
        n = self.sum(torch.tensor(float(x.shape[0]), device=x.device))
        return s / n

    def moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Global mean and (population) std over axis 0."""
        m = self.mean(x)
        v = self.mean((x.detach() - m).pow(2))
        return m, v.sqrt()

    def log_mean_exp(self, x: Tensor) -> Tensor:
        """log of the global mean of exp(x) over a (B,) tensor, computed stably."""
        x = x.detach()
        mx = self.max(x.max())
        return mx + torch.log(self.mean(torch.exp(x - mx)))

    def close(self) -> None:
        if self._owns_group and tdist.is_initialized():
            tdist.destroy_process_group()


class MetricsLogger:
    """Stable-keyed scalar metrics, rank 0 only: metrics.jsonl (one line per iteration, flushed as it is
    written — readable while training runs), TensorBoard event files (live), metrics.csv and a PNG of
    the curves at the end (`plots=False` skips the PNG)."""

    def __init__(self, out_dir: Path, enabled: bool = True, tensorboard: bool = True, plots: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.plots = plots
        self.rows: list[dict[str, float]] = []
        self._writer = None
        self._jsonl = None
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = (self.out_dir / "metrics.jsonl").open("w")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": float(step), **{k: float(v) for k, v in metrics.items()}}
        self.rows.append(row)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({k: (v if math.isfinite(v) else None) for k, v in row.items()}) + "\n")
            self._jsonl.flush()
        if self._writer is not None:
            for k, v in metrics.items():
                if math.isfinite(float(v)):
                    self._writer.add_scalar(k, float(v), step)
            self._writer.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        keys: list[str] = ["step"]
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        with (self.out_dir / "metrics.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in self.rows:
                w.writerow(r)
        if self._writer is not None:
            self._writer.close()
        if self.rows and self.plots:
            self.plot(self.out_dir / "curves.png")

    def plot(self, path: Path) -> None:
        """Small multiples: one panel per metric key (scales differ by orders of magnitude).

        Episode returns, constraint slacks and multipliers come first, each with its unit on the
        y axis; the x axis is the training iteration.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = sorted({k for r in self.rows for k in r if k != "step"}, key=lambda k: (_plot_rank(k), k))
        cols = 4
        rows = max(1, -(-len(keys) // cols))
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
        for ax in axes.flat[len(keys) :]:
            ax.axis("off")
        for ax, k in zip(axes.flat, keys, strict=False):
            pts = [(r["step"], r[k]) for r in self.rows if k in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
            if "slack" in k:
                ax.axhline(0.0, color="grey", lw=0.8, ls="--")
            ax.set_title(k, fontsize=8)
            ax.set_xlabel("iteration", fontsize=7)
            ax.set_ylabel(_unit_of(k), fontsize=7)
            ax.tick_params(labelsize=6)
        fig.suptitle(f"training curves — {self.out_dir.name}", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)


def _plot_rank(key: str) -> int:
    for i, part in enumerate(("episode_return", "constraint_slack", "multiplier")):
        if part in key:
            return i
    return 3


def _unit_of(key: str) -> str:
    """y-axis label of a metric key (stable key prefixes, STYLE.md)."""
    if "episode_return" in key:
        return "signal units / episode"
    if "episode_length" in key:
        return "steps / episode"
    if "constraint_slack" in key:
        return "slack (signal units / decision)"
    if "multiplier" in key:
        return "multiplier λ (main units per constraint unit)"
    if key.startswith("charts/signal_") or key.startswith("charts/constraint_"):
        return "signal units / decision"
    if key.endswith("per_s"):
        return "transitions / s"
    if key.startswith("losses/"):
        return "loss"
    return "value"


def save_checkpoint(path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """safetensors file of named tensors (never pickle); tensors are copied to contiguous CPU memory."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(path), dict(metadata or {}))


def load_checkpoint(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))
