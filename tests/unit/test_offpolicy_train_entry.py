"""dqn and td3 through the registry, the generic `train` and `troupe train --env` (tiny budgets)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from training.algorithms import ddpg, dqn
from training.rl.registry import get_algorithm
from training.rl.runtime import load_checkpoint
from training.train import load_config_file, task_from_env, train_env

DQN_CONFIG = """
algorithm: dqn
env: {horizon: 4}
task:
  signals: [{name: reward, discount: 0.5}, {name: cost, discount: 0.5}]
run: {seed: 0, iterations: 20, n_envs: 8, rollout_steps: 16, tensorboard: false}
algo: {hidden_sizes: [32], learning_rate: 0.003, learning_starts: 200, epsilon_decay_steps: 1000,
       target_update_period: 25, updates_per_step: 2, batch_size: 64}
"""


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # the run sets run.cpu_threads


def test_registry_knows_the_off_policy_algorithms() -> None:
    for name, config in (("dqn", dqn.DQNConfig), ("ddpg", ddpg.DDPGConfig), ("td3", ddpg.TD3Config)):
        spec = get_algorithm(name)
        assert spec.config is config and spec.fit is not None and spec.data == "online"
    assert ddpg.TD3Config.from_dict({"hidden_sizes": [8]}).hidden_sizes == (8,)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['lam'\]"):
        dqn.DQNConfig.from_dict({"lam": 1.0})


def test_troupe_train_env_trains_dqn_to_the_best_arm(tmp_path: Path) -> None:
    from pipelines.cli import app

    cfg = tmp_path / "arms.yaml"
    cfg.write_text(DQN_CONFIG)
    out = tmp_path / "run"
    args = ["train", "--env", "tests.support.custom_env:BudgetArmsEnv", "--config", str(cfg), "--out-dir", str(out)]
    res = CliRunner().invoke(app, [*args, "--no-progress"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "result.json").read_text())
    assert summary["algorithm"] == "dqn" and summary["transitions"] == 20 * 8 * 16
    assert summary["config"]["gamma"] == 0.5  # the task's main-signal discount
    # rebuild from the checkpoint: the greedy arm is arm 0 (reward 1) and Q* = 1 / (1 − γ) = 2
    from tests.support.custom_env import BudgetArmsEnv

    data = load_config_file(cfg)
    task = task_from_env(BudgetArmsEnv(), data["task"], "BudgetArmsEnv")
    loss = dqn.build_loss(dqn.DQNConfig.from_dict(data["algo"]), task.obs_size, dqn.action_sizes_of(task))
    loss.load_state_dict(load_checkpoint(out / "checkpoint.safetensors"))
    q = loss.q_network(torch.rand(256, 2) * 2 - 1)[:, 0].detach()
    assert bool((q.argmax(-1) == 0).all())
    assert q[:, 0].mean().item() == pytest.approx(2.0, abs=0.3)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and "charts/episode_return_reward" in rows[-1] and "losses/loss" in rows[-1]


def test_td3_through_generic_train_finds_the_box_optimum(tmp_path: Path) -> None:
    config = {
        "task": {"signals": [{"name": "main", "discount": 0.5}, {"name": "safety", "discount": 0.5}]},
        "run": {"seed": 0, "iterations": 15, "n_envs": 8, "rollout_steps": 16, "tensorboard": False, "plots": False},
        "algo": {"hidden_sizes": [32], "learning_starts": 200, "updates_per_step": 2, "tau": 0.05},
    }
    result = train_env("training.rl.toy_envs:TradeoffBanditEnv", "td3", config, {"out_dir": str(tmp_path / "td3")})
    assert result.learner.algorithm == "td3"
    with torch.no_grad():
        action = result.learner.actor(torch.rand(128, 3) * 2 - 1)  # type: ignore[operator]
    assert float(action.mean()) > 0.9  # main = a on [0, 1]: the unconstrained optimum is a = 1
    assert (tmp_path / "td3" / "checkpoint.safetensors").exists()


def test_off_policy_algorithms_refuse_constraints_and_wrong_actions(tmp_path: Path) -> None:
    constrained = {
        "task": {
            "signals": [{"name": "reward", "discount": 0.5}, {"name": "cost", "discount": 0.5}],
            "constraints": [{"signal": "cost", "direction": "<=", "threshold": 0.3}],
        },
        "run": {"iterations": 1, "n_envs": 2, "rollout_steps": 2},
    }
    with pytest.raises(ValueError, match="unconstrained"):
        train_env("tests.support.custom_env:BudgetArmsEnv", "dqn", constrained, {"out_dir": str(tmp_path / "a")})
    plain = {"run": {"iterations": 1, "n_envs": 2, "rollout_steps": 2}}
    with pytest.raises(ValueError, match="box"):
        train_env("tests.support.custom_env:BudgetArmsEnv", "ddpg", plain, {"out_dir": str(tmp_path / "b")})
    with pytest.raises(ValueError, match="discrete"):
        train_env("training.rl.toy_envs:TradeoffBanditEnv", "dqn", plain, {"out_dir": str(tmp_path / "c")})
