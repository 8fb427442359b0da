"""How much more revenue can a state-aware allocation earn than the best simple rule, at the same compute?

    python -m benchmarks.headroom_allocate [--quick] [--seeds 0,1,2,3,4]

Issue #15, item 3 and its check (`headroom.allocate.*`). Policies and
expectations live in training/envs/allocate_oracle.py:

1. Search, on separate days (seeds 3000 + k), for the best parameter of each
   simple family — static allocation (every joint action on the Pareto front
   of cost C(a) and population quality Q̂(a)), constant λ, load-proportional λ,
   feedback λ (target utilisation × three gains) — and of the reference
   planner (its target utilisation u*). "Best" = most revenue per request with
   the budget kept with a margin: at most 0.5 % of the search intervals over
   budget (the goal's 1 % is then checked on the evaluation days).
2. Run the winners on the evaluation days (`seeds`), one day each, N requests
   per interval, common random numbers (every policy sees the same requests
   and noise on a seed), and pair them per day.

Metrics (dict keys of `run`, and benchmarks/results/headroom_allocate.json):
* `headroom.allocate.lift` (goal ≥ 0.10): reference over the best static
  allocation — the goal's baseline is the static allocation, the production
  default's family (issue #16's `revenue_lift_vs_static`). ci_low/ci_high:
  95 % t-interval over the per-day paired lifts.
* `headroom.allocate.lift_vs_rule` (+ ci): reference over the best
  one-parameter rule argmax v·Q̂(a) − λ·C(a) of any schedule; and
  `lift_vs_feedback_rule`: over the best load-feedback schedule
  (proportional or feedback) — the ceiling for issue #16's "MaRCA ≥ 3 % over
  the best rule", reported as measured.
* `headroom.allocate.request_features_lift`: reference over the same planner
  blind to the request features (history length, entry point).
* `headroom.allocate.anticipation_lift`: reference over the same planner
  forecasting each interval's traffic by last interval's reading (no foresight
  of the daily curve).
* `headroom.allocate.unconstrained_violations` (goal ≥ 1): constraints the
  revenue-maximising planner without a budget breaks (over-budget intervals
  ≤ 1 %; mean compute per request ≤ the spec's threshold).
* over-budget fractions of every winner on the evaluation days.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.common import Metric, write_result
from models.problems import ALLOCATE
from training.envs.allocate import AllocateConfig
from training.envs.allocate_oracle import (
    ALL_ACTIONS,
    DayRuns,
    ReferencePlanner,
    StaticRule,
    ValueCostRule,
    cost_table,
    rule_quality_table,
    run_days,
)

OVER_BUDGET_LIMIT = 0.01
"""At most this share of intervals over the interval budget (issue #15: over-utilisation ≤ 1 %)."""
SEARCH_OVER_BUDGET_LIMIT = 0.005
"""Search-day limit, half the goal's, for every family alike: a parameter chosen at the edge of 1 % on the
search days breaks it on the evaluation days about half the time (measured: the reference at u* = 0.86 did)."""
SEARCH_SEED_OFFSET = 3000
"""Search days 3000 + k: days no benchmark reports or otherwise uses (allocate_quality / allocate_setpoint /
allocate_balancer / allocate_lift score days 1000 + s, warm up on 999 + s, fit load models on 500/600/700 + s;
allocate_noise samples from 30 000). Until 2026-12-05 the search ran on 1000 + k, which are allocate_quality's
reported days 1000–1004: the rule's u* was tuned on the days it is reported on."""
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass(frozen=True)
class Size:
    requests_per_interval: int
    search_days: int
    planning_requests: int
    traffic_grid_points: int


QUICK = Size(requests_per_interval=96, search_days=2, planning_requests=96, traffic_grid_points=16)
FULL = Size(requests_per_interval=300, search_days=8, planning_requests=256, traffic_grid_points=28)

Factory = Callable[[Any], Any]


@dataclass(frozen=True)
class Winner:
    family: str
    parameter: Any
    policy: Any
    search_revenue: float
    search_over_budget: float


def feasible(runs: DayRuns, limit: float = OVER_BUDGET_LIMIT) -> bool:
    return runs.over_budget_fraction <= limit and runs.mean_compute <= ALLOCATE.constraints[0].threshold


def search(
    family: str,
    make: Factory,
    grid: Sequence[Any],
    config: AllocateConfig,
    size: Size,
    seeds: Sequence[int],
    rows: list[dict[str, Any]] | None = None,
) -> Winner:
    """The grid value with the most search-day revenue among those that keep the budget (the least over-budget if none).

    `rows`, if given, receives one dict per grid value (value, revenue, over_budget, feasible) for reports."""
    best: tuple[tuple[bool, float], Winner] | None = None
    for value in grid:
        policy = make(value)
        runs = run_days(policy, config, size.requests_per_interval, seeds)
        ok = feasible(runs, SEARCH_OVER_BUDGET_LIMIT)
        if rows is not None:
            rows.append(
                {
                    "value": value,
                    "revenue": float(runs.revenue_per_day.mean()),
                    "over_budget": runs.over_budget_fraction,
                    "mean_compute": runs.mean_compute,
                    "feasible": ok,
                }
            )
        key = (ok, float(runs.revenue_per_day.mean()) if ok else -runs.over_budget_fraction)
        if best is None or key > best[0]:
            best = (key, Winner(family, value, policy, float(runs.revenue_per_day.mean()), runs.over_budget_fraction))
    assert best is not None
    return best[1]


def static_candidates(config: AllocateConfig) -> list[tuple[int, ...]]:
    """Joint actions on the Pareto front of (cost, population quality): no other is both cheaper and better."""
    cost, quality = cost_table(config), rule_quality_table(config)
    order = np.argsort(cost)
    front, best_quality = [], -np.inf
    for i in order:
        if quality[i] > best_quality:
            front.append(tuple(int(x) for x in ALL_ACTIONS[i]))
            best_quality = quality[i]
    return front


def paired_lift(new: DayRuns, base: DayRuns) -> tuple[float, float, float]:
    """Lift of `new` over `base` (ratio of mean revenue − 1) with a 95 % t-interval over the paired per-day lifts."""
    per_day = new.revenue_per_day / base.revenue_per_day - 1.0
    lift = float(new.revenue_per_day.mean() / base.revenue_per_day.mean() - 1.0)
    if per_day.shape[0] < 2:
        return lift, float("nan"), float("nan")
    half = T_975.get(per_day.shape[0] - 1, 1.96) * float(per_day.std(ddof=1)) / np.sqrt(per_day.shape[0])
    return lift, float(per_day.mean() - half), float(per_day.mean() + half)


def violations(runs: DayRuns) -> int:
    """Constraints broken: over-budget intervals > 1 %; mean compute per request > the spec's threshold."""
    return int(runs.over_budget_fraction > OVER_BUDGET_LIMIT) + int(
        runs.mean_compute > ALLOCATE.constraints[0].threshold
    )


def search_all(config: AllocateConfig, size: Size, search_seeds: Sequence[int]) -> dict[str, Winner]:
    quality, cost = rule_quality_table(config), cost_table(config)

    def planner(target: float, aware: bool = True, anticipate: bool = True) -> ReferencePlanner:
        return ReferencePlanner(
            config,
            target,
            planning_requests=size.planning_requests,
            traffic_grid_points=size.traffic_grid_points,
            request_aware=aware,
            anticipate=anticipate,
        )

    targets = [0.70, 0.75, 0.80, 0.82, 0.84, 0.86, 0.88, 0.90]
    winners = {
        "static": search("static", StaticRule, static_candidates(config), config, size, search_seeds),
        "constant": search(
            "constant",
            lambda lam: ValueCostRule(quality, cost, "constant", lam),
            np.geomspace(0.5, 2.0, 9).tolist(),
            config,
            size,
            search_seeds,
        ),
        "proportional": search(
            "proportional",
            lambda lam: ValueCostRule(quality, cost, "proportional", lam),
            np.geomspace(0.4, 1.6, 13).tolist(),
            config,
            size,
            search_seeds,
        ),
        "feedback": search(
            "feedback",
            lambda p: ValueCostRule(quality, cost, "feedback", p[0], gain=p[1]),
            [(u, g) for g in (0.5, 1.5, 3.0) for u in (0.65, 0.7, 0.75, 0.78, 0.8, 0.82, 0.85)],
            config,
            size,
            search_seeds,
        ),
        "reference": search("reference", planner, targets, config, size, search_seeds),
        "reference_blind": search(
            "reference_blind", lambda u: planner(u, aware=False), targets, config, size, search_seeds
        ),
        "reference_lagged": search(
            "reference_lagged", lambda u: planner(u, anticipate=False), targets, config, size, search_seeds
        ),
    }
    # The unconstrained optimum: the planner's target that earns the most, budget ignored.
    best: tuple[float, Winner] | None = None
    for target in (0.85, 0.9, 0.95, 1.0, 1.05, 1.1):
        policy = planner(target)
        runs = run_days(policy, config, size.requests_per_interval, search_seeds)
        revenue = float(runs.revenue_per_day.mean())
        if best is None or revenue > best[0]:
            best = (revenue, Winner("unconstrained", target, policy, revenue, runs.over_budget_fraction))
    assert best is not None
    winners["unconstrained"] = best[1]
    return winners


def evaluate(
    seeds: Sequence[int], quick: bool, config: AllocateConfig | None = None
) -> tuple[dict[str, float], dict[str, Winner], dict[str, DayRuns]]:
    """Search on separate days, evaluate the winners on `seeds`: (metrics, winners, evaluation runs)."""
    if len(seeds) < 2:
        raise ValueError(f"headroom_allocate: need at least 2 evaluation seeds for a paired interval, got {seeds}")
    config = config or AllocateConfig()
    size = QUICK if quick else FULL
    search_seeds = [SEARCH_SEED_OFFSET + k for k in range(size.search_days)]
    overlap = set(search_seeds) & set(seeds)
    if overlap:
        raise ValueError(f"headroom_allocate: evaluation seeds {sorted(overlap)} are search seeds; pick others")
    winners = search_all(config, size, search_seeds)
    runs = {name: run_days(w.policy, config, size.requests_per_interval, seeds) for name, w in winners.items()}

    # The best rules are chosen on the search days, like every parameter.
    def search_rank(name: str) -> tuple[bool, float]:
        w = winners[name]
        return w.search_over_budget <= SEARCH_OVER_BUDGET_LIMIT, w.search_revenue

    best_rule = max(("constant", "proportional", "feedback"), key=search_rank)
    best_feedback = max(("proportional", "feedback"), key=search_rank)
    ref = runs["reference"]
    lift, low, high = paired_lift(ref, runs["static"])
    rule_lift, rule_low, rule_high = paired_lift(ref, runs[best_rule])
    fb_lift, fb_low, fb_high = paired_lift(ref, runs[best_feedback])
    features_lift, features_low, features_high = paired_lift(ref, runs["reference_blind"])
    foresight_lift, foresight_low, foresight_high = paired_lift(ref, runs["reference_lagged"])
    metrics: dict[str, float] = {
        "headroom.allocate.lift": lift,
        "headroom.allocate.lift_ci_low": low,
        "headroom.allocate.lift_ci_high": high,
        "headroom.allocate.unconstrained_violations": float(violations(runs["unconstrained"])),
        "headroom.allocate.lift_vs_rule": rule_lift,
        "headroom.allocate.lift_vs_rule_ci_low": rule_low,
        "headroom.allocate.lift_vs_rule_ci_high": rule_high,
        "headroom.allocate.lift_vs_feedback_rule": fb_lift,
        "headroom.allocate.lift_vs_feedback_rule_ci_low": fb_low,
        "headroom.allocate.lift_vs_feedback_rule_ci_high": fb_high,
        "headroom.allocate.request_features_lift": features_lift,
        "headroom.allocate.request_features_lift_ci_low": features_low,
        "headroom.allocate.request_features_lift_ci_high": features_high,
        "headroom.allocate.anticipation_lift": foresight_lift,
        "headroom.allocate.anticipation_lift_ci_low": foresight_low,
        "headroom.allocate.anticipation_lift_ci_high": foresight_high,
        "headroom.allocate.unconstrained_over_budget_fraction": runs["unconstrained"].over_budget_fraction,
        "headroom.allocate.unconstrained_lift_vs_reference": float(
            runs["unconstrained"].revenue_per_day.mean() / ref.revenue_per_day.mean() - 1.0
        ),
    }
    for name, r in runs.items():
        metrics[f"headroom.allocate.{name}.revenue_per_request"] = float(r.revenue_per_day.mean())
        metrics[f"headroom.allocate.{name}.over_budget_fraction"] = r.over_budget_fraction
        metrics[f"headroom.allocate.{name}.mean_utilisation"] = float(r.utilisation.mean())
    metrics["headroom.allocate.best_rule_is_load_feedback"] = float(best_rule != "constant")
    return metrics, winners, runs


def run(seeds: list[int], quick: bool) -> dict[str, float]:
    """headroom.allocate.* metrics over `seeds` (evaluation days); `quick` uses fewer requests and search days."""
    return evaluate(seeds, quick)[0]


def plot(runs: dict[str, DayRuns], config: AllocateConfig, path: Any) -> None:
    """Diurnal traffic, λ and utilisation of the reference and the best rules on the first evaluation day."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = (np.arange(config.intervals_per_day) + 0.5) * 24.0 / config.intervals_per_day
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    axes[0].plot(hours, config.traffic_profile(), "k:", label="profile (mean 1)")
    axes[0].plot(hours, runs["reference"].traffic[0], "k-", label="traffic, day 1")
    axes[0].set_ylabel("traffic / daily mean")
    axes[0].set_title("diurnal load (evening peak ≈ 20:00)")
    for name in ("reference", "feedback", "proportional"):
        axes[1].plot(hours, runs[name].lam[0], label=name)
        axes[2].plot(hours, runs[name].utilisation[0], label=name)
    axes[2].plot(hours, runs["static"].utilisation[0], label="static")
    axes[1].set_ylabel("λ (revenue per compute unit)")
    axes[1].set_title("λ per interval: the reference (planned from the daily curve) and the best rules")
    axes[2].axhline(1.0, color="r", lw=0.8, label="budget")
    axes[2].set_ylabel("utilisation of the interval budget")
    axes[2].set_xlabel("hour of day")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seeds", default="0,1,2,3,4", help="evaluation days (comma-separated)")
    p.add_argument("--quick", action="store_true", help="fewer requests per interval and search days")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    metrics, winners, runs = evaluate(seeds, args.quick)
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs" / "img"
    docs.mkdir(parents=True, exist_ok=True)
    plot(runs, AllocateConfig(), docs / "sim_allocate_headroom.png")
    goals = {"headroom.allocate.lift": (">=", 0.10), "headroom.allocate.unconstrained_violations": (">=", 1.0)}
    cis = {
        k: (metrics[f"{k}_ci_low"], metrics[f"{k}_ci_high"])
        for k in (
            "headroom.allocate.lift",
            "headroom.allocate.lift_vs_rule",
            "headroom.allocate.lift_vs_feedback_rule",
            "headroom.allocate.request_features_lift",
            "headroom.allocate.anticipation_lift",
        )
    }
    out = [
        Metric(name, value, "ratio" if "lift" in name else "", goal=goals.get(name), ci=cis.get(name))
        for name, value in metrics.items()
        if not name.endswith(("_ci_low", "_ci_high"))
    ]
    extra = {
        "winners": {
            n: {"family": w.family, "parameter": w.parameter, "search_revenue": w.search_revenue}
            for n, w in winners.items()
        },
        "seconds": time.perf_counter() - start,
    }
    path = write_result(
        "headroom_allocate", out, command="python -m benchmarks.headroom_allocate " + " ".join(argv or []), extra=extra
    )
    for m in out:
        print(f"{m.name:60s} {m.value: .4f}" + (f"  ci [{m.ci[0]:.4f}, {m.ci[1]:.4f}]" if m.ci else ""))
    print(f"wrote {path} in {extra['seconds']:.0f} s")


if __name__ == "__main__":
    main()
