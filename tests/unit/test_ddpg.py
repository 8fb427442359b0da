"""DDPG/TD3: hand-computed critic targets, the deterministic policy gradient, a known optimum, ONNX parity."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from training.algorithms.ddpg import (
    DDPGConfig,
    DDPGLoss,
    DeterministicActor,
    QCritic,
    build_loss,
    export_actor,
    td3_config,
    train,
)
from training.rl.toy_mdps import QuadraticBanditEnv


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny networks: a second intra-op thread only adds contention on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batch(n: int = 6, obs: int = 2, act: int = 1) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "obs": torch.randn(n, obs, generator=g),
        "action": torch.rand(n, act, generator=g) * 2 - 1,
        "reward": torch.randn(n, generator=g),
        "next_obs": torch.randn(n, obs, generator=g),
        "discount": torch.full((n,), 0.9),
    }


def test_actor_stays_inside_the_box() -> None:
    actor = DeterministicActor(3, 2, (16,), low=[0.0, -2.0], high=[1.0, 2.0])
    with torch.no_grad():
        actor.body[-1].bias.fill_(50.0)
    a = actor(torch.randn(10, 3))
    assert torch.allclose(a, torch.tensor([1.0, 2.0]).expand(10, 2))
    with pytest.raises(ValueError, match="high > low"):
        DeterministicActor(3, 1, (4,), low=1.0, high=1.0)


def test_td3_critic_target_is_the_min_of_the_target_critics() -> None:
    loss = build_loss(td3_config(target_policy_noise=0.0), obs_size=2, action_size=1, low=-1.0, high=1.0)
    with torch.no_grad():
        for p in loss.target_critics[1].parameters():
            p.add_(0.5)
    batch = _batch()
    out = loss.critic_loss(batch)
    with torch.no_grad():
        next_in = torch.cat([batch["next_obs"], loss.target_actor(batch["next_obs"])], -1)
        y = batch["reward"] + 0.9 * torch.minimum(loss.target_critics[0](next_in), loss.target_critics[1](next_in))
        current = torch.cat([batch["obs"], batch["action"]], -1)
        expected = ((loss.critics[0](current) - y) ** 2).mean() + ((loss.critics[1](current) - y) ** 2).mean()
    assert out["target_mean"].item() == pytest.approx(y.mean().item(), rel=1e-6)
    assert out["critic_loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    ddpg = build_loss(DDPGConfig(), 2, 1, -1.0, 1.0)
    assert len(ddpg.critics) == 1
    with pytest.raises(ValueError, match="2 critic"):
        DDPGLoss(ddpg.actor, list(ddpg.critics), td3_config())


class _KnownCritic(nn.Module):
    """Q(s, a) = −(a − 0.3)², whatever s: ∇ₐQ = −2(a − 0.3)."""

    def forward(self, critic_input: Tensor) -> Tensor:
        return -((critic_input[:, -1] - 0.3) ** 2)


def test_actor_gradient_is_the_deterministic_policy_gradient() -> None:
    torch.manual_seed(0)
    actor = DeterministicActor(2, 1, (8,), -1.0, 1.0)
    loss = DDPGLoss(actor, [_KnownCritic()], DDPGConfig())  # type: ignore[list-item]
    batch = _batch(n=4)
    loss.actor_loss(batch)["actor_loss"].backward()
    got = [p.grad.clone() for p in actor.parameters()]  # type: ignore[union-attr]
    actor.zero_grad()
    a = actor(batch["obs"]).squeeze(-1)
    # chain rule by hand: d(−mean Q)/dθ = mean_i 2(a_i − 0.3) · ∂a_i/∂θ
    (2 * (a.detach() - 0.3) * a).mean().backward()
    for g, p in zip(got, actor.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-7)  # type: ignore[arg-type]
    optimiser = torch.optim.Adam(actor.parameters(), lr=1e-2)
    for _ in range(300):
        optimiser.zero_grad()
        loss.actor_loss(batch)["actor_loss"].backward()
        optimiser.step()
    assert torch.allclose(actor(batch["obs"]), torch.tensor(0.3), atol=1e-2)


def test_td3_finds_the_optimum_of_a_quadratic_bandit() -> None:
    env = QuadraticBanditEnv(obs_size=1, action_size=1, num_envs=32, noise=0.05, seed=0)
    cfg = td3_config(
        total_env_steps=6000,
        learning_starts=300,
        batch_size=64,
        hidden_sizes=(32, 32),
        actor_lr=3e-3,
        critic_lr=3e-3,
        updates_per_step=2,
        tau=0.05,
    )
    result = train(cfg, env)
    s = torch.linspace(-1, 1, 41).unsqueeze(1)
    with torch.no_grad():
        err = (result.loss_module.actor(s) - env.optimal_action(s)).abs()
        initial = build_loss(cfg, 1, 1, -1.0, 1.0).actor(s) - env.optimal_action(s)
    assert float(err.mean()) < 0.08 < 0.2 < float(initial.abs().mean())


def test_actor_onnx_export_parity(tmp_path: Path) -> None:
    actor = DeterministicActor(4, 2, (16, 16), low=[0.0, -1.0], high=[1.0, 3.0])
    path = tmp_path / "actor.onnx"
    assert export_actor(actor, path) <= 1e-5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    obs = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    (action,) = session.run(["action"], {"observation": obs})
    assert np.allclose(action, actor(torch.from_numpy(obs)).detach().numpy(), atol=1e-5)
    assert action.shape == (9, 2) and (action[:, 1] >= -1).all() and (action[:, 1] <= 3).all()


def test_config_rejects_bad_values_by_name() -> None:
    with pytest.raises(ValueError, match="tau"):
        DDPGConfig(tau=0.0)
    with pytest.raises(ValueError, match="policy_delay"):
        DDPGConfig(policy_delay=0)
    assert QCritic(3, (4,))(torch.zeros(5, 3)).shape == (5,)


def test_message_actor_reads_the_previous_message_and_exports_with_state(tmp_path: Path) -> None:
    from training.algorithms.ddpg import MessageActor
    from training.rl.recurrent import export_recurrent_step

    torch.manual_seed(0)
    actor = MessageActor(obs_size=3, action_size=2, hidden=(16,), low=-1.0, high=1.0, message_size=8)
    assert actor.state_size == 16  # LSTM: [h; c]
    obs, state = torch.randn(5, 3), torch.randn(5, 16)
    action, next_state = actor(obs, state)
    # a_t depends on h_{t−1} (first 8 entries) and not on c_{t−1}
    state_other_c = state.clone()
    state_other_c[:, 8:] += 1.0
    assert torch.allclose(actor(obs, state_other_c)[0], action)
    state_other_h = state.clone()
    state_other_h[:, :8] += 1.0
    assert not torch.allclose(actor(obs, state_other_h)[0], action)
    # the message update sees the action taken: LSTM([o; a], state)
    assert torch.allclose(next_state, actor.cell(torch.cat([obs, action], -1), state))
    diff = export_recurrent_step(
        actor, [3, 16], ("observation", "message"), ("action", "next_message"), tmp_path / "stage.onnx"
    )
    assert diff <= 1e-5
