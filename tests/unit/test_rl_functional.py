"""Shared RL math against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.rl.functional import (
    clipped_surrogate,
    constraint_slack,
    discounted_returns,
    gae,
    importance_weights,
    n_step_targets,
    soft_update,
    td_lambda_returns,
    td_targets,
)


def test_td_targets_per_signal_discount_and_terminal() -> None:
    r = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    v_next = torch.tensor([[10.0, 10.0], [10.0, 10.0]])
    done = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    y = td_targets(r, v_next, done, torch.tensor([0.9, 0.5]))
    # row 0: 1 + 0.9·10 = 10, 2 + 0.5·10 = 7; row 1 terminal: no bootstrap
    assert torch.allclose(y, torch.tensor([[10.0, 7.0], [1.0, 2.0]]))


def test_gae_hand_computed_two_steps() -> None:
    # T=2, one env. γ=0.5, λ=0.5. V(s0)=1, V(s1)=2, V(s2)=4.
    r = torch.tensor([1.0, 1.0])
    v = torch.tensor([1.0, 2.0])
    vn = torch.tensor([2.0, 4.0])
    d = torch.tensor([0.0, 0.0])
    adv = gae(r, v, vn, d, 0.5, 0.5)
    delta1 = 1 + 0.5 * 4 - 2  # 1.0
    delta0 = 1 + 0.5 * 2 - 1  # 1.0
    assert adv[1].item() == pytest.approx(delta1)
    assert adv[0].item() == pytest.approx(delta0 + 0.25 * delta1)
    assert torch.allclose(td_lambda_returns(r, v, vn, d, 0.5, 0.5), adv + v)


def test_gae_cuts_trace_at_episode_end_and_lambda_one_is_monte_carlo() -> None:
    r = torch.tensor([1.0, 2.0, 3.0])
    v = torch.tensor([0.3, 0.2, 0.1])
    vn = torch.tensor([0.2, 5.0, 7.0])
    d = torch.tensor([0.0, 1.0, 0.0])  # episode ends after step 1
    adv = gae(r, v, vn, d, 0.9, 1.0)
    # step 1 terminal: δ1 = 2 − 0.2; step 0 = MC return 1 + 0.9·2 − V(s0)
    assert adv[1].item() == pytest.approx(1.8)
    assert adv[0].item() == pytest.approx(1 + 0.9 * 2 - 0.3)
    # step 2 is the start of a new episode, bootstrapped from V(s3)=7
    assert adv[2].item() == pytest.approx(3 + 0.9 * 7 - 0.1)
    mc = discounted_returns(r[:2], d[:2], 0.9)
    assert mc[0].item() == pytest.approx(2.8)


def test_gae_truncation_bootstraps_but_cuts_trace() -> None:
    r = torch.tensor([1.0, 1.0])
    v = torch.tensor([0.0, 0.0])
    vn = torch.tensor([10.0, 0.0])
    done = torch.tensor([0.0, 0.0])
    ends = torch.tensor([1.0, 0.0])  # truncated after step 0
    adv = gae(r, v, vn, done, 0.5, 1.0, ends)
    assert adv[0].item() == pytest.approx(1 + 0.5 * 10)  # bootstrapped, no trace from step 1


def test_gae_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        gae(torch.zeros(3), torch.zeros(3), torch.zeros(2), torch.zeros(3), 0.9, 0.9)


def test_soft_update_polyak() -> None:
    src, tgt = nn.Linear(1, 1), nn.Linear(1, 1)
    with torch.no_grad():
        src.weight.fill_(1.0)
        src.bias.fill_(2.0)
        tgt.weight.fill_(0.0)
        tgt.bias.fill_(0.0)
    soft_update(tgt, src, 0.25)
    assert tgt.weight.item() == pytest.approx(0.25)
    assert tgt.bias.item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="tau"):
        soft_update(tgt, src, 0.0)


def test_importance_weights_clip_then_self_normalise() -> None:
    log_ratio = torch.log(torch.tensor([0.5, 1.0, 4.0, 100.0]))
    raw = importance_weights(log_ratio, clip=None, self_normalise=False)
    assert torch.allclose(raw, torch.tensor([0.5, 1.0, 4.0, 100.0]))
    clipped = importance_weights(log_ratio, clip=2.0, self_normalise=False)
    assert torch.allclose(clipped, torch.tensor([0.5, 1.0, 2.0, 2.0]))
    sn = importance_weights(log_ratio, clip=2.0)
    assert torch.allclose(sn, torch.tensor([0.5, 1.0, 2.0, 2.0]) / 1.375)
    assert sn.mean().item() == pytest.approx(1.0)
    # a global normaliser (sum, count) from other ranks replaces the local mean
    g = importance_weights(log_ratio, clip=2.0, total=(torch.tensor(11.0), torch.tensor(8.0)))
    assert torch.allclose(g, torch.tensor([0.5, 1.0, 2.0, 2.0]) / 1.375)
    assert torch.isfinite(importance_weights(torch.tensor([1e4]), clip=None, self_normalise=False)).all()
    with pytest.raises(ValueError, match="clip"):
        importance_weights(log_ratio, clip=0.0)


def test_clipped_surrogate() -> None:
    lp = torch.log(torch.tensor([2.0, 0.5, 2.0]))
    blp = torch.zeros(3)
    adv = torch.tensor([1.0, 1.0, -1.0])
    s = clipped_surrogate(lp, blp, adv, 0.2)
    # ratio 2, A>0 → clipped at 1.2; ratio 0.5, A>0 → 0.5; ratio 2, A<0 → min(−2, −1.2) = −2
    assert torch.allclose(s, torch.tensor([1.2, 0.5, -2.0]))


def test_n_step_targets_hand_computed_with_an_episode_end_and_the_rollout_end() -> None:
    # T=4, one env, γ = 0.5, n = 2; rewards 1, 2, 3, 4; V(s_{t+1}) = 10, 20, 30, 40; episode terminates at t=1.
    r = torch.tensor([1.0, 2.0, 3.0, 4.0])
    v_next = torch.tensor([10.0, 20.0, 30.0, 40.0])
    done = torch.tensor([0.0, 1.0, 0.0, 0.0])
    y = n_step_targets(r, v_next, done, 0.5, 2)
    # t0: 1 + 0.5·2, terminated at t1 → no bootstrap = 2
    # t1: 2 (terminal) = 2
    # t2: 3 + 0.5·4 + 0.25·40 = 15
    # t3: the rollout ends: 4 + 0.5·40 = 24
    assert torch.allclose(y, torch.tensor([2.0, 2.0, 15.0, 24.0]))
    # a truncation (end without termination) bootstraps from its own next value
    ends = torch.tensor([0.0, 1.0, 0.0, 0.0])
    y_trunc = n_step_targets(r, v_next, torch.zeros(4), 0.5, 2, ends=ends)
    assert torch.allclose(y_trunc[:2], torch.tensor([1.0 + 0.5 * 2.0 + 0.25 * 20.0, 2.0 + 0.5 * 20.0]))
    # n = 1 is the one-step TD target
    assert torch.allclose(n_step_targets(r, v_next, done, 0.5, 1), td_targets(r, v_next, done, 0.5))


def test_constraint_slack_sign_and_relative() -> None:
    values = torch.tensor([[0.3, 0.3], [0.1, 0.6]])
    thresholds = torch.tensor([0.2, 0.5])
    senses = torch.tensor([1.0, -1.0])  # ">=" 0.2 and "<=" 0.5
    slack = constraint_slack(values, thresholds, senses)
    assert torch.allclose(slack, torch.tensor([[0.1, 0.2], [-0.1, -0.1]]))
    rel = constraint_slack(values, thresholds, senses, relative=True)
    assert torch.allclose(rel, torch.tensor([[0.5, 0.4], [-0.5, -0.2]]))
