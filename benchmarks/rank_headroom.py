"""How much could a policy that sets its fusion weights by context gain over the best constant weights?

    python -m benchmarks.rank_headroom [--users 1000] [--contexts activity_group,session_depth]

Issue 5 asks TSCAC and the multi-agent cascade to beat the best fixed fusion
by ≥ 3 % of watch time per user-day. A learned policy can only beat a tuned
constant where different contexts want different weights. This benchmark
looks for such contexts directly, without any learning:

1. the best constant weights, by the search `benchmarks.rank_quality` uses
   (grid plus two coordinate sweeps, on the held-out search users, seed 10 000);
2. per context, a table of weights with one row per context value, starting
   with the constant in every row, improved by two coordinate sweeps over
   (row, signal position) with the same values and the same rule as the
   fixed-fusion search: the most watch time per user-day with every
   constraint met (constraints over all decisions, as the benchmark reports);
3. that table against the constant on the five evaluation seeds of
   `benchmarks.rank_quality` (1 000 … 1 004), paired per seed.

Contexts, read from the observation the policies see
(`models.observations.rank_observation`): the user's activity group
(low / medium / high); the session depth (requests 0–2, 3–7, 8+); and the
user's recent interaction rate (the sum of the five recent interaction-rate
features, split at 1.8 and 3.0: its terciles under the best constant on the
search users). The last is the simulator's per-user sociability as the policy
sees it: it shifts every interaction probability of the user
(training/envs/world.py), so where constraints are cheap to meet differs by user.
One more table is not a context: `stage`, one constant per cascade stage
(the fixed-fusion search ties the stages; the learned policies do not), searched
by sweeps over (stage, signal position).
The search visits ~190 tables per context (~0.8 s each at 1 000 users; ~13 min in all).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.common import Metric, write_result
from benchmarks.rank_quality import _ci, fixed_fusion_search

SEARCH_SEED = 10_000
EVAL_SEEDS = range(1000, 1005)
MAIN_VALUES = (0.25, 0.5, 1.0)
AUX_VALUES = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
BLOCK = 6  # weights per stage: one per predicted signal
STAGES = 3  # pre-rank, rank, re-rank
DEPTH_INDEX = 9  # session depth / 10 in the rank observation (after 3 group one-hot and 6 recent rates)
INTERACTION_RATES = slice(4, 9)  # recent click, like, follow, comment, share rates

# context name → (number of values, observation batch → value index per row)
CONTEXTS: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    "activity_group": (3, lambda obs: np.argmax(obs[:, :3], axis=1)),
    "session_depth": (3, lambda obs: np.digitize(obs[:, DEPTH_INDEX] * 10.0, [2.5, 7.5])),
    "interaction_rate": (3, lambda obs: np.digitize(obs[:, INTERACTION_RATES].sum(axis=1), [1.8, 3.0])),
    # Not a context: one constant per cascade stage (fixed fusion uses the same weights at every stage).
    "stage": (1, lambda obs: np.zeros(len(obs), np.int64)),
}


def moves(name: str, n_rows: int) -> list[tuple[int, slice, float]]:
    """The coordinate moves of one sweep: (row, weights it sets, value)."""
    out = []
    for row in range(n_rows):
        for pos in range(BLOCK):
            values = MAIN_VALUES if pos == 0 else AUX_VALUES
            if name == "stage":  # one position of one stage
                out += [(row, slice(st * BLOCK + pos, st * BLOCK + pos + 1), v) for st in range(STAGES) for v in values]
            else:  # the same position at every stage, as fixed fusion
                out += [(row, slice(pos, None, BLOCK), v) for v in values]
    return out


def table_policy(table: np.ndarray, context: Callable[[np.ndarray], np.ndarray]) -> Callable[[Any], np.ndarray]:
    def policy(obs: Any) -> np.ndarray:
        return table[context(np.asarray(obs))]

    return policy


def evaluate(policy: Callable[[Any], np.ndarray], users: int, days: int, seed: int) -> tuple[float, dict[str, float]]:
    from training.envs.evaluate import evaluate_policy

    r = evaluate_policy("rank", policy, n_users=users, days=days, seed=seed)
    return r.signals["watch_time"].mean, dict(r.per_decision)


@functools.cache
def _rank_task() -> Any:
    from models.problems import RANK
    from training.rl.task import TaskSpec

    return TaskSpec.from_problem(RANK)


def rank_key(result: tuple[float, dict[str, float]]) -> tuple[bool, float, float]:
    """The fixed-fusion rule: feasible first, then the smallest total relative violation, then watch time."""
    task = _rank_task()
    watch, per_decision = result
    violation = sum(
        max(0.0, -task.constraint_sign(c) * (per_decision[c.signal] - c.threshold)) / max(abs(c.threshold), 1e-8)
        for c in task.constraints
    )
    return violation == 0.0, -violation, watch


def search_table(constant: np.ndarray, name: str, users: int, days: int) -> tuple[np.ndarray, float, int]:
    """(weights table, its search watch time, tables evaluated) by two coordinate sweeps from the constant."""
    n_values, context = CONTEXTS[name]
    table = np.tile(constant, (n_values, 1))
    best = evaluate(table_policy(table, context), users, days, SEARCH_SEED)
    evaluated = 1
    for sweep in range(2):
        for row, weights, value in moves(name, n_values):
            candidate = table.copy()
            candidate[row, weights] = value
            if np.array_equal(candidate, table):
                continue
            result = evaluate(table_policy(candidate, context), users, days, SEARCH_SEED)
            evaluated += 1
            if rank_key(result) > rank_key(best):
                best, table = result, candidate
                print(f"  {name} sweep {sweep}: row {row} weights {weights} = {value} → {result[0]:.1f}", flush=True)
    return table, best[0], evaluated


def main(argv: list[str] | None = None) -> None:
    from training.envs import constant_policy

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--contexts", default=",".join(CONTEXTS))
    a = p.parse_args(argv)
    names = [c for c in a.contexts.split(",") if c]
    unknown = sorted(set(names) - set(CONTEXTS))
    if unknown:
        raise SystemExit(f"--contexts: unknown {unknown}; known: {sorted(CONTEXTS)}")

    t0 = time.monotonic()
    print("best constant weights (the fixed-fusion search) ...", flush=True)
    constant, _ = fixed_fusion_search(a.users, a.days, seed=SEARCH_SEED)
    print(
        f"  {np.round(constant[:BLOCK].astype(float), 2).tolist()} at every stage ({time.monotonic() - t0:.0f} s)",
        flush=True,
    )
    constant_eval = {s: evaluate(constant_policy("rank", constant), a.users, a.days, s) for s in EVAL_SEEDS}

    metrics: list[Metric] = []
    for name in names:
        table, search_watch, evaluated = search_table(constant, name, a.users, a.days)
        lifts, feasible = [], []
        for s in EVAL_SEEDS:
            result = evaluate(table_policy(table, CONTEXTS[name][1]), a.users, a.days, s)
            lifts.append(100.0 * (result[0] / constant_eval[s][0] - 1.0))
            feasible.append(rank_key(result)[0])
        mean, lo, hi = _ci(lifts)
        # A context's rows keep one block for every stage; the per-stage table has three blocks.
        rows = [np.round(r[: BLOCK * STAGES if name == "stage" else BLOCK].astype(float), 2).tolist() for r in table]
        print(f"{name}: held-out lift {mean:+.2f}% [{lo:+.2f}, {hi:+.2f}] ({time.monotonic() - t0:.0f} s)", flush=True)
        metrics.append(
            Metric(
                f"rank.headroom.{name}.watch_time_lift_pct",
                mean,
                "%",
                ci=(lo, hi),
                note=f"per-{name} weights (rows: {rows}) vs the best constant {np.round(constant[:BLOCK].astype(float), 2).tolist()}, "
                f"paired on seeds {list(EVAL_SEEDS)} ({a.users} users × {a.days} days): {[round(x, 2) for x in lifts]}; "
                f"every constraint met on {sum(feasible)}/{len(feasible)} seeds; search: {evaluated} tables, "
                f"{search_watch:.1f} s/user-day on the search users",
            )
        )
    path = write_result(
        "rank_headroom",
        metrics,
        command=f"python -m benchmarks.rank_headroom --users {a.users} --days {a.days} --contexts {','.join(names)}",
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
