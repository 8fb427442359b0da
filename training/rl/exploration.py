"""Exploration on the collector side: how the noise of a stochastic actor is drawn while collecting.

The actor only says what its distribution is; an `Exploration` decides how each
environment row's noise is drawn from it (`make_act(actor, exploration, device)` gives the
`act(obs, generator) -> (action, log_prob)` callable `RolloutCollector.collect` steps with):

* `PerStepNoise`    — a fresh draw at every step (the papers). Any distribution.
* `PerEpisodeNoise` — each row holds its standard-normal noise z until its episode ends;
  action = c + h·tanh(loc(s) + σ·z) (`TanhNormal.from_noise`). Ours (see `LossConfig.exploration`).
* `AntitheticNoise` — per-episode noise in row pairs: rows 2k and 2k+1 play +z and −z, and a
  row's j-th episode pairs with its partner's j-th episode (the partner may end earlier or later).

Each step's marginal is the actor's distribution in every case, so the log-probability stored
with the action is exact. Held noise needs a reparameterisable-by-noise distribution
(`TanhNormal`); other families refuse it with a clear error. Noise is drawn on the CPU from
the collector's generator, so runs do not depend on the device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from training.rl.distributions import FactorisedCategorical, TanhNormal
from training.rl.networks import Actor


class Exploration:
    """How the noise of each environment row is drawn; `noise(shape, generator)` for a (N, A) batch."""

    holds_noise = False

    def noise(self, shape: torch.Size, generator: torch.Generator) -> Tensor:
        return torch.randn(shape, generator=generator)

    def episodes_ended(self, ended: Tensor, generator: torch.Generator) -> None:
        """Told after every step which rows' episodes ended (terminated or truncated)."""


class PerStepNoise(Exploration):
    """A fresh draw every step."""


class PerEpisodeNoise(Exploration):
    """One noise vector per row, redrawn when the row's episode ends."""

    holds_noise = True

    def __init__(self) -> None:
        self.held: Tensor | None = None

    def noise(self, shape: torch.Size, generator: torch.Generator) -> Tensor:
        if self.held is None or self.held.shape != shape:
            self.held = torch.randn(shape, generator=generator)
        return self.held

    def episodes_ended(self, ended: Tensor, generator: torch.Generator) -> None:
        if self.held is None or not bool(ended.any()):
            return
        rows = ended.bool().cpu()
        self.held[rows] = torch.randn((int(rows.sum()), self.held.shape[1]), generator=generator)


class AntitheticNoise(Exploration):
    """Rows 2k and 2k+1 play +z and −z; later episodes pair by their index within the row."""

    holds_noise = True

    def __init__(self) -> None:
        self.held: Tensor | None = None
        self.row_episode: Tensor | None = None
        # Offsets drawn by the first row of a pair to end its j-th episode, waiting for the partner.
        self.waiting: dict[tuple[int, int], Tensor] = {}

    def noise(self, shape: torch.Size, generator: torch.Generator) -> Tensor:
        if self.held is None or self.held.shape != shape:
            n, a = shape
            if n % 2:
                raise ValueError(f"antithetic exploration: needs an even number of environment rows (pairs), got {n}")
            half = torch.randn((n // 2, a), generator=generator)
            self.held = torch.stack([half, -half], dim=1).reshape(n, a)
            self.row_episode = torch.zeros(n, dtype=torch.long)
            self.waiting = {}
        return self.held

    def episodes_ended(self, ended: Tensor, generator: torch.Generator) -> None:
        if self.held is None or self.row_episode is None or not bool(ended.any()):
            return
        for row in torch.nonzero(ended.bool().cpu()).flatten().tolist():
            self.row_episode[row] += 1
            key = (row // 2, int(self.row_episode[row]))
            base = self.waiting.pop(key, None)  # the partner drew it already: use it (and forget it)
            if base is None:
                base = torch.randn(self.held.shape[1], generator=generator)
                self.waiting[key] = base
            self.held[row] = base if row % 2 == 0 else -base


def make_exploration(kind: str) -> Exploration:
    """ "per_step" | "per_episode" | "antithetic" → the strategy (`LossConfig.exploration`)."""
    strategies: dict[str, Callable[[], Exploration]] = {
        "per_step": PerStepNoise,
        "per_episode": PerEpisodeNoise,
        "antithetic": AntitheticNoise,
    }
    if kind not in strategies:
        raise ValueError(f"exploration: one of {sorted(strategies)}, got {kind!r}")
    return strategies[kind]()


def make_act(
    actor: Actor, exploration: Exploration, device: torch.device | str = "cpu"
) -> Callable[[Tensor, torch.Generator], tuple[Tensor, Tensor]]:
    """`act(obs, generator) -> (action, log_prob)` on CPU tensors, the actor evaluated on `device`."""

    @torch.no_grad()
    def act(obs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        d = actor.distribution(obs.to(device))
        if isinstance(d, TanhNormal):
            loc, scale = d.loc.cpu(), d.scale.cpu()
            cpu = TanhNormal(loc, scale, d.low, d.high)
            action = cpu.from_noise(exploration.noise(loc.shape, generator))
            return action, cpu.log_prob(action)
        if exploration.holds_noise:
            raise ValueError(
                f"exploration {type(exploration).__name__} holds noise per episode, which needs a tanh-Gaussian "
                f"actor; this actor's distribution is {type(d).__name__} — use exploration='per_step'"
            )
        if isinstance(d, FactorisedCategorical):
            cpu_cat = FactorisedCategorical(d.log_probs.cpu(), d.nvec)
            action = cpu_cat.sample_with(generator)
            return action, cpu_cat.log_prob(action)
        # Distributions without a generator argument (Beta): seed torch's global stream from ours.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            action = d.sample().cpu()
        return action, d.log_prob(action.to(device)).cpu()

    return act
