"""Actors and per-signal critics.

Every actor returns a `torch.distributions.Distribution` from `distribution(obs)`
(training/rl/distributions.py) and offers the same conveniences on top of it —
`log_prob`, `sample`, `mode`, `entropy` — so a loss never branches on the action type
except where the math differs (the exact discrete KL of TSCAC's stage two).
`forward(obs)` gives what ONNX exports (the problem spec's output names).

* `TanhGaussianActor` — bounded box actions through `TanhNormal`: u ~ N(f(s), σ²),
  action = c + h·tanh(u), with the exact log-density (log-det of the squashing
  included). σ is state-independent, its log squashed into [log_std_min, log_std_max]
  (bounded without clamps so gradients never vanish). Exported: "action_mean" = the
  median c + h·tanh(f(s)) (inside the box) and "action_log_std" = log of the local
  (linearised) action std h·(1 − tanh² f(s))·σ — what serving's Gaussian exploration
  reads. Replaces the earlier Gaussian whose *mean* was squashed by a sigmoid and
  saturated at the bounds (issue 14): here the score (u − f(s))/σ² never vanishes.
* `BetaActor` — bounded box actions through `ScaledBeta` (α, β = 1 + softplus(·):
  unimodal, ours); exported mean and log std of the action.
* `CategoricalActor` — logits over n actions, or one set per component of a
  multi-discrete action (factorised), through `FactorisedCategorical`.
* `JointActor` — one actor per agent on its own slice of the joint observation
  (CTDE: decentralised execution); the joint distribution is the product of the
  agents' (the same family with the agents' parameters side by side). Agents may be
  box (tanh-Gaussian / Beta) or (multi-)discrete (categorical).
* `SignalCritics` — one independent MLP per reward signal (TSCAC: separate
  critics track their own returns better than one shared critic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from training.rl.distributions import FactorisedCategorical, ScaledBeta, TanhNormal, clipped_normal_log_prob
from training.rl.task import TaskSpec

ACTION_DISTRIBUTIONS = ("tanh_normal", "beta")
START_BOUND_MARGIN = 0.01
"""An actor squashed by tanh (tanh-Gaussian here, MA-RDPG's deterministic stage actors) started exactly at an
action on a bound starts this share of the half-width inside it (atanh(±1) is infinite)."""


@dataclass(frozen=True)
class CloneConfig:
    """Ours: how `Actor.start_policy` fits an actor's mode to a state-dependent rule (a warm start, off unless a
    run is given one: `training.rl.trainer.PolicyStart`). The defaults bring a (64, 64) actor within a mean
    absolute error of about 0.01 of `benchmarks/headroom_rank.py`'s observed rule on 32 768 observations of it
    (measured on users it never saw; 8 000 steps: 0.02, 3 000: 0.04)."""

    steps: int = 20_000
    """Adam steps of least squares in action space."""
    lr: float = 3e-3
    """Adam step size at the first step; it decays linearly to 0."""
    minibatch_size: int = 1024
    """Observations per step, drawn with replacement."""
    seed: int = 0
    """Seeds the minibatch draws (a generator of its own: the run's random streams are untouched)."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.minibatch_size < 1:
            raise ValueError(f"steps, minibatch_size: must be >= 1, got {self.steps}, {self.minibatch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")


class Standardise(nn.Module):
    """(x − mean) / std per input column, with statistics fixed once by `fit` (identity until then).

    Ours (issue 18, twentieth round; off by default): the rank observation's columns differ in scale by two orders
    of magnitude (std 0.013–3.1; the pool's predicted interaction rates, which carry the user's sociability, are
    the smallest), so an MLP with the default initialisation barely sees them. Standard practice in policy-gradient
    implementations (observation normalisation); here with statistics fixed from the run's first batch rather than
    running ones, so the network is a fixed function of its parameters between updates. The statistics are buffers:
    they travel in the state dict and the exported ONNX graph, so serving needs nothing new."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Statistics of `x` (rows, size); a (near-)constant column is centred and left unscaled (it becomes 0)."""
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0] or x.shape[0] < 2:
            raise ValueError(f"Standardise.fit: needs (rows >= 2, {self.mean.shape[0]}) inputs, got {tuple(x.shape)}")
        std = x.float().std(dim=0)
        self.mean.copy_(x.float().mean(dim=0))
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def fit_input_standardiser(net: nn.Module | None, x: Tensor) -> None:
    """Fit the `Standardise` layer that `mlp(..., standardise=True)` puts first in `net` on its inputs `x`."""
    first = net[0] if isinstance(net, nn.Sequential) and len(net) > 0 else None
    if not isinstance(first, Standardise):
        raise ValueError(
            "fit_standardiser: the network has no input Standardise layer (build it with standardise=True)"
        )
    first.fit(x)


def mlp(
    in_size: int,
    out_size: int,
    hidden: Sequence[int],
    activation: type[nn.Module] = nn.Tanh,
    standardise: bool = False,
) -> nn.Sequential:
    """Fully connected network; the last layer is linear with small initial weights (near-neutral start).
    `standardise`: a `Standardise` layer first (fit it before training; until then it is the identity)."""
    layers: list[nn.Module] = [Standardise(in_size)] if standardise else []
    prev = in_size
    for h in hidden:
        layers += [nn.Linear(prev, h), activation()]
        prev = h
    last = nn.Linear(prev, out_size)
    nn.init.uniform_(last.weight, -3e-3, 3e-3)
    nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Base of every actor: `distribution(obs)` is the policy; the rest derives from it."""

    def distribution(self, obs: Tensor) -> Distribution:
        raise NotImplementedError

    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        """log π(a|s) per row (B,)."""
        return self.distribution(obs).log_prob(action)

    def served_log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        """log-density of `action` under the policy as serving plays it from the exported file, per row (B,).

        A box actor exports (action_mean, action_log_std) and serving samples a Gaussian with them, clipped
        onto the box (`serving/exploration.py`): for a TanhNormal that is its median c + h·tanh(loc) with the
        linearised σ, for a Beta its mean and σ. That Gaussian is not the TanhNormal: the median of a
        TanhNormal fitted to Gaussian draws sits off their mean toward the nearer bound (Jensen: atanh is
        concave below the centre and convex above it). Discrete actors serve their own distribution.
        """
        d = self.distribution(obs)
        if isinstance(d, TanhNormal):
            return clipped_normal_log_prob(action, d.mode, d.linearised_log_std(), d.low, d.high)
        if isinstance(d, ScaledBeta):
            return clipped_normal_log_prob(action, d.mean, 0.5 * torch.log(d.variance), d.low, d.high)
        return d.log_prob(action)

    def sample(self, obs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Sampled action (B, A) and its log-probability (B,)."""
        d = self.distribution(obs)
        if isinstance(d, TanhNormal):
            z = torch.randn(d.loc.shape, generator=generator, device=d.loc.device, dtype=d.loc.dtype)
            action = d.from_noise(z)
        elif isinstance(d, FactorisedCategorical):
            action = d.sample_with(generator)
        else:
            action = d.sample()
        return action, d.log_prob(action)

    def start_at(self, mean: Tensor, std: Tensor) -> None:
        """Box actors: move the policy to (about) mean ± std in every state, before behaviour cloning. Others: nothing."""

    def start_constant(self, action: Tensor) -> None:
        """Box actors: play exactly `action` (the deterministic `mode`) in every state, exploration σ unchanged.

        Ours (the warm start at an incumbent constant, e.g. the best fixed fusion weights): the last layer's
        weights are zeroed and its bias set so the output is the constant whatever the observation; the hidden
        layers keep their random init, so the first gradient steps on the last layer's weights start
        state-dependent deviations from it. Categorical actors refuse (no constant to play exactly)."""
        raise TypeError(f"{type(self).__name__}: start_constant needs a box actor (tanh-Gaussian or Beta)")

    def start_policy(self, obs: Tensor, actions: Tensor, clone: CloneConfig) -> float:
        """Tanh-Gaussian actors: play (about) a state-dependent rule — `actions` (B, A) at `obs` (B, O) — as the
        deterministic `mode`, exploration σ unchanged; returns the final minibatch's mean squared error.

        Ours (the warm start at a rule instead of a constant, `CloneConfig`): the mode is fitted to the rule's
        actions by least squares in action space, Adam over the mean network only (σ is its own parameter), the
        step size decaying linearly to 0. Other actors refuse: a Beta's mean and σ share one network."""
        raise TypeError(f"{type(self).__name__}: start_policy needs a tanh-Gaussian actor")

    def mode(self, obs: Tensor) -> Tensor:
        """The deterministic action (what serving plays without exploration)."""
        return self.distribution(obs).mode

    def entropy(self, obs: Tensor) -> Tensor:
        return self.distribution(obs).entropy()

    def export_module(self) -> nn.Module:
        """The module whose forward(observation) gives the ONNX outputs."""
        return self

    def fit_standardiser(self, obs: Tensor) -> None:
        """Fit the input `Standardise` layer (an actor built with `standardise=True`) on observations `obs` (B, O)."""
        fit_input_standardiser(getattr(self, "net", None), obs)


def _log_std_logit(init_std: float, bounds: tuple[float, float], size: int) -> nn.Parameter:
    lo, hi = bounds
    frac = (math.log(init_std) - lo) / (hi - lo)
    frac = min(max(frac, 1e-3), 1 - 1e-3)
    return nn.Parameter(torch.full((size,), math.log(frac / (1 - frac))))


class TanhGaussianActor(Actor):
    """π(a|s) = TanhNormal(f(s), σ) on [low, high]; `init_std` is the action-space std at the box's centre."""

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        low: float,
        high: float,
        hidden: Sequence[int],
        init_mean: Sequence[float] | None = None,
        init_std: float = 0.1,
        log_std_bounds: tuple[float, float] = (-5.0, 0.5),
        standardise: bool = False,
    ) -> None:
        super().__init__()
        if not high > low:
            raise ValueError(f"TanhGaussianActor: need high > low, got low={low}, high={high}")
        self.net = mlp(obs_size, action_size, hidden, standardise=standardise)
        self.low, self.high = float(low), float(high)
        half_width = (self.high - self.low) / 2.0
        self.log_std_min, self.log_std_max = log_std_bounds
        # σ of u: the action std at the centre is h·σ (slope of c + h·tanh at 0).
        self.log_std_logit = _log_std_logit(init_std / half_width, log_std_bounds, action_size)
        if init_mean is not None:
            # Start at a known-good action (e.g. the problem's default fusion weights): the last
            # layer's bias is atanh of the initial median (`pre_squash`).
            with torch.no_grad():
                self.net[-1].bias.copy_(self.pre_squash(torch.as_tensor(list(init_mean), dtype=torch.float32)))
        self.action_size = action_size

    def box_position(self, action: Tensor) -> Tensor:
        """x = (a − c)/h in [−1, 1], a bound moved `START_BOUND_MARGIN` inside (atanh(±1) is infinite)."""
        half_width = (self.high - self.low) / 2.0
        x = (action - (self.low + self.high) / 2.0) / half_width
        return x.clamp(-1.0 + START_BOUND_MARGIN, 1.0 - START_BOUND_MARGIN)

    def pre_squash(self, action: Tensor) -> Tensor:
        """u = atanh(x), the pre-squash value whose median is `action` (`box_position`)."""
        return torch.atanh(self.box_position(action))

    @torch.no_grad()
    def start_constant(self, action: Tensor) -> None:
        """The median c + h·tanh(f(s)) (what `mode` plays) is `action` in every state: zero last-layer weights,
        bias u = atanh((a − c)/h); exact inside the box, a bound `START_BOUND_MARGIN`·h inside. σ unchanged."""
        nn.init.zeros_(self.net[-1].weight)
        self.net[-1].bias.copy_(self.pre_squash(action.to(self.net[-1].bias)))

    def start_policy(self, obs: Tensor, actions: Tensor, clone: CloneConfig) -> float:
        """The median c + h·tanh(f(s)) fitted to `actions` at `obs` (`Actor.start_policy`); σ unchanged."""
        if obs.shape[0] != actions.shape[0] or actions.shape[1:] != (self.action_size,):
            raise ValueError(
                f"start_policy: need obs (B, O) and actions (B, {self.action_size}), got {tuple(obs.shape)}, "
                f"{tuple(actions.shape)}"
            )
        generator = torch.Generator().manual_seed(clone.seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=clone.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 - k / clone.steps)
        loss = torch.zeros(())
        for _ in range(clone.steps):
            pick = torch.randint(0, obs.shape[0], (clone.minibatch_size,), generator=generator)
            loss = (self.mode(obs[pick]) - actions[pick]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
        return float(loss.item())

    @torch.no_grad()
    def start_at(self, mean: Tensor, std: Tensor) -> None:
        """Median ≈ `mean` (the last layer's bias; its weights are near 0) and linearised σ = `std`, per component."""
        half_width = (self.high - self.low) / 2.0
        x = self.box_position(mean)
        loc = torch.atanh(x)
        log_scale = torch.log(std.clamp_min(1e-6) / (half_width * (1.0 - x * x)))
        lo, hi = self.log_std_min, self.log_std_max
        frac = ((log_scale - lo) / (hi - lo)).clamp(1e-3, 1 - 1e-3)
        self.net[-1].bias.copy_(loc)
        self.log_std_logit.copy_(torch.log(frac / (1 - frac)))

    def params(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(loc (B, A), log σ (B, A)) of the pre-squash Gaussian."""
        loc = self.net(obs)
        log_std = self.log_std_min + (self.log_std_max - self.log_std_min) * torch.sigmoid(self.log_std_logit)
        # `loc * 0 +` broadcasts σ to the batch with a dynamic batch axis in ONNX.
        return loc, loc * 0.0 + log_std

    def distribution(self, obs: Tensor) -> TanhNormal:
        loc, log_std = self.params(obs)
        return TanhNormal(loc, log_std.exp(), self.low, self.high)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """ONNX outputs: (action_mean (B, A) — the median, inside the box; action_log_std (B, A) — linearised)."""
        d = self.distribution(obs)
        return d.mode, d.linearised_log_std()


class BetaActor(Actor):
    """π(a|s) = ScaledBeta(α(s), β(s)) on [low, high], α, β = 1 + softplus(f(s)) (unimodal; ours)."""

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        low: float,
        high: float,
        hidden: Sequence[int],
        init_mean: Sequence[float] | None = None,
        init_std: float = 0.1,
        standardise: bool = False,
    ) -> None:
        super().__init__()
        if not high > low:
            raise ValueError(f"BetaActor: need high > low, got low={low}, high={high}")
        self.net = mlp(obs_size, 2 * action_size, hidden, standardise=standardise)
        self.low, self.high = float(low), float(high)
        m = (
            torch.full((action_size,), 0.5)
            if init_mean is None
            else torch.as_tensor(list(init_mean), dtype=torch.float32)
        )
        self.action_size = action_size
        self.init_std = float(init_std)
        self.start_at(m, torch.full((action_size,), float(init_std)))

    @torch.no_grad()
    def start_constant(self, action: Tensor) -> None:
        """The mean (what `mode` plays) is `action` in every state, with σ = `init_std`: zero last-layer weights,
        α, β from `start_at` — exact where the Beta's clamps do not bind (mean in [2 %, 98 %] of the box,
        α, β > 1.01: at σ 0.1 on [0, 1], means in about [0.11, 0.89])."""
        nn.init.zeros_(self.net[-1].weight)
        self.start_at(action.to(self.net[-1].bias), torch.full_like(action, self.init_std))

    @torch.no_grad()
    def start_at(self, mean: Tensor, std: Tensor) -> None:
        """α, β (the last layer's bias; its weights are near 0) whose mean and σ are `mean` and `std`, per component."""
        width = self.high - self.low
        m = ((mean - self.low) / width).clamp(0.02, 0.98)
        s = std / width
        # Beta variance m(1−m)/(κ+1) = s² gives the concentration κ = α + β (at least 2.5, so α, β > 1 mostly).
        kappa = (m * (1 - m) / s**2 - 1.0).clamp_min(2.5)
        alpha, beta = (m * kappa).clamp_min(1.01), ((1 - m) * kappa).clamp_min(1.01)
        # softplus⁻¹(y) = y + log(1 − e^−y), stable for large y (log(expm1(y)) overflows float32 past y ≈ 88).
        inv_softplus = lambda v: (v - 1.0) + torch.log(-torch.expm1(-(v - 1.0)))  # noqa: E731
        self.net[-1].bias.copy_(torch.cat([inv_softplus(alpha), inv_softplus(beta)]))

    def distribution(self, obs: Tensor) -> ScaledBeta:
        raw = self.net(obs)
        alpha, beta = torch.split(1.0 + F.softplus(raw), self.action_size, dim=-1)
        return ScaledBeta(alpha, beta, self.low, self.high)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """ONNX outputs: (action_mean (B, A), action_log_std (B, A))."""
        d = self.distribution(obs)
        return d.mean, 0.5 * torch.log(d.variance)


class CategoricalActor(Actor):
    """Factorised categorical over one or more components: π(a|s) = Π_k softmax(f_k(s))_{a_k}.

    One component (`nvec=(n,)`) is the plain categorical over n actions; several
    (`allocate`'s multi-discrete action) share one network whose output is split
    per component. Actions are stored as float columns (B, len(nvec)). The
    forward pass returns every component's log-probabilities side by side
    (B, Σ nvec), so Σ_columns p·(log p − log q) is the KL and −Σ p·log p the
    entropy of the whole factorised distribution.
    """

    def __init__(
        self, obs_size: int, nvec: int | Sequence[int], hidden: Sequence[int], standardise: bool = False
    ) -> None:
        super().__init__()
        self.nvec = (int(nvec),) if isinstance(nvec, int) else tuple(int(n) for n in nvec)
        if not self.nvec or min(self.nvec) < 2:
            raise ValueError(f"CategoricalActor.nvec: every component needs >= 2 actions, got {self.nvec}")
        self.net = mlp(obs_size, sum(self.nvec), hidden, standardise=standardise)

    def forward(self, obs: Tensor) -> Tensor:
        """log π_k(·|s) of every component k, side by side: shape (B, Σ nvec)."""
        logits = torch.split(self.net(obs), self.nvec, dim=-1)
        return torch.cat([torch.log_softmax(part, dim=-1) for part in logits], dim=-1)

    def distribution(self, obs: Tensor) -> FactorisedCategorical:
        return FactorisedCategorical(self(obs), self.nvec)

    def log_probs_all(self, obs: Tensor) -> Tensor:
        return self(obs)


class JointActor(Actor):
    """Decentralised actors: agent k sees only its slice of the joint observation and acts on its slice."""

    def __init__(self, obs_sizes: Sequence[int], agents: Sequence[Actor]) -> None:
        super().__init__()
        if len(obs_sizes) != len(agents) or not agents:
            raise ValueError(f"JointActor: {len(obs_sizes)} observation sizes for {len(agents)} agents")
        families = {type(a) for a in agents}
        if len(families) != 1:
            raise ValueError(
                f"JointActor: every agent needs the same actor family, got {sorted(f.__name__ for f in families)}"
            )
        self.obs_sizes = list(obs_sizes)
        self.agents = nn.ModuleList(agents)
        first = agents[0]
        if isinstance(first, TanhGaussianActor | BetaActor):
            bounds = {(a.low, a.high) for a in agents}  # type: ignore[union-attr]
            if len(bounds) != 1:
                raise ValueError(f"JointActor: box agents need the same bounds, got {sorted(bounds)}")

    def start_at(self, mean: Tensor, std: Tensor) -> None:
        """Every agent at its slice of `mean` and `std` (box agents; categorical ones have nothing to move)."""
        if not isinstance(self.agents[0], TanhGaussianActor | BetaActor):
            return
        sizes = [int(getattr(a, "action_size", 0)) for a in self.agents]
        for agent, m, s in zip(self.agents, torch.split(mean, sizes), torch.split(std, sizes), strict=True):
            agent.start_at(m, s)

    def start_constant(self, action: Tensor) -> None:
        """Every agent plays its slice of `action` in every state (box agents; `Actor.start_constant`)."""
        sizes = [int(getattr(a, "action_size", 0)) for a in self.agents]
        for agent, part in zip(self.agents, torch.split(action, sizes), strict=True):
            agent.start_constant(part)

    def fit_standardiser(self, obs: Tensor) -> None:
        """Every agent's input `Standardise` layer on its own block of the joint observation `obs` (B, Σ O_k)."""
        for agent, block in zip(self.agents, torch.split(obs, self.obs_sizes, dim=-1), strict=True):
            agent.fit_standardiser(block)

    def _parts(self, obs: Tensor) -> list[Distribution]:
        return [a.distribution(o) for a, o in zip(self.agents, torch.split(obs, self.obs_sizes, dim=-1), strict=True)]

    def distribution(self, obs: Tensor) -> Distribution:
        """The product of the agents' distributions, as one distribution of the same family."""
        parts = self._parts(obs)
        first = parts[0]
        if isinstance(first, TanhNormal):
            return TanhNormal(
                torch.cat([p.loc for p in parts], -1),  # type: ignore[attr-defined]
                torch.cat([p.scale for p in parts], -1),  # type: ignore[attr-defined]
                first.low,
                first.high,
            )
        if isinstance(first, ScaledBeta):
            return ScaledBeta(
                torch.cat([p.concentration1 for p in parts], -1),  # type: ignore[attr-defined]
                torch.cat([p.concentration0 for p in parts], -1),  # type: ignore[attr-defined]
                first.low,
                first.high,
            )
        assert isinstance(first, FactorisedCategorical)
        return FactorisedCategorical(
            torch.cat([p.log_probs for p in parts], -1),  # type: ignore[attr-defined]
            tuple(n for p in parts for n in p.nvec),  # type: ignore[attr-defined]
        )

    def forward(self, obs: Tensor) -> tuple[Tensor, ...] | Tensor:
        """Every agent's ONNX outputs concatenated in agent order."""
        outs = [a(o) for a, o in zip(self.agents, torch.split(obs, self.obs_sizes, dim=-1), strict=True)]
        if isinstance(outs[0], Tensor):
            return torch.cat(outs, -1)  # type: ignore[arg-type]
        return tuple(torch.cat([o[k] for o in outs], -1) for k in range(len(outs[0])))


def _box_actor(
    kind: str,
    obs_size: int,
    size: int,
    low: float,
    high: float,
    hidden: Sequence[int],
    init_mean: Sequence[float] | None,
    init_std: float,
    standardise: bool,
) -> Actor:
    if kind == "tanh_normal":
        return TanhGaussianActor(obs_size, size, low, high, hidden, init_mean, init_std, standardise=standardise)
    if kind == "beta":
        return BetaActor(obs_size, size, low, high, hidden, init_mean, init_std, standardise=standardise)
    raise ValueError(f"action_distribution: expected one of {ACTION_DISTRIBUTIONS}, got {kind!r}")


def make_actor(
    task: TaskSpec,
    hidden: Sequence[int],
    init_mean: Sequence[float] | None = None,
    init_std: float = 0.1,
    action_distribution: str = "tanh_normal",
    standardise: bool = False,
) -> Actor:
    """The actor family the task's action space calls for (box: `action_distribution`). `standardise`: every
    network (each agent's) starts with a `Standardise` layer, the identity until `fit_standardiser`."""
    from models.problems import BoxAction

    a = task.action
    if task.agents:
        agents: list[Actor] = []
        start = 0
        for g in task.agents:
            if isinstance(a, BoxAction):
                mean = None if init_mean is None else list(init_mean)[start : start + g.action_size]
                agents.append(
                    _box_actor(
                        action_distribution,
                        g.obs_size,
                        g.action_size,
                        a.low,
                        a.high,
                        hidden,
                        mean,
                        init_std,
                        standardise,
                    )
                )
            else:
                nvec = task.nvec[start : start + g.action_size]
                agents.append(CategoricalActor(g.obs_size, nvec, hidden, standardise))
            start += g.action_size
        return JointActor([g.obs_size for g in task.agents], agents)
    if isinstance(a, BoxAction):
        return _box_actor(
            action_distribution, task.obs_size, task.action_dim, a.low, a.high, hidden, init_mean, init_std, standardise
        )
    return CategoricalActor(task.obs_size, task.nvec, hidden, standardise)


class SignalCritics(nn.Module):
    """One independent MLP per reward signal: input (B, in_size) → (B, m) or (B, m, out_per_signal)."""

    def __init__(
        self, in_size: int, n_signals: int, hidden: Sequence[int], out_per_signal: int = 1, standardise: bool = False
    ) -> None:
        super().__init__()
        # `standardise`: one input layer for every head (they all read the same input), fitted once
        self.standardise = Standardise(in_size) if standardise else None
        self.heads = nn.ModuleList(mlp(in_size, out_per_signal, hidden, nn.ReLU) for _ in range(n_signals))
        for h in self.heads:  # critics need a normal-scale output layer, unlike actors
            nn.init.xavier_uniform_(h[-1].weight)
        self.out_per_signal = out_per_signal

    def fit_standardiser(self, x: Tensor) -> None:
        """The input `Standardise` layer (built with `standardise=True`) on the critics' inputs `x` (B, in)."""
        if self.standardise is None:
            raise ValueError(
                "fit_standardiser: the critics have no input Standardise layer (build with standardise=True)"
            )
        self.standardise.fit(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.standardise is not None:
            x = self.standardise(x)
        out = torch.stack([h(x) for h in self.heads], dim=1)
        return out[..., 0] if self.out_per_signal == 1 else out
