"""Exploration on the collector side: how the noise of a stochastic actor is drawn while collecting.

The actor only says what its distribution is; an `Exploration` decides how each
environment row's noise is drawn from it (`make_act(actor, exploration, device)` gives the
`act(obs, generator) -> (action, log_prob)` callable `RolloutCollector.collect` steps with):

* `PerStepNoise`    — a fresh draw at every step (the papers). Any distribution.
* `PerEpisodeNoise` — each row holds its standard-normal noise z until its episode ends;
  action = c + h·tanh(loc(s) + σ·z) (`TanhNormal.from_noise`). Ours (see `LossConfig.exploration`).
* `AntitheticNoise` — per-episode noise in row pairs: rows 2k and 2k+1 play +z and −z, and a
  row's j-th episode pairs with its partner's j-th episode (the partner may end earlier or later).
* `AntitheticStateNoise` — antithetic pairs of per-episode noise MATRICES E: each step plays
  z_t = E·u(s_t), a unit vector u of the standardised observation, so the offset depends on the
  state within the episode (ours; `LossConfig.exploration = "antithetic_state"`).

Each step's marginal is the actor's distribution in every case, so the log-probability stored
with the action is exact. Held noise needs a reparameterisable-by-noise distribution
(`TanhNormal`); other families refuse it with a clear error. Noise is drawn on the CPU from
the collector's generator, so runs do not depend on the device. `noise` is given the rows'
observations (CPU) — only the state-dependent strategy reads them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from training.rl.distributions import FactorisedCategorical, TanhNormal
from training.rl.networks import Actor
from training.rl.task import AgentSlice


class Exploration:
    """How the noise of each environment row is drawn; `noise(shape, generator, obs)` for a (N, A) batch."""

    holds_noise = False

    def noise(self, shape: torch.Size, generator: torch.Generator, obs: Tensor) -> Tensor:
        """Standard-normal noise (N, A) for the rows whose observations are `obs` (N, obs_size), on the CPU."""
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

    def noise(self, shape: torch.Size, generator: torch.Generator, obs: Tensor) -> Tensor:
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

    def noise(self, shape: torch.Size, generator: torch.Generator, obs: Tensor) -> Tensor:
        n, a = shape
        return self.hold(n, (a,), generator)

    def hold(self, n: int, row_shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """The (n, *row_shape) draws the rows hold for their current episodes, partners opposite; drawn the
        first time (or when the shape changes), redrawn per row by `episodes_ended`."""
        if self.held is None or self.held.shape != (n, *row_shape):
            if n % 2:
                raise ValueError(f"antithetic exploration: needs an even number of environment rows (pairs), got {n}")
            half = torch.randn((n // 2, *row_shape), generator=generator)
            self.held = torch.stack([half, -half], dim=1).reshape(n, *row_shape)
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
                base = torch.randn(self.held.shape[1:], generator=generator)
                self.waiting[key] = base
            self.held[row] = base if row % 2 == 0 else -base


class AntitheticStateNoise(AntitheticNoise):
    """Antithetic per-episode noise matrices E (A, 1 + obs_size): each step plays z = E·u(s), u a unit vector.

    DEPARTURE (ours) — the idea of parameter-space noise (Plappert et al. 2018) and NoisyNets (Fortunato et
    al. 2018), temporally consistent, state-dependent exploration, kept exact for the loss: with
    u(s) = [√(1 − ρ); √ρ · ŝ/|ŝ|] a unit vector and E standard normal, every step's z is exactly N(0, I_A)
    — the actor's own noise, so the stored log-probabilities stay exact. Two steps of an episode correlate by
    (1 − ρ) + ρ·cos(ŝ_t, ŝ_t'): the same state gets the same offset, other states partly independent ones.
    Why: one offset per episode (`AntitheticNoise`) is the same at every state of the episode, so the paired
    episode difference can credit only the episode's average gradient; a state-dependent offset lets it
    credit deviations that differ early and late in a session, fresh and tired. ρ (`state_share`,
    `LossConfig.state_noise_share`) is the share of the exploration variance that depends on the state;
    ρ = 0 plays exactly `AntitheticNoise` (the same draws from the same generator).

    ŝ = the observation standardised per column with FIXED statistics: the mean and std of the observations
    of the first `standardise_steps` steps, then frozen (steps counted by `episodes_ended`, which the
    collector calls once per step). Not the first batch alone: at a reset every user starts a session, so the
    session columns (depth, recent rates, session signals) are constant in it — exactly the within-session
    state this exploration is for. During those first steps ŝ uses the statistics so far (u stays a unit
    vector, so the noise stays exact; before any, ŝ = 0 and u = [1; 0]). Columns whose std is below
    `min_std` get weight 0 (constant in every observation seen: nothing to tell states apart by).

    Multi-agent (`agents`, the task's `AgentSlice`s): agent k's action columns read only its own observation
    block with its own statistics — what that agent's actor sees. The rank cascade's stages act in turn
    (`BatchedSimPool.act_in_turn`) on a joint observation whose later blocks are placeholders until those
    stages act; since a stage's noise reads only its block, call k's columns for stage k equal the last
    call's. The statistics are taken from the observation of the step's last call (every block real).
    """

    def __init__(
        self,
        state_share: float = 0.5,
        agents: Sequence[AgentSlice] = (),
        standardise_steps: int = 32,
        min_std: float = 1e-3,
    ) -> None:
        super().__init__()
        if not 0.0 <= state_share <= 1.0:
            raise ValueError(f"state_noise_share: must be in [0, 1] (the state-dependent share), got {state_share}")
        self.state_share = state_share
        self.agents = tuple(agents)
        self.standardise_steps, self.min_std = standardise_steps, min_std
        self.steps_seen = 0
        # (2, obs_size) float64: Σx and Σx² per column over the rows of the first `standardise_steps` steps
        self.obs_sums: Tensor | None = None
        self.rows_seen = 0
        self.last_obs: Tensor | None = None

    def _blocks(self, obs_size: int, action_size: int) -> list[tuple[slice, slice]]:
        """(observation columns, action columns) per agent; one block without agents."""
        if not self.agents:
            return [(slice(0, obs_size), slice(0, action_size))]
        blocks, o, a = [], 0, 0
        for agent in self.agents:
            blocks.append((slice(o, o + agent.obs_size), slice(a, a + agent.action_size)))
            o, a = o + agent.obs_size, a + agent.action_size
        if (o, a) != (obs_size, action_size):
            raise ValueError(f"antithetic_state: agents cover obs {o} / action {a}, got {obs_size} / {action_size}")
        return blocks

    def _standardised(self, obs: Tensor) -> Tensor:
        """ŝ (N, obs_size): centred and scaled by the statistics so far; zeros before any."""
        if self.obs_sums is None:
            return torch.zeros_like(obs)
        mean, mean_sq = self.obs_sums[0] / self.rows_seen, self.obs_sums[1] / self.rows_seen
        std = (mean_sq - mean**2).clamp_min(0.0).sqrt()
        weight = torch.where(std >= self.min_std, 1.0 / std.clamp_min(self.min_std), torch.zeros_like(std))
        return ((obs.double() - mean) * weight).float()

    def noise(self, shape: torch.Size, generator: torch.Generator, obs: Tensor) -> Tensor:
        n, a = shape
        self.last_obs = obs
        if self.state_share == 0.0:  # E has one column: exactly AntitheticNoise's draws
            return self.hold(n, (a, 1), generator)[:, :, 0]
        held = self.hold(n, (a, 1 + obs.shape[1]), generator)
        s = self._standardised(obs)
        z = torch.empty(n, a)
        for obs_cols, action_cols in self._blocks(obs.shape[1], a):
            block = s[:, obs_cols]
            norm = block.norm(dim=1, keepdim=True)
            has_state = norm > 0
            direction = torch.where(has_state, block / norm.clamp_min(1e-12), torch.zeros_like(block))
            shared_weight = torch.where(has_state, math.sqrt(1.0 - self.state_share), 1.0)
            own = held[:, action_cols]  # (N, A_k, 1 + obs_size): column 0 shared, then one per observation column
            state_part = torch.einsum("nad,nd->na", own[:, :, 1 + obs_cols.start : 1 + obs_cols.stop], direction)
            z[:, action_cols] = shared_weight * own[:, :, 0] + math.sqrt(self.state_share) * state_part
        return z

    def episodes_ended(self, ended: Tensor, generator: torch.Generator) -> None:
        if self.steps_seen < self.standardise_steps and self.last_obs is not None:
            x = self.last_obs.double()
            sums = torch.stack([x.sum(0), (x**2).sum(0)])
            self.obs_sums = sums if self.obs_sums is None else self.obs_sums + sums
            self.rows_seen += x.shape[0]
            self.steps_seen += 1
        super().episodes_ended(ended, generator)


def make_exploration(kind: str, state_noise_share: float = 0.5, agents: Sequence[AgentSlice] = ()) -> Exploration:
    """ "per_step" | "per_episode" | "antithetic" | "antithetic_state" → the strategy (`LossConfig.exploration`);
    the last reads `state_noise_share` (ρ) and the task's `agents` (each agent's noise reads its own block)."""
    strategies: dict[str, Callable[[], Exploration]] = {
        "per_step": PerStepNoise,
        "per_episode": PerEpisodeNoise,
        "antithetic": AntitheticNoise,
        "antithetic_state": lambda: AntitheticStateNoise(state_noise_share, agents),
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
            action = cpu.from_noise(exploration.noise(loc.shape, generator, obs.cpu()))
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
