"""Action distributions the actors return: every one is a `torch.distributions.Distribution`.

* `TanhNormal`  — bounded box actions: u ~ N(loc, scale²) per component, action
  y = c + h·tanh(u) with c = (low + high)/2 and h = (high − low)/2. Its density on
  the open box (low, high) is exact (change of variables):

      log p(y) = Σ_k [ log N(u_k; loc_k, scale_k) − log h − log(1 − tanh² u_k) ],  u = atanh((y − c)/h)

  with log(1 − tanh² u) = 2·(log 2 − u − softplus(−2u)) (stable for large |u|; SAC, Haarnoja et
  al. 2018, appendix C). Unlike a Gaussian whose *mean* is squashed by a sigmoid, the score
  ∂ log p / ∂ loc = (u − loc)/scale² never vanishes when the policy sits near a bound.
* `ScaledBeta`  — bounded box actions: y = low + (high − low)·x, x ~ Beta(α, β) per component;
  log p(y) = Σ_k [log Beta(x_k; α_k, β_k) − log(high − low)].
* `FactorisedCategorical` — one categorical per component of a (multi-)discrete action; actions
  are float columns (B, K) holding indices; log p = Σ_k log π_k(a_k).

All three have `event_shape = (A,)` (A components), so `log_prob` returns one value per row (B,),
and offer `mode` (the deterministic action serving takes) and exact `kl_divergence` where it exists
(`kl`: the KL of two TanhNormals equals the KL of their base Gaussians because tanh is a bijection).

Ours (the papers are silent): `TanhNormal.entropy()` is the entropy of the base Gaussian u, not of
y (which has no closed form); it serves only as an exploration bonus, where only its gradient
with respect to `scale` matters. Actions exactly on a bound are moved `BOUND_EPS` (relative to h)
inside before `atanh`, so logged actions clipped onto a bound get a finite (large) density.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Beta, Distribution, Normal, constraints

BOUND_EPS = 1e-6
_LOG_2 = math.log(2.0)


def _log_one_minus_tanh_sq(u: Tensor) -> Tensor:
    """log(1 − tanh² u), stable: 2·(log 2 − u − softplus(−2u))."""
    return 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))


class TanhNormal(Distribution):
    """y = c + h·tanh(u), u ~ N(loc, scale²) independently per component; loc, scale (..., A)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, low: float, high: float, validate_args: bool | None = False) -> None:
        if not high > low:
            raise ValueError(f"TanhNormal: need high > low, got low={low}, high={high}")
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.low, self.high = float(low), float(high)
        self.centre, self.half_width = (self.low + self.high) / 2.0, (self.high - self.low) / 2.0
        self.base = Normal(self.loc, self.scale, validate_args=False)
        super().__init__(self.loc.shape[:-1], self.loc.shape[-1:], validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.interval(self.low, self.high), 1)

    def squash(self, u: Tensor) -> Tensor:
        """Pre-squash value u → action y."""
        return self.centre + self.half_width * torch.tanh(u)

    def unsquash(self, y: Tensor) -> Tensor:
        """Action y → u = atanh((y − c)/h), y moved `BOUND_EPS` inside the box first."""
        x = ((y - self.centre) / self.half_width).clamp(-1.0 + BOUND_EPS, 1.0 - BOUND_EPS)
        return torch.atanh(x)

    def from_noise(self, z: Tensor) -> Tensor:
        """The action for standard-normal noise z: c + h·tanh(loc + scale·z) (exploration on the collector side)."""
        return self.squash(self.loc + self.scale * z)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        return self.squash(self.base.rsample(sample_shape))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        u = self.unsquash(value)
        per_component = self.base.log_prob(u) - math.log(self.half_width) - _log_one_minus_tanh_sq(u)
        return per_component.sum(-1)

    @property
    def mode(self) -> Tensor:
        """c + h·tanh(loc): the median of every component (tanh is monotone), always inside the box."""
        return self.squash(self.loc)

    @property
    def mean(self) -> Tensor:
        raise NotImplementedError("TanhNormal has no closed-form mean; use .mode (the median) or samples")

    def entropy(self) -> Tensor:
        """Entropy of the base Gaussian u (ours, see the module docstring), summed over components."""
        return self.base.entropy().sum(-1)

    def linearised_log_std(self) -> Tensor:
        """log of the action's local standard deviation h·(1 − tanh² loc)·scale (what ONNX exports as action_log_std)."""
        return torch.log(self.scale) + math.log(self.half_width) + _log_one_minus_tanh_sq(self.loc)


def clipped_normal_log_prob(action: Tensor, mean: Tensor, log_std: Tensor, low: float, high: float) -> Tensor:
    """log-density of `action` under a diagonal Gaussian clipped onto [low, high], per row (B,).

    What serving samples from the ONNX outputs (`serving/exploration.py`): inside the box the Gaussian
    density; an entry exactly on a bound carries the mass the Gaussian puts beyond it. The torch twin
    of `training.ope.policies.clipped_gaussian_log_density`, differentiable in `mean` and `log_std`.
    """
    std = log_std.exp()
    inside = Normal(mean, std, validate_args=False).log_prob(action)
    at_low = torch.special.log_ndtr((low - mean) / std)
    at_high = torch.special.log_ndtr((mean - high) / std)
    per_entry = torch.where(action <= low, at_low, torch.where(action >= high, at_high, inside))
    return per_entry.sum(-1)


class ScaledBeta(Distribution):
    """y = low + (high − low)·x, x ~ Beta(α, β) independently per component; α, β (..., A)."""

    arg_constraints = {"concentration1": constraints.positive, "concentration0": constraints.positive}
    has_rsample = True

    def __init__(
        self, alpha: Tensor, beta: Tensor, low: float, high: float, validate_args: bool | None = False
    ) -> None:
        if not high > low:
            raise ValueError(f"ScaledBeta: need high > low, got low={low}, high={high}")
        self.concentration1, self.concentration0 = torch.broadcast_tensors(alpha, beta)
        self.low, self.high = float(low), float(high)
        self.width = self.high - self.low
        self.base = Beta(self.concentration1, self.concentration0, validate_args=False)
        super().__init__(self.concentration1.shape[:-1], self.concentration1.shape[-1:], validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.interval(self.low, self.high), 1)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        return self.low + self.width * self.base.rsample(sample_shape)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        x = ((value - self.low) / self.width).clamp(BOUND_EPS, 1.0 - BOUND_EPS)
        return (self.base.log_prob(x) - math.log(self.width)).sum(-1)

    @property
    def mean(self) -> Tensor:
        return self.low + self.width * self.base.mean

    @property
    def mode(self) -> Tensor:
        """The mean (inside the box even when α or β < 1, where the Beta's mode sits on a bound)."""
        return self.mean

    @property
    def variance(self) -> Tensor:
        return self.width**2 * self.base.variance

    def entropy(self) -> Tensor:
        return (self.base.entropy() + math.log(self.width)).sum(-1)


class FactorisedCategorical(Distribution):
    """Π_k Categorical(π_k): `log_probs` (..., Σ nvec) holds every component's log-probabilities side by side."""

    arg_constraints: dict[str, constraints.Constraint] = {}

    def __init__(self, log_probs: Tensor, nvec: tuple[int, ...], validate_args: bool | None = False) -> None:
        if log_probs.shape[-1] != sum(nvec):
            raise ValueError(f"FactorisedCategorical: last axis {log_probs.shape[-1]} != sum(nvec) {sum(nvec)}")
        self.nvec = tuple(int(n) for n in nvec)
        self.log_probs = log_probs
        super().__init__(log_probs.shape[:-1], torch.Size([len(self.nvec)]), validate_args=validate_args)

    def parts(self) -> tuple[Tensor, ...]:
        return torch.split(self.log_probs, self.nvec, dim=-1)

    def _columns(self, value: Tensor) -> Tensor:
        idx = value.reshape(*value.shape[:-1], -1)[..., : len(self.nvec)].long()
        offsets = torch.as_tensor([0, *self.nvec[:-1]], device=value.device).cumsum(0)
        return idx + offsets

    def log_prob(self, value: Tensor) -> Tensor:
        return self.log_probs.gather(-1, self._columns(value)).sum(-1)

    def sample_with(self, generator: torch.Generator | None = None) -> Tensor:
        """One draw per component (rows of a 2-D batch), float columns; `generator` seeds the draw."""
        flat = [p.reshape(-1, p.shape[-1]) for p in self.parts()]
        idx = torch.cat([torch.multinomial(p.exp(), 1, generator=generator) for p in flat], dim=-1)
        return idx.reshape(*self.batch_shape, len(self.nvec)).to(self.log_probs.dtype)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        if sample_shape != torch.Size():
            raise ValueError("FactorisedCategorical.sample: only one draw per row (sample_shape=())")
        with torch.no_grad():
            return self.sample_with(None)

    @property
    def mode(self) -> Tensor:
        return torch.stack([p.argmax(-1) for p in self.parts()], dim=-1).to(self.log_probs.dtype)

    def entropy(self) -> Tensor:
        return -(self.log_probs.exp() * self.log_probs).sum(-1)


def kl(p: Distribution, q: Distribution) -> Tensor:
    """Exact KL(p ‖ q) per row (B,) for two distributions of the same family above (or diagonal Gaussians)."""
    if isinstance(p, TanhNormal) and isinstance(q, TanhNormal):
        # KL is invariant under the shared bijection y = c + h·tanh(u).
        return torch.distributions.kl_divergence(p.base, q.base).sum(-1)
    if isinstance(p, ScaledBeta) and isinstance(q, ScaledBeta):
        return torch.distributions.kl_divergence(p.base, q.base).sum(-1)
    if isinstance(p, FactorisedCategorical) and isinstance(q, FactorisedCategorical):
        return (p.log_probs.exp() * (p.log_probs - q.log_probs)).sum(-1)
    raise TypeError(f"kl: no exact KL between {type(p).__name__} and {type(q).__name__}")
