"""`troupe train --env training.envs.cmdp:CMDPEnv --config …` on a tiny random CMDP: the constraint holds, exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from typer.testing import CliRunner

from training.envs.cmdp import CMDPEnv, evaluate, meets_constraints, solve_lp, task_config
from training.rl.registry import get_algorithm
from training.rl.runtime import load_checkpoint
from training.train import load_config_file, task_from_env

ENV = {"instance_seed": 3, "n_states": 4, "n_actions": 2, "gamma": 0.8, "n_constraints": 1}


def test_troupe_train_env_on_a_cmdp_meets_the_constraint(tmp_path: Path) -> None:
    from pipelines.cli import app

    cmdp = CMDPEnv(**ENV).cmdp  # the same instance the CLI builds from the `env:` section
    config = {
        "algorithm": "rcpo",
        "env": ENV,
        "task": task_config(cmdp),
        "run": {"seed": 0, "iterations": 60, "n_envs": 16, "rollout_steps": 32, "device": "cpu", "tensorboard": False},
        "algo": {
            "hidden": [16],
            "actor_lr": 0.01,
            "critic_lr": 0.01,
            "minibatch_size": 512,
            "margin": 0.02,
            "dual_lr": 2.0,
        },
    }
    cfg = tmp_path / "cmdp.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        ["train", "--env", "training.envs.cmdp:CMDPEnv", "--config", str(cfg), "--out-dir", str(out), "--no-progress"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((out / "result.json").read_text())["algorithm"] == "rcpo"

    # The shipped policy (best feasible iterate), rebuilt from the checkpoint and evaluated exactly.
    data = load_config_file(cfg)
    task = task_from_env(CMDPEnv(**ENV), data["task"], "CMDPEnv")
    assert [c.threshold for c in task.constraints] == list(cmdp.thresholds)  # the thresholds were read
    spec = get_algorithm("rcpo")
    loss = spec.loss(task, spec.config.from_dict(data["algo"]))
    loss.load_state_tensors(load_checkpoint(out / "checkpoint.safetensors"))
    with torch.no_grad():
        policy = loss.shipped_actor().log_probs_all(torch.eye(cmdp.n_states)).exp().double().numpy()
    values = evaluate(cmdp, policy / policy.sum(1, keepdims=True))
    assert meets_constraints(cmdp, values, tolerance=0.02)
    # Not the trivial way: the unconstrained optimum violates the constraint, and the trained
    # policy keeps most of the main value the constrained optimum has (tiny budget: within 10 %).
    free = solve_lp(cmdp, constrained=False)
    assert not meets_constraints(cmdp, evaluate(cmdp, free.policy), tolerance=0.02)
    optimum = solve_lp(cmdp).main_value
    assert values[0] >= 0.9 * optimum, (values, optimum)
    assert np.isfinite(values).all()
