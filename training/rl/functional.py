"""Small, typed, unit-tested RL math (TorchRL `objectives/value/functional.py` style).

Every function works on any trailing shape: the leading axis of sequence
functions is time (T); further axes (envs N, signals m) broadcast, so one call
handles every reward signal with its own discount when `gamma` has shape (m,).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _as_tensor(x: float | Tensor, like: Tensor) -> Tensor:
    return x.to(like) if isinstance(x, Tensor) else torch.as_tensor(x, dtype=like.dtype, device=like.device)


def td_targets(rewards: Tensor, next_values: Tensor, dones: Tensor, gamma: float | Tensor) -> Tensor:
    """One-step TD targets y = r + γ · (1 − done) · V(s').

    rewards, next_values, dones: (..., m) or (...,); gamma: scalar or (m,) — one
    discount per signal. `dones` marks termination (no bootstrap); a time-limit
    truncation is not a termination and must be passed as 0.
    """
    g = _as_tensor(gamma, rewards)
    return rewards + g * (1.0 - dones.to(rewards)) * next_values


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    dones: Tensor,
    gamma: float | Tensor,
    lam: float,
    ends: Tensor | None = None,
) -> Tensor:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16), time-major.

    rewards, values, next_values, dones: (T, ...) — `values[t]` = V(s_t),
    `next_values[t]` = V(s_{t+1}) of the same transition (so resets inside the
    rollout are handled exactly). `dones` stops bootstrapping (termination);
    `ends` (default: `dones`) cuts the λ-trace (termination or truncation).
    gamma: scalar or broadcastable to the trailing shape, e.g. (m,) per signal.

        δ_t = r_t + γ (1 − done_t) V(s_{t+1}) − V(s_t)
        A_t = δ_t + γ λ (1 − end_t) A_{t+1}
    """
    if rewards.shape != values.shape or values.shape != next_values.shape or dones.shape != rewards.shape:
        raise ValueError(
            f"gae: rewards {tuple(rewards.shape)}, values {tuple(values.shape)}, next_values "
            f"{tuple(next_values.shape)} and dones {tuple(dones.shape)} must have the same shape (T, ...)"
        )
    g = _as_tensor(gamma, rewards)
    d = dones.to(rewards)
    e = d if ends is None else ends.to(rewards)
    deltas = rewards + g * (1.0 - d) * next_values - values
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + g * lam * (1.0 - e[t]) * running
        adv[t] = running
    return adv


def td_lambda_returns(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    dones: Tensor,
    gamma: float | Tensor,
    lam: float,
    ends: Tensor | None = None,
) -> Tensor:
    """TD(λ) returns G^λ_t = A^GAE_t + V(s_t) (the critic's regression target); shapes as `gae`."""
    return gae(rewards, values, next_values, dones, gamma, lam, ends) + values


def discounted_returns(rewards: Tensor, dones: Tensor, gamma: float | Tensor) -> Tensor:
    """Monte-Carlo returns G_t = r_t + γ (1 − done_t) G_{t+1}, time-major (T, ...); zero past the rollout."""
    g = _as_tensor(gamma, rewards)
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    d = dones.to(rewards)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + g * (1.0 - d[t]) * running
        out[t] = running
    return out


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging θ' ← τ θ + (1 − τ) θ' over parameters and floating buffers (τ in (0, 1])."""
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"soft_update: tau must be in (0, 1], got {tau}")
    for tp, sp in zip(target.parameters(), source.parameters(), strict=True):
        tp.mul_(1.0 - tau).add_(sp.detach(), alpha=tau)
    for tb, sb in zip(target.buffers(), source.buffers(), strict=True):
        if tb.dtype.is_floating_point:
            tb.mul_(1.0 - tau).add_(sb.detach(), alpha=tau)


def importance_weights(
    log_ratio: Tensor,
    clip: float | None = None,
    self_normalise: bool = True,
    total: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Importance weights w = min(exp(log π − log μ), clip), optionally divided by their mean.

    log_ratio: (B,) = log π(a|s) − log μ(a|s). With `self_normalise` the weights
    are divided by their (clipped) mean so they average 1 — the self-normalised
    (weighted) estimator trades a little bias for much lower variance. Clipping
    comes first, as in truncated IS. `total` = (sum of clipped weights, count)
    over the *global* batch replaces the local mean when data is sharded over
    processes (torchrun), so every shard uses the same normaliser.
    """
    if clip is not None and clip <= 0:
        raise ValueError(f"importance_weights: clip must be > 0 or None, got {clip}")
    # exp of a large log-ratio overflows to inf; capping the exponent first is
    # exact whenever the clip is below e^60.
    w = torch.exp(torch.clamp(log_ratio, max=60.0))
    if clip is not None:
        w = torch.clamp(w, max=clip)
    if self_normalise:
        if total is not None:
            s, n = total
            w = w / (s / n).clamp_min(1e-12)
        else:
            w = w / w.mean().clamp_min(1e-12)
    return w


def normalise(x: Tensor, mean: Tensor | None = None, std: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """(x − mean) / (std + eps) along the batch axis; global moments may be passed in under torchrun."""
    m = x.mean(0) if mean is None else mean
    s = x.std(0, unbiased=False) if std is None else std
    return (x - m) / (s + eps)


def clipped_surrogate(log_prob: Tensor, behaviour_log_prob: Tensor, advantages: Tensor, clip: float) -> Tensor:
    """Per-row policy-gradient surrogate min(ρ A, clip(ρ, 1 − ε, 1 + ε) A), ρ = π/μ (to be maximised).

    Its gradient at ρ = 1 is A ∇log π — the paper's E[A log π] — and the clip
    keeps each update inside a trust region around the data's policy μ.
    log_prob, behaviour_log_prob, advantages: (B,) → (B,).
    """
    ratio = torch.exp(torch.clamp(log_prob - behaviour_log_prob, max=20.0))
    return torch.minimum(ratio * advantages, torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages)


def n_step_targets(
    rewards: Tensor, next_values: Tensor, dones: Tensor, gamma: float | Tensor, n: int, ends: Tensor | None = None
) -> Tensor:
    """n-step TD targets, time-major (T, ...):

        y_t = Σ_{i<k} γ^i r_{t+i} + γ^k (1 − done_{t+k−1}) V(s_{t+k}),   k = min(n, steps to the episode's end
                                                                           or the rollout's end)

    `next_values[t]` = V(s_{t+1}); `dones` stops bootstrapping (termination); `ends` (default `dones`)
    cuts the sum at an episode boundary (termination or truncation — a truncated episode bootstraps
    from its last next value). n = 1 is `td_targets`.
    """
    if n < 1:
        raise ValueError(f"n_step_targets: n must be >= 1, got {n}")
    if rewards.shape != next_values.shape or dones.shape != rewards.shape:
        raise ValueError("n_step_targets: rewards, next_values and dones must have the same shape (T, ...)")
    g = _as_tensor(gamma, rewards)
    done = dones.to(rewards)
    end = done if ends is None else torch.maximum(ends.to(rewards), done)  # a termination is always an end

    def shifted(x: Tensor, k: int) -> Tensor:
        """x[t + k] for every t, zero past the rollout's end."""
        return torch.cat([x[k:], torch.zeros_like(x[:k])]) if k else x

    # One pass per look-ahead step k over all t at once (n passes, not T·n): row t sums rewards while
    # `active`, and bootstraps at the step where its window stops (episode end, n-th step, rollout end).
    ones = torch.ones_like(rewards)
    total = torch.zeros_like(rewards)
    discount = torch.ones_like(rewards)
    active = torch.ones_like(rewards)
    for k in range(n):
        live = active * shifted(ones, k)  # t + k inside the rollout
        total = total + live * discount * shifted(rewards, k)
        is_last_step = (shifted(ones, k + 1) == 0).to(rewards)  # t + k is the rollout's last step
        stop = live * torch.clamp(shifted(end, k) + float(k == n - 1) + is_last_step, max=1.0)
        total = total + stop * discount * g * (1.0 - shifted(done, k)) * shifted(next_values, k)
        discount = discount * g
        active = live * (1.0 - stop)
    return total


def constraint_slack(values: Tensor, thresholds: Tensor, senses: Tensor, relative: bool = False) -> Tensor:
    """Slack of every constraint, signed so that > 0 means satisfied: sense · (value − threshold).

    values (..., k): each constrained signal's measured value (per-decision mean, or discounted
    return — the caller's choice); thresholds (k,); senses (k,): +1 for ">=", −1 for "<=".
    `relative` divides by max(|threshold|, 1e-8) (a unit-free slack, what multiplier steps use).
    The one place in the code that turns values and thresholds into slack (losses, logging,
    checkpoint selection all call it).
    """
    slack = senses.to(values) * (values - thresholds.to(values))
    if relative:
        slack = slack / thresholds.to(values).abs().clamp_min(1e-8)
    return slack
