"""The training entry point under `torchrun --nproc_per_node=2` (DDP, gloo on CPU) equals one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.problems import RANK
from training.rl.data import TransitionBatch, write_transitions
from training.rl.runtime import load_checkpoint
from training.rl.task import TaskSpec

CONFIG = """
run:
  iterations: 2
  offline_steps: 3
  behaviour_steps: 10
  tensorboard: false
algo:
  hidden: [16]
  minibatch_size: 64
  warm_start_steps: 5
"""


def _dataset(path: Path) -> None:
    task = TaskSpec.from_problem(RANK)
    g = torch.Generator().manual_seed(0)
    n = 512
    obs = torch.rand(n, task.obs_size, generator=g)
    action = torch.rand(n, 18, generator=g)
    rewards = torch.rand(n, 6, generator=g) * torch.tensor([300.0, 2, 1, 0.2, 0.3, 0.2])
    batch = TransitionBatch(
        obs,
        action,
        rewards,
        torch.rand(n, task.obs_size, generator=g),
        (torch.rand(n, generator=g) < 0.1).float(),
        torch.full((n,), -5.0),
    )
    write_transitions(path, batch, task)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path: Path) -> None:
    data = tmp_path / "data.parquet"
    _dataset(data)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    common = [
        "-m",
        "training.train",
        "--algo",
        "tscac",
        "--data",
        str(data),
        "--config",
        str(cfg),
        "--no-progress",
        "--device",
        "cpu",
    ]
    one = subprocess.run(
        [sys.executable, *common, "--out-dir", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = Path(sys.executable).parent / "torchrun"
    two = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", *common, "--out-dir", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_checkpoint(tmp_path / "one" / "checkpoint.safetensors")
    b = load_checkpoint(tmp_path / "two" / "checkpoint.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel())
    assert worst <= 1e-4, f"one vs two processes differ by {worst}"
    # and training did something: the shipped actor moved away from its seeded initialisation
    from training.algorithms.tscac import TSCACConfig, TSCACLoss
    from training.rl.runtime import seed_everything

    seed_everything(0)
    fresh = TSCACLoss(TaskSpec.from_problem(RANK), TSCACConfig(hidden=(16,)), RANK.default_action).state_dict()
    moved = max(float((a[k] - fresh[k]).abs().max()) for k in a if k.startswith("actor."))
    assert moved > 1e-3
    assert (tmp_path / "two" / "result.json").exists() and (tmp_path / "two" / "metrics.csv").exists()
