"""Value-decomposition mixers: the team's Q from the agents' chosen-action Q-values.

Shapes: B = batch, N = agents, D = global state size, E = mixing embedding.
Every mixer maps agent_q (B, N) and state (B, D) → q_total (B,), and is
monotone in each agent's Q (∂q_total/∂q_i ≥ 0), so the joint argmax is each
agent's own argmax — the property that lets decentralised agents act greedily
at serving (CTDE).

* `SumMixer` — VDN (Sunehag et al. 2018): q_total = Σ_i q_i; ignores the state.
* `MonotoneMixer` — QMIX (Rashid et al. 2018): a two-layer mixing network
  whose weights come from hypernetworks of the state,
      h = ELU(q · W₁(s) + b₁(s)),  q_total = h · W₂(s) + V(s),
  with W₁, W₂ ≥ 0. Deviation from QMIX: non-negativity by softplus, not the
  absolute value (as MaRCA's AWRQ-Mixer does; softplus keeps a gradient at 0);
  W₁ and W₂ hypernetworks are single linear layers as in QMIX's paper, V(s) a
  two-layer ReLU network as in QMIX.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check(agent_q: Tensor, state: Tensor | None, num_agents: int, state_size: int | None) -> None:
    if agent_q.dim() != 2 or agent_q.shape[1] != num_agents:
        raise ValueError(f"mixer: agent_q must be (B, {num_agents}), got {tuple(agent_q.shape)}")
    if state_size is not None and (state is None or state.shape != (agent_q.shape[0], state_size)):
        got = None if state is None else tuple(state.shape)
        raise ValueError(f"mixer: state must be (B={agent_q.shape[0]}, {state_size}), got {got}")


class SumMixer(nn.Module):
    """VDN: q_total = Σ_i q_i (the state is accepted and ignored)."""

    def __init__(self, num_agents: int) -> None:
        super().__init__()
        if num_agents < 1:
            raise ValueError(f"SumMixer: num_agents must be ≥ 1, got {num_agents}")
        self.num_agents = num_agents

    def forward(self, agent_q: Tensor, state: Tensor | None = None) -> Tensor:
        _check(agent_q, state, self.num_agents, None)
        return agent_q.sum(dim=-1)


class MonotoneMixer(nn.Module):
    """QMIX-style hypernetwork mixer with softplus (non-negative) mixing weights."""

    def __init__(self, num_agents: int, state_size: int, embed_size: int = 32) -> None:
        super().__init__()
        if num_agents < 1 or state_size < 1 or embed_size < 1:
            raise ValueError(
                f"MonotoneMixer: num_agents, state_size, embed_size must be ≥ 1, got {num_agents}, "
                f"{state_size}, {embed_size}"
            )
        self.num_agents, self.state_size, self.embed_size = num_agents, state_size, embed_size
        self.hyper_w1 = nn.Linear(state_size, num_agents * embed_size)
        self.hyper_b1 = nn.Linear(state_size, embed_size)
        self.hyper_w2 = nn.Linear(state_size, embed_size)
        self.state_value = nn.Sequential(nn.Linear(state_size, embed_size), nn.ReLU(), nn.Linear(embed_size, 1))

    def mixing_weights(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """W₁ (B, N, E) and W₂ (B, E), both > 0."""
        w1 = F.softplus(self.hyper_w1(state)).reshape(-1, self.num_agents, self.embed_size)
        w2 = F.softplus(self.hyper_w2(state))
        return w1, w2

    def forward(self, agent_q: Tensor, state: Tensor | None = None) -> Tensor:
        _check(agent_q, state, self.num_agents, self.state_size)
        assert state is not None
        w1, w2 = self.mixing_weights(state)
        hidden = F.elu(torch.bmm(agent_q.unsqueeze(1), w1).squeeze(1) + self.hyper_b1(state))
        return (hidden * w2).sum(dim=-1) + self.state_value(state).squeeze(-1)
