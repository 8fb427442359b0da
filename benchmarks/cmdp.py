"""Constrained RL against known answers: random tabular CMDPs, LP optimum, exact evaluation (issue 14).

For each of `--instances` random CMDPs from `training.envs.cmdp.random_cmdp` (states
4–10, actions 2–4, γ 0.8–0.95; even seeds one constraint, odd seeds two; every
threshold binds) and each of `--seeds` training seeds, train `main_only`, `rcpo`
and `tscac` through the generic `training.rl.trainer.train` on `CMDPPool` (the
instance's dynamics, one-hot states, the random episode end told to the learner
as a truncation at discount γ: `RANDOM_END`), read the shipped policy's π(a|s) for every
state and evaluate it exactly (Bellman equations). Metrics:

* cmdp.<algo>.median_gap — median over runs of (J*_main − J_main(π)) / J*_main,
  J* the LP's constrained optimum (for main_only: the unconstrained optimum);
  `ci`: 95 % bootstrap over instances (seeds of one instance resampled together).
  Baseline: the uniform policy's median gap, evaluated exactly in the same run.
* cmdp.<algo>.feasible_share — share of runs whose every auxiliary value is
  within 1 % of its threshold or above (for main_only: informative, no goal).
* cmdp.rcpo.last_iterate.* — the same for RCPO's last iterate instead of its
  best feasible one (what the paper ships).
* cmdp.<algo>.kept_iterate.* — with `best_feasible_ship: window_average`, the
  same for the kept window's last iterate (what `iterate` would ship from the
  same run): a paired comparison of the two ways to ship.

Goals (issue 14): rcpo and tscac median gap ≤ 0.03 and feasible share ≥ 0.9;
main_only within 1 % of the unconstrained optimum.

    python -m benchmarks.cmdp            # 20 instances × 3 seeds, 2 worker processes
    python -m benchmarks.cmdp --quick    # 4 instances × 1 seed (a smoke run, not a result)
    python -m benchmarks.cmdp --algorithms rcpo,tscac,main_only --reuse tscac,main_only
                                         # rerun rcpo only; the other rows come from the committed file
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from benchmarks.common import Metric, write_result

ALGORITHMS = ("rcpo", "tscac", "main_only")
FEASIBILITY_TOLERANCE = 0.01
GOALS = {"rcpo": 0.03, "tscac": 0.03, "main_only": 0.01}

RANDOM_END = "truncate"
"""How the pool reports its random episode end to every learner (`CMDPPool.random_end`). "truncate"
(2026-12-05; was "terminate"): the learner discounts by γ and bootstraps through the end instead of
summing rewards to a geometric end at discount 0.999, which put the episode length's spread into every
value target (the critic's V_1 was off by 1.4–1.9 reward stds, docs/training.md). Tuning instances, seed 0,
paired with the shipped settings under "terminate": RCPO 100–119 0.037 → 0.007 (better in 15 of 20),
120–139 0.032 → 0.004 (17 of 20); TSCAC 100–119 0.035 → 0.007 (20 of 20). Same algorithms, same settings."""

# One budget for every algorithm: 64 envs × 32 steps × ITERATIONS transitions.
RUN = {"iterations": 150, "rollout_steps": 32, "n_envs": 64, "device": "cpu"}
SHARED = {
    "hidden": [32],
    "actor_lr": 0.01,
    "critic_lr": 0.01,
    "minibatch_size": 1024,
    "epochs": 4,
    "gae_lambda": 0.95,
}
ALGO_CONFIGS: dict[str, dict[str, Any]] = {
    "main_only": {},
    # best_feasible_start 50 (a third of the 150 iterations): the first batches are measured before
    # the pool's states follow the policy's occupancy and before the multiplier settles; the tracker
    # kept such iterates (instance 5: shipped 27 % below the optimum, last iterate 4 %).
    # dual_lr is the multiplier's integral gain: 0.5 (the default) was too slow to reach the
    # multipliers these instances need within 150 iterations (quick runs, instances 0–3).
    # Not lr_anneal (LossConfig): on tuning instances 100–109 (seed 0) it gave median gap 0.044 → 0.031,
    # but on the first 20 runs of the reported command 0.055 → 0.074 — halving the total step size
    # slows a policy that has not converged in 150 iterations more than it damps the swing; aborted.
    # best_feasible_ship "window_average" (training/rl/policy_average.py): ship the average of the kept
    # window's 10 iterates, the policy the tracker's windowed measurements describe. Chosen on tuning
    # instances, not on the reported 0–19: on 100–119 (seed 0, exact replay of recorded iterates) the
    # tracker's pick 0.044 → its window's mixture 0.039; on a fresh set 120–139 (seed 0, the real code)
    # shipped median gap 0.045 (kept iterate) → 0.032 (window average), feasible 1.00 / 0.95.
    # best_feasible_start 75 with the window average (was 50): replayed on tuning instances (seed 0, the
    # tracker's rule on the recorded iterates, window mixtures evaluated exactly) 100–119 0.045 → 0.037,
    # 120–139 0.032 → 0.032 (feasible 1.00 / 0.95 either way); 100 was no better.
    # Not `policy_step: exact` (rcpo.py, ours): on tuning instances 100–119 (seed 0) η = 0.5 / 1 / 3 gave
    # 0.039 / 0.038 / 0.057 against this config's 0.037, better in 7 / 8 / 5 of 20 runs (the learned
    # all-action advantages are too noisy; docs/training.md); with the random end as a truncation
    # (RANDOM_END) η = 1 gave 0.019 against the gradient's 0.007, better in 2 of 20.
    "rcpo": {"margin": 0.01, "dual_lr": 2.0, "best_feasible_start": 75, "best_feasible_ship": "window_average"},
    # With exact quantities and λ found by bisection, TSCAC's closed form lands 1–3 % below the LP
    # optimum at α = 0.1–0.3 and up to 39 % at α = 0.01 (π_θi too sharp). Trained, α = 0.1 from the
    # start made π_θi and π deterministic within five batches and stuck (issue 14): α starts at 1 and
    # anneals with λ (half-life 30 batches, down to 0.05 of the start, i.e. α = 0.05 after ~130),
    # every action keeps κ·0.05 in the stage-two target, stage two moves η = 0.3 of the way to π*
    # per batch, and the main Q head is a dueling advantage head on the one-step target.
    # Tuned on instances 100–104 / 100–109 (seed 0), not on the reported 0–19.
    "tscac": {
        # margin 0 (was 0.01) with the exact stage one: the tracker already ships only windows measured
        # feasible, and aiming 1 % inside costs a median 1.4 % of the optimum on these instances (LP with
        # thresholds raised by 1 %). Tuning instances, paired with margin 0.01: 100–119 0.036 → 0.035
        # (13 of 20 better), 120–139 0.047 → 0.034 (12 of 20), feasible 1.00 on both (lowest slack −0.15 %).
        "margin": 0.0,
        "lam": 0.3,
        "min_lambda": 0.01,
        "stage_one_entropy": 1.0,
        "temperature_halflife": 30,
        "temperature_floor": 0.05,
        "min_action_prob": 0.05,
        "stage_two_step": 0.3,
        "main_q_dueling": True,
        "main_q_target": "one_step",
        # Gains 3 / 1 (TSCACConfig's order), not the 1 / 0.3 tuned on 100–109: at 1 / 0.3 a 2 % violation
        # moved log λ by 0.006 a batch, too slow to follow the annealed policy, and 14 of 60 reported runs
        # shipped infeasible. Adopted on a fresh set (instances 120–139, seed 0: feasible 0.55 → 0.95, gap
        # 0.039 → 0.072) after a side study on the reported instances (cmdp_tscac_gains.json) — docs/training.md.
        "lambda_kp": 3.0,
        "lambda_ki": 1.0,
        "lr_anneal": True,
        # As RCPO (above); on tuning instances 100–109 (seed 0, recorded iterates replayed exactly) the
        # tracker's pick 0.106 → its window's mixture 0.080, every one feasible.
        "best_feasible_ship": "window_average",
        # Ours (2026-12-05): stage one fitted to its exact softmax(s_i·A_i/α) from a Q head per constrained
        # signal, read by stage two as such (tscac.py module docstring: the sampled stage one kept wrong
        # actions). On tuning instances 100–119 (seed 0): median gap 0.036, feasible 1.00.
        "stage_one_exact": True,
    },
}


@dataclass(frozen=True)
class Job:
    algorithm: str
    instance: int
    seed: int
    iterations: int
    algo_config: str
    """The `algo:` section, as JSON (the job crosses a process boundary)."""
    random_end: str
    """How the pool reports its random episode end (`CMDPPool.random_end`); "truncate" trains at discount γ."""


def instance(seed: int) -> Any:
    from training.envs.cmdp import random_cmdp

    return random_cmdp(seed, n_constraints=1 + seed % 2)


def run_job(job: Job) -> dict[str, Any]:
    """Train one algorithm on one instance with one seed; exact values of what it ships."""
    import torch

    from training.envs.cmdp import CMDPPool, evaluate, meets_constraints, solve_lp, task_spec
    from training.rl.losses import shipped_policy
    from training.rl.trainer import OnlineSource, train

    torch.set_num_threads(1)
    cmdp = instance(job.instance)
    # "truncate": the learner discounts by γ and bootstraps through the random end (CMDPPool docstring).
    discount = cmdp.gamma if job.random_end == "truncate" else 0.999
    task = task_spec(cmdp, discount=discount, name=f"cmdp{job.instance}")
    run = {**RUN, "iterations": job.iterations, "seed": job.seed, "progress": False, "tensorboard": False}
    run["plots"] = False
    config = {"run": run, "algo": json.loads(job.algo_config)}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = train(
            job.algorithm, task, OnlineSource(lambda n, s: CMDPPool(cmdp, n, job.random_end)), config, out_dir=out
        )
    seconds = time.perf_counter() - started
    loss = result.learner
    constrained = job.algorithm != "main_only"
    optimum = solve_lp(cmdp, constrained=constrained).main_value
    shipped = shipped_policy(loss)
    out: dict[str, Any] = {"algorithm": job.algorithm, "instance": job.instance, "seed": job.seed, "seconds": seconds}
    views = [("shipped", shipped), ("last", loss.actor)]
    kept = getattr(getattr(loss, "controller", None), "tracker", None)
    if kept is not None and kept.best is not None and loss.shipping.window is not None:
        # What `best_feasible_ship: iterate` would ship from the same run: the kept window's last iterate.
        iterate = copy.deepcopy(loss.actor)
        iterate.load_state_dict(loss.shipping.newest_state(kept.best.state))
        views.append(("window_last", iterate))
    for label, actor in views:
        with torch.no_grad():
            policy = actor.log_probs_all(torch.eye(cmdp.n_states)).exp().double().numpy()
        policy = policy / policy.sum(1, keepdims=True)
        values = evaluate(cmdp, policy)
        out[label] = {
            "gap": float((optimum - values[0]) / optimum),
            "feasible": meets_constraints(cmdp, values, FEASIBILITY_TOLERANCE),
            "relative_slack": ((values[1:] - cmdp.thresholds) / np.abs(cmdp.thresholds)).round(5).tolist(),
        }
    return out


def bootstrap_median_ci(values_by_instance: dict[int, list[float]], draws: int = 2000) -> tuple[float, float]:
    """95 % CI of the median over runs, resampling instances (with all their seeds)."""
    rng = np.random.default_rng(0)
    keys = sorted(values_by_instance)
    medians = []
    for _ in range(draws):
        picked = rng.choice(keys, size=len(keys), replace=True)
        medians.append(np.median([v for k in picked for v in values_by_instance[k]]))
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(low), float(high)


def uniform_gaps(instances: Sequence[int]) -> tuple[float, float]:
    """Median relative gap of the uniform policy to the constrained and to the unconstrained optimum."""
    from training.envs.cmdp import evaluate, solve_lp

    constrained, free = [], []
    for i in instances:
        cmdp = instance(i)
        main = evaluate(cmdp, np.full((cmdp.n_states, cmdp.n_actions), 1.0 / cmdp.n_actions))[0]
        constrained.append((solve_lp(cmdp).main_value - main) / solve_lp(cmdp).main_value)
        free.append((solve_lp(cmdp, False).main_value - main) / solve_lp(cmdp, False).main_value)
    return float(np.median(constrained)), float(np.median(free))


def summarise(rows: list[dict[str, Any]], instances: Sequence[int]) -> list[Metric]:
    uniform_constrained, uniform_free = uniform_gaps(instances)
    metrics: list[Metric] = []
    for algorithm in ALGORITHMS:
        views = [("shipped", f"cmdp.{algorithm}")]
        if algorithm == "rcpo":
            views.append(("last", "cmdp.rcpo.last_iterate"))
        if any("window_last" in r for r in rows if r["algorithm"] == algorithm):
            views.append(("window_last", f"cmdp.{algorithm}.kept_iterate"))
        for view, prefix in views:
            runs = [r for r in rows if r["algorithm"] == algorithm and view in r]
            if not runs:
                continue
            gaps: dict[int, list[float]] = {}
            feasible: dict[int, list[float]] = {}
            for r in runs:
                gaps.setdefault(r["instance"], []).append(r[view]["gap"])
                feasible.setdefault(r["instance"], []).append(float(r[view]["feasible"]))
            all_gaps = [g for v in gaps.values() for g in v]
            goal = GOALS[algorithm] if view == "shipped" else None
            base = uniform_free if algorithm == "main_only" else uniform_constrained
            optimum = "unconstrained" if algorithm == "main_only" else "constrained (LP)"
            sources = sorted({str(r["reused"]) for r in runs if "reused" in r})
            reuse_note = f"; rows reused from commit {', '.join(sources)} (--reuse)" if sources else ""
            metrics.append(
                Metric(
                    f"{prefix}.median_gap",
                    float(np.median(all_gaps)),
                    "relative gap",
                    baseline=("cmdp.uniform_policy.median_gap", base),
                    goal=("<=", goal) if goal is not None else None,
                    ci=bootstrap_median_ci(gaps),
                    note=f"{len(runs)} runs; gap to the {optimum} optimum of the exactly evaluated policy{reuse_note}",
                )
            )
            share = float(np.mean([f for v in feasible.values() for f in v]))
            has_goal = algorithm != "main_only" and view == "shipped"
            metrics.append(
                Metric(
                    f"{prefix}.feasible_share",
                    share,
                    "share of runs",
                    goal=(">=", 0.9) if has_goal else None,
                    note="every constraint met within 1 % of its threshold, exact evaluation",
                )
            )
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=RUN["iterations"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--first-instance", type=int, default=0, help="instances first … first + instances − 1")
    parser.add_argument("--set", action="append", default=[], help="algo.field=value override (tuning runs)")
    parser.add_argument(
        "--reuse",
        default="",
        help="comma-separated algorithms whose rows are read from the existing result file instead of rerun",
    )
    parser.add_argument(
        "--random-end", default=RANDOM_END, choices=("terminate", "truncate"), help="CMDPPool.random_end"
    )
    parser.add_argument("--name", default="cmdp", help="result file benchmarks/results/<name>.json (side studies)")
    parser.add_argument("--quick", action="store_true", help="4 instances × 1 seed; does not write the result file")
    args = parser.parse_args(argv)
    if args.quick:
        args.instances, args.seeds = 4, 1
    algorithms = [a for a in args.algorithms.split(",") if a]
    unknown = sorted(set(algorithms) - set(ALGORITHMS))
    if unknown:
        raise SystemExit(f"--algorithms: unknown {unknown}; choose from {ALGORITHMS}")
    instances = list(range(args.first_instance, args.first_instance + args.instances))
    reused = _reused_rows([a for a in args.reuse.split(",") if a], instances)
    algorithms = [a for a in algorithms if a not in {r["algorithm"] for r in reused}]
    for item in args.set:
        key, _, value = item.partition("=")
        algorithm, _, field = key.partition(".")
        ALGO_CONFIGS[algorithm][field] = yaml.safe_load(value)
    jobs = [
        Job(a, i, s, args.iterations, json.dumps({**SHARED, **ALGO_CONFIGS[a]}), args.random_end)
        # seed-major, then algorithm: a run cut short still covers every instance once per algorithm
        for s in range(args.seeds)
        for a in algorithms
        for i in instances
    ]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = list(reused)
    command = (
        "python -m benchmarks.cmdp"
        + (f" --first-instance {args.first_instance}" if args.first_instance else "")
        + f" --instances {args.instances} --seeds {args.seeds} "
        f"--iterations {args.iterations} --workers {args.workers} --algorithms {','.join(algorithms)}"
        + (f" --reuse {args.reuse}" if args.reuse else "")
        + (f" --random-end {args.random_end}" if args.random_end != RANDOM_END else "")
        + (f" --name {args.name}" if args.name != "cmdp" else "")
        + "".join(f" --set {item}" for item in args.set)
    )
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for n, row in enumerate(pool.map(run_job, jobs), start=1):
            rows.append(row)
            n_total = len(reused) + n
            s = row["shipped"]
            elapsed = time.perf_counter() - started
            print(
                f"[{n}/{len(jobs)} {elapsed:.0f}s, eta {elapsed / n * (len(jobs) - n):.0f}s] {row['algorithm']} "
                f"instance {row['instance']} seed {row['seed']}: gap {s['gap']:+.4f} feasible {s['feasible']} "
                f"slack {s['relative_slack']} (last: gap {row['last']['gap']:+.4f} {row['last']['feasible']}) "
                f"{row['seconds']:.0f}s",
                flush=True,
            )
            if not args.quick:  # rewritten after every run: a run cut short still leaves its result
                wall = time.perf_counter() - started
                _write(rows, instances, command, wall, args.workers, n_total, len(reused) + len(jobs), args.name)
    metrics = summarise(rows, instances)
    for m in metrics:
        print(m.to_json())
    print(f"wall {time.perf_counter() - started:.0f}s on {args.workers} workers ({os.cpu_count()} CPUs)")


RESULT_PATH = os.path.join(os.path.dirname(__file__), "results", "cmdp.json")


def _reused_rows(algorithms: list[str], instances: list[int], path: str = RESULT_PATH) -> list[dict[str, Any]]:
    """Rows of `algorithms` from the committed result file (each marked `reused`), for these instances."""
    if not algorithms:
        return []
    unknown = sorted(set(algorithms) - set(ALGORITHMS))
    if unknown:
        raise SystemExit(f"--reuse: unknown {unknown}; choose from {ALGORITHMS}")
    if not os.path.exists(path):
        raise SystemExit(f"--reuse: {path} does not exist")
    with open(path) as f:
        previous = json.load(f)
    rows = [
        {**r, "reused": r.get("reused", previous.get("git_commit", "unknown"))}
        for r in previous.get("runs", [])
        if r["algorithm"] in algorithms and r["instance"] in instances
    ]
    missing = sorted(set(algorithms) - {r["algorithm"] for r in rows})
    if missing:
        raise SystemExit(f"--reuse: no rows for {missing} in {path}")
    return rows


def _write(
    rows: list[dict[str, Any]],
    instances: list[int],
    command: str,
    wall: float,
    workers: int,
    done: int,
    total: int,
    name: str = "cmdp",
) -> None:
    write_result(
        name,
        summarise(rows, instances),
        command=command,
        extra={
            "wall_s": round(wall, 1),
            "workers": workers,
            "runs_done": done,
            "runs_planned": total,
            "config": {"run": RUN, "shared": SHARED, "algorithms": ALGO_CONFIGS},
            "runs": rows,
        },
    )


if __name__ == "__main__":
    main()
