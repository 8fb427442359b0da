"""Can MA-RDPG improve on a GOOD state-aware start? (issue 18, fifteenth round, MA-RDPG half; a diagnostic, ours)

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m benchmarks.rank_residual_rdpg_probe
    ... -m benchmarks.rank_residual_rdpg_probe '{"actor_lr": 0.0001}' --out runs/probe/rank_residual_rdpg_lr3.json

Fourteen rounds of warm starts at the searched constant failed: the learners buy watch time with comments.
Yet `benchmarks/headroom_rank.py`'s observed rule — `TiltedTablePolicy(REFERENCE_TABLE, OBSERVED_TILT,
OBSERVED_FEATURES)`, on observed features only — earns +5.2 % over `REFERENCE_CONSTANT` there. This probe starts
MA-RDPG AT that rule (`training.algorithms.ma_rdpg.train(..., start_policy=...)`: every stage's actor is the rule
plus a learned deviation within ± `deviation_bound`, `ResidualStagePolicy`) and asks whether its updates keep,
improve or lose what the start has.

Layout (headroom_rank's world: the default `rank` simulator, one world per seed, `compare_policies` /
`evaluate_sequential` with common random numbers; TUNING seeds only, never headroom_rank's EVAL_SEEDS
2000–2004): for i = 0, 1, 2 the learners train with seed 100 + i (`BatchedSimPool(multi_agent=True).reset(s)`:
world s and its users s, as `fit` does, 40 iterations × 64 envs × 32 requests, configs/rank/ma_rdpg.yaml's algo
section) and every arm is judged on the same 1 000 users × 3 days of evaluation seed 2100 + i (world 2100 + i,
its own users), paired per user:
  a. `REFERENCE_CONSTANT` at every stage (the baseline; lift 0);
  b. the observed rule, judged in the SEQUENTIAL view as the learners are (each stage on its own local
     observation o_k; "b" below and in the rule means this one); b_single — the same rule in the single view
     (every stage reads pre-rank's observation), headroom_rank's own number — is printed alongside;
  c. MA-RDPG as shipped, warm-started at `REFERENCE_CONSTANT` (`start_action`), what ships (`shipped_actors`);
  d. MA-RDPG, same config and budget, warm-started at b (`start_policy`), what ships.
Lift = watch time per user-day / a's on the same users − 1. Feasible = every constraint met on the judged users
(click ≥ 3, like ≥ 1.6, follow ≥ 0.3, comment ≥ 1.1, share ≥ 0.45 per decision). d − b = lift(d) − lift(b), in
points of a's watch time, per seed, plus the paired CI of d over b on the same users.

How o_k maps onto the rule's layout: o_k has the single view's 27 columns (`models.observations.rank_observation`);
the group one-hot (0–2), minutes in session (26) and completion EMA (24) are the user's and equal at every stage.
Column 16, the pool's mean predicted comment (the rule's sociability), is computed on the pool the stage
receives: the kept candidates, with the stage's own prediction factors. On the rule's play it reads +1.0 (rank)
and +2.0 (re-rank) standard units of the rule's feature above pre-rank's on the same request (world 100,
300 users), so the unmapped rule would tilt the later stages as if every user were far more sociable. The map
(ours): for stage k > 0, log(column 16) is replaced by the least-squares line c_k + b_k · log(o_k[16]) fitted
to log(o_0[16]) of the same requests (`fit_sociability_map`, on world headroom_rank.SEARCH_SEED's users —
the rule's own search world, neither training nor judged users — while the single-view rule plays, the target
behaviour); on world 100 (unmapped play) r was 0.93 / 0.91, residual 0.36 / 0.41 standard units; the
probe prints its own fit. So b's later stages read an
estimate of pre-rank's sociability; whatever b loses against b_single is the sequential view's own cost.

DECISION RULE (written and committed before the first run; b = the sequential-view rule):
* "Updates productive from a good start": mean over the 3 seeds of (d − b) >= 0 AND d feasible on >= as many
  seeds as b. Finding: the start (exploration / finding the state-aware region) is the bottleneck.
* "Updates net harmful": mean (d − b) < 0, or d feasible on fewer seeds than b. Finding: the learner's updates
  (critic / actor) lose even a good policy; more rounds on starts / ship choices can't fix #18.
* Either way nothing ships; no shipped config changes.

First run (shipped config): mean d − b +0.31 pts ± 1.09, but d feasible on 1 seed against b's 2 (seed 101: d's
comment 1.080, b's 1.130) — "updates net harmful" by the rule; the last iterates lose 4–14 % (d) and 15–31 % (c).

SECOND VARIANT, written and committed before its run: actor_lr / 3 (1e-4) for both learners (JSON override), the
same rule on its d' against the same b. Why: what ships keeps b's watch time only because the tracker ships an
iterate from before the drift, while the actors drift 4–14 % below b by the last iterate and the one shipped
iterate that moved bought watch with comments (seed 101). If a third of the actor step keeps d' at or above b
on watch AND on feasibility (rule passes), the harm is in the actors' step size on the critic's ∂Q/∂a; if d'
still fails, the direction the critic gives is the harm, not the step. Caveat fixed in advance: a seed where d'
ships an iterate from before the actors' first step (kept iteration ≤ 9: actor_starts 320 requests = 10
iterations of 32) is the untouched start; a pass made only of such seeds says the slower actor does no harm
because it does not move, and will be reported as that, not as "productive".

Second variant's run: mean d' − b +0.87 pts ± 2.14, d' feasible on 1 seed against b's 2 — "updates net harmful"
again. Seed 100 shipped the untouched start (kept iteration 3, d' = b); seeds 101 and 102 shipped moved iterates
that bought +1.7 / +0.9 pts of watch with 3.5 / 2.1 % fewer comments (101: 1.130 → 1.091, below 1.1). The last
iterates: d' −11.0 / +6.4 / −15.7 %, c' −16.0 / −18.1 / −6.4 %. Per-iteration training watch time swings
±30 % between iterations once the actors move (e.g. seed 101 d': 124 → 164 → 97 s per request) at either rate.
THIRD VARIANT (issue 18 sixteenth round), written and committed before its run: TD3's three stabilisers on both
learners (`'{"twin_critics": true, "policy_delay": 2, "target_noise": 0.2, "target_noise_clip": 0.5}'`,
`--out runs/probe/rank_residual_rdpg_td3.json`), the same rule on its d'' against the same b: does MA-RDPG now
hold the rule's start? Same caveat as the second variant (a seed shipping kept iteration ≤ 9 is the untouched
start). Secondary, not in the rule: the last iterates of d'' and c'' against the first run's (d −4…−14 %).

Third variant's run (13:34–13:37 UTC, 225 s; record benchmarks/results/rank_residual_rdpg_td3.json): mean d'' − b
+0.68 pts ± 1.70, d'' feasible on 1 seed against b's 2 — "updates net harmful" again. Seed 100 shipped the untouched
start (kept iteration 3, d'' = b); seeds 101 and 102 shipped moved iterates that bought +0.7 / +1.4 pts of watch
with 4.9 / 5.0 % fewer comments (101: 1.130 → 1.075, below 1.1). The last iterates: d'' −19.3 / −9.5 / −15.4 %,
c'' −2.8 / −17.6 / −6.8 % — no better than the plain DDPG updates' (d −4…−14 %). TD3's stabilisers do not make
MA-RDPG hold the rule's start (rank_quality NOTES, sixteenth round: the drift is the multiplier ↔ actor loop).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import headroom_rank as hr

TRAIN_SEEDS = (100, 101, 102)
EVAL_SEEDS = (2100, 2101, 2102)
"""Judged users: world 2100 + i's own (tuning; headroom_rank reports 2000–2004)."""
USERS = 1000
DAYS = 3
ITERATIONS, ENVS, ROLLOUT_STEPS = 40, 64, 32
"""rank_quality's / rank_probe's default budget (40 × 64 rows × 32 requests)."""
MAP_USERS = 300
"""Users of world `hr.SEARCH_SEED` (its own, 3 days) the sociability map is fitted on."""


def fit_sociability_map(
    rule: hr.Policy, world: int = hr.SEARCH_SEED, users: int = MAP_USERS
) -> tuple[tuple[float, float], ...]:
    """(b_k, c_k) per stage: log(o_0[16]) ≈ c_k + b_k · log(o_k[16]) on the same requests while `rule` plays in
    the single view (every stage on pre-rank's observation); stage 0's is (1, 0). Prints r per stage."""
    from training.envs import make_batched
    from training.envs.evaluate import _rows

    sim: Any = make_batched("rank", _rows(users), world, max_users=users, days=DAYS, common_random_numbers=True)
    sim.reset(None)
    pairs: list[list[np.ndarray]] = [[], [], []]
    while not sim.all_done:
        o0 = sim.stage_observation(0, None)
        weights = rule(o0)
        positions = None
        live = sim.users.active
        for k in range(3):
            ok = o0 if k == 0 else sim.stage_observation(k, positions)
            pairs[k].append(np.stack([ok[live, hr.SOCIAL_FEATURE], o0[live, hr.SOCIAL_FEATURE]], axis=1))
            positions = sim.run_stage(k, weights[:, 6 * k : 6 * k + 6], positions)
        sim.serve_page(positions)
    out = []
    for k in range(3):
        x, y = np.log(np.maximum(np.concatenate(pairs[k]), 1e-6)).T
        slope, intercept = np.polyfit(x, y, 1) if k > 0 else (1.0, 0.0)
        resid = (y - slope * x - intercept).std() / hr.FEATURE_SCALE[0]
        print(
            f"sociability map stage {k}: log o0 = {intercept:+.3f} + {slope:.3f} log ok; r {np.corrcoef(x, y)[0, 1]:.3f}, "
            f"shift before the map {(x - y).mean() / hr.FEATURE_SCALE[0]:+.2f} sd, residual {resid:.2f} sd",
            flush=True,
        )
        out.append((float(slope), float(intercept)))
    return tuple(out)


def stage_rule(
    rule: hr.Policy, sociability_map: tuple[tuple[float, float], ...]
) -> Callable[[int, np.ndarray], np.ndarray]:
    """b in the sequential view, a `ma_rdpg.StartPolicy`: stage k plays its slice of `rule` on its own o_k with
    column 16 mapped onto pre-rank's scale (`fit_sociability_map`)."""

    def policy(stage: int, obs: np.ndarray) -> np.ndarray:
        slope, intercept = sociability_map[stage]
        mapped = np.array(obs, np.float32, copy=True)
        log_social = np.log(np.maximum(mapped[:, hr.SOCIAL_FEATURE], 1e-6))
        mapped[:, hr.SOCIAL_FEATURE] = np.exp(intercept + slope * log_social)
        return np.asarray(rule(mapped), np.float32)[:, 6 * stage : 6 * stage + 6]

    return policy


def judge(stage_policy: Any, state_size: int, seed: int) -> dict[str, Any]:
    """`evaluate_sequential` on world `seed`'s own USERS × DAYS (common random numbers)."""
    from training.rl.sim import evaluate_sequential

    return evaluate_sequential(stage_policy, state_size, USERS, DAYS, seed=seed)


def stateless(rule: Callable[[int, np.ndarray], np.ndarray]) -> Any:
    """A stage rule as `evaluate_sequential`'s stage policy (no message)."""
    return lambda stage, obs, state: (rule(stage, obs), state)


def train_ma_rdpg(
    seed: int, start_action: Any = None, start_policy: Any = None, overrides: dict[str, Any] | None = None
) -> tuple[Any, float, list[dict[str, float]]]:
    """MA-RDPG with configs/rank/ma_rdpg.yaml's algo section, trained as `fit` trains it (world `seed`, its users,
    ENVS rows, ITERATIONS × ROLLOUT_STEPS requests, one thread), warm-started at a constant or a rule; returns
    the module, the iteration its best feasible tracker kept (−1: none, the last iterate ships) and the per-iteration
    rows. `overrides` go to the algo section (the second variant's)."""
    import torch

    from benchmarks import rank_quality as rq
    from models.problems import RANK
    from training.algorithms import ma_rdpg
    from training.rl.sim import BatchedSimPool
    from training.rl.task import TaskSpec

    torch.set_num_threads(1)
    algo = rq._algo_config("ma_rdpg", None, None if start_action is None else np.asarray(start_action))
    cfg = ma_rdpg.MARDPGConfig.from_dict({**algo, **(overrides or {}), "seed": seed})
    task = TaskSpec.from_problem(RANK, multi_agent=True)
    pool = BatchedSimPool("rank", ENVS, task, multi_agent=True)
    pool.reset(seed)
    rows: list[dict[str, float]] = []
    module = ma_rdpg.train(
        cfg, task, pool.sim, ITERATIONS * ROLLOUT_STEPS, ROLLOUT_STEPS, on_log=rows.append, start_policy=start_policy
    )
    return module, rows[-1].get("charts/best_feasible_iteration", -1.0) if rows else -1.0, rows


def report(name: str, r: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Lift over `base` on the same users (paired), the rates, feasibility."""
    from models.problems import RANK
    from training.envs.evaluate import paired_lift

    lift, low, high = paired_lift(r["per_user_day"]["watch_time"], base["per_user_day"]["watch_time"])
    pd = r["per_decision"]
    broken = [c.signal for c in RANK.constraints if not c.satisfied(pd[c.signal])]
    return {
        "arm": name,
        "lift": lift,
        "ci": [low, high],
        "watch": float(r["per_user_day"]["watch_time"].mean()),
        "rates": {c.signal: round(pd[c.signal], 4) for c in RANK.constraints},
        "feasible": not broken,
        "broken": broken,
    }


HISTORY = (
    ("mult_comment", "charts/multiplier_comment"),
    ("train_comment", "per_request_comment"),
    ("train_wt", "per_request_watch_time"),
)
"""Per-iteration rows printed for each learner (MA-RDPG's own loop's keys)."""


def probe_seed(
    train_seed: int, eval_seed: int, sociability_map: Any, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    from training.algorithms.ma_rdpg import message_policy
    from training.envs.evaluate import compare_policies, paired_lift

    t0 = time.time()
    rule = hr.observed_rule()
    b_rule = stage_rule(rule, sociability_map)
    constant = np.tile(np.asarray(hr.REFERENCE_CONSTANT, np.float32), 3)
    runs = {
        "a": judge(
            stateless(lambda k, obs: np.broadcast_to(constant[6 * k : 6 * k + 6], (obs.shape[0], 6))), 0, eval_seed
        ),
        "b": judge(stateless(b_rule), 0, eval_seed),
    }
    single = compare_policies(
        "rank", {"a": hr.constant(hr.REFERENCE_CONSTANT), "b": rule}, "a", n_users=USERS, days=DAYS, seed=eval_seed
    )["b"]
    t_eval = time.time() - t0
    extra: dict[str, Any] = {}
    for arm, kwargs in (("c", {"start_action": constant}), ("d", {"start_policy": b_rule})):
        t1 = time.time()
        module, kept_iteration, rows = train_ma_rdpg(train_seed, overrides=overrides, **kwargs)
        t_train = time.time() - t1
        for label, key in HISTORY:
            print(f"   {arm} {label} " + " ".join(f"{row.get(key, float('nan')):.2f}" for row in rows), flush=True)
        runs[arm] = judge(message_policy(list(module.shipped_actors())), module.state_size, eval_seed)
        runs[f"{arm}_last"] = judge(message_policy(list(module.actors)), module.state_size, eval_seed)
        extra[arm] = {"kept_iteration": kept_iteration, "train_s": round(t_train, 1)}
    out = {k: report(k, r, runs["a"]) for k, r in runs.items()}
    d_over_b = paired_lift(runs["d"]["per_user_day"]["watch_time"], runs["b"]["per_user_day"]["watch_time"])
    result = {
        "train_seed": train_seed,
        "eval_seed": eval_seed,
        "arms": out,
        "b_single": {
            "lift": single.lift,
            "ci": [single.ci_low, single.ci_high],
            "rates": {k: round(v, 4) for k, v in single.per_decision.items()},
            "feasible": single.constraints_satisfied,
        },
        "d_minus_b": out["d"]["lift"] - out["b"]["lift"],
        "d_over_b_paired": list(d_over_b),
        "training": extra,
        "seconds": round(time.time() - t0, 1),
        "eval_s_a_b": round(t_eval, 1),
    }
    for k in ("a", "b", "c", "d", "c_last", "d_last"):
        o = out[k]
        print(
            f"seed {train_seed}/{eval_seed} {k:>6}: lift {100 * o['lift']:+6.2f}% [{100 * o['ci'][0]:+.2f}, "
            f"{100 * o['ci'][1]:+.2f}] comment {o['rates']['comment']:.3f} feasible {o['feasible']} {o['broken']}",
            flush=True,
        )
    print(
        f"seed {train_seed}/{eval_seed} b_single: lift {100 * single.lift:+.2f}% comment "
        f"{single.per_decision['comment']:.3f} feasible {single.constraints_satisfied}; d - b "
        f"{100 * result['d_minus_b']:+.2f} pts (paired d/b − 1 {100 * d_over_b[0]:+.2f}% [{100 * d_over_b[1]:+.2f}, "
        f"{100 * d_over_b[2]:+.2f}]); kept iterations c {extra['c']['kept_iteration']:.0f} d "
        f"{extra['d']['kept_iteration']:.0f}; {result['seconds']:.0f} s",
        flush=True,
    )
    return result


def verdict(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The pre-written rule (module docstring) on the per-seed results."""
    from scipy import stats

    diffs = np.asarray([r["d_minus_b"] for r in results])
    half = (
        float(stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs)))
        if len(diffs) > 1
        else float("nan")
    )
    feasible = {k: sum(r["arms"][k]["feasible"] for r in results) for k in ("a", "b", "c", "d")}
    productive = bool(diffs.mean() >= 0 and feasible["d"] >= feasible["b"])
    summary: dict[str, Any] = {
        "mean_d_minus_b": float(diffs.mean()),
        "half_width": half,
        "feasible": feasible,
        "verdict": "updates productive from a good start" if productive else "updates net harmful",
    }
    for k in ("b", "c", "d"):
        lifts = np.asarray([r["arms"][k]["lift"] for r in results])
        h = (
            float(stats.t.ppf(0.975, len(lifts) - 1) * lifts.std(ddof=1) / np.sqrt(len(lifts)))
            if len(lifts) > 1
            else float("nan")
        )
        summary[f"lift_{k}"] = [float(lifts.mean()), h]
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="?", default="{}", help="JSON overrides of both learners' algo section")
    p.add_argument("--seeds", type=int, default=len(TRAIN_SEEDS), help="how many of the seed pairs to run")
    p.add_argument("--out", default="runs/probe/rank_residual_rdpg.json")
    a = p.parse_args(argv)
    overrides = json.loads(a.overrides)
    started = time.time()
    sociability_map = fit_sociability_map(hr.observed_rule())
    results = [
        probe_seed(s, e, sociability_map, overrides)
        for s, e in list(zip(TRAIN_SEEDS, EVAL_SEEDS, strict=True))[: a.seeds]
    ]
    summary = verdict(results)
    print(
        f"MEAN d - b {100 * summary['mean_d_minus_b']:+.2f} pts ± {100 * summary['half_width']:.2f}; lifts over a: "
        + ", ".join(f"{k} {100 * summary[f'lift_{k}'][0]:+.2f}% ± {100 * summary[f'lift_{k}'][1]:.2f}" for k in "bcd")
        + f"; feasible {summary['feasible']}; VERDICT {overrides}: {summary['verdict']}; {time.time() - started:.0f} s",
        flush=True,
    )
    from pathlib import Path

    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"overrides": overrides, "sociability_map": sociability_map, "seeds": results, "summary": summary}
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
