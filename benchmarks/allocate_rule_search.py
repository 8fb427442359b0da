"""The best one-parameter rule held to the MPC's budget bound: the baseline of issue #16's lift over the rule.

    python -m benchmarks.allocate_rule_search [--quick] [--cold]

Ours (the lead's decision of 2026-12-05, docs/marca.md "How the lift over the rule is judged"). Issue #16's
`allocate.marca.revenue_lift_vs_rule` compares MaRCA as served — its agents with λ from the served MPC at
serving/balancer.SERVED_SET_POINT — with the best rule argmax v·Q̂(a) − λ(load)·C(a). The served MPC's set point
was chosen for the paper's over-utilisation bound (mean over intervals of max(u − 1, 0) ≤ 0.01), so the rule
is searched under that same bound here, not under headroom_allocate's (at most 0.5 % of intervals over
budget), which is stricter and would hand MaRCA a lift that is only a looser budget.

The family is headroom_allocate's feedback rule (training/envs/allocate_oracle.ValueCostRule, schedule
"feedback": λ_t = λ_{t−1}·exp(g·(u_{t−1} − u*))), run WARM (ours, the lead's decision of 2026-12-05): each search
day d is scored after the rule ran through day d − 1 with its λ carried (allocate_quality.WarmFeedbackLambda; the
warm-up day is not scored) — as the MPC arms are scored and as a served rule would run day after day. Cold (λ = 1
at each day's start, `--cold`) was the search until then: results/allocate_rule_search_cold.*; on tuning days
1010–1019 the warm rule (0.90, 1.5) earned +0.20 % over the cold one (results/allocate_diagnosis_ceiling_mpc.md).
The grid: u* from 0.80 to 0.98 in steps of 0.01 × the gains headroom_allocate searches (0.5, 1.5, 3.0). Each
cell runs headroom_allocate FULL's search days 3000–3007 at its 300 requests per interval (common random numbers:
every cell sees the same days).

Selection rule (written down before the search was run):
* feasible = the paper's over-utilisation over all search intervals ≤ OVER_UTILISATION_LIMIT (0.01) and the
  mean compute per request ≤ the spec's threshold (headroom_allocate.feasible's second check);
* the winner is the feasible cell with the most revenue per request (mean over the search days); if no cell
  is feasible, the one with the least over-utilisation;
* generous to the rule: while the winner sits on an edge of the grid, the grid is extended past that edge
  (u* by 0.01 up to 1.10 / down to 0.60; the gain ×2 up to 24 / ÷2 down to 1/16) and the selection rerun.

Writes benchmarks/results/allocate_rule_search.json + .md with every cell (revenue, over-utilisation, share of
intervals over budget, mean utilisation, mean compute, feasible) and the winner; allocate_quality's
BEST_RULE_TARGET / BEST_RULE_GAIN are copied from it. headroom_allocate's own search and metrics are untouched.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import allocate_quality as Q
from benchmarks.common import Metric, write_result
from benchmarks.headroom_allocate import FULL, QUICK, SEARCH_SEED_OFFSET, Size
from models.problems import ALLOCATE
from training.envs import allocate_oracle as O
from training.envs.allocate import AllocateConfig

OVER_UTILISATION_LIMIT = 0.01
"""The paper's over-utilisation bound (mean over intervals of max(u − 1, 0)): issue #16's MPC goal, the bound the
served set point was chosen under."""
TARGETS = tuple(round(0.80 + 0.01 * k, 2) for k in range(19))  # 0.80 … 0.98
GAINS = (0.5, 1.5, 3.0)  # headroom_allocate's feedback gains (1.5 among them)
TARGET_RANGE = (0.60, 1.10)  # how far the grid may be extended for a winner on its u* edge
GAIN_RANGE = (1.0 / 16.0, 24.0)  # … and on its gain edge


@dataclass(frozen=True)
class Cell:
    """One grid cell's search-day results."""

    target: float
    gain: float
    revenue: float
    """Revenue per request (cents), mean over the search days of each day's traffic-weighted mean."""
    over_utilisation: float
    """The paper's: mean over all search intervals of max(u − 1, 0)."""
    share_over_budget: float
    """Share of search intervals with u > 1 (headroom_allocate's measure)."""
    mean_utilisation: float
    mean_compute: float
    """Compute units per request, traffic-weighted."""
    feasible: bool


def is_feasible(over_utilisation: float, mean_compute: float) -> bool:
    """Within the paper's over-utilisation bound and the spec's mean-compute threshold."""
    return over_utilisation <= OVER_UTILISATION_LIMIT and mean_compute <= ALLOCATE.constraints[0].threshold


def select(cells: Iterable[Cell]) -> Cell:
    """The feasible cell with the most revenue; if none is feasible, the one with the least over-utilisation."""
    cells = list(cells)
    if not cells:
        raise ValueError("allocate_rule_search.select: no cells")
    feasible = [c for c in cells if c.feasible]
    if feasible:
        return max(feasible, key=lambda c: c.revenue)
    return min(cells, key=lambda c: c.over_utilisation)


def run_warm_days(make_policy: Callable[[], Any], config: AllocateConfig, n: int, seeds: Sequence[int]) -> O.DayRuns:
    """Each day d of `seeds` scored after a fresh policy ran through day d − 1 with its state carried (the warm-up
    day is not scored): allocate_quality.run_warm_day's protocol, with the compute per request kept."""
    scored = []
    for day in seeds:
        policy = make_policy()
        O.run_days(policy, config, n, [day - 1])
        scored.append(O.run_days(policy, config, n, [day]))
    return O.DayRuns(**{f.name: np.concatenate([getattr(r, f.name) for r in scored]) for f in fields(O.DayRuns)})


def run_cell(
    target: float, gain: float, config: AllocateConfig, size: Size, seeds: Sequence[int], warm: bool = True
) -> Cell:
    quality, cost = O.rule_quality_table(config), O.cost_table(config)
    n = size.requests_per_interval
    if warm:
        runs = run_warm_days(lambda: Q.warm_rule(quality, cost, target, gain), config, n, seeds)
    else:
        runs = O.run_days(O.ValueCostRule(quality, cost, "feedback", target, gain=gain), config, n, seeds)
    over = Q.paper_over_utilisation(runs.utilisation)
    return Cell(
        target=target,
        gain=gain,
        revenue=float(runs.revenue_per_day.mean()),
        over_utilisation=over,
        share_over_budget=runs.over_budget_fraction,
        mean_utilisation=float(runs.utilisation.mean()),
        mean_compute=runs.mean_compute,
        feasible=is_feasible(over, runs.mean_compute),
    )


def extend(targets: list[float], gains: list[float], winner: Cell) -> bool:
    """Extend the grid past every edge the winner sits on (in place); False when nothing could be added."""
    grew = False
    if winner.target >= max(targets) and max(targets) + 0.005 < TARGET_RANGE[1]:
        targets.append(round(max(targets) + 0.01, 2))
        grew = True
    if winner.target <= min(targets) and min(targets) - 0.005 > TARGET_RANGE[0]:
        targets.insert(0, round(min(targets) - 0.01, 2))
        grew = True
    if winner.gain >= max(gains) and max(gains) * 2.0 <= GAIN_RANGE[1]:
        gains.append(max(gains) * 2.0)
        grew = True
    if winner.gain <= min(gains) and min(gains) / 2.0 >= GAIN_RANGE[0]:
        gains.insert(0, min(gains) / 2.0)
        grew = True
    return grew


def search(
    config: AllocateConfig,
    size: Size,
    seeds: Sequence[int],
    targets: Sequence[float] = TARGETS,
    gains: Sequence[float] = GAINS,
    log: bool = False,
    warm: bool = True,
) -> tuple[Cell, list[Cell]]:
    """(winner, every cell run) of the grid, extended while the winner sits on its edge."""
    grid_targets, grid_gains = list(targets), list(gains)
    cells: dict[tuple[float, float], Cell] = {}
    while True:
        for gain in grid_gains:
            for target in grid_targets:
                if (target, gain) not in cells:
                    cells[(target, gain)] = run_cell(target, gain, config, size, seeds, warm)
                    if log:
                        c = cells[(target, gain)]
                        print(f"u* {target:.2f} g {gain:g}: revenue {c.revenue:.4f} over-util "
                              f"{c.over_utilisation:.4f} share over {c.share_over_budget:.4f}"
                              f"{'' if c.feasible else '  (infeasible)'}", flush=True)  # fmt: skip
        winner = select(cells.values())
        if not extend(grid_targets, grid_gains, winner):
            return winner, sorted(cells.values(), key=lambda c: (c.gain, c.target))


def markdown(winner: Cell, cells: Sequence[Cell], header: str) -> str:
    lines = [
        header,
        "",
        f"**Winner**: u* = {winner.target:.2f}, g = {winner.gain:g} — revenue {winner.revenue:.4f} cents/request, "
        f"over-utilisation {winner.over_utilisation:.4f}, {100 * winner.share_over_budget:.2f} % of intervals over "
        f"budget, mean utilisation {winner.mean_utilisation:.4f}.",
        "",
        f"Feasible: over-utilisation (mean of max(u − 1, 0)) ≤ {OVER_UTILISATION_LIMIT} and mean compute ≤ "
        f"{ALLOCATE.constraints[0].threshold}; winner = the feasible cell with the most revenue.",
        "",
        "| u* | gain | revenue (cents/req) | over-utilisation | share over budget | mean utilisation | "
        "mean compute | feasible |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        mark = " **winner**" if c == winner else ""
        lines.append(
            f"| {c.target:.2f} | {c.gain:g} | {c.revenue:.4f} | {c.over_utilisation:.4f} | {c.share_over_budget:.4f} "
            f"| {c.mean_utilisation:.4f} | {c.mean_compute:.3f} | {'yes' if c.feasible else 'no'}{mark} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="headroom_allocate QUICK: 2 search days, 96 requests")
    p.add_argument("--cold", action="store_true", help="the search until 2026-12-05: every day cold (λ = 1)")
    args = p.parse_args(argv)
    size = QUICK if args.quick else FULL
    seeds = [SEARCH_SEED_OFFSET + k for k in range(size.search_days)]
    start = time.perf_counter()
    winner, cells = search(AllocateConfig(), size, seeds, log=True, warm=not args.cold)
    seconds = time.perf_counter() - start
    command = ("python -m benchmarks.allocate_rule_search " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    metrics = [
        Metric("allocate_rule_search.winner.target", winner.target, "budget"),
        Metric("allocate_rule_search.winner.gain", winner.gain, ""),
        Metric("allocate_rule_search.winner.revenue_per_request", winner.revenue, "cents"),
        Metric(
            "allocate_rule_search.winner.over_utilisation",
            winner.over_utilisation,
            "budget",
            goal=("<=", OVER_UTILISATION_LIMIT),
        ),  # fmt: skip
        Metric("allocate_rule_search.winner.share_of_intervals_over_budget", winner.share_over_budget, "share"),
        Metric("allocate_rule_search.winner.mean_utilisation", winner.mean_utilisation, "budget"),
    ]
    extra = {
        "quick": args.quick,
        "warm": not args.cold,
        "search_days": seeds,
        "requests_per_interval": size.requests_per_interval,
        "over_utilisation_limit": OVER_UTILISATION_LIMIT,
        "mean_compute_threshold": ALLOCATE.constraints[0].threshold,
        "winner": asdict(winner),
        "cells": [asdict(c) for c in cells],
        "seconds": seconds,
    }
    name = "allocate_rule_search" + ("_cold" if args.cold else "") + ("_quick" if args.quick else "")
    path = write_result(name, metrics, command=command, extra=extra)
    header = (
        f"# allocate rule search — the feedback rule's (u*, g) under the paper's over-utilisation ≤ "
        f"{OVER_UTILISATION_LIMIT}{' (--quick)' if args.quick else ''}\n\n`{command}`\n\nSearch days {seeds[0]}–"
        f"{seeds[-1]}, {size.requests_per_interval} requests per interval, {len(cells)} cells, {seconds:.0f} s. "
        + (
            "Cold: every day starts at λ = 1 (the search until 2026-12-05)."
            if args.cold
            else "Warm: each day scored after the rule ran through the day before, λ carried (the warm-up day unscored)."
        )
    )
    Path(path).with_suffix(".md").write_text(markdown(winner, cells, header))
    print(f"winner u* {winner.target} g {winner.gain}: {winner}\nwrote {path} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
