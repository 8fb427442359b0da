"""`troupe train --env package.module:EnvClass --config file.yaml` on a tiny custom env with a constraint."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from tests.support.custom_env import ARMS
from training.rl.registry import get_algorithm
from training.rl.runtime import load_checkpoint
from training.train import load_config_file, task_from_env

CONFIG = """
algorithm: rcpo
env: {horizon: 4}
task:
  signals: [{name: reward, discount: 0.5}, {name: cost, discount: 0.5}]
  constraints: [{signal: cost, direction: "<=", threshold: 0.3}]
run: {seed: 0, iterations: 30, n_envs: 8, rollout_steps: 16, device: cpu, tensorboard: false}
algo: {hidden: [32], actor_lr: 0.003, minibatch_size: 64}
"""


def test_troupe_train_env_meets_the_constraint_of_a_custom_env(tmp_path: Path) -> None:
    from pipelines.cli import app

    cfg = tmp_path / "budget.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--env",
            "tests.support.custom_env:BudgetArmsEnv",
            "--config",
            str(cfg),
            "--out-dir",
            str(out),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "result.json").read_text())
    assert summary["algorithm"] == "rcpo" and summary["env"].endswith("BudgetArmsEnv")
    # the trained policy, rebuilt from the checkpoint, evaluated exactly: expected cost and reward
    from tests.support.custom_env import BudgetArmsEnv

    data = load_config_file(cfg)
    task = task_from_env(BudgetArmsEnv(), data["task"], "BudgetArmsEnv")
    spec = get_algorithm("rcpo")
    loss = spec.loss(task, spec.config.from_dict(data["algo"]))
    loss.load_state_tensors(load_checkpoint(out / "checkpoint.safetensors"))
    with torch.no_grad():
        probs = loss.actor(torch.rand(512, 2) * 2 - 1).exp().mean(0)
    reward, cost = (probs.double() @ torch.as_tensor(ARMS)).tolist()
    assert cost <= 0.3 * 1.1  # the constraint holds (10 % slack for a 30-iteration run)
    assert reward >= 0.45  # and the policy did not collapse onto the free, useless arm (reward 0)
    # live curves: per-episode returns, the constraint's slack and its multiplier, and the PNG
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 30
    assert {"charts/episode_return_reward", "charts/constraint_slack_cost", "charts/multiplier_cost"} <= set(rows[-1])
    assert (out / "curves.png").exists()
    # a bad env path is a clear error naming what is missing
    res = CliRunner().invoke(
        app,
        ["train", "--env", "tests.support.custom_env:Nope", "--config", str(cfg), "--out-dir", str(tmp_path / "x")],
    )
    assert res.exit_code == 2 and "has no attribute 'Nope'" in res.output
