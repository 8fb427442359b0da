"""MaRCA's AutoBucket cost model for `allocate`: load-test buckets of replayed traffic, fit a monotone cost table.

Paper: MaRCA (JD, arXiv 2512.24325) — AutoBucket TestBench: predict the action's
result (e.g. the queue length), bucket replayed traffic by request value × that
result, load-test each bucket at a fixed QPS, map the measurements to cost with
a monotone regression; C(s, a) = Ĉ(s, a) + f(degradation level).

How it is done here (ours where the paper leaves it open)
* The action's result: in this world an allocation's result is known before the
  request runs — the channels switched on, the pre-rank queue length L_pre, the
  rank queue length L_rank and the model tier (models/problems.py). Each cascade
  stage is one agent of training/algorithms/marca.py, so the table is per stage.
* Buckets: request value quantile (`value_bins`) × stage result. Replayed traffic
  is a day of the simulator's requests (`replay_requests`).
* Load test (differential, ours): a bucket's requests are sent through the
  simulator's own step (`BatchedAllocateSim.step`, its cost function with its
  cost noise) at a fixed traffic level with the stage under test set to the
  bucket's result and every other stage at the cheapest action; the cheapest
  joint action is measured on the same requests and noise draws (common random
  numbers) and subtracted. So C_stage(result) is the stage's extra compute, and
  the cheapest joint action's cost is a base term carried by the first stage:
  Ĉ(a) = base + Σ_stage C_stage(a_stage) (the simulator's cost is additive over
  stages; `tests/unit/test_marca_cost.py` checks the sum).
* Monotone regression: isotonic (pool-adjacent-violators, weighted by bucket
  size) of cost on queue length — pre-rank cost on L_pre; rank cost on L_rank
  within each model tier. Retrieval channels are a set, not an ordered length,
  and are kept as measured.
* Contention: the same load test at a second traffic level gives the slope κ̂ of
  cost per unit of traffic above the mean (the simulator's 1 + κ(ℓ − 1)).
* f(degradation): not modelled (deviation): in this world degradation under
  overload costs quality (revenue), not compute, and the revenue side already
  sees it through the Q-values.
* Export: a JSON table the server can read (`save` / `load`): value-bin edges,
  per stage and value bin the cost of each agent action, the base, κ̂, and the
  test's settings. `to_cost_table()` gives training/algorithms/marca.py's
  `CostTable` (the value bins averaged with their bucket weights: in this world
  cost does not depend on the request's value, and the table shows it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.algorithms.marca import STAGE_SPLIT, AgentSplit, CostTable
from training.envs.allocate import NVEC, AllocateConfig, BatchedAllocateSim

FORMAT_VERSION = 1


def isotonic_increasing(values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares non-decreasing fit of `values` (M,) in their given order (pool adjacent violators)."""
    y = np.asarray(values, np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, np.float64)
    if y.ndim != 1 or w.shape != y.shape or (w <= 0).any():
        raise ValueError(
            f"isotonic_increasing: values (M,) with positive weights (M,) expected, got {y.shape}, {w.shape}"
        )
    blocks: list[list[float]] = []  # [mean, weight, count]
    for yi, wi in zip(y, w, strict=True):
        blocks.append([yi, wi, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.concatenate([np.full(int(c), m) for m, _, c in blocks])


@dataclass(frozen=True)
class Requests:
    """Replayed requests: the features the simulator's step reads."""

    value: np.ndarray
    group: np.ndarray
    history_length: np.ndarray
    entry_point: np.ndarray


def replay_requests(config: AllocateConfig, n_per_interval: int, intervals: int, seed: int) -> Requests:
    """`intervals` intervals of the simulator's arrivals (what the data plane's logs replay)."""
    sim = BatchedAllocateSim(n_per_interval, config, seed, autoreset=True)
    sim.reset(seed)
    parts: dict[str, list[np.ndarray]] = {"value": [], "group": [], "history_length": [], "entry_point": []}
    cheapest = np.zeros((n_per_interval, len(NVEC)), np.int64)
    for _ in range(intervals):
        parts["value"].append(sim.request_value.copy())
        parts["group"].append(sim.user_group.copy())
        parts["history_length"].append(sim.history_length.copy())
        parts["entry_point"].append(sim.entry_point.copy())
        sim.step(cheapest)
    return Requests(*(np.concatenate(parts[k]) for k in ("value", "group", "history_length", "entry_point")))


def load_test(config: AllocateConfig, requests: Requests, actions: np.ndarray, traffic: float, seed: int) -> float:
    """Mean compute cost of `requests` taking `actions` (M, 6) in the simulator at a fixed traffic level.

    The simulator is put at the test's operating point — traffic ℓ fixed, no backlog — and stepped once
    with the requests as its interval's arrivals; `seed` fixes the cost-noise draws (common random numbers).
    """
    n = requests.value.shape[0]
    sim = BatchedAllocateSim(n, config, seed, autoreset=False)
    sim.reset(seed)
    sim.traffic, sim.backlog = float(traffic), 0.0
    sim.request_value = requests.value.astype(np.float32)
    sim.user_group = requests.group.astype(np.int64)
    sim.history_length = requests.history_length.astype(np.float32)
    sim.entry_point = requests.entry_point.astype(np.int64)
    _, rewards, _, _ = sim.step(actions)
    return float(rewards["compute_cost"].mean())


@dataclass(frozen=True)
class AutoBucketCostModel:
    """The fitted table: cost per value bin and agent action, per stage; base cost; contention slope κ̂."""

    agents: tuple[str, ...]
    value_bin_edges: tuple[float, ...]
    """Inner edges of the request-value bins (len = bins − 1), cents."""
    bucket_weights: tuple[float, ...]
    """Share of replayed requests in each value bin."""
    stage_costs: dict[str, list[list[float]]]
    """agent → [value bin][agent action] compute units at mean traffic, the stage's extra over its cheapest action."""
    base_cost: float
    """Compute units of the cheapest joint action at mean traffic (carried by the first stage in `to_cost_table`)."""
    contention: float
    """κ̂: relative cost rise per unit of traffic above the mean."""
    measured_at_traffic: tuple[float, float]

    def value_bin(self, value: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.value_bin_edges), np.asarray(value), side="right")

    def joint_cost(
        self, actions: np.ndarray, value: np.ndarray | None = None, split: AgentSplit = STAGE_SPLIT
    ) -> np.ndarray:
        """Ĉ(s, a) at mean traffic for joint actions (M, 6) of requests worth `value` (M,) (default: bin-averaged)."""
        agent = split.to_agent_actions(np.asarray(actions, np.int64))
        if value is None:
            table = self.to_cost_table(split)
            return sum((t[agent[:, i]] for i, t in enumerate(table.per_agent)), np.zeros(agent.shape[0]))
        bins = self.value_bin(value)
        out = np.full(agent.shape[0], self.base_cost)
        for i, name in enumerate(split.names):
            out += np.asarray(self.stage_costs[name])[bins, agent[:, i]]
        return out

    def to_cost_table(self, split: AgentSplit = STAGE_SPLIT) -> CostTable:
        """marca.CostTable: per stage the bucket-weighted mean over value bins; the base on the first stage."""
        if tuple(split.names) != self.agents:
            raise ValueError(f"AutoBucketCostModel: fitted for agents {self.agents}, asked for {split.names}")
        w = np.asarray(self.bucket_weights)
        per_agent = [w @ np.asarray(self.stage_costs[name]) for name in self.agents]
        per_agent[0] = per_agent[0] + self.base_cost
        return CostTable(tuple(per_agent), self.contention)

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"format_version": FORMAT_VERSION, "kind": "marca_autobucket_cost", **asdict(self)}))
        return path

    @classmethod
    def load(cls, path: Path) -> AutoBucketCostModel:
        data: dict[str, Any] = json.loads(Path(path).read_text())
        if data.pop("kind", None) != "marca_autobucket_cost" or data.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f"{path}: not a MaRCA AutoBucket cost table (format {FORMAT_VERSION})")
        return cls(
            agents=tuple(data["agents"]),
            value_bin_edges=tuple(data["value_bin_edges"]),
            bucket_weights=tuple(data["bucket_weights"]),
            stage_costs={k: [list(r) for r in v] for k, v in data["stage_costs"].items()},
            base_cost=float(data["base_cost"]),
            contention=float(data["contention"]),
            measured_at_traffic=(float(data["measured_at_traffic"][0]), float(data["measured_at_traffic"][1])),
        )


def _stage_grid(split: AgentSplit, stage: int) -> np.ndarray:
    sizes = split.sizes[stage]
    return np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1)


def _monotone_stage(name: str, costs: np.ndarray, weight: float) -> np.ndarray:
    """Isotonic in queue length: pre_rank over L_pre; rank over L_rank within each tier; retrieval as measured."""
    if name == "pre_rank":
        return isotonic_increasing(costs, np.full(costs.shape, weight))
    if name == "rank":  # agent action = L_rank index × tiers + tier (mixed radix, rank queue first)
        tiers = NVEC[5]
        out = costs.copy()
        for tier in range(tiers):
            idx = np.arange(tier, costs.shape[0], tiers)
            out[idx] = isotonic_increasing(costs[idx], np.full(idx.shape, weight))
        return out
    return costs


def fit_autobucket(
    config: AllocateConfig,
    *,
    value_bins: int = 4,
    replay_intervals: int = 8,
    requests_per_interval: int = 256,
    traffic_levels: tuple[float, float] = (1.0, 1.5),
    seed: int = 0,
) -> AutoBucketCostModel:
    """Replay traffic, bucket it by value × each stage's result, load-test every bucket, fit the monotone table."""
    if value_bins < 1 or replay_intervals < 1 or requests_per_interval < value_bins:
        raise ValueError("fit_autobucket: value_bins, replay_intervals >= 1 and requests_per_interval >= value_bins")
    if not traffic_levels[1] > traffic_levels[0] > 0:
        raise ValueError(
            f"fit_autobucket.traffic_levels: two increasing positive levels expected, got {traffic_levels}"
        )
    split = STAGE_SPLIT
    replay = replay_requests(config, requests_per_interval, replay_intervals, seed)
    edges = np.quantile(replay.value, np.linspace(0, 1, value_bins + 1)[1:-1])
    bins = np.searchsorted(edges, replay.value, side="right")
    weights = np.bincount(bins, minlength=value_bins) / bins.shape[0]
    cheapest = np.zeros(len(NVEC), np.int64)
    stage_costs: dict[str, list[list[float]]] = {}
    base_by_bin = np.zeros(value_bins)
    for b in range(value_bins):
        bucket = Requests(*(getattr(replay, f)[bins == b] for f in ("value", "group", "history_length", "entry_point")))
        m = bucket.value.shape[0]
        base = load_test(config, bucket, np.tile(cheapest, (m, 1)), traffic_levels[0], seed + b)
        base_by_bin[b] = base
        for k, name in enumerate(split.names):
            grid = _stage_grid(split, k)
            measured = np.zeros(grid.shape[0])
            for j, result in enumerate(grid):
                actions = np.tile(cheapest, (m, 1))
                actions[:, split.components[k]] = result
                measured[j] = load_test(config, bucket, actions, traffic_levels[0], seed + b) - base
            stage_costs.setdefault(name, []).append(_monotone_stage(name, measured, float(m)).tolist())
    # κ̂ from the most expensive action measured at both traffic levels on the same requests and noise
    dearest = np.asarray([k - 1 for k in NVEC], np.int64)
    at = [load_test(config, replay, np.tile(dearest, (replay.value.shape[0], 1)), lvl, seed) for lvl in traffic_levels]
    # at[1] / at[0] = r = (1 + κ(ℓ₁ − 1)) / (1 + κ(ℓ₀ − 1))  ⇒  κ = (r − 1) / ((ℓ₁ − 1) − r(ℓ₀ − 1))
    ratio = at[1] / at[0]
    contention = (ratio - 1.0) / ((traffic_levels[1] - 1.0) - ratio * (traffic_levels[0] - 1.0))
    # the table is at mean traffic (ℓ = 1): undo the first level's contention when it was measured elsewhere
    to_mean = 1.0 / max(1e-9, 1.0 + contention * (traffic_levels[0] - 1.0))
    return AutoBucketCostModel(
        agents=split.names,
        value_bin_edges=tuple(float(e) for e in edges),
        bucket_weights=tuple(float(w) for w in weights),
        stage_costs={k: (np.asarray(v) * to_mean).tolist() for k, v in stage_costs.items()},
        base_cost=float(weights @ base_by_bin) * to_mean,
        contention=float(contention),
        measured_at_traffic=(float(traffic_levels[0]), float(traffic_levels[1])),
    )
