"""Learnable headroom in the `rank` world: a state-aware rule against the best constant fusion weights.

    python -m benchmarks.headroom_rank [--users 300] [--quick]

Issue 15 asks whether a policy that reads the observation can beat the best
one-line rule by ≥ 5 % of watch time per user-day (returns included, every
constraint met), and whether the long-run unconstrained watch-time optimum
breaks a constraint. No learning here; both sides are found by the same
search, on users (seed `SEARCH_SEED`) separate from the evaluation users:

1. the best constant: one weight vector at every stage, by coordinate sweeps
   over the six weights (`WATCH_VALUES` for watch time, `AUX_VALUES` for each
   interaction), ranking candidates by `search_key` — feasible first, then the
   smallest relative violation, then watch time per user-day;
2. the unconstrained optimum: the same search on watch time alone;
   `unconstrained_violations` counts the constraints it breaks on the
   evaluation users;
3. the state-aware reference ("a search over state-dependent rules"): a table
   of weights with one row per (activity group × session state), the state
   being "the last pages disappointed" (observed completion EMA below
   `TIRED_COMPLETION`) — the hidden satisfaction's proxy in the observation.
   It starts from the best constant in every row and takes coordinate sweeps.
   Why it can win, from the equations (training/envs/rank.py): interactions
   retain low-activity users (κ_I,g), long watch tires heavy users (φ_g) and
   over-consumption costs them their return (κ_O,g), and a disappointed session
   is near its leave hazard, where completion (short, liked videos) refills S.
4. both on `EVAL_SEEDS` with common random numbers
   (`training.envs.evaluate.compare_policies`): the lift per seed, its mean
   with a t-interval over seeds, and the per-user paired CI width of one seed.

`REFERENCE_CONSTANT`, `REFERENCE_TABLE` and `UNCONSTRAINED_CONSTANT` are the
results of the full search (recorded so that tests/unit/test_envs_tradeoffs.py
can check the headroom on small fixed seeds in seconds); `--quick` evaluates
them without searching.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

SEARCH_SEED = 20_000
EVAL_SEEDS = (2000, 2001, 2002, 2003, 2004)
DAYS = 3
WATCH_VALUES = (0.1, 0.25, 0.5, 0.75, 1.0)
AUX_VALUES = (0.0, 0.1, 0.3, 0.6, 1.0)
N_SIGNALS = 6
GROUPS = 3
LATE_SESSION_MINUTES = 8.0
"""Minutes into the session from which the table's "late" row applies (fatigue grows per minute watched)."""
SESSION_MINUTES = 26
"""Index of minutes in session / 10 in the rank observation (session_signals come last)."""

# Results of the full search (python -m benchmarks.headroom_rank), recorded for tests and --quick.
REFERENCE_CONSTANT: tuple[float, ...] = (0.1, 0.0, 0.1, 1.0, 0.1, 0.3)
UNCONSTRAINED_CONSTANT: tuple[float, ...] = (0.25, 0.3, 0.3, 1.0, 0.0, 0.0)
REFERENCE_TABLE: tuple[tuple[float, ...], ...] = (
    (0.1, 0.1, 0.1, 1.0, 0.1, 0.3),  # low activity, early in the session
    (0.1, 0.0, 0.1, 1.0, 0.0, 0.3),  # low, late
    (0.1, 1.0, 1.0, 0.6, 1.0, 1.0),  # medium, early: short and social
    (0.5, 1.0, 1.0, 1.0, 1.0, 1.0),  # medium, late
    (0.1, 1.0, 0.3, 0.1, 0.0, 0.0),  # high, early: short, clickable
    (1.0, 0.3, 0.3, 0.6, 0.3, 0.3),  # high, late: watch time first
)

PROTOTYPES: tuple[tuple[float, ...], ...] = (
    (1.0, 0.3, 0.3, 0.3, 0.3, 0.3),  # the spec's default: watch time first
    (0.5, 0.3, 0.3, 0.3, 0.3, 0.3),
    (1.0, 1.0, 1.0, 1.0, 1.0, 1.0),  # long and social
    (0.5, 1.0, 1.0, 1.0, 1.0, 1.0),
    (0.1, 1.0, 1.0, 1.0, 1.0, 1.0),  # short and social: completion and interactions
)
"""Whole-row moves of the state-aware search (with the best constant and the unconstrained optimum)."""

Policy = Callable[[Any], np.ndarray]


def constant(weights: Any) -> Policy:
    """Fixed fusion: the same six weights at every stage."""
    action = np.tile(np.asarray(weights, np.float32), 3)

    def policy(obs: Any) -> np.ndarray:
        return np.broadcast_to(action, (np.asarray(obs).shape[0], action.size))

    return policy


def state_row(obs: np.ndarray) -> np.ndarray:
    """Row of the state-aware table per observation: 2·group + (late in the session)."""
    group = np.argmax(obs[:, :GROUPS], axis=1)
    late = obs[:, SESSION_MINUTES] * 10.0 >= LATE_SESSION_MINUTES
    return 2 * group + late


def table_policy(table: Any) -> Policy:
    """The state-aware rule: weights = table[state_row(obs)] at every stage."""
    rows = np.tile(np.asarray(table, np.float32), (1, 3))

    def policy(obs: Any) -> np.ndarray:
        return rows[state_row(np.asarray(obs))]

    return policy


def violations(per_decision: dict[str, float]) -> list[str]:
    """The rank constraints `per_decision` breaks."""
    from models.problems import RANK

    return [c.signal for c in RANK.constraints if not c.satisfied(per_decision[c.signal])]


def search_key(result: tuple[float, dict[str, float]], constrained: bool) -> tuple[bool, float, float]:
    """Feasible first, then the smallest total relative violation, then watch time per user-day."""
    from models.problems import RANK

    watch, per_decision = result
    if not constrained:
        return True, 0.0, watch
    violation = sum(
        max(0.0, c.threshold - per_decision[c.signal]) / c.threshold for c in RANK.constraints if c.direction == ">="
    ) + sum(
        max(0.0, per_decision[c.signal] - c.threshold) / c.threshold for c in RANK.constraints if c.direction == "<="
    )
    return violation == 0.0, -violation, watch


def evaluate(policy: Policy, users: int, seed: int) -> tuple[float, dict[str, float]]:
    from training.envs.evaluate import evaluate_policy

    r = evaluate_policy("rank", policy, n_users=users, days=DAYS, seed=seed)
    return r.signals["watch_time"].mean, dict(r.per_decision)


def _evaluate_job(job: tuple[str, Any, int, int]) -> tuple[float, dict[str, float]]:
    """One evaluation in a worker process: ("constant" | "table", weights, users, seed)."""
    kind, weights, users, seed = job
    return evaluate(constant(weights[0]) if kind == "constant" else table_policy(weights), users, seed)


def coordinate_search(
    table: np.ndarray,
    kind: str,
    users: int,
    constrained: bool,
    sweeps: int,
    label: str,
    workers: int,
    prototypes: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, tuple[float, dict[str, float]], int]:
    """Coordinate sweeps over every (row, weight) of `table` on the search users; returns (table, result, evaluated).

    Per coordinate, every value is evaluated (in `workers` processes) and the best by `search_key` is kept
    when it beats the incumbent. With `prototypes`, each row first tries every prototype vector whole."""
    from concurrent.futures import ProcessPoolExecutor

    best = _evaluate_job((kind, table, users, SEARCH_SEED))
    evaluated = 1
    with ProcessPoolExecutor(workers) as pool:
        # Whole-row moves first: a row jumps to another prototype weight vector, a move that single
        # weights cannot make while the constraints (over all rows together) must stay met. Two passes,
        # last row first: a row can give up interactions once another row has taken them on.
        row_order = [r for _ in range(2) for r in reversed(range(table.shape[0]))] if prototypes else []
        for row in row_order:
            candidates = []
            for proto in prototypes:
                if not np.array_equal(table[row], proto):
                    candidate = table.copy()
                    candidate[row] = proto
                    candidates.append(candidate)
            results = list(pool.map(_evaluate_job, [(kind, c, users, SEARCH_SEED) for c in candidates]))
            evaluated += len(candidates)
            top = max(range(len(results)), key=lambda i: search_key(results[i], constrained))
            if search_key(results[top], constrained) > search_key(best, constrained):
                best, table = results[top], candidates[top]
                print(f"  {label} row {row} = {table[row].round(2).tolist()} → {best[0]:.0f} s", flush=True)
        for sweep in range(sweeps):
            improved = False
            for row in range(table.shape[0]):
                for pos in range(N_SIGNALS):
                    candidates = []
                    for value in WATCH_VALUES if pos == 0 else AUX_VALUES:
                        if table[row, pos] != value:
                            candidate = table.copy()
                            candidate[row, pos] = value
                            candidates.append(candidate)
                    results = list(pool.map(_evaluate_job, [(kind, c, users, SEARCH_SEED) for c in candidates]))
                    evaluated += len(candidates)
                    top = max(range(len(results)), key=lambda i: search_key(results[i], constrained))
                    if search_key(results[top], constrained) > search_key(best, constrained):
                        best, table, improved = results[top], candidates[top], True
                        value = float(table[row, pos])
                        print(f"  {label} sweep {sweep}: [{row}, {pos}] = {value} → {best[0]:.0f} s", flush=True)
            if not improved:
                break
    return table, best, evaluated


def compare(constant_w: Any, table: Any, unconstrained_w: Any, users: int, seeds: Any) -> dict[str, Any]:
    """The recorded or searched rules on the evaluation seeds, paired per user (common random numbers)."""
    from models.problems import RANK
    from training.envs.evaluate import compare_policies

    lifts, feasible, ci_widths, watch = [], [], [], []
    unconstrained_broken: list[list[str]] = []
    reference_rates: list[dict[str, float]] = []
    for seed in seeds:
        runs = compare_policies(
            "rank",
            {
                "constant": constant(constant_w),
                "state_aware": table_policy(table),
                "unconstrained": constant(unconstrained_w),
            },
            baseline="constant",
            n_users=users,
            days=DAYS,
            seed=seed,
        )
        ref = runs["state_aware"]
        lifts.append(ref.lift)
        ci_widths.append(ref.ci_width)
        watch.append((ref.baseline_mean, ref.mean, runs["unconstrained"].mean))
        feasible.append((ref.baseline_constraints_satisfied, ref.constraints_satisfied))
        unconstrained_broken.append(violations(runs["unconstrained"].per_decision))
        reference_rates.append(ref.per_decision)
    mean = float(np.mean(lifts))
    if len(lifts) > 1:
        from scipy import stats

        half = float(stats.t.ppf(0.975, len(lifts) - 1) * np.std(lifts, ddof=1) / np.sqrt(len(lifts)))
    else:
        half = float(ci_widths[0] / 2)
    return {
        "lift": mean,
        "lift_ci": [mean - half, mean + half],
        "lift_per_seed": lifts,
        "paired_ci_width_per_seed": ci_widths,
        "watch_per_user_day": watch,
        "constraints_met": feasible,
        "all_constraints_met": all(a and b for a, b in feasible),
        "unconstrained_violations": int(min(len(v) for v in unconstrained_broken)),
        "unconstrained_broken": unconstrained_broken,
        "reference_per_decision": reference_rates,
        "constraints": {c.signal: c.threshold for c in RANK.constraints},
        "seeds": list(seeds),
        "users": users,
        "days": DAYS,
    }


def search(
    users: int, sweeps: int, workers: int, table_only: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """(best constant, state-aware table, unconstrained constant, evaluations) by coordinate search.
    table_only: take the recorded constants and search only the state-aware table."""
    start = np.asarray(REFERENCE_CONSTANT, np.float32)[None, :]
    if table_only:
        best_constant, unconstrained = start, np.asarray(UNCONSTRAINED_CONSTANT, np.float32)[None, :]
        n_const = n_unc = 0
    else:
        best_constant, _, n_const = coordinate_search(
            start.copy(), "constant", users, True, sweeps, "constant", workers
        )
        unconstrained, _, n_unc = coordinate_search(
            start.copy(), "constant", users, False, sweeps, "unconstrained", workers
        )
    table0 = np.tile(best_constant, (GROUPS * 2, 1))
    prototypes = [best_constant[0], unconstrained[0], *[np.asarray(p, np.float32) for p in PROTOTYPES]]
    table, _, n_table = coordinate_search(
        table0, "table", users, True, sweeps, "state-aware", workers, prototypes=prototypes
    )
    return best_constant[0], table, unconstrained[0], {"constant": n_const, "unconstrained": n_unc, "table": n_table}


def evaluate_rules(
    seeds: Any = EVAL_SEEDS,
    quick: bool = False,
    users: int = 300,
    sweeps: int = 2,
    workers: int = 3,
    table_only: bool = False,
) -> dict[str, Any]:
    """Search (unless quick: the recorded rules) and compare on `seeds`; every detail, for the JSON and plots."""
    t0 = time.monotonic()
    if quick:
        best_constant = np.asarray(REFERENCE_CONSTANT, np.float32)
        table = np.asarray(REFERENCE_TABLE, np.float32)
        unconstrained = np.asarray(UNCONSTRAINED_CONSTANT, np.float32)
        evaluations: dict[str, int] = {}
    else:
        best_constant, table, unconstrained, evaluations = search(users, sweeps, workers, table_only)
    out = compare(best_constant, table, unconstrained, users, seeds)
    out.update(
        {
            "constant": np.round(best_constant.astype(float), 3).tolist(),
            "state_aware_table": np.round(table.astype(float), 3).tolist(),
            "unconstrained_constant": np.round(unconstrained.astype(float), 3).tolist(),
            "searched": not quick,
            "search_evaluations": evaluations,
            "seconds": time.monotonic() - t0,
        }
    )
    return out


def metrics(details: dict[str, Any]) -> dict[str, float]:
    """The flat `headroom.rank.*` metrics of `evaluate_rules`' details."""
    base = [w[0] for w in details["watch_per_user_day"]]
    ref = [w[1] for w in details["watch_per_user_day"]]
    return {
        "headroom.rank.lift": details["lift"],
        "headroom.rank.lift_ci_low": details["lift_ci"][0],
        "headroom.rank.lift_ci_high": details["lift_ci"][1],
        "headroom.rank.paired_ci_width": float(np.median(details["paired_ci_width_per_seed"])),
        "headroom.rank.constraints_met": float(details["all_constraints_met"]),
        "headroom.rank.unconstrained_violations": float(details["unconstrained_violations"]),
        "headroom.rank.baseline_watch_per_user_day": float(np.mean(base)),
        "headroom.rank.reference_watch_per_user_day": float(np.mean(ref)),
    }


def run(seeds: Any = EVAL_SEEDS, quick: bool = False) -> dict[str, float]:
    """headroom.rank.* metrics over `seeds` (the aggregator benchmarks/headroom.py calls this).
    quick: the recorded rules, no search (minutes instead of an hour on 2 cores)."""
    return metrics(evaluate_rules(seeds, quick))


def plot(details: dict[str, Any], path: Any) -> None:
    """docs/img/sim_rank_headroom.png: the group trade-offs in the equations, and the measured headroom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.envs.rank import RankConfig

    cfg = RankConfig()
    names = ("low", "medium", "high")
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    minutes = np.linspace(0, 40, 200)
    for g, name in enumerate(names):
        logit = cfg.leave_bias + cfg.leave_fatigue_slope * cfg.fatigue_per_minute[g] * minutes
        ax[0].plot(
            minutes, 1 / (1 + np.exp(-(logit - cfg.leave_satisfaction_slope * cfg.satisfaction_reference))), label=name
        )
    ax[0].set(
        xlabel="minutes watched in the session",
        ylabel="P(leave after this request) at S = 1",
        title="fatigue: long watch tires heavy users",
    )
    ax[0].legend(title="activity group")
    scale = np.linspace(0.0, 2.5, 200)  # interaction rates as a multiple of their references
    concave = np.log1p(scale) - np.log(2.0)
    for g, name in enumerate(names):
        logit = cfg.world.return_logit[g] + cfg.return_interaction_slope[g] * concave
        ax[1].plot(scale, 1 / (1 + np.exp(-logit)), label=name)
    ax[1].set(
        xlabel="day's interaction rates / reference",
        ylabel="P(return tomorrow) (other terms at reference)",
        title="return: interactions retain low-activity users",
    )
    ax[1].legend(title="activity group")
    lifts = 100 * np.asarray(details["lift_per_seed"])
    ax[2].bar([str(s) for s in details["seeds"]], lifts, color="tab:green")
    ax[2].axhline(5.0, color="k", ls="--", lw=1, label="goal +5 %")
    ax[2].axhline(100 * details["lift"], color="tab:green", ls=":", lw=1, label=f"mean {100 * details['lift']:+.1f} %")
    ax[2].set(
        xlabel="evaluation seed",
        ylabel="watch time per user-day vs best constant (%)",
        title="state-aware rule vs best constant (paired, same users)",
    )
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    import json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--sweeps", type=int, default=2)
    p.add_argument("--workers", type=int, default=3, help="processes evaluating a coordinate's values")
    p.add_argument("--quick", action="store_true", help="evaluate the recorded rules without searching")
    p.add_argument("--plot", action="store_true", help="redraw docs/img/sim_rank_headroom.png")
    p.add_argument("--table-only", action="store_true", help="recorded constants; search only the state-aware table")
    a = p.parse_args(argv)
    details = evaluate_rules(EVAL_SEEDS, a.quick, a.users, a.sweeps, a.workers, a.table_only)
    print(json.dumps(details, indent=1))
    print(json.dumps(metrics(details), indent=1))
    from benchmarks.common import Metric, write_result
    from benchmarks.headroom import _metrics

    found: list[Metric] = _metrics("rank", metrics(details))
    path = write_result("headroom_rank", found, extra={"details": details})
    print(f"wrote {path}")
    if a.plot:
        from pathlib import Path

        plot(details, Path(__file__).resolve().parents[1] / "docs" / "img" / "sim_rank_headroom.png")


if __name__ == "__main__":
    main()
