"""Small CPU training runs for the learner tests: one RunConfig shape, quiet, into the test's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.rl.loop import RunConfig


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
    }
    return RunConfig(**{**fields, **overrides})
