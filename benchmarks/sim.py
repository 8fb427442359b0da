"""Simulator throughput on one core, and the size of each problem's trade-off.

    python -m benchmarks.sim            # writes benchmarks/results/sim.json
    python -m benchmarks.sim --plots    # also redraws the trade-off plots in docs/img/

Throughput: the batched numpy simulator at N rows against the single-env
(Gymnasium, N = 1) rate measured in the same run, both on one core (the
process is pinned to one CPU and BLAS/OpenMP are limited to one thread before
numpy loads). Rates are per CPU second of the pinned process — the machine is
shared with other work, which changes wall-clock rates from run to run; the
wall-clock rates are written in each metric's note. Each rate is the median
of `--repeats` timed runs; actions are fixed (the spec's defaults) so only
the simulator is timed.

Trade-offs (the checks of the simulators issue, at benchmark sizes): rank's
largest interaction drop of watch-time-only weights vs the default weights;
slot's 7-day total watch time lost by always inserting at position 1 vs the
behaviour policy; allocate's peak-interval utilisation of the most expensive
allocation (`--allocate-plot` redraws only allocate's plot). The allocate
headroom (reference planner vs the best rules) is benchmarks/headroom_allocate.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def _one_core() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})


def _rate(step: Any, actions: Any, rows: int, seconds: float, repeats: int) -> tuple[float, float]:
    """Medians over `repeats` of rows·steps per CPU second and per wall-clock second.

    The CPU-time rate is the one-core throughput even while other processes
    share the machine (the process is pinned to one CPU, so its CPU time is
    time on that core); the wall-clock rate is what this run saw.
    """
    import statistics

    for _ in range(3):  # warm-up
        step(actions)
    cpu_rates, wall_rates = [], []
    for _ in range(repeats):
        steps, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
        while True:
            step(actions)
            steps += 1
            cpu = time.process_time() - cpu0
            if cpu >= seconds:
                break
        wall = time.perf_counter() - wall0
        cpu_rates.append(rows * steps / cpu)
        wall_rates.append(rows * steps / wall)
    return float(statistics.median(cpu_rates)), float(statistics.median(wall_rates))


def throughput(rows: int, seconds: float, repeats: int) -> dict[str, dict[str, float]]:
    """{problem: {batched, single, batched_wall, single_wall}} rates."""
    import numpy as np

    from models.problems import ALLOCATE, RANK
    from training.envs import make_batched, make_env

    fixed: dict[str, Any] = {
        "rank": np.asarray(RANK.default_action, np.float32),
        "slot": np.int64(3),
        "allocate": np.asarray(ALLOCATE.default_action, np.int64),
    }
    out: dict[str, dict[str, float]] = {}
    for problem, action in fixed.items():
        sim = make_batched(problem, rows, seed=0)
        sim.reset()
        batch = np.tile(action, (rows, 1)) if problem != "slot" else np.full(rows, 3)
        batched, batched_wall = _rate(sim.step, batch, rows, seconds, repeats)

        env = make_env(problem, "single", seed=0)
        env.reset(seed=0)

        def env_step(a: Any, env: Any = env) -> None:
            *_, truncated, _ = env.step(a)
            if truncated:
                env.reset()

        single, single_wall = _rate(env_step, action, 1, seconds, repeats)
        out[problem] = {"batched": batched, "single": single, "batched_wall": batched_wall, "single_wall": single_wall}
        print(
            f"{problem:9s} batched {batched:>12,.0f}/s   single-env {single:>9,.0f}/s   ratio {batched / single:,.0f}"
            f"   (wall clock: {batched_wall:,.0f}/s, {single_wall:,.0f}/s)"
        )
    return out


def tradeoffs(n_users: int, plots: bool) -> dict[str, Any]:
    """The trade-off of each problem at benchmark sizes; draws docs/img/*.png when `plots`."""

    from models.problems import RANK
    from training.envs import behaviour_policy, constant_policy
    from training.envs.evaluate import evaluate_policy

    res: dict[str, Any] = {}
    interactions = ("click", "like", "follow", "comment", "share")
    rank_policies = {
        "default (1, .3, .3, .3, .3, .3)": constant_policy("rank", RANK.default_action),
        "behaviour (truncated normal)": behaviour_policy("rank", seed=0),
        "watch time only": constant_policy("rank", [1, 0, 0, 0, 0, 0] * 3),
        "all ones": constant_policy("rank", [1.0] * 18),
    }
    rank = {name: evaluate_policy("rank", p, n_users, 3, seed=0) for name, p in rank_policies.items()}
    base, greedy = rank["default (1, .3, .3, .3, .3, .3)"], rank["watch time only"]
    drops = {s: 1.0 - greedy.per_decision[s] / base.per_decision[s] for s in interactions}
    res["rank"] = {
        "interaction_drop": drops,
        "per_decision": {k: v.per_decision for k, v in rank.items()},
        "watch_time_per_user_day": {k: v.signals["watch_time"].mean for k, v in rank.items()},
        "return_rate": {k: v.return_rate for k, v in rank.items()},
        "constraints_satisfied": {k: v.constraints_satisfied for k, v in rank.items()},
    }

    slot = slot_runs(n_users)

    def total(r: Any) -> float:
        return float(r.signals["watch_time"].mean + r.signals["live_watch_time"].mean)

    res["slot"] = {
        "week_total_loss": 1.0 - total(slot["always position 1"]) / total(slot["behaviour"]),
        "day1_live_watch_time": {k: v.per_day["live_watch_time"][0] for k, v in slot.items()},
        "total_watch_time_per_user_day": {k: total(v) for k, v in slot.items()},
        "live_exposure": {k: v.per_decision["live_exposure"] for k, v in slot.items()},
        "return_rate": {k: v.return_rate for k, v in slot.items()},
    }

    res["allocate"], alloc = allocate_tradeoffs()
    if plots:
        _plots(rank, slot, alloc, interactions)
    return res


def slot_runs(n_users: int) -> dict[str, Any]:
    """The slot policies of the trade-off over 7 days (seed 0): {name: EvaluationResult}."""
    from training.envs import behaviour_policy, constant_policy
    from training.envs.evaluate import evaluate_policy

    slot_policies: dict[str, Any] = {
        "none": constant_policy("slot", [0]),
        "behaviour": behaviour_policy("slot", seed=0),
        "always position 3": constant_policy("slot", [3]),
        "always position 1": constant_policy("slot", [1]),
    }
    return {name: evaluate_policy("slot", p, n_users, 7, seed=0) for name, p in slot_policies.items()}


def allocate_tradeoffs() -> tuple[dict[str, Any], dict[str, Any]]:
    """Fixed allocations for one day at 1 000 requests per interval: (summary per policy, evaluation results)."""
    import numpy as np

    from models.problems import ALLOCATE
    from training.envs.behaviour import behaviour_policy, constant_policy
    from training.envs.evaluate import evaluate_policy

    nvec = np.asarray(ALLOCATE.action.nvec)  # type: ignore[union-attr]
    alloc_policies = {
        "cheapest": constant_policy("allocate", np.zeros_like(nvec)),
        "static (default)": constant_policy("allocate", ALLOCATE.default_action),
        "behaviour": behaviour_policy("allocate", seed=0),
        "most expensive": constant_policy("allocate", nvec - 1),
    }
    alloc = {name: evaluate_policy("allocate", p, 1000, 1, seed=0) for name, p in alloc_policies.items()}
    summary = {
        name: {
            "revenue_per_request": r.allocate.revenue_per_request.mean,  # type: ignore[union-attr]
            "compute_cost_per_request": r.per_decision["compute_cost"],
            "utilisation": r.allocate.utilisation,  # type: ignore[union-attr]
            "over_utilisation": r.allocate.over_utilisation,  # type: ignore[union-attr]
            "peak_utilisation": r.allocate.peak_utilisation,  # type: ignore[union-attr]
        }
        for name, r in alloc.items()
    }
    return summary, alloc


def _plots(rank: dict[str, Any], slot: dict[str, Any], alloc: dict[str, Any], interactions: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from models.problems import RANK

    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    thresholds = {c.signal: c.threshold for c in RANK.constraints}

    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(rank)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        rel = [rank[name].per_decision[s] / thresholds[s] for s in interactions]
        ax.bar(
            np.arange(len(interactions)) + i * width,
            rel,
            width,
            label=f"{name}: {rank[name].per_decision['watch_time']:.0f} s/request",
        )
    ax.axhline(1.0, color="k", lw=1, ls="--", label="constraint threshold")
    ax.set_xticks(np.arange(len(interactions)) + 0.4 - width / 2, interactions)
    ax.set_ylabel("per request / threshold")
    ax.set_title("rank: watch-time-only weights win watch time per request, lose interactions")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(DOCS_IMG / "sim_rank_tradeoff.png", dpi=110)
    plt.close(fig)

    _plot_slot(slot)
    _plot_allocate(alloc)
    print(f"plots written to {DOCS_IMG}")


def _plot_slot(slot: dict[str, Any]) -> None:
    """Per-day live and total watch time, and the week against live exposure (docs/img/sim_slot_tradeoff.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from models.problems import SLOT

    cap = SLOT.constraints[0].threshold
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, r in slot.items():
        days = np.arange(1, len(r.per_day["watch_time"]) + 1)
        axes[0].plot(days, r.per_day["live_watch_time"], marker="o", label=name)
        total = np.asarray(r.per_day["watch_time"]) + np.asarray(r.per_day["live_watch_time"])
        axes[1].plot(days, total, marker="o", label=name)
        week = float(np.mean(total))
        axes[2].scatter(100 * r.per_decision["live_exposure"], week, s=50, label=name)
    # per_day: the mean over every user drawn of that day's seconds (a user who has left counts 0).
    axes[0].set(title="live watch time", xlabel="day of the week", ylabel="live watch time (s per user-day)")
    axes[1].set(title="total watch time (video + live)", xlabel="day of the week", ylabel="watch time (s per user-day)")
    axes[2].axvline(100 * cap, color="k", ls="--", lw=1, label=f"exposure cap {100 * cap:.0f} %")
    axes[2].set(
        title="the week: total watch time against live exposure",
        xlabel="live exposure (% of requests showing a live stream)",
        ylabel="total watch time, 7-day mean (s per user-day)",
    )
    axes[1].legend(fontsize=7)
    axes[2].set_xlim(-5, 105)
    axes[2].legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"slot ({len(next(iter(slot.values())).per_day['watch_time'])} days): inserting a live stream everywhere "
        "wins live watch time and loses the week"
    )
    fig.tight_layout()
    fig.savefig(DOCS_IMG / "sim_slot_tradeoff.png", dpi=110)
    plt.close(fig)


def _plot_allocate(alloc: dict[str, Any]) -> None:
    """Utilisation by hour and revenue per request of the fixed allocations (docs/img/sim_allocate_tradeoff.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    hours = (np.arange(96) + 0.5) / 4
    for name, r in alloc.items():
        axes[0].plot(hours, r.allocate.utilisation_by_interval, label=name)
    first = next(iter(alloc.values()))
    axes[0].plot(hours, first.allocate.load_by_interval, "k:", label="traffic (mean 1)")
    axes[0].axhline(1.0, color="k", lw=1, ls="--")
    axes[0].set(title="budget utilisation by hour", xlabel="hour", ylabel="spent / budget")
    axes[0].legend(fontsize=7)
    names = list(alloc)
    axes[1].bar(names, [alloc[n].allocate.revenue_per_request.mean for n in names])
    axes[1].set(title="revenue per request (cents)")
    axes[1].tick_params(axis="x", labelrotation=20, labelsize=7)
    fig.suptitle(
        "allocate: the most expensive allocation breaks the budget and, queued and late, earns less than the static one"
    )
    fig.tight_layout()
    fig.savefig(DOCS_IMG / "sim_allocate_tradeoff.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2048, help="N of the batched simulators")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per rate (the median is reported)")
    parser.add_argument("--users", type=int, default=3000, help="users per trade-off evaluation")
    parser.add_argument("--plots", action="store_true", help="redraw docs/img/sim_*.png")
    parser.add_argument("--allocate-plot", action="store_true", help="only redraw docs/img/sim_allocate_tradeoff.png")
    parser.add_argument("--slot-plot", action="store_true", help="only redraw docs/img/sim_slot_tradeoff.png")
    args = parser.parse_args(argv)
    _one_core()
    if args.allocate_plot:
        _plot_allocate(allocate_tradeoffs()[1])
        return 0
    if args.slot_plot:
        _plot_slot(slot_runs(args.users))
        return 0

    from benchmarks.common import Metric, write_result

    rates = throughput(args.rows, args.seconds, args.repeats)
    trade = tradeoffs(args.users, args.plots)
    goals = {"rank": 100_000, "slot": 100_000, "allocate": 50_000}
    metrics = []
    for problem, r in rates.items():
        kind = "requests" if problem == "allocate" else "steps"
        unit = "requests/s" if problem == "allocate" else "user-steps/s"
        metrics.append(
            Metric(
                f"sim.{problem}.batched_{kind}_per_s",
                r["batched"],
                unit,
                baseline=(f"sim.{problem}.single_env_{kind}_per_s", r["single"]),
                goal=(">=", goals[problem]),
                note=(
                    f"N={args.rows}, pinned to one core, per CPU second, median of {args.repeats}; "
                    f"wall clock on the shared machine: {r['batched_wall']:,.0f}/s batched, {r['single_wall']:,.0f}/s single"
                ),
            )
        )
    drops = trade["rank"]["interaction_drop"]
    metrics.append(
        Metric(
            "sim.rank.tradeoff.max_interaction_drop",
            max(drops.values()),
            "fraction",
            goal=(">=", 0.10),
            note=f"watch-time-only vs default weights, per request; largest on {max(drops, key=drops.get)}",
        )
    )
    metrics.append(
        Metric(
            "sim.slot.tradeoff.week_total_watch_time_loss",
            trade["slot"]["week_total_loss"],
            "fraction",
            goal=(">=", 0.05),
            note="always position 1 vs the behaviour policy, 7 days",
        )
    )
    metrics.append(
        Metric(
            "sim.allocate.tradeoff.most_expensive_peak_utilisation",
            trade["allocate"]["most expensive"]["peak_utilisation"],
            "spent/budget",
            goal=(">=", 1.0),
            note="mean over the top-5 % traffic intervals",
        )
    )
    command = " ".join(["python -m benchmarks.sim", *(argv if argv is not None else sys.argv[1:])])
    path = write_result("sim", metrics, command=command, extra={"tradeoffs": trade})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
