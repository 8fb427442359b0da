"""Off-policy targets as small pure functions, each unit-tested against hand-computed values.

Companion of `training/rl/functional.py` (on-policy math: GAE, TD(λ), importance
weights, `soft_update`); the lead may fold the two together. Shapes use
B = batch, T = time (leading axis of sequence functions), A = number of
discrete actions, m = reward signals; trailing axes broadcast, so one call
handles every signal with its own discount when `gamma` has shape (m,).

Termination vs truncation, everywhere: `dones` (terminated) stops
bootstrapping; `ends` (terminated or truncated — an episode boundary) only cuts
a multi-step sum. A time limit is an end, not a done.

n-step returns over a time-major sequence (R2D2 sequences, the n-step writer) are
`training.rl.functional.n_step_targets`.
* `dqn_targets`           — y = r + γ max_a Q'(s', a) (Mnih 2015) or, given the online net's
                             next Q-values, double DQN y = r + γ Q'(s', argmax_a Q(s', a))
                             (van Hasselt 2016).
* `clipped_double_q_targets` — TD3's y = r + γ min(Q'_1, Q'_2)(s', ã') (Fujimoto 2018, eq. 10).
* `target_policy_smoothing`  — TD3's ã' = clip(μ'(s') + clip(ε, −c, c), low, high), ε ~ N(0, σ²).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _as_tensor(x: float | Tensor, like: Tensor) -> Tensor:
    return x.to(like) if isinstance(x, Tensor) else torch.as_tensor(x, dtype=like.dtype, device=like.device)


def dqn_targets(
    rewards: Tensor,
    next_target_q: Tensor,
    dones: Tensor,
    gamma: float | Tensor,
    next_online_q: Tensor | None = None,
) -> Tensor:
    """DQN or double-DQN regression targets.

    rewards, dones: (B,); next_target_q, next_online_q: (B, A) — Q-values of the
    next state under the target and the online network. `gamma` may be a
    per-row tensor (B,) — the n-step writer's γ^m — or a scalar.

    * `next_online_q` None: y = r + γ (1 − done) max_a Q'(s', a)  (Mnih et al. 2015).
    * given: y = r + γ (1 − done) Q'(s', argmax_a Q(s', a))        (van Hasselt et al. 2016).
    """
    if next_target_q.dim() != rewards.dim() + 1:
        raise ValueError(
            f"dqn_targets: next_target_q must be rewards' shape plus an action axis, got "
            f"{tuple(next_target_q.shape)} for rewards {tuple(rewards.shape)}"
        )
    if next_online_q is None:
        next_value = next_target_q.max(dim=-1).values
    else:
        if next_online_q.shape != next_target_q.shape:
            raise ValueError(
                f"dqn_targets: next_online_q {tuple(next_online_q.shape)} must match next_target_q "
                f"{tuple(next_target_q.shape)}"
            )
        greedy = next_online_q.argmax(dim=-1, keepdim=True)
        next_value = next_target_q.gather(-1, greedy).squeeze(-1)
    g = _as_tensor(gamma, rewards)
    return rewards + g * (1.0 - dones.to(rewards)) * next_value


def clipped_double_q_targets(
    rewards: Tensor, next_q1: Tensor, next_q2: Tensor | None, dones: Tensor, gamma: float | Tensor
) -> Tensor:
    """TD3 target y = r + γ (1 − done) min(Q'_1, Q'_2)(s', ã') (Fujimoto et al. 2018, eq. 10).

    All (B,) or (B, m). With `next_q2` None this is DDPG's single-critic target.
    """
    next_value = next_q1 if next_q2 is None else torch.minimum(next_q1, next_q2)
    g = _as_tensor(gamma, rewards)
    return rewards + g * (1.0 - dones.to(rewards)) * next_value


def target_policy_smoothing(
    next_action: Tensor,
    noise_std: float,
    noise_clip: float,
    low: float | Tensor,
    high: float | Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """TD3's target policy smoothing ã' = clip(a' + clip(ε, −c, c), low, high), ε ~ N(0, σ²).

    next_action: (B, d) — the target actor's action μ'(s'). σ = `noise_std`,
    c = `noise_clip` (the paper: σ = 0.2, c = 0.5 on actions in [−1, 1]).
    """
    if noise_std < 0 or noise_clip < 0:
        raise ValueError(
            f"target_policy_smoothing: noise_std and noise_clip must be ≥ 0, got {noise_std}, {noise_clip}"
        )
    noise = torch.randn(next_action.shape, generator=generator, dtype=next_action.dtype, device=next_action.device)
    noise = torch.clamp(noise * noise_std, -noise_clip, noise_clip)
    lo = _as_tensor(low, next_action)
    hi = _as_tensor(high, next_action)
    return torch.maximum(torch.minimum(next_action + noise, hi), lo)
