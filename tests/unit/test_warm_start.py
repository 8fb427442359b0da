"""Behaviour cloning (`Trainer.warm_start`): it lands on the logging policy *as it serves*, near the box's edges too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from models.problems import RANK
from tests.support.rl import one_step_rank_columns
from training.ope.policies import clipped_gaussian_log_density
from training.rl.distributions import clipped_normal_log_prob
from training.rl.networks import BetaActor, TanhGaussianActor

# Weights near both edges (the demo's day-one rule), where a TanhNormal's median and a Gaussian's mean part.
LOGGED_MEAN = np.array([0.15, 0.2, 0.6, 0.2, 0.85, 0.4] * 3)
LOGGED_STD = 0.03


def test_start_at_puts_the_served_median_and_sigma_on_the_given_moments() -> None:
    mean, std = torch.as_tensor(LOGGED_MEAN, dtype=torch.float32), torch.full((18,), LOGGED_STD)
    obs = torch.randn(64, 27)
    tanh = TanhGaussianActor(27, 18, 0.0, 1.0, (16,), init_mean=[0.99] * 18, init_std=0.001)
    tanh.start_at(mean, std)
    d = tanh.distribution(obs)
    assert torch.allclose(d.mode.mean(0), mean, atol=2e-3)
    assert torch.allclose(d.linearised_log_std().exp().mean(0), std, rtol=0.02)
    beta = BetaActor(27, 18, 0.0, 1.0, (16,))
    beta.start_at(mean, std)
    b = beta.distribution(obs)
    assert torch.allclose(b.mean.mean(0), mean, atol=2e-3)
    assert torch.allclose(b.variance.sqrt().mean(0), std, rtol=0.05)


def test_served_log_prob_is_the_clipped_gaussian_that_serving_and_ope_use() -> None:
    actor = TanhGaussianActor(27, 18, 0.0, 1.0, (16,), init_mean=LOGGED_MEAN.tolist(), init_std=LOGGED_STD)
    obs = torch.randn(32, 27)
    action = torch.rand(32, 18)
    action[0, 0], action[1, 3] = 0.0, 1.0  # entries on a bound carry the mass beyond it
    mean, log_std = actor(obs)
    ours = actor.served_log_prob(obs, action).detach().numpy()
    ope = clipped_gaussian_log_density(action.numpy(), mean.detach().numpy(), log_std.exp().detach().numpy(), 0.0, 1.0)
    np.testing.assert_allclose(ours, ope, rtol=1e-5, atol=1e-4)
    direct = clipped_normal_log_prob(action, mean, log_std, 0.0, 1.0).detach().numpy()
    np.testing.assert_allclose(ours, direct, rtol=1e-6)


def _logs(folder: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, RANK.observation_size))
    a = np.clip(LOGGED_MEAN + LOGGED_STD * rng.normal(size=(n, 18)), 0, 1)
    ld = clipped_gaussian_log_density(a, np.broadcast_to(LOGGED_MEAN, a.shape), np.full(a.shape, LOGGED_STD), 0.0, 1.0)
    cols = one_step_rank_columns(x, a, ld, {s: np.full(n, 1.0) for s in RANK.signal_names})
    folder.mkdir(parents=True)
    pq.write_table(pa.table(cols), folder / "transitions.parquet")
    return folder / "transitions.parquet"


def test_the_clone_of_a_constant_rule_near_the_edges_serves_that_rule(tmp_path: Path) -> None:
    """From the task's default start (far from the logs) the clone used to freeze 0.1 σ off with 0.82 of the σ."""
    import training.train as T

    data = _logs(tmp_path / "d", 2000)
    config = {
        "run": {"iterations": 1, "offline_steps": 1, "out_dir": str(tmp_path / "out"), "progress": False},
        "algo": {"hidden": [32, 32], "minibatch_size": 256, "warm_start_steps": 400, "warm_start_lr": 1e-2,
                 "actor_lr": 1e-9, "init_std": 0.03},
    }  # fmt: skip
    result = T.train_problem("rank", "rcpo", data=str(data), config=config)
    actor = result.learner.actor
    actor.load_state_dict(result.cloned_actor_state)
    obs = torch.as_tensor(pq.read_table(data).column("observation").to_pylist(), dtype=torch.float32)
    with torch.no_grad():
        d = actor.distribution(obs)
        bias = (d.mode.mean(0).numpy() - LOGGED_MEAN) / LOGGED_STD
        sigma_ratio = d.linearised_log_std().exp().mean(0).numpy() / LOGGED_STD
        spread = d.mode.std(0).numpy() / LOGGED_STD
    assert np.abs(bias).max() < 0.05, bias  # was 0.1 σ toward the bounds on the watch and comment weights
    assert np.abs(sigma_ratio - 1).max() < 0.05, sigma_ratio  # was 0.82 on the watch weight
    assert spread.max() < 0.1, spread  # early stopping: the clone of a constant rule stays (nearly) constant
