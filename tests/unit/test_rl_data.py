"""Parquet transition loader, learned behaviour model, per-signal critics."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from training.rl.behaviour import BehaviourModel
from training.rl.data import DatasetError, TransitionBatch, load_transitions, write_transitions
from training.rl.networks import SignalCritics
from training.rl.toy_envs import bandit_task


def _batch(n: int = 400, seed: int = 0) -> TransitionBatch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, 3, generator=g) * 2 - 1
    # Logging policy N(0.5 + 0.2·obs_0, 0.05²): actions stay > 4σ inside the [0, 1] box.
    mean = 0.5 + 0.2 * obs[:, :1]
    action = mean + 0.05 * torch.randn(n, 1, generator=g)
    logp = -0.5 * ((action - mean) / 0.05).pow(2)[:, 0] - math.log(0.05) - 0.5 * math.log(2 * math.pi)
    rewards = torch.cat([action, 1 - action], 1)
    return TransitionBatch(obs, action, rewards, torch.roll(obs, -1, 0), torch.zeros(n), logp)


def test_parquet_roundtrip_matches_layout(tmp_path: Path) -> None:
    task = bandit_task()
    b = _batch()
    write_transitions(tmp_path / "part-0.parquet", b, task)
    cols = pq.read_schema(tmp_path / "part-0.parquet").names
    for c in (
        "observation",
        "action",
        "reward_main",
        "reward_safety",
        "next_observation",
        "done",
        "propensity",
        "log_density",
        "policy_version",
        "arm",
        "user_id",
        "session_id",
        "timestamp",
    ):
        assert c in cols
    back = load_transitions(tmp_path, task)
    assert torch.allclose(back.obs, b.obs) and torch.allclose(back.action, b.action)
    assert torch.allclose(back.rewards, b.rewards)
    assert torch.allclose(back.behaviour_log_prob, b.behaviour_log_prob, atol=1e-5)
    assert back.time_range is not None and back.time_range[0] < back.time_range[1]


def test_loader_errors_name_the_column(tmp_path: Path) -> None:
    task = bandit_task()
    write_transitions(tmp_path / "d.parquet", _batch(), task)
    t = pq.read_table(tmp_path / "d.parquet").drop_columns(["reward_safety"])
    pq.write_table(t, tmp_path / "bad.parquet")
    with pytest.raises(DatasetError, match="reward_safety"):
        load_transitions(tmp_path / "bad.parquet", task)
    from dataclasses import replace

    wide = replace(task, obs_size=5)
    with pytest.raises(DatasetError, match="observation.*length 5"):
        load_transitions(tmp_path / "d.parquet", wide)
    with pytest.raises(DatasetError, match="does not exist"):
        load_transitions(tmp_path / "nope", task)


def test_behaviour_model_recovers_logging_policy() -> None:
    torch.set_num_threads(1)  # tiny networks: more threads only contend on a busy machine
    b = _batch(2000)
    mu = BehaviourModel(bandit_task(), hidden=(32,), seed=0)
    mu.fit(b, steps=400, lr=1e-2)
    obs = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    mean, log_std = mu.model(obs)
    assert mean[:, 0].tolist() == pytest.approx([0.3, 0.7], abs=0.05)
    assert log_std[0, 0].exp().item() == pytest.approx(0.05, abs=0.02)
    # learned log-density close to the true one on logged actions
    err = (mu.log_prob(b.obs, b.action) - b.behaviour_log_prob).abs().mean()
    assert err.item() < 0.3
    filled = mu.fill(b)
    assert not torch.isnan(filled.behaviour_log_prob).any()


def test_signal_critics_are_independent_per_signal() -> None:
    torch.manual_seed(0)
    c = SignalCritics(3, 2, (16,))
    x = torch.randn(8, 3)
    out = c(x)
    assert out.shape == (8, 2)
    out[:, 0].sum().backward()
    # the second signal's network gets no gradient from the first signal's loss
    assert all(p.grad is None or torch.all(p.grad == 0) for p in c.heads[1].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in c.heads[0].parameters())
