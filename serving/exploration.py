"""Exploration: turn a policy's output into an action and the probability of taking it.

Every logged decision carries what off-policy evaluation needs:

* **Discrete** (`slot`): probabilities p = (1 − ε)·softmax(logits / τ) + ε / n
  (τ = temperature, ε = epsilon). The action is sampled from p and
  `propensity = p[action]`. Greedy (τ = 0 and ε = 0) takes the argmax with
  propensity 1.
* **Multi-discrete** (`allocate`): the same rule applied to each component's
  slice of `action_scores`, sampled independently; the logged propensity is the
  product of the component probabilities (components are independent given
  the observation).
* **Continuous** (`rank` fusion weights): a ~ N(μ, σ²) per entry with
  σ = std_scale · exp(log_std) (or `fixed_std` when set), then clipped to the
  action box [low, high]. The logged `log_density` is the log-density of the
  *clipped* action under the clipped Gaussian, taken with respect to
  Lebesgue measure inside the box plus a point mass at each bound: an entry
  strictly inside contributes log φ((a − μ)/σ) − log σ; an entry clipped to the
  low (high) bound contributes log Φ((low − μ)/σ) (log(1 − Φ((high − μ)/σ))).
  Two policies that clip to the same box share that base measure, so the
  ratio exp(log_density_new − log_density_logged) is a valid importance
  weight. Greedy (std_scale = 0) logs log_density = 0: the action is a point
  mass of probability 1.
* **Fallback** decisions are deterministic: propensity 1 (discrete) or
  log_density 0 (continuous).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import log_ndtr

FloatArray = npt.NDArray[np.float32]
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
# Probabilities are floored so a logged propensity is never exactly 0 (OPE divides by it).
_MIN_PROB = 1e-12


class ExplorationConfig(BaseModel):
    """How one arm explores. Unused fields are ignored by problems they do not apply to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(1.0, ge=0.0, description="softmax temperature τ for discrete choices; 0 = argmax")
    epsilon: float = Field(0.0, ge=0.0, le=1.0, description="ε of ε-greedy mixing with the uniform distribution")
    std_scale: float = Field(
        1.0, ge=0.0, description="multiplies exp(log_std) of continuous actions; 0 = deterministic mean"
    )
    fixed_std: float | None = Field(None, gt=0.0, description="σ for continuous actions instead of the model's")

    @model_validator(mode="after")
    def _fixed_std_needs_scale(self) -> ExplorationConfig:
        if self.fixed_std is not None and self.std_scale == 0.0:
            raise ValueError("fixed_std has no effect with std_scale = 0; drop one of them")
        return self

    @property
    def greedy_discrete(self) -> bool:
        return self.temperature == 0.0 and self.epsilon == 0.0


def discrete_probabilities(logits: FloatArray, cfg: ExplorationConfig) -> npt.NDArray[np.float64]:
    """logits (n,) → the sampling distribution (n,), float64, sums to 1."""
    z = np.asarray(logits, dtype=np.float64)
    n = z.shape[0]
    if cfg.temperature == 0.0:
        base = np.zeros(n)
        base[int(np.argmax(z))] = 1.0
    else:
        z = z / cfg.temperature
        z = z - z.max()
        e = np.exp(z)
        base = e / e.sum()
    p = (1.0 - cfg.epsilon) * base + cfg.epsilon / n
    out: npt.NDArray[np.float64] = p / p.sum()
    return out


def _probabilities(z: list[float], cfg: ExplorationConfig) -> list[float]:
    """`discrete_probabilities` on Python floats, for the request path.

    A decision has at most a handful of choices per component; at that size
    numpy's per-call overhead (~1–2 µs per op, a dozen ops) is most of the cost,
    while plain float arithmetic takes well under a microsecond. Same formula,
    same float64 precision; sums may differ from numpy's in the last bit.
    """
    n = len(z)
    t = cfg.temperature
    if t == 0.0:
        base = [0.0] * n
        base[z.index(max(z))] = 1.0  # first maximum, like np.argmax
    else:
        if t != 1.0:  # v / 1.0 == v: skipping the division changes no bit
            z = [v / t for v in z]
        top = max(z)
        base = [math.exp(v - top) for v in z]
        total = sum(base)
        base = [v / total for v in base]
    eps = cfg.epsilon
    if eps != 0.0:  # with ε = 0, (1 − ε)·b + ε/n == b exactly
        keep, share = 1.0 - eps, eps / n
        base = [keep * b + share for b in base]
    total = sum(base)
    return [v / total for v in base]


def _sample(z: list[float], cfg: ExplorationConfig, u: float) -> tuple[int, float]:
    """One choice from logits `z` with the uniform draw `u` (unused when greedy)."""
    p = _probabilities(z, cfg)
    if cfg.greedy_discrete:
        a = p.index(max(p))
    else:
        # Inverse-CDF sampling with one uniform draw (as np.searchsorted(cumsum, u, "right")).
        a, acc = 0, 0.0
        for a, v in enumerate(p):  # noqa: B007 — a is the answer after the loop
            acc += v
            if acc > u:
                break
        else:
            a = len(p) - 1  # rounding left the cumulative sum just under u
    return a, max(p[a], _MIN_PROB)


def sample_discrete(logits: FloatArray, cfg: ExplorationConfig, rng: np.random.Generator) -> tuple[int, float]:
    """(action, propensity) for one discrete choice."""
    return _sample(np.asarray(logits, dtype=np.float64).tolist(), cfg, 0.0 if cfg.greedy_discrete else rng.random())


def sample_multi_discrete(
    scores: FloatArray, nvec: tuple[int, ...], cfg: ExplorationConfig, rng: np.random.Generator
) -> tuple[list[int], float]:
    """scores (Σ nvec,) → (one choice per component, product of their probabilities)."""
    if scores.shape[0] != sum(nvec):
        raise ValueError(f"action_scores: expected {sum(nvec)} entries for nvec {nvec}, got {scores.shape[0]}")
    flat = np.asarray(scores, dtype=np.float64).tolist()
    # One draw per component, in component order: rng.random(k) yields the same
    # numbers as k calls of rng.random(), for a fraction of the per-call cost.
    draws = [0.0] * len(nvec) if cfg.greedy_discrete else rng.random(len(nvec)).tolist()
    actions: list[int] = []
    propensity = 1.0
    start = 0
    for n, u in zip(nvec, draws, strict=True):
        a, p = _sample(flat[start : start + n], cfg, u)
        actions.append(a)
        propensity *= p
        start += n
    return actions, max(propensity, _MIN_PROB)


def _log_norm_cdf(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """log Φ(x), accurate in the lower tail."""
    return np.asarray(log_ndtr(x), dtype=np.float64)


def clipped_gaussian_log_density(
    action: npt.NDArray[np.float64],
    mean: npt.NDArray[np.float64],
    std: npt.NDArray[np.float64],
    low: float,
    high: float,
) -> float:
    """Σ over entries of the clipped-Gaussian log-density defined in the module docstring."""
    a = np.asarray(action, dtype=np.float64)
    mu = np.asarray(mean, dtype=np.float64)
    sigma = np.asarray(std, dtype=np.float64)
    at_low = a <= low
    at_high = a >= high
    inside = ~(at_low | at_high)
    total = 0.0
    if inside.any():
        z = (a[inside] - mu[inside]) / sigma[inside]
        total += float(np.sum(-0.5 * z * z - _LOG_SQRT_2PI - np.log(sigma[inside])))
    if at_low.any():
        total += float(np.sum(_log_norm_cdf((low - mu[at_low]) / sigma[at_low])))
    if at_high.any():
        # 1 − Φ(x) = Φ(−x)
        total += float(np.sum(_log_norm_cdf(-(high - mu[at_high]) / sigma[at_high])))
    return total


@dataclass(frozen=True)
class ContinuousSample:
    action: npt.NDArray[np.float64]
    log_density: float


def sample_box(
    mean: FloatArray,
    log_std: FloatArray,
    low: float,
    high: float,
    cfg: ExplorationConfig,
    rng: np.random.Generator,
) -> ContinuousSample:
    """Sample a clipped Gaussian around the policy mean; greedy when std_scale = 0."""
    mu = np.asarray(mean, dtype=np.float64)
    if cfg.std_scale == 0.0:
        return ContinuousSample(np.clip(mu, low, high), 0.0)
    mu_l: list[float] = mu.tolist()
    if cfg.fixed_std is not None:
        sigma_l = [cfg.fixed_std * cfg.std_scale] * len(mu_l)
    else:
        # log_std is clamped as in the usual Gaussian policy heads (SAC/PPO), so a
        # degenerate export cannot produce σ = 0 or ∞.
        sigma_l = (cfg.std_scale * np.exp(np.clip(np.asarray(log_std, dtype=np.float64), -20.0, 2.0))).tolist()
    # rng.normal(mu, sigma) draws mu + sigma · z, z from standard_normal, entry by entry:
    # the same draws and the same values as here, without its broadcasting machinery
    # (a few µs per call, three calls per rank decision). min/max is np.clip.
    z = rng.standard_normal(len(mu_l)).tolist()
    action = [min(max(m + s * v, low), high) for m, s, v in zip(mu_l, sigma_l, z, strict=True)]
    return ContinuousSample(np.array(action), _small_clipped_log_density(action, mu_l, sigma_l, low, high))


def _small_clipped_log_density(
    action: list[float], mean: list[float], std: list[float], low: float, high: float
) -> float:
    """`clipped_gaussian_log_density` on Python floats, for the request path's six-entry actions.

    Three boolean masks and their reductions cost ~60 µs per stage in numpy at
    this size; the loop costs a few. Same terms; the sum's order (entry order
    instead of grouped by mask) can change the last bit.
    """
    total = 0.0
    for a, mu, sigma in zip(action, mean, std, strict=True):
        if a <= low:
            total += float(log_ndtr((low - mu) / sigma))
        elif a >= high:
            total += float(log_ndtr(-(high - mu) / sigma))  # 1 − Φ(x) = Φ(−x)
        else:
            z = (a - mu) / sigma
            total += -0.5 * z * z - _LOG_SQRT_2PI - math.log(sigma)
    return total
