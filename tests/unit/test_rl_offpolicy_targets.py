"""Off-policy targets (training/rl/offpolicy_functional.py) against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from training.rl.functional import n_step_targets
from training.rl.offpolicy_functional import (
    clipped_double_q_targets,
    dqn_targets,
    target_policy_smoothing,
)


def test_n_step_returns_two_steps_hand_computed() -> None:
    # γ = 0.5, n = 2, one env, no episode end: G_0 = 1 + 0.5·2 + 0.25·V(s2) = 2 + 0.25·8 = 4.
    r = torch.tensor([1.0, 2.0, 3.0])
    v_next = torch.tensor([4.0, 8.0, 16.0])  # V(s1), V(s2), V(s3)
    d = torch.zeros(3)
    g = n_step_targets(r, v_next, d, 0.5, 2)
    assert g[0].item() == pytest.approx(1 + 0.5 * 2 + 0.25 * 8)
    assert g[1].item() == pytest.approx(2 + 0.5 * 3 + 0.25 * 16)
    # last step: the sequence runs out → one reward, bootstrapped from its own s'
    assert g[2].item() == pytest.approx(3 + 0.5 * 16)


def test_n_step_returns_stops_at_termination_and_bootstraps_truncation() -> None:
    r = torch.tensor([1.0, 2.0, 3.0, 4.0])
    v_next = torch.tensor([10.0, 20.0, 30.0, 40.0])
    done = torch.tensor([0.0, 1.0, 0.0, 0.0])  # terminal after step 1
    g = n_step_targets(r, v_next, done, 0.9, 3)
    assert g[0].item() == pytest.approx(1 + 0.9 * 2)  # no bootstrap past the terminal
    assert g[1].item() == pytest.approx(2.0)
    assert g[2].item() == pytest.approx(3 + 0.9 * 4 + 0.81 * 40)
    # truncation after step 0: cut there, but bootstrap from V(s1)
    ends = torch.tensor([1.0, 0.0, 0.0, 0.0])
    g2 = n_step_targets(r, v_next, torch.zeros(4), 0.9, 3, ends=ends)
    assert g2[0].item() == pytest.approx(1 + 0.9 * 10)


def test_n_step_one_equals_td_target_and_gamma_per_signal() -> None:
    r = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    v = torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    d = torch.zeros(2, 2)
    g = n_step_targets(r, v, d, torch.tensor([0.5, 0.0]), 1)
    assert torch.allclose(g, torch.tensor([[1 + 2.5, 2.0], [3 + 3.5, 4.0]]))
    with pytest.raises(ValueError, match="n must be"):
        n_step_targets(r, v, d, 0.9, 0)


def test_dqn_and_double_dqn_targets() -> None:
    r = torch.tensor([1.0, 1.0])
    target_q = torch.tensor([[1.0, 5.0, 3.0], [2.0, 0.0, 4.0]])
    online_q = torch.tensor([[9.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    done = torch.tensor([0.0, 1.0])
    y = dqn_targets(r, target_q, done, 0.5)
    assert torch.allclose(y, torch.tensor([1 + 0.5 * 5, 1.0]))
    # double DQN: the online net picks action 0 in row 0 → target net's value 1
    y2 = dqn_targets(r, target_q, torch.zeros(2), 0.5, next_online_q=online_q)
    assert torch.allclose(y2, torch.tensor([1 + 0.5 * 1, 1 + 0.5 * 4]))
    # per-row discount (n-step writer's γ^m)
    y3 = dqn_targets(r, target_q, torch.zeros(2), torch.tensor([0.25, 0.0]))
    assert torch.allclose(y3, torch.tensor([1 + 0.25 * 5, 1.0]))
    with pytest.raises(ValueError, match="next_online_q"):
        dqn_targets(r, target_q, done, 0.5, next_online_q=online_q[:, :2])


def test_clipped_double_q_takes_the_minimum() -> None:
    r = torch.tensor([0.0, 1.0])
    q1 = torch.tensor([3.0, 2.0])
    q2 = torch.tensor([1.0, 5.0])
    y = clipped_double_q_targets(r, q1, q2, torch.tensor([0.0, 0.0]), 0.9)
    assert torch.allclose(y, torch.tensor([0.9, 1 + 0.9 * 2]))
    assert torch.allclose(
        clipped_double_q_targets(r, q1, None, torch.tensor([0.0, 1.0]), 0.9), torch.tensor([2.7, 1.0])
    )


def test_target_policy_smoothing_clips_noise_and_action() -> None:
    a = torch.tensor([[0.0, 0.95, -1.0]]).expand(4000, 3)
    out = target_policy_smoothing(
        a, noise_std=1.0, noise_clip=0.5, low=-1.0, high=1.0, generator=torch.Generator().manual_seed(0)
    )
    noise = out[:, 0]
    assert noise.abs().max().item() == pytest.approx(0.5)  # clipped at c
    assert out.max().item() <= 1.0 and out.min().item() >= -1.0
    assert (out[:, 1] == 1.0).float().mean().item() > 0.4  # P(ε > 0.05) with σ = 1 clipped at the bound
    # the same generator seed reproduces ε exactly: out = clip(a + clip(σ·z, −c, c))
    z = torch.randn(4000, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.clamp(a + torch.clamp(z, -0.5, 0.5), -1.0, 1.0))
