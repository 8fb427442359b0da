"""Mixers: VDN sum and the monotone (softplus) hypernetwork mixer against hand-computed values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.rl.mixers import MonotoneMixer, SumMixer


def test_sum_mixer_is_the_sum() -> None:
    q = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]])
    assert torch.allclose(SumMixer(3)(q, None), torch.tensor([6.0, -0.5]))
    with pytest.raises(ValueError, match=r"agent_q must be \(B, 3\)"):
        SumMixer(3)(q[:, :2])


def test_monotone_mixer_hand_computed_with_fixed_weights() -> None:
    mixer = MonotoneMixer(num_agents=2, state_size=1, embed_size=1)
    with torch.no_grad():
        for p in mixer.parameters():
            p.zero_()
        mixer.hyper_w1.bias.copy_(torch.tensor([0.0, 1.0]))  # W₁ = softplus([0, 1])
        mixer.hyper_b1.bias.fill_(0.5)
        mixer.hyper_w2.bias.fill_(2.0)
        mixer.state_value[2].bias.fill_(-1.0)  # V(s) = −1
    q = torch.tensor([[1.0, 2.0]])
    s = torch.zeros(1, 1)
    w1 = F.softplus(torch.tensor([0.0, 1.0]))
    hidden = F.elu(1.0 * w1[0] + 2.0 * w1[1] + 0.5)
    expected = hidden * F.softplus(torch.tensor(2.0)) - 1.0
    assert mixer(q, s).item() == pytest.approx(expected.item(), rel=1e-6)


def test_monotone_mixer_gradient_is_non_negative_for_every_agent() -> None:
    torch.manual_seed(0)
    mixer = MonotoneMixer(num_agents=4, state_size=6, embed_size=8)
    q = (torch.randn(256, 4) * 5).requires_grad_(True)
    state = torch.randn(256, 6) * 3
    mixer(q, state).sum().backward()
    assert q.grad is not None and bool((q.grad > 0).all())
    # a mixer with unconstrained weights is not monotone (the test can fail)
    w = nn.Linear(4, 1)
    with torch.no_grad():
        w.weight.copy_(torch.tensor([[1.0, -1.0, 1.0, 1.0]]))
    q2 = torch.randn(8, 4, requires_grad=True)
    w(q2).sum().backward()
    assert bool((q2.grad < 0).any())


def test_monotone_mixer_rejects_a_wrong_state() -> None:
    mixer = MonotoneMixer(2, 3)
    with pytest.raises(ValueError, match="state must be"):
        mixer(torch.zeros(4, 2), torch.zeros(4, 2))
