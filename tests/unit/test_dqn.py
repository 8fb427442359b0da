"""DQN: hand-computed double-DQN losses (joint and per-head), target updates, Q* on a small MDP, memory task."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from training.algorithms.dqn import (
    DQNConfig,
    DQNLoss,
    QNetwork,
    RecurrentDQNLoss,
    build_loss,
    greedy_success_rate,
    train,
)
from training.rl.toy_mdps import MemoryEnv, TabularMDPEnv, random_mdp


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny networks: a second intra-op thread only adds contention on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _perturbed_target(loss: DQNLoss) -> None:
    with torch.no_grad():
        for p in loss.target_network.parameters():
            p.add_(0.3 * torch.randn_like(p))


def test_joint_double_dqn_loss_equals_hand_computation() -> None:
    torch.manual_seed(0)
    cfg = DQNConfig(huber_delta=None, double_q=True)
    loss = DQNLoss(QNetwork(4, [2, 3], "joint", (8,)), cfg)
    _perturbed_target(loss)
    obs, next_obs = torch.randn(5, 4), torch.randn(5, 4)
    action = torch.tensor([[0, 0], [1, 2], [0, 1], [1, 0], [1, 1]])
    reward, discount = torch.randn(5), torch.tensor([0.9, 0.0, 0.81, 0.9, 0.5])
    out = loss({"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "discount": discount})
    q = loss.q_network(obs)[:, 0].detach()
    q_next_online = loss.q_network(next_obs)[:, 0].detach()
    q_next_target = loss.target_network(next_obs)[:, 0].detach()
    expected = 0.0
    for i in range(5):
        joint = int(action[i, 0]) * 3 + int(action[i, 1])  # mixed radix, last component fastest
        pick = int(q_next_online[i].argmax())
        y = float(reward[i]) + float(discount[i]) * float(q_next_target[i, pick])
        expected += 0.5 * (float(q[i, joint]) - y) ** 2 / 5
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    # plain DQN uses the target net's own max instead — a different number here
    plain = DQNLoss(loss.q_network, DQNConfig(huber_delta=None, double_q=False))
    plain.target_network.load_state_dict(loss.target_network.state_dict())
    out_plain = plain({"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "discount": discount})
    assert out_plain["loss"].item() != pytest.approx(expected, rel=1e-3)


def test_per_head_loss_uses_the_mean_of_the_heads_targets() -> None:
    torch.manual_seed(1)
    cfg = DQNConfig(huber_delta=None, action_mode="per_head")
    loss = DQNLoss(QNetwork(3, [2, 4], "per_head", (8,)), cfg)
    _perturbed_target(loss)
    obs, next_obs = torch.randn(2, 3), torch.randn(2, 3)
    action = torch.tensor([[1, 3], [0, 2]])
    reward, discount = torch.tensor([1.0, -1.0]), torch.tensor([0.5, 0.9])
    out = loss({"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "discount": discount})
    q = loss.q_network(obs).detach()
    qn, qt = loss.q_network(next_obs).detach(), loss.target_network(next_obs).detach()
    expected = 0.0
    for i in range(2):
        picks = [int(qn[i, 0, :2].argmax()), int(qn[i, 1, :4].argmax())]  # head 0 has 2 actions (padding masked)
        y = float(reward[i]) + float(discount[i]) * (float(qt[i, 0, picks[0]]) + float(qt[i, 1, picks[1]])) / 2
        for head in range(2):
            expected += 0.5 * (float(q[i, head, action[i, head]]) - y) ** 2 / 4
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_hard_and_soft_target_updates() -> None:
    loss = DQNLoss(QNetwork(2, [3], "joint", (4,)), DQNConfig(target_update_period=3))
    _perturbed_target(loss)
    online = [p.clone() for p in loss.q_network.parameters()]
    loss.update_target(2)
    assert not all(torch.equal(a, b) for a, b in zip(loss.target_network.parameters(), online, strict=True))
    loss.update_target(3)
    assert all(torch.equal(a, b) for a, b in zip(loss.target_network.parameters(), online, strict=True))
    soft = DQNLoss(QNetwork(2, [3], "joint", (4,)), DQNConfig(target_tau=0.25))
    with torch.no_grad():
        for p in soft.target_network.parameters():
            p.zero_()
    soft.update_target(1)
    for t, o in zip(soft.target_network.parameters(), soft.q_network.parameters(), strict=True):
        assert torch.allclose(t, 0.25 * o)


def test_config_rejects_bad_values_by_name() -> None:
    with pytest.raises(ValueError, match="action_mode"):
        DQNConfig(action_mode="sum")
    with pytest.raises(ValueError, match="gamma"):
        DQNConfig(gamma=1.0)
    with pytest.raises(ValueError, match="recurrent mode supports"):
        DQNConfig(recurrent=True, action_mode="per_head")


def test_dqn_finds_q_star_on_a_small_random_mdp() -> None:
    mdp = random_mdp(num_states=3, action_sizes=[2], gamma=0.5, seed=3)
    q_star = mdp.optimal_q()
    cfg = DQNConfig(
        gamma=0.5,
        total_env_steps=4000,
        learning_starts=200,
        epsilon_decay_steps=1000,
        epsilon_end=0.3,
        hidden_sizes=(16,),
        batch_size=64,
        learning_rate=1e-2,
        target_update_period=25,
        updates_per_step=2,
        huber_delta=None,
    )
    result = train(cfg, TabularMDPEnv(mdp, num_envs=32, horizon=10, seed=0), [2])
    q = result.loss_module.q_network(torch.eye(3))[:, 0].detach().numpy()
    assert np.abs(q - q_star).max() < 0.1 * np.abs(q_star).max()
    assert (q.argmax(1) == q_star.argmax(1)).all()
    assert result.metrics[-1]["env_steps"] >= 4000


def test_recurrent_dqn_remembers_what_feed_forward_cannot() -> None:
    common = dict(
        gamma=0.9,
        total_env_steps=2000,
        learning_starts=200,
        epsilon_decay_steps=1000,
        hidden_sizes=(16,),
        batch_size=32,
        learning_rate=1e-2,
        target_update_period=25,
        updates_per_step=2,
    )
    recurrent = train(
        DQNConfig(recurrent=True, recurrent_hidden_size=16, sequence_length=3, **common),
        MemoryEnv(2, 3, 32, seed=0),
        [2],
    )
    feed_forward = train(DQNConfig(**common), MemoryEnv(2, 3, 32, seed=0), [2])
    assert isinstance(recurrent.loss_module, RecurrentDQNLoss)
    assert greedy_success_rate(recurrent.loss_module, MemoryEnv(2, 3, 16, seed=9)) == 1.0
    assert greedy_success_rate(feed_forward.loss_module, MemoryEnv(2, 3, 16, seed=9)) < 0.6  # at best 1/2


def test_recurrent_loss_with_burn_in_trains_only_the_unrolled_part() -> None:
    torch.manual_seed(0)
    loss = build_loss(
        DQNConfig(
            recurrent=True,
            recurrent_hidden_size=8,
            hidden_sizes=(8,),
            sequence_length=5,
            burn_in=2,
            num_heads=3,
            n_step=2,
        ),
        obs_size=3,
        action_sizes=[4],
    )
    assert isinstance(loss, RecurrentDQNLoss)
    length, batch = 5, 6
    obs = torch.randn(length, batch, 3, requires_grad=True)
    mask = torch.ones(length, batch)
    mask[4, :3] = 0.0
    out = loss(
        {
            "obs": obs,
            "next_obs": torch.randn(length, batch, 3),
            "action": torch.randint(0, 4, (length, batch, 1)),
            "reward": torch.randn(length, batch),
            "terminated": torch.zeros(length, batch, dtype=torch.bool),
            "truncated": torch.zeros(length, batch, dtype=torch.bool),
            "mask": mask,
            "hidden": torch.randn(batch, loss.q_network.state_size),
        }
    )
    out["loss"].backward()
    assert obs.grad is not None
    assert float(obs.grad[:2].abs().sum()) == 0.0  # burn-in steps carry no gradient
    assert float(obs.grad[2:].abs().sum()) > 0.0
    assert float(obs.grad[4, :3].abs().sum()) == 0.0  # padded steps carry no loss
