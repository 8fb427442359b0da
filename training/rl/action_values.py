"""Advantages of every action of one discrete choice, and exact policy steps on them (ours; issue 14).

What TSCAC's exact stage two and RCPO's `policy_step: exact` share. A policy step that
moves π towards softmax(log π_old + A(s, ·)/α) needs A(s, a) for every action a, not only
the sampled one: one Q head per signal (a `SignalCritics` with one output per action)
beside the state-value critics.

* `action_value_loss` — the heads' regression loss on the minibatch. Per head for signal i:
  Q_i(s, a) regressed on the critics' TD(λ) target, or (`one_step`, ours) on
  r_i + γ_i (1 − done) V̄_i(s'), the one-step target offline training already uses; far less
  noisy than the λ-return, whose noise swamped the differences between actions that an
  exact step exponentiates. With `dueling` (ours) the head holds A_i(s, a) and
  Q_i = V_i(s) (detached critic) + A_i(s, a), so it learns only the differences between
  actions, which are a few % of V_i on long horizons.
* `advantages_all_actions` — A_i(s, ·) of every head, shape (B, heads, n).
* `exact_kl` — KL(target ‖ π) summed over every action (the loss that fits an actor to an
  exact target), `floor_actions` — a floor on every action's probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from training.rl.losses import LossModule, MiniBatch
from training.rl.networks import SignalCritics


def exact_kl(log_target: Tensor, log_pi: Tensor) -> Tensor:
    """Mean over states of KL(target ‖ π) summed over every action of one discrete choice (log-probabilities)."""
    return (log_target.exp() * (log_target - log_pi)).sum(-1).mean()


def floor_actions(log_target: Tensor, floor: float) -> Tensor:
    """log((1 − n·p) π + p) with p = min(floor, 0.5/n): every one of the n actions keeps at least p."""
    if floor <= 0:
        return log_target
    n = log_target.shape[-1]
    floor = min(floor, 0.5 / n)
    return torch.log((1 - n * floor) * log_target.exp() + floor)


def advantages_all_actions(
    heads: SignalCritics, signals: Sequence[int], loss: LossModule, obs: Tensor, dueling: bool
) -> Tensor:
    """A_i(s, ·) = Q_i(s, ·) − V_i(s) of every head, shape (B, heads, n), head k ↔ signal `signals[k]`
    (the heads' output when `dueling`)."""
    q: Tensor = heads(obs)
    if dueling:
        return q
    values: Tensor = loss.critics(obs)
    return q - values[:, list(signals)].unsqueeze(-1)


def action_value_loss(
    heads: SignalCritics,
    signals: Sequence[int],
    loss: LossModule,
    mb: MiniBatch,
    dueling: bool,
    one_step: bool,
    balance_clip: float = 0.0,
) -> Tensor:
    """Σ over heads of the (IS-weighted) squared error of Q_i(s, a) on the logged actions (module docstring).

    `one_step` applies online only; offline `mb.targets` already are one-step targets.
    `balance_clip` > 0 (ours): each row also weighs 1 / (n μ(a|s)), clipped at `balance_clip` and
    self-normalised over the minibatch, so every action of a state counts as if drawn uniformly: an
    action the policy has nearly dropped is otherwise a few rows of the minibatch, its head moves
    by their share of the gradient, and its advantage stays near its initial value (issue 14,
    RCPO's exact step: an action at probability 0.04 read A = 0.6 where the exact value was 1.9).
    """
    weights = mb.weights
    if balance_clip > 0:
        n = heads.out_per_signal
        balance = (-mb.behaviour_log_prob - math.log(n)).exp().clamp(max=balance_clip)
        weights = weights * balance / balance.mean()
    q_all = heads(mb.obs)  # (B, heads, n)
    values = loss.critics(mb.obs).detach() if dueling else None
    next_values = None
    if not loss.offline and one_step:
        with torch.no_grad():
            next_values = loss.target_critics(mb.next_obs)
    total = torch.zeros((), device=mb.obs.device)
    for head, sig in enumerate(signals):
        q = q_all[:, head, :].gather(1, mb.action.long())[:, 0]
        if values is not None:
            q = q + values[:, sig]
        target = mb.targets[:, sig]
        if next_values is not None:
            target = (
                mb.rewards[:, sig] / loss.reward_scales[sig] + loss.gammas[sig] * (1 - mb.done) * next_values[:, sig]
            )
        total = total + ((q - target).pow(2) * weights).mean()
    return total
