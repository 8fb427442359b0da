"""MaRCA on the `allocate` request path: the shipped cost table and the factorised decision a_k = argmax S_k − λ·C_k.

A MaRCA version in the registry holds model.onnx (observation → `action_scores`
(1, Σ A_k): each agent's mixer-slope-weighted Q in cents, agents in cascade
order; training/algorithms/marca_export.py), cost_table.json (the AutoBucket
table, sha256-checked with the other files) and optionally load_model.json (the
balancer's load model). This module reads the table and decides:

    a_k = argmax_j  S_k(s, j) − λ · C_k(bin(v), j) · max(0, 1 + κ(ℓ − 1))

with v the request value (cents), ℓ the lagged system load, κ the table's
contention slope, λ the balancer's multiplier (serving/allocate_balancer.py).
Exploration and propensities are today's (serving/exploration.py): each agent's
choice is sampled from its adjusted scores with the arm's temperature/ε, and
the logged propensity is the product over agents.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import RegistryError
from models.observations import allocate_observation_one
from models.problems import ALLOCATE, DiscreteAction, MultiDiscreteAction
from serving.errors import InferenceError
from serving.exploration import _MIN_PROB, ExplorationConfig  # the same propensity floor as the generic sampler
from serving.policies import AllocateInputs, Decision, Scorer, allocation_details

COST_FILE = "cost_table.json"
LOAD_MODEL_FILE = "load_model.json"
COST_KIND = "marca_autobucket_cost"


def _agent_sizes() -> tuple[tuple[int, ...], ...]:
    """Each allocate agent's action components (models/problems.py), e.g. retrieval (2, 2, 2)."""
    out = []
    for agent in ALLOCATE.agents:
        action = agent.action
        out.append((action.n,) if isinstance(action, DiscreteAction) else tuple(action.nvec))  # type: ignore[union-attr]
    return tuple(out)


AGENT_NAMES = tuple(a.name for a in ALLOCATE.agents)
AGENT_SIZES = _agent_sizes()
AGENT_ACTIONS = tuple(int(np.prod(s)) for s in AGENT_SIZES)
_N_SCORES = sum(AGENT_ACTIONS)
assert isinstance(ALLOCATE.action, MultiDiscreteAction)


@dataclass(frozen=True)
class MarcaCostTable:
    """C_k(bin, j) per agent (cascade order), value-bin edges (cents), base cost, contention κ."""

    value_bin_edges: tuple[float, ...]
    per_agent: tuple[np.ndarray, ...]  # agent k: (bins, A_k)
    base_cost: float
    contention: float

    def __post_init__(self) -> None:
        # Per value bin, every agent's costs concatenated as one Python list: the request path does a
        # handful of float operations per action, where numpy's per-call overhead would dominate.
        flat = [[float(c) for t in self.per_agent for c in t[b]] for b in range(len(self.value_bin_edges) + 1)]
        object.__setattr__(self, "_flat", flat)

    @classmethod
    def from_json(cls, data: Any, source: str = COST_FILE) -> MarcaCostTable:
        def bad(field: str, why: str) -> RegistryError:
            return RegistryError(f"{source}: {field} {why}")

        if not isinstance(data, dict) or data.get("kind") != COST_KIND:
            raise bad("kind", f"must be {COST_KIND!r}")
        if tuple(data.get("agents", ())) != AGENT_NAMES:
            raise bad("agents", f"must be {list(AGENT_NAMES)}, got {data.get('agents')!r}")
        edges = tuple(float(e) for e in data.get("value_bin_edges", ()))
        if any(b < a for a, b in zip(edges, edges[1:], strict=False)) or not all(map(math.isfinite, edges)):
            raise bad("value_bin_edges", "must be finite and non-decreasing")
        tables = []
        for name, n in zip(AGENT_NAMES, AGENT_ACTIONS, strict=True):
            arr = np.asarray(data.get("stage_costs", {}).get(name, []), dtype=np.float64)
            if arr.shape != (len(edges) + 1, n) or not np.isfinite(arr).all():
                raise bad(f"stage_costs.{name}", f"must be {len(edges) + 1} finite rows of {n}, got shape {arr.shape}")
            tables.append(arr)
        base, kappa = float(data.get("base_cost", float("nan"))), float(data.get("contention", float("nan")))
        if not (math.isfinite(base) and math.isfinite(kappa)):
            raise bad("base_cost/contention", "must be finite numbers")
        return cls(edges, tuple(tables), base, kappa)

    @classmethod
    def load(cls, path: Path) -> MarcaCostTable:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{path}: cannot read the cost table: {exc}") from None
        return cls.from_json(data, str(path))

    def flat_costs(self, request_value: float) -> list[float]:
        """C_k(bin(v), ·) of every agent, concatenated in cascade order, at mean traffic (no contention)."""
        b = 0
        for edge in self.value_bin_edges:  # a handful of edges: a loop beats np.searchsorted per call
            if request_value >= edge:
                b += 1
        flat: list[float] = self._flat[b]  # type: ignore[attr-defined]
        return flat

    def contention_factor(self, system_load: float) -> float:
        return max(0.0, 1.0 + self.contention * (system_load - 1.0))

    def costs(self, request_value: float, system_load: float) -> list[list[float]]:
        """C_k(bin(v), ·) × contention factor, per agent."""
        flat, factor = self.flat_costs(request_value), self.contention_factor(system_load)
        out, start = [], 0
        for n in AGENT_ACTIONS:
            out.append([c * factor for c in flat[start : start + n]])
            start += n
        return out

    def joint_cost(self, agent_actions: list[int], request_value: float, system_load: float) -> float:
        """Ĉ(s, a): base + Σ_k C_k(a_k), times the contention factor."""
        flat, total, start = self.flat_costs(request_value), self.base_cost, 0
        for n, a in zip(AGENT_ACTIONS, agent_actions, strict=True):
            total += flat[start + a]
            start += n
        return total * self.contention_factor(system_load)


# Agent action → its components of the joint action (mixed radix), precomputed for the request path.
_COMPONENTS: tuple[tuple[tuple[int, ...], ...], ...] = tuple(
    tuple(tuple(int(x) for x in np.unravel_index(a, sizes)) for a in range(int(np.prod(sizes))))
    for sizes in AGENT_SIZES
)


def to_joint(agent_actions: list[int]) -> list[int]:
    """Agent action indices (mixed radix, cascade order) → the joint action's 6 components."""
    out: list[int] = []
    for k, a in enumerate(agent_actions):
        out.extend(_COMPONENTS[k][a])
    return out


def sample_adjusted(
    scores: list[float], costs: list[float], scale: float, cfg: ExplorationConfig, rng: np.random.Generator
) -> tuple[list[int], float]:
    """Each agent's choice from S_k − scale·C_k with the arm's temperature/ε, and the product of their probabilities.

    The same distribution, draws and propensity as
    `sample_multi_discrete(np.asarray([s − scale·c ...]), AGENT_ACTIONS, cfg, rng)`
    (one uniform per agent, in cascade order, none when greedy), fused into two
    passes per agent (exp, then the inverse-CDF walk) instead of the generic
    path's six list passes and two array round trips: sampling was the largest
    share of the decide function's own CPU (~45 of ~85 µs on the shared host).
    Ours: the generic path renormalises after the ε mix (a division by a sum
    that is 1 up to rounding); this one does not, so a probability can differ
    from it in the last bit (tests/unit/test_allocate_marca.py checks ≤ 1e-12
    and identical actions).
    """
    t, eps = cfg.temperature, cfg.epsilon
    greedy = t == 0.0 and eps == 0.0
    draws = [0.0] * len(AGENT_ACTIONS) if greedy else rng.random(len(AGENT_ACTIONS)).tolist()
    actions: list[int] = []
    propensity, start = 1.0, 0
    for n, u in zip(AGENT_ACTIONS, draws, strict=True):
        z = [s - scale * c for s, c in zip(scores[start : start + n], costs[start : start + n], strict=True)]
        start += n
        top = max(z)
        if t == 0.0:
            best = z.index(top)  # first maximum, like np.argmax
            if eps == 0.0:
                actions.append(best)
                continue  # probability 1
            e = [0.0] * n
            e[best] = 1.0
            inv_total = 1.0
        else:
            e = [math.exp((v - top) / t) for v in z]
            inv_total = 1.0 / sum(e)
        keep, share = 1.0 - eps, eps / n
        a, acc, p = n - 1, 0.0, 0.0
        for j, ej in enumerate(e):
            p = keep * ej * inv_total + share
            acc += p
            if acc > u:
                a = j
                break
        else:
            p = keep * e[a] * inv_total + share  # rounding left the cumulative sum just under u
        actions.append(a)
        propensity *= max(p, _MIN_PROB)
    return actions, max(propensity, _MIN_PROB)


async def decide_allocate_marca(
    x: AllocateInputs,
    scorer: Scorer,
    table: MarcaCostTable,
    lam: float,
    cfg: ExplorationConfig,
    rng: np.random.Generator,
) -> Decision:
    obs = allocate_observation_one(
        x.request_value,
        x.system_load,
        x.budget_utilisation,
        x.hour_of_day,
        x.user_activity_group,
        x.user_history_length,
        x.entry_point,
    )[None, :]
    scores = (await scorer(None, obs))["action_scores"][0]
    if scores.shape[0] != _N_SCORES:
        raise InferenceError(f"allocate/marca: action_scores has {scores.shape[0]} entries, expected {_N_SCORES}")
    scale = lam * table.contention_factor(x.system_load)
    agent_actions, propensity = sample_adjusted(scores.tolist(), table.flat_costs(x.request_value), scale, cfg, rng)
    choice = to_joint(agent_actions)
    details = allocation_details(choice)
    details["estimated_cost"] = round(table.joint_cost(agent_actions, x.request_value, x.system_load), 6)
    details["lambda"] = lam
    return Decision(
        action=[float(a) for a in choice],
        observation=obs[0].tolist(),
        propensity=propensity,
        details=details,
    )
