"""A learned behaviour-policy model μ̂(a|s) for offline importance weighting (TSCAC §offline training).

Logged propensities may be missing, stale or from a heuristic whose exact form
is unknown; the paper learns μ by maximum likelihood on the logged (s, a) and
weights by π/μ̂. Same actor families as the learners (tanh-Gaussian for boxes,
factorised categorical for (multi-)discrete), always on the full observation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from training.rl.data import TransitionBatch
from training.rl.networks import CategoricalActor, TanhGaussianActor
from training.rl.task import TaskSpec


class BehaviourModel:
    """μ̂(a|s) fitted by maximum likelihood; `log_prob` gives the log-density of logged actions."""

    def __init__(self, task: TaskSpec, hidden: Sequence[int] = (64, 64), seed: int = 0) -> None:
        torch.manual_seed(seed)
        a = task.action
        self.task = task
        self.model: TanhGaussianActor | CategoricalActor
        if task.continuous:
            self.model = TanhGaussianActor(task.obs_size, task.action_dim, a.low, a.high, hidden, init_std=0.3)  # type: ignore[union-attr]
        else:
            self.model = CategoricalActor(task.obs_size, task.nvec, hidden)

    def fit(
        self, batch: TransitionBatch, steps: int = 500, lr: float = 3e-3, minibatch: int = 512, seed: int = 0
    ) -> list[float]:
        """Maximise mean log μ̂(a|s) over the batch; returns the loss curve (mean negative log-likelihood)."""
        opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        losses: list[float] = []
        n = len(batch)
        for _ in range(steps):
            idx = torch.randint(0, n, (min(minibatch, n),), generator=gen)
            loss = -self.model.log_prob(batch.obs[idx], batch.action[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    @torch.no_grad()
    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        return self.model.log_prob(obs, action)

    def fill(self, batch: TransitionBatch, overwrite: bool = True) -> TransitionBatch:
        """The batch with `behaviour_log_prob` from μ̂ (everywhere, or only where it is NaN)."""
        from dataclasses import replace

        lp = self.log_prob(batch.obs, batch.action)
        new = lp if overwrite else torch.where(torch.isnan(batch.behaviour_log_prob), lp, batch.behaviour_log_prob)
        return replace(batch, behaviour_log_prob=new)
