"""Fixed fusion baseline: one constant action for every request, chosen by grid search on the simulator.

Contents: `FixedFusionConfig`; no networks (the "policy" is a constant vector);
the objective (the simulator's ground-truth main signal, subject to every
constraint); `train(cfg, task, evaluate)`.

The grid (rank): at every stage the watch-time weight takes each value of
`main_weights` and every interaction weight takes one shared value from
`aux_weights` — the shape of the production default (1.0, 0.3, …, 0.3).
The best feasible point (every constraint met) with the highest objective
wins; if none is feasible, the one with the smallest total relative violation.
The objective is `evaluate`'s entry named by `FixedFusionConfig.objective`
(default: the task's main signal). On `rank` the benchmark ranks by watch time
per user-day including next-day returns — the ground truth it reports —
because per-decision watch time misses the long-run effect of the weights
(longer sessions, returns) and would keep a worse point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from training.rl.task import TaskSpec


@dataclass(frozen=True)
class FixedFusionConfig:
    """Grid of constant fusion weights."""

    main_weights: tuple[float, ...] = (0.25, 0.5, 1.0)
    """Values of the main (first) weight of each stage's block."""
    aux_weights: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    """Shared value of the other weights of each block."""
    block_size: int = 6
    """Weights per stage block (rank: 6 predicted signals)."""
    objective: str = ""
    """Key of `evaluate`'s result that ranks feasible points; empty = the task's main signal."""

    def __post_init__(self) -> None:
        if not self.main_weights or not self.aux_weights:
            raise ValueError("main_weights and aux_weights: at least one value each")
        if self.block_size < 1:
            raise ValueError(f"block_size: must be >= 1, got {self.block_size}")

    def candidates(self, action_size: int) -> list[np.ndarray]:
        if action_size % self.block_size:
            raise ValueError(f"action size {action_size} is not a multiple of block_size {self.block_size}")
        out = []
        for m in self.main_weights:
            for a in self.aux_weights:
                block = np.full(self.block_size, a, dtype=np.float32)
                block[0] = m
                out.append(np.tile(block, action_size // self.block_size))
        return out


@dataclass(frozen=True)
class GridResult:
    action: np.ndarray
    main: float
    feasible: bool
    table: list[tuple[np.ndarray, dict[str, float]]]


def train(
    cfg: FixedFusionConfig,
    task: TaskSpec,
    evaluate: Callable[[np.ndarray], dict[str, float]],
    candidates: Sequence[np.ndarray] | None = None,
) -> GridResult:
    """`evaluate(action)` → each constrained signal's value (and the objective); returns the best constant action.

    `GridResult.main` is the winner's objective value."""
    cands = list(candidates) if candidates is not None else cfg.candidates(task.action_dim)
    table = [(c, evaluate(c)) for c in cands]
    objective = cfg.objective or task.main_signal
    best, best_key = None, None
    for c, m in table:
        violation = 0.0
        for con in task.constraints:
            slack = task.constraint_sign(con) * (m[con.signal] - con.threshold)
            violation += max(0.0, -slack) / max(abs(con.threshold), 1e-8)
        key = (violation == 0.0, -violation, m[objective])
        if best_key is None or key > best_key:
            best, best_key = (c, m), key
    assert best is not None and best_key is not None
    return GridResult(best[0], best[1][objective], bool(best_key[0]), table)
