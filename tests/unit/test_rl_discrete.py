"""ε-greedy with propensities, masked per-agent argmax, mixed-radix joint actions."""

from __future__ import annotations

import pytest
import torch

from training.rl.discrete import (
    components_to_joint,
    epsilon_greedy,
    joint_to_components,
    linear_epsilon,
    padding_mask,
    per_agent_argmax,
)


def test_linear_epsilon_schedule() -> None:
    assert linear_epsilon(0, 1.0, 0.1, 100) == pytest.approx(1.0)
    assert linear_epsilon(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert linear_epsilon(500, 1.0, 0.1, 100) == pytest.approx(0.1)


def test_epsilon_greedy_frequencies_and_propensities() -> None:
    q = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).expand(20000, 4)
    actions, prop = epsilon_greedy(q, 0.2, torch.Generator().manual_seed(0))
    freq = torch.bincount(actions, minlength=4).float() / 20000
    expected = torch.tensor([0.05, 0.85, 0.05, 0.05])
    assert torch.allclose(freq, expected, atol=0.01)
    assert torch.allclose(prop, expected[actions])
    # masked: action 1 unavailable → greedy is 3, exploration over 3 actions
    mask = torch.tensor([[True, False, True, True]]).expand(20000, 4)
    actions, prop = epsilon_greedy(q, 0.3, torch.Generator().manual_seed(1), action_mask=mask)
    assert not bool((actions == 1).any())
    assert torch.allclose(prop[actions == 3], torch.tensor(0.8))
    assert torch.allclose(prop[actions == 0], torch.tensor(0.1))
    with pytest.raises(ValueError, match="epsilon"):
        epsilon_greedy(q, 1.5)


def test_per_agent_argmax_respects_padding() -> None:
    mask = padding_mask([2, 3], batch_size=1)
    assert mask.tolist() == [[[True, True, False], [True, True, True]]]
    q = torch.tensor([[[0.0, 1.0, 9.0], [5.0, 1.0, 2.0]]])
    assert per_agent_argmax(q, mask).tolist() == [[1, 0]]
    assert per_agent_argmax(q).tolist() == [[2, 0]]


def test_joint_components_roundtrip_hand_computed() -> None:
    sizes = [3, 2]
    comps = joint_to_components(torch.arange(6), sizes)
    assert comps.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]]
    assert components_to_joint(comps, sizes).tolist() == list(range(6))
    sizes3 = [2, 3, 4]
    j = torch.arange(24)
    assert torch.equal(components_to_joint(joint_to_components(j, sizes3), sizes3), j)
    with pytest.raises(ValueError, match="joint indices"):
        joint_to_components(torch.tensor([6]), sizes)
    with pytest.raises(ValueError, match="component values"):
        components_to_joint(torch.tensor([[0, 2]]), sizes)
