"""Behaviour policies that generate the logs, with exact action probabilities.

Each is a noisy version of the problem's production heuristic and logs how
likely its action was, which offline training and off-policy evaluation need:

* rank      fixed fusion weights (the spec's default) + truncated-normal noise on [0, 1]
            per weight → `log_density`
* slot      "insert the live stream at position 3 with probability p(predicted live watch time)",
            mixed with ε-uniform exploration over all 7 actions → `propensity`
* allocate  the static allocation, each component replaced by a uniform draw with
            probability ε → `propensity`

Interface (`LoggingPolicy`): `sample(obs) → (actions, probabilities)`,
`probability(obs, actions)` (the same quantity for any given actions, e.g. a
target policy's, for importance weights), `__call__(obs) → actions`, and
`probability_kind` ("propensity" or "log_density"). Each policy owns a numpy
Generator seeded at construction, so logs are reproducible.

Continuous density (rank). Clipping a Gaussian to [0, 1] would put point
masses on the bounds, where no density exists. The rank behaviour instead
draws each weight from a normal N(μ_j, σ²) truncated to [0, 1], by inverse
CDF: a_j = μ_j + σ·Φ⁻¹(Φ(α_j) + u·(Φ(β_j) − Φ(α_j))), α_j = −μ_j/σ,
β_j = (1 − μ_j)/σ, u ~ U(0, 1). Its log-density is exact:

    log π(a) = Σ_j [ log φ((a_j − μ_j)/σ) − log σ − log(Φ(β_j) − Φ(α_j)) ].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr, ndtri

from models.problems import ALLOCATE, RANK, SLOT, get_problem

FloatArray = npt.NDArray[np.float32]
ProbabilityKind = Literal["propensity", "log_density"]

# Field positions in the slot observation (spec order): the live candidate's
# predicted watch time / 60 s is the first of the last three entries.
_SLOT_LIVE_PREDICTION = SLOT.observation_slices()["live_candidate"].start


class LoggingPolicy(Protocol):
    """What `generate_logs` and OPE need from a policy that logs its probabilities."""

    problem: str
    probability_kind: ProbabilityKind

    def sample(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Actions for a batch of observations and their propensity / log-density, each with leading axis N."""
        ...

    def probability(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Propensity / log-density of the given actions, (N,)."""
        ...

    def __call__(self, obs: np.ndarray) -> np.ndarray: ...


def _check_obs(obs: np.ndarray, size: int, problem: str) -> np.ndarray:
    o = np.asarray(obs, dtype=np.float32)
    if o.ndim != 2 or o.shape[1] != size:
        raise ValueError(f"{problem} behaviour policy: observations must have shape (batch, {size}), got {o.shape}")
    return o


@dataclass
class RankBehaviour:
    """Truncated-normal fusion weights around fixed means (module docstring for the density)."""

    mean: tuple[float, ...] = RANK.default_action
    """μ: the 18 mean weights (3 stages × 6 signals), in [0, 1]."""
    sigma: float = 0.1
    """σ of every weight's (untruncated) normal."""
    seed: int = 0
    """Seed of the policy's own Generator."""
    problem: str = "rank"
    probability_kind: ProbabilityKind = "log_density"

    def __post_init__(self) -> None:
        mu = np.asarray(self.mean, dtype=np.float64)
        if mu.shape != (RANK.action.flat_size,) or mu.min() < 0.0 or mu.max() > 1.0:
            raise ValueError(f"RankBehaviour.mean: expected {RANK.action.flat_size} weights in [0, 1], got {self.mean}")
        if self.sigma <= 0:
            raise ValueError(f"RankBehaviour.sigma: must be > 0, got {self.sigma}")
        self._mu = mu
        self._alpha = (0.0 - mu) / self.sigma
        self._beta = (1.0 - mu) / self.sigma
        self._cdf_low = ndtr(self._alpha)
        self._mass = ndtr(self._beta) - self._cdf_low
        self._log_norm = float(np.sum(np.log(self._mass)) + mu.size * np.log(self.sigma))
        self.rng = np.random.default_rng(self.seed)

    def sample(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = _check_obs(obs, RANK.observation_size, "rank").shape[0]
        u = self.rng.random((n, self._mu.size))
        z = ndtri(self._cdf_low + u * self._mass)
        # The clip only guards float round-off at the bounds. The density is of the
        # float32 action as logged, so it matches `probability` on the logs exactly.
        actions = np.clip(self._mu + self.sigma * z, 0.0, 1.0).astype(np.float32)
        return actions, self._log_density(actions)

    def _log_density(self, actions: np.ndarray) -> np.ndarray:
        z = (np.asarray(actions, dtype=np.float64) - self._mu) / self.sigma
        out: np.ndarray = (-0.5 * z * z - 0.5 * np.log(2.0 * np.pi)).sum(axis=1) - self._log_norm
        return out

    def probability(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self._mu.size:
            raise ValueError(f"RankBehaviour.probability: actions must have shape (batch, 18), got {a.shape}")
        out = self._log_density(a)
        outside = (a < 0.0).any(axis=1) | (a > 1.0).any(axis=1)
        return np.where(outside, -np.inf, out)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.sample(obs)[0]


@dataclass
class SlotBehaviour:
    """Insert at `position` with probability σ((predicted live watch/60 − threshold)/temperature), ε-uniform mixed."""

    threshold: float = 5.0
    """Predicted live watch time / 60 s at which the insert probability is ½ (calibrated: docs/simulators.md)."""
    temperature: float = 0.4
    """Softness of the threshold, same unit."""
    position: int = 3
    """Where the heuristic inserts."""
    epsilon: float = 0.05
    """Share of uniform exploration over all actions."""
    seed: int = 0
    problem: str = "slot"
    probability_kind: ProbabilityKind = "propensity"

    def __post_init__(self) -> None:
        n = SLOT.action.n  # type: ignore[union-attr]
        if not 1 <= self.position < n:
            raise ValueError(f"SlotBehaviour.position: must be in 1..{n - 1}, got {self.position}")
        if not 0.0 < self.epsilon <= 1.0:
            raise ValueError(
                f"SlotBehaviour.epsilon: must be in (0, 1] so every action has a propensity, got {self.epsilon}"
            )
        if self.temperature <= 0:
            raise ValueError(f"SlotBehaviour.temperature: must be > 0, got {self.temperature}")
        self.rng = np.random.default_rng(self.seed)

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        """π(a | obs) for every action, (N, 7)."""
        o = _check_obs(obs, SLOT.observation_size, "slot")
        n_actions = SLOT.action.n  # type: ignore[union-attr]
        p_insert = 1.0 / (1.0 + np.exp(-(o[:, _SLOT_LIVE_PREDICTION] - self.threshold) / self.temperature))
        probs = np.full((o.shape[0], n_actions), self.epsilon / n_actions)
        probs[:, 0] += (1.0 - self.epsilon) * (1.0 - p_insert)
        probs[:, self.position] += (1.0 - self.epsilon) * p_insert
        return probs

    def sample(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs = self.action_probabilities(obs)
        u = self.rng.random((probs.shape[0], 1))
        actions = (u > np.cumsum(probs, axis=1)).sum(axis=1).clip(0, probs.shape[1] - 1)
        return actions.astype(np.int64), probs[np.arange(probs.shape[0]), actions]

    def probability(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        probs = self.action_probabilities(obs)
        a = np.asarray(actions, dtype=np.int64).reshape(-1)
        return probs[np.arange(probs.shape[0]), a]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.sample(obs)[0]


@dataclass
class AllocateBehaviour:
    """The static allocation; each component independently replaced by a uniform draw with probability ε."""

    static: tuple[float, ...] = ALLOCATE.default_action
    """The static joint action (spec order)."""
    epsilon: float = 0.2
    """Per-component exploration probability."""
    seed: int = 0
    problem: str = "allocate"
    probability_kind: ProbabilityKind = "propensity"

    def __post_init__(self) -> None:
        self._nvec = np.asarray(ALLOCATE.action.nvec)  # type: ignore[union-attr]
        self._static = np.asarray(self.static, dtype=np.int64)
        if self._static.shape != self._nvec.shape or (self._static < 0).any() or (self._static >= self._nvec).any():
            raise ValueError(
                f"AllocateBehaviour.static: expected components within nvec {tuple(self._nvec)}, got {self.static}"
            )
        if not 0.0 < self.epsilon <= 1.0:
            raise ValueError(f"AllocateBehaviour.epsilon: must be in (0, 1], got {self.epsilon}")
        self.rng = np.random.default_rng(self.seed)

    def sample(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = _check_obs(obs, ALLOCATE.observation_size, "allocate").shape[0]
        explore = self.rng.random((n, self._nvec.size)) < self.epsilon
        uniform = (self.rng.random((n, self._nvec.size)) * self._nvec).astype(np.int64)
        actions = np.where(explore, uniform, self._static[None, :])
        return actions, self.probability(obs, actions)

    def probability(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, dtype=np.int64)
        per_component = self.epsilon / self._nvec + (1.0 - self.epsilon) * (a == self._static[None, :])
        out: np.ndarray = np.prod(per_component, axis=1)
        return out

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.sample(obs)[0]


def behaviour_policy(problem: str, seed: int = 0, **params: Any) -> RankBehaviour | SlotBehaviour | AllocateBehaviour:
    """The behaviour policy of a problem; `params` override its fields (e.g. sigma=0.05, epsilon=0.1)."""
    spec = get_problem(problem)
    cls: type[RankBehaviour] | type[SlotBehaviour] | type[AllocateBehaviour] = {
        "rank": RankBehaviour,
        "slot": SlotBehaviour,
        "allocate": AllocateBehaviour,
    }[spec.name]
    return cls(seed=seed, **params)


def constant_policy(problem: str, action: Any) -> Any:
    """A deterministic policy that always takes `action` (flat, spec order): reference points for tests and docs."""
    spec = get_problem(problem)
    a = np.asarray(action, dtype=np.float32).reshape(-1)
    if a.shape != (spec.action.flat_size,):
        raise ValueError(
            f"constant_policy({problem!r}): action must have {spec.action.flat_size} entries, got {a.shape}"
        )

    def policy(obs: np.ndarray) -> np.ndarray:
        n = np.asarray(obs).shape[0]
        if spec.action.kind == "box":
            return np.tile(a, (n, 1))
        ints = a.astype(np.int64)
        return np.full(n, ints[0]) if spec.action.kind == "discrete" else np.tile(ints, (n, 1))

    return policy
