"""A trust region that reads no rewards: step back from a trained actor toward its behaviour-cloned start.

Offline training moves the actor away from the logging policy; once it has moved
too far, the logged day can no longer evaluate it (the importance weights put the
whole estimate on a handful of rows, and the gate refuses for too little overlap).
After training, this walks the straight line between the actor's parameters right
after behaviour cloning, θ_bc (a copy of the logging policy), and the trained
ones, θ:

    θ_t = θ_bc + t · (θ − θ_bc),   t ∈ [0, 1]

and keeps the largest step t whose policy leaves an effective sample size (Kish,
(Σw)² / Σw², w = π_t(a|s) / μ(a|s) on the logged rows) of at least
`min_ess_share` of the rows. The ESS depends on the logged propensities and the
candidate's densities only, never on a reward: choosing the step by it does not
look at the quantity the gate then estimates (the lift and the constraints), so
the gate's confidence interval keeps its meaning. It is the offline analogue of
a KL trust region (TRPO, Schulman et al. 2015), measured the way the gate will
measure it; the step is searched by bisection (ESS falls as the policy moves away
from μ, monotone along the line in practice; not assumed: every step tried is
checked, and the kept one is the largest that passed).

σ floor (`StdFloor`, ours): a trained tanh-Gaussian actor's exported σ shrinks
as its mean moves toward a bound of the box (the tanh's slope), and a narrower
σ than the logging policy's costs overlap by itself. The floor keeps every
entry of the exported log σ at least the behaviour-cloned actor's on the same
observation.

Shapes: N logged rows; the callables take a step t and return a number.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class TrustRegionConfig:
    """The `trust_region` section of a training config (pipelines/jobs/train.py applies it after training)."""

    min_ess_share: float = 0.0
    """Keep the largest step whose ESS on the logged rows is at least this share of them; 0 = off."""
    bisection_steps: int = 6
    """Bisection steps on t after t = 1 fails (resolution 2^-steps)."""
    std_floor: bool = True
    """Export log σ ≥ the behaviour-cloned actor's (single actors with (mean, log σ) outputs)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_ess_share < 1.0:
            raise ValueError(f"trust_region.min_ess_share: expected a share in [0, 1), got {self.min_ess_share}")
        if self.bisection_steps < 1:
            raise ValueError(f"trust_region.bisection_steps: must be >= 1, got {self.bisection_steps}")

    @property
    def enabled(self) -> bool:
        return self.min_ess_share > 0


@dataclass
class TrustRegionResult:
    """The step kept and every step tried, [(t, ESS share)] in the order they were tried."""

    step: float
    ess_share: float
    min_share: float
    tried: list[tuple[float, float]] = field(default_factory=list)

    @property
    def met(self) -> bool:
        """Whether the kept step reached the share asked for (False: even t = 0 did not, shipped anyway)."""
        return self.ess_share >= self.min_share


def interpolate_state(anchor: dict[str, Tensor], trained: dict[str, Tensor], step: float) -> dict[str, Tensor]:
    """θ_bc + t·(θ − θ_bc) entry by entry (floating tensors; others are taken from `trained`)."""
    if anchor.keys() != trained.keys():
        raise ValueError("interpolate_state: the two actors have different parameters")
    return {
        k: anchor[k] + step * (v - anchor[k]) if torch.is_floating_point(v) else v.clone() for k, v in trained.items()
    }


def actor_at(actor: nn.Module, anchor: dict[str, Tensor], step: float) -> nn.Module:
    """A copy of `actor` with parameters θ_t (the actor itself is left as trained)."""
    out = copy.deepcopy(actor)
    out.load_state_dict(interpolate_state(anchor, actor.state_dict(), step))
    return out.eval()


def _exported(actor: nn.Module) -> nn.Module:
    """The module whose forward(observation) gives the ONNX outputs (training/export.py's rule)."""
    export_module = getattr(actor, "export_module", None)
    return export_module() if callable(export_module) else actor


class StdFloor(nn.Module):
    """(mean, max(log σ, log σ_bc)): the actor's exported outputs with log σ floored at the cloned actor's."""

    def __init__(self, actor: nn.Module, cloned: nn.Module) -> None:
        super().__init__()
        self.actor: nn.Module = _exported(actor)
        self.cloned: nn.Module = _exported(cloned)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.actor(obs)
        _, floor = self.cloned(obs)
        return mean, torch.maximum(log_std, floor)


def line_search(ess_share_at: Callable[[float], float], min_share: float, bisection_steps: int) -> TrustRegionResult:
    """The largest t ∈ [0, 1] with `ess_share_at(t)` ≥ `min_share`: t = 1 first, then bisection.

    If not even t = 0 reaches the share, t = 0 (the behaviour-cloned actor) is kept: the gate
    will then say the overlap is too small, which is the truth.
    """
    tried: list[tuple[float, float]] = []

    def check(t: float) -> float:
        share = float(ess_share_at(t))
        tried.append((t, share))
        return share

    full = check(1.0)
    if full >= min_share:
        return TrustRegionResult(1.0, full, min_share, tried)
    lo, lo_share = 0.0, check(0.0)
    if lo_share < min_share:
        return TrustRegionResult(0.0, lo_share, min_share, tried)
    hi = 1.0
    for _ in range(bisection_steps):
        mid = (lo + hi) / 2.0
        share = check(mid)
        if share >= min_share:
            lo, lo_share = mid, share
        else:
            hi = mid
    return TrustRegionResult(lo, lo_share, min_share, tried)
