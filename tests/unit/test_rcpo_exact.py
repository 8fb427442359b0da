"""RCPO's exact policy step (`policy_step: exact`, ours) and the all-action advantage pieces it shares with TSCAC."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.support.rl import fit, quick_run
from training.algorithms import rcpo
from training.rl.action_values import action_value_loss, exact_kl, floor_actions
from training.rl.data import GymEnvPool
from training.rl.losses import MiniBatch
from training.rl.toy_envs import TradeoffArmsEnv, arms_task, bandit_task
from training.rl.trainer import OnlineSource

ARM_MEANS = torch.tensor([[1.0, 0.0], [0.6, 0.6], [0.0, 1.0]])  # (main, safety) per arm


def _exact(**kw: float | str) -> rcpo.RCPOConfig:
    return rcpo.RCPOConfig(minibatch_size=64, hidden=(32,), policy_step="exact", **kw)  # type: ignore[arg-type]


def _zero_last_layer(heads: torch.nn.Module, bias: list[float] | None = None) -> None:
    """Make an MLP head output `bias` (zeros when None) for every input."""
    with torch.no_grad():
        heads[-1].weight.zero_()
        heads[-1].bias.copy_(torch.tensor(bias) if bias is not None else torch.zeros_like(heads[-1].bias))


def test_exact_kl_and_the_action_floor_by_hand() -> None:
    target = torch.log(torch.tensor([[0.5, 0.5]]))
    pi = torch.log(torch.tensor([[0.25, 0.75]]))
    # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75)
    assert float(exact_kl(target, pi)) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-6)
    assert float(exact_kl(pi, pi)) == pytest.approx(0.0, abs=1e-7)
    p = torch.log(torch.tensor([[0.9, 0.1, 0.0]]))
    # (1 − 3·0.05) p + 0.05
    assert floor_actions(p, 0.05).exp()[0].tolist() == pytest.approx([0.815, 0.135, 0.05], rel=1e-6)
    # A floor above 0.5/n is capped there: (1 − 0.5) p + 1/6
    assert floor_actions(p, 0.4).exp()[0].tolist() == pytest.approx([0.45 + 1 / 6, 0.05 + 1 / 6, 1 / 6], rel=1e-6)
    assert torch.equal(floor_actions(p, 0.0), p)


def test_q_head_loss_balances_rare_actions_by_hand() -> None:
    """Heads, critics and target critics output 0, so the one-step target is r_i / σ_i (σ = 1) and the loss
    is Σ_i mean(w (r_i)²); with balancing, w ∝ 1/(n μ(a|s)) self-normalised: μ = 0.5, 0.125, n = 3 → 0.4, 1.6."""
    loss = rcpo.RCPOLoss(arms_task(), _exact())
    for h in [*loss.q_heads.heads, *loss.critics.heads, *loss.target_critics.heads]:
        _zero_last_layer(h)
    mb = MiniBatch(
        obs=torch.zeros(2, 3),
        action=torch.tensor([[0.0], [2.0]]),
        rewards=torch.tensor([[1.0, 0.0], [2.0, 1.0]]),
        next_obs=torch.zeros(2, 3),
        done=torch.zeros(2),
        behaviour_log_prob=torch.log(torch.tensor([0.5, 0.125])),
        advantages=torch.zeros(2, 2),
        targets=torch.zeros(2, 2),
        weights=torch.ones(2),
    )
    args = (loss.q_heads, loss.q_head_signals, loss, mb)
    plain = action_value_loss(*args, dueling=True, one_step=True).detach()
    balanced = action_value_loss(*args, dueling=True, one_step=True, balance_clip=10.0).detach()
    assert float(plain) == pytest.approx((1 + 4) / 2 + (0 + 1) / 2, rel=1e-6)
    assert float(balanced) == pytest.approx((0.4 * 1 + 1.6 * 4) / 2 + (0.4 * 0 + 1.6 * 1) / 2, rel=1e-6)
    # The clip: weights 2/3 and 8/3 clipped at 1 → 2/3 and 1, self-normalised → 0.8 and 1.2.
    clipped = action_value_loss(*args, dueling=True, one_step=True, balance_clip=1.0).detach()
    assert float(clipped) == pytest.approx((0.8 * 1 + 1.2 * 4) / 2 + (0.8 * 0 + 1.2 * 1) / 2, rel=1e-6)


def test_exact_target_is_the_mirror_step_on_the_lagrangian_by_hand() -> None:
    """A_main = (1, 0, 0), A_safety = (0, 2, 0), ν = 1, η = 1, π_old uniform: logits (1, 2, 0) → softmax
    (0.2447, 0.6652, 0.0900); with a floor of 0.05 on 3 actions: 0.85 p + 0.05."""
    loss = rcpo.RCPOLoss(arms_task(), _exact(exact_step_size=1.0, exact_min_action_prob=0.05))
    _zero_last_layer(loss.q_heads.heads[0], [1.0, 0.0, 0.0])
    _zero_last_layer(loss.q_heads.heads[1], [0.0, 2.0, 0.0])
    _zero_last_layer(loss.actor.net)
    loss.previous_actor.load_state_dict(loss.actor.state_dict())
    loss.multipliers.fill_(1.0)
    obs = torch.rand(5, 3)
    soft = torch.tensor([math.e, math.e**2, 1.0]) / (math.e + math.e**2 + 1)
    expected = 0.85 * soft + 0.05
    target = loss.exact_target(obs).exp()
    assert target[0].tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert target.std(0).max() < 1e-6  # the heads read no state here
    # The actor loss is KL(target ‖ π) over every action.
    zeros = torch.zeros(5)
    mb = MiniBatch(
        obs, zeros[:, None], torch.zeros(5, 2), obs, zeros, zeros, torch.zeros(5, 2), torch.zeros(5, 2), zeros + 1
    )
    actual = loss.actor_loss(mb)[0].detach()
    uniform = torch.full((3,), 1 / 3)
    assert float(actual) == pytest.approx(float((expected * (expected / uniform).log()).sum()), rel=1e-5)
    # η scales the step: η = 0.5 halves the logits.
    loss_half = rcpo.RCPOLoss(arms_task(), _exact(exact_step_size=0.5))
    loss_half.load_state_dict(loss.state_dict())
    loss_half.previous_actor.load_state_dict(loss.actor.state_dict())
    half = torch.softmax(torch.tensor([0.5, 1.0, 0.0]), -1)
    assert loss_half.exact_target(obs).exp()[0].tolist() == pytest.approx(half.tolist(), rel=1e-5)


def test_entropy_regularised_step_fades_the_old_policy_by_hand() -> None:
    """`exact_entropy` τ: logits (1 − ητ) log π_old + η A_L. π_old ∝ exp(0, 1, −1), τ = 0.5, η = 1, A_L = (1, 2, 0):
    logits 0.5·(0, 1, −1) + (1, 2, 0) = (1, 2.5, −0.5) up to a constant → softmax (0.1753, 0.7856, 0.0391)."""
    loss = rcpo.RCPOLoss(arms_task(), _exact(exact_step_size=1.0, exact_entropy=0.5))
    _zero_last_layer(loss.q_heads.heads[0], [1.0, 0.0, 0.0])
    _zero_last_layer(loss.q_heads.heads[1], [0.0, 2.0, 0.0])
    _zero_last_layer(loss.actor.net, [0.0, 1.0, -1.0])
    loss.previous_actor.load_state_dict(loss.actor.state_dict())
    loss.multipliers.fill_(1.0)
    target = loss.exact_target(torch.rand(4, 3)).exp()[0]
    assert target.tolist() == pytest.approx([0.17528, 0.78557, 0.03911], abs=1e-4)
    with pytest.raises(ValueError, match="exact_entropy"):
        rcpo.RCPOConfig(exact_entropy=2.0, exact_step_size=1.0)  # ητ > 1 would flip log π_old's sign


def test_exact_step_config_is_validated_by_name() -> None:
    with pytest.raises(ValueError, match="policy_step"):
        rcpo.RCPOConfig(policy_step="natural")
    with pytest.raises(ValueError, match="exact_step_size"):
        rcpo.RCPOConfig(exact_step_size=0.0)
    with pytest.raises(ValueError, match="exact_min_action_prob"):
        rcpo.RCPOConfig(exact_min_action_prob=0.5)
    with pytest.raises(ValueError, match="exact_q_target"):
        rcpo.RCPOConfig(exact_q_target="monte_carlo")
    with pytest.raises(ValueError, match="exact_balance_clip"):
        rcpo.RCPOConfig(exact_balance_clip=-1.0)
    with pytest.raises(ValueError, match="needs one discrete action"):
        rcpo.RCPOLoss(bandit_task(), _exact())
    assert not hasattr(rcpo.RCPOLoss(arms_task(), rcpo.RCPOConfig()), "q_heads")  # the paper's step: no heads


def test_rcpo_exact_step_reaches_the_constrained_optimum(tmp_path: Path) -> None:
    """Three arms (main, safety) = (1, 0), (0.6, 0.6), (0, 1), safety ≥ 0.5: the optimum mixes A 1/6, B 5/6."""
    task = arms_task()
    source = OnlineSource(lambda n, s: GymEnvPool([TradeoffArmsEnv] * n, task))
    cfg = _exact(actor_lr=3e-3, exact_step_size=1.0, exact_min_action_prob=0.01)
    res = fit(rcpo.RCPOLoss, cfg, quick_run(tmp_path), task, source)
    with torch.no_grad():
        probs = res.learner.actor(torch.rand(256, 3) * 2 - 1).exp().mean(0)
    main, safety = (probs @ ARM_MEANS).tolist()
    assert safety >= 0.45
    assert main >= 2 / 3 - 0.12
    assert "losses/critic_q_heads" in res.history[-1]
