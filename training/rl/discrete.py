"""Discrete and multi-discrete actions for value-based agents: ε-greedy with propensities, joint ↔ per-component
indices, per-agent greedy actions with availability masks.

Shapes: B = batch, A = actions, N = agents (or components of a multi-discrete
action), A_max = the largest per-agent action count (agents with fewer actions
are padded and masked).

Propensities are returned with every exploratory action because Troupe logs
them with each decision (off-policy evaluation and offline training need the
probability the behaviour policy gave the logged action).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def linear_epsilon(step: int, start: float, end: float, decay_steps: int) -> float:
    """ε decayed linearly from `start` to `end` over `decay_steps` steps, then held (Mnih et al. 2015)."""
    if decay_steps <= 0:
        return end
    frac = min(max(step, 0) / decay_steps, 1.0)
    return start + frac * (end - start)


def masked_argmax(q: Tensor, action_mask: Tensor | None = None) -> Tensor:
    """argmax over the last axis among available actions (mask True = available). q (…, A) → (…,)."""
    if action_mask is None:
        return q.argmax(dim=-1)
    if action_mask.shape != q.shape:
        raise ValueError(f"masked_argmax: action_mask {tuple(action_mask.shape)} must match q {tuple(q.shape)}")
    if not bool(action_mask.any(dim=-1).all()):
        raise ValueError("masked_argmax: every row needs at least one available action")
    return q.masked_fill(~action_mask, float("-inf")).argmax(dim=-1)


def epsilon_greedy(
    q: Tensor,
    epsilon: float,
    generator: torch.Generator | None = None,
    action_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """ε-greedy actions and their propensities.

    q: (…, A) — one row per agent or per env; action_mask (…, A) bool, True =
    available. With probability ε an action uniform over the available ones,
    else the greedy one. Returns actions (…,) long and propensities (…,):
    1 − ε + ε/n for the greedy action, ε/n for the others (n = available count).
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon_greedy: epsilon must be in [0, 1], got {epsilon}")
    mask = torch.ones_like(q, dtype=torch.bool) if action_mask is None else action_mask
    greedy = masked_argmax(q, mask)
    available = mask.sum(dim=-1)
    uniform = torch.rand(q.shape, generator=generator, device=q.device).masked_fill(~mask, -1.0).argmax(dim=-1)
    explore = torch.rand(greedy.shape, generator=generator, device=q.device) < epsilon
    actions = torch.where(explore, uniform, greedy)
    explore_prob = epsilon / available.to(q.dtype)
    propensity = torch.where(actions == greedy, 1.0 - epsilon + explore_prob, explore_prob)
    return actions, propensity


def per_agent_argmax(agent_q: Tensor, action_mask: Tensor | None = None) -> Tensor:
    """Decentralised greedy actions: agent_q (B, N, A_max), mask (B, N, A_max) → actions (B, N).

    With a monotone mixer this is also the argmax of the team's Q (QMIX's IGM property).
    """
    if agent_q.dim() != 3:
        raise ValueError(f"per_agent_argmax: agent_q must be (B, N, A_max), got {tuple(agent_q.shape)}")
    return masked_argmax(agent_q, action_mask)


def padding_mask(action_sizes: Sequence[int], batch_size: int = 1) -> Tensor:
    """Availability mask (batch_size, N, A_max) for agents with `action_sizes` actions each (padding False)."""
    if not action_sizes or min(action_sizes) < 1:
        raise ValueError(f"padding_mask: action_sizes must be a non-empty list of sizes ≥ 1, got {list(action_sizes)}")
    width = max(action_sizes)
    row = torch.arange(width).unsqueeze(0) < torch.tensor(action_sizes).unsqueeze(1)
    return row.unsqueeze(0).expand(batch_size, -1, -1).clone()


def joint_to_components(joint: Tensor, sizes: Sequence[int]) -> Tensor:
    """Mixed-radix decode: joint index (…,) in [0, Π sizes) → components (…, N), the last component fastest.

    E.g. sizes (3, 2): joint 0..5 → (0,0) (0,1) (1,0) (1,1) (2,0) (2,1).
    """
    total = 1
    for s in sizes:
        if s < 1:
            raise ValueError(f"joint_to_components: sizes must be ≥ 1, got {list(sizes)}")
        total *= s
    if bool((joint < 0).any()) or bool((joint >= total).any()):
        raise ValueError(
            f"joint_to_components: joint indices must be in [0, {total}), got range "
            f"[{int(joint.min())}, {int(joint.max())}]"
        )
    parts = []
    rest = joint.long()
    for s in reversed(sizes):
        parts.append(rest % s)
        rest = rest // s
    return torch.stack(parts[::-1], dim=-1)


def components_to_joint(components: Tensor, sizes: Sequence[int]) -> Tensor:
    """Inverse of `joint_to_components`: components (…, N) → joint index (…,)."""
    if components.shape[-1] != len(sizes):
        raise ValueError(
            f"components_to_joint: last axis must have {len(sizes)} components, got {tuple(components.shape)}"
        )
    size_t = torch.tensor(list(sizes), device=components.device)
    if bool((components < 0).any()) or bool((components >= size_t).any()):
        raise ValueError(f"components_to_joint: component values must lie in [0, size) for sizes {list(sizes)}")
    joint = torch.zeros(components.shape[:-1], dtype=torch.long, device=components.device)
    for i, s in enumerate(sizes):
        joint = joint * s + components[..., i].long()
    return joint
