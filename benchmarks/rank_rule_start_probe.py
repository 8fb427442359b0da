"""Can TSCAC's updates improve on a GOOD state-aware start? A diagnostic on TUNING seeds (issue 18, fifteenth round).

    python -m benchmarks.rank_rule_start_probe                       # seeds 100,101,102; ~10 min, one process
    python -m benchmarks.rank_rule_start_probe '{"actor_lr": 0.00033}' --label actor_lr_third

Ours, all of it. Fourteen rounds of learners warm-started at the searched constant found no +3 % with every
constraint met, while `benchmarks/headroom_rank.py` shows that a rule on observed features only — the table of
weights per (activity group × fatigue bin) with its interaction weights tilted by sociability and satisfaction,
`TiltedTablePolicy(REFERENCE_TABLE, OBSERVED_TILT, OBSERVED_FEATURES)` — earns about +5 % over
`REFERENCE_CONSTANT` in that world (`observed_lift`). So the headroom exists and the learners do not find it.
This probe asks whether the learner's *updates* keep, lose or improve a good policy when it starts there.

headroom_rank's world, its layout: a seed is a world (its catalog) and its users; no world is shared between
training and judging. Per tuning seed s (100, 101, 102), every arm judged on the same 1 000 users × 3 days of
world 2000 + s (2100, 2101, 2102; common random numbers, `training.envs.evaluate`), never headroom_rank's
EVAL_SEEDS 2000–2004:
  a. `constant`: `REFERENCE_CONSTANT` at every stage (the baseline; lift 0);
  b. `rule`: the observed rule above (no learning);
  c. `tscac_constant`: TSCAC as shipped (configs/rank/tscac.yaml, `algo` and `online`), warm-started at
     `REFERENCE_CONSTANT` (`start_action`), trained on world s with the users of seed s, 40 iterations × 64
     rows × 32 steps; what ships (its best feasible iterate);
  d. `tscac_rule`: the same config, budget and training world, warm-started at the rule (b) instead
     (`training.rl.trainer.PolicyStart`: the actor's mode fitted to the rule's actions on 64 × 512
     observations of the rule played in the training world, σ unchanged); what ships.
Printed beside them, not judged: `rule_clone` (d's start, the fitted actor before any update: how faithful the
start is) and both learners' last iterates. Per seed: lift of b, c, d (and the diagnostics) over a with the
per-user paired 95 % CI, comment rate, feasibility (every constraint: click >= 3, like >= 1.6, follow >= 0.3,
comment >= 1.1, share >= 0.45 per decision on the judged users), and the paired d − b (d / b − 1 on the same
users, with its paired CI). Over the seeds: mean ± 95 % t half-width (2 df) and feasible counts.

Decision rule, written before the first run (committed with this file):
- "Updates productive from a good start": mean over the 3 seeds of (d − b) >= 0 AND d feasible on >= as many
  seeds as b. Then the round's finding is: the start (exploration / finding the state-aware region) is the
  bottleneck.
- "Updates net harmful": mean (d − b) < 0 or d feasible on fewer seeds than b. Finding: the learner's updates
  (critic/actor) lose even a good policy; more rounds on starts/ship choices can't fix #18.
- Either way nothing ships; shipped configs are unchanged. d − b is the paired d / b − 1 per seed.

Second variant, written after the first run and before its own (`'{"margin": 0.03}' --label margin3`): the first
run (shipped config) read "updates net harmful" by its feasibility half only — d out-earned b (mean d − b +2.37 %)
but met every constraint on 1 seed against b's 2, its comment rate below the rule's on every seed (the shipped PID
aims Δ = 0, the threshold itself, on a 64-row training batch, so it spends whatever comment slack the start has).
Why this variant and not actor lr / 3: the half that failed is the constraint aim, and `TSCACConfig.margin` 0.03 is
the aim the twelfth round measured (TSCAC feasible on 5 of 6 tuning worlds with it, 2 of 6 without), the same 3 %
the constant's search keeps; a smaller step would only move d towards b. Same rule, same seeds and users, c and d
both with margin 0.03. Reading, fixed now: "productive" here with "net harmful" for the shipped config → the
updates themselves keep and improve a good start, and the shipped aim (threshold on the training batch) is what
loses feasibility; "net harmful" here too → the updates lose the start's feasibility even with a 3 % aim.

Trade curve (`--trade-curve`), written after both runs and before its own; a reading, not a decision. Both runs
read "net harmful" by feasibility, and on every seed where d out-earned b its comment rate was lower: did the
updates find watch time, or only sell comments along the rule's own trade-off? The rule with its comment weight
× k (k = 1, 0.8, 0.65, 0.5, 0.35, every stage) is judged on the same users; its lift over the constant,
interpolated linearly at d's comment rate, is what the rule alone gets for the comments d gave up. Reading: d
above that curve on >= 4 of the 6 (run, seed) points → the updates find watch time beyond trading comments (an
update worth having, held back by the aim); otherwise they only trade along (or below) the rule's curve. A point
whose comment rate lies outside the curve's range is counted as not above.

The first `--trade-curve` run (k down to 0.35) left 4 of the 6 points below the curve's comment range (counted
"not above", 0 of 6); rerun with `--trade-factors 1,0.65,0.35,0.2,0.1,0.0` so that they fall inside, same reading
(written before that rerun).

JSON overrides (first argument) go to both learners' algo config (c and d alike); `--label` names the run's
record in benchmarks/results/rank_rule_start_<label>.json (the runs' folders in var/bench/rank_rule_start/).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from benchmarks import headroom_rank as hr
from benchmarks import rank_quality as rq

JUDGE_OFFSET = 2000
"""Seed s is judged on world 2000 + s's own users (headroom_rank's evaluation layout; 2100–2102 for 100–102)."""
ROLLOUT_STEPS = 32
OUT = Path(__file__).resolve().parents[1] / "var" / "bench" / "rank_rule_start"
"""Training runs' folders (metrics, checkpoints)."""
RESULTS = Path(__file__).resolve().parent / "results"
"""Each run's record: rank_rule_start_<label>.json (rows per seed, summary, verdict)."""
ARMS = ("rule", "tscac_constant", "tscac_rule")
"""The judged arms (b, c, d), each against `constant` (a)."""


def train_tscac(
    seed: int, overrides: dict[str, Any], start_at_rule: bool, label: str, iterations: int = 40, n_envs: int = 64
) -> Any:
    """TSCAC as shipped plus `overrides`, warm-started at `REFERENCE_CONSTANT` or (`start_at_rule`) at the rule,
    trained in world `seed` with its users (the RunResult)."""
    from training.rl.trainer import PolicyStart
    from training.train import train_problem

    start_action = np.tile(np.asarray(hr.REFERENCE_CONSTANT, np.float32), 3)
    run = {
        "seed": seed,
        "iterations": iterations,
        "n_envs": n_envs,
        "rollout_steps": ROLLOUT_STEPS,
        "progress": False,
        "tensorboard": False,
        "plots": False,
        "out_dir": str(OUT / label / f"seed{seed}" / ("rule" if start_at_rule else "constant")),
    }
    config = {"run": run, "algo": {**rq._algo_config("tscac", None, start_action), **overrides}}
    config["online"] = rq._online("tscac")
    start = PolicyStart(hr.observed_rule()) if start_at_rule else None
    return train_problem("rank", "tscac", sim=True, config=config, policy_start=start)


def judge(policies: dict[str, Any], users: int, seed: int) -> dict[str, tuple[np.ndarray, dict[str, float]]]:
    """Every policy on the same `users` users × 3 days of world `seed` (common random numbers): (watch time per
    user-day (users,), per-decision rates)."""
    from models.problems import RANK
    from training.envs.evaluate import _user_days

    main = RANK.signal_names.index("watch_time")
    out = {}
    for name, policy in policies.items():
        totals, _, decisions = _user_days("rank", policy, users, hr.DAYS, seed, {})
        rates = {s: float(totals[:, :, i].sum() / max(decisions, 1)) for i, s in enumerate(RANK.signal_names)}
        out[name] = (totals[:, :, main].mean(axis=1), rates)
    return out


def feasible(rates: dict[str, float]) -> bool:
    return not hr.violations(rates)


def probe_seed(
    seed: int, users: int, overrides: dict[str, Any], label: str, iterations: int = 40, n_envs: int = 64
) -> dict[str, Any]:
    """The arms of one tuning seed, paired on world 2000 + seed's users (module docstring)."""
    import torch

    from training.envs.evaluate import paired_lift
    from training.rl.losses import shipped_policy
    from training.rl.sim import actor_policy

    torch.set_num_threads(1)
    t0 = time.time()
    c = train_tscac(seed, overrides, False, label, iterations, n_envs)
    d = train_tscac(seed, overrides, True, label, iterations, n_envs)
    trained = time.time() - t0
    clone = copy.deepcopy(d.learner.actor)
    clone.load_state_dict(d.cloned_actor_state)
    policies = {
        "constant": hr.constant(hr.REFERENCE_CONSTANT),
        "rule": hr.observed_rule(),
        "tscac_constant": actor_policy(shipped_policy(c.learner)),
        "tscac_rule": actor_policy(shipped_policy(d.learner)),
        "rule_clone": actor_policy(clone),
        "tscac_constant_last": actor_policy(c.learner.actor),
        "tscac_rule_last": actor_policy(d.learner.actor),
    }
    runs = judge(policies, users, JUDGE_OFFSET + seed)
    base = runs["constant"][0]
    row: dict[str, Any] = {"seed": seed, "judge_world": JUDGE_OFFSET + seed, "train_seconds": trained}
    for name, (watch, rates) in runs.items():
        lift, lo, hi = paired_lift(watch, base)
        row[name] = {"lift": lift, "ci": [lo, hi], "watch": float(watch.mean()), "rates": rates}
        row[name]["feasible"] = feasible(rates)
    row["d_minus_b"] = list(paired_lift(runs["tscac_rule"][0], runs["rule"][0]))
    row["d_minus_start"] = list(paired_lift(runs["tscac_rule"][0], runs["rule_clone"][0]))
    row["kept"] = {
        "tscac_constant": c.history[-1].get("charts/best_feasible_iteration", -1),
        "tscac_rule": d.history[-1].get("charts/best_feasible_iteration", -1),
    }
    row["policy_start_mse"] = _policy_start_mse(d.out_dir)
    row["seconds"] = time.time() - t0
    return row


def _policy_start_mse(out_dir: Path) -> float:
    """The start's fit error as the run logged it (metrics.jsonl; nan when absent)."""
    for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines():
        value = json.loads(line).get("losses/policy_start_mse")
        if value is not None:
            return float(value)
    return float("nan")


def _half(values: list[float]) -> float:
    x = np.asarray(values, np.float64)
    return float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def print_seed(row: dict[str, Any]) -> None:
    parts = []
    for name in ("rule", "tscac_constant", "tscac_rule", "rule_clone", "tscac_constant_last", "tscac_rule_last"):
        r = row[name]
        mark = "" if r["feasible"] else " INFEASIBLE " + ",".join(hr.violations(r["rates"]))
        parts.append(
            f"{name} {100 * r['lift']:+.2f}% [{100 * r['ci'][0]:+.2f}, {100 * r['ci'][1]:+.2f}] "
            f"comment {r['rates']['comment']:.3f}{mark}"
        )
    dmb, dms = row["d_minus_b"], row["d_minus_start"]
    print(
        f"seed {row['seed']} (judged on world {row['judge_world']}; constant comment "
        f"{row['constant']['rates']['comment']:.3f}{'' if row['constant']['feasible'] else ' INFEASIBLE'}, "
        f"watch {row['constant']['watch']:.0f} s/user-day):\n   " + "\n   ".join(parts) + "\n"
        f"   d - b {100 * dmb[0]:+.2f}% [{100 * dmb[1]:+.2f}, {100 * dmb[2]:+.2f}]; d - d's start (rule_clone) "
        f"{100 * dms[0]:+.2f}% [{100 * dms[1]:+.2f}, {100 * dms[2]:+.2f}]; kept iterations {row['kept']}; "
        f"start fit mse {row['policy_start_mse']:.5f}; train {row['train_seconds']:.0f} s, all {row['seconds']:.0f} s",
        flush=True,
    )


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the seeds, feasible counts and the verdict by the rule written before the runs."""
    out: dict[str, Any] = {}
    for name in ("rule", "tscac_constant", "tscac_rule", "rule_clone", "tscac_constant_last", "tscac_rule_last"):
        lifts = [r[name]["lift"] for r in rows]
        out[name] = {
            "lift": float(np.mean(lifts)),
            "half_width": _half(lifts),
            "per_seed": lifts,
            "comment": [r[name]["rates"]["comment"] for r in rows],
            "feasible": sum(r[name]["feasible"] for r in rows),
        }
    dmb = [r["d_minus_b"][0] for r in rows]
    out["d_minus_b"] = {"mean": float(np.mean(dmb)), "half_width": _half(dmb), "per_seed": dmb}
    dms = [r["d_minus_start"][0] for r in rows]
    out["d_minus_start"] = {"mean": float(np.mean(dms)), "half_width": _half(dms), "per_seed": dms}
    productive = out["d_minus_b"]["mean"] >= 0 and out["tscac_rule"]["feasible"] >= out["rule"]["feasible"]
    out["verdict"] = "updates productive from a good start" if productive else "updates net harmful"
    return out


TRADE_FACTORS = (1.0, 0.8, 0.65, 0.5, 0.35)
"""k of `--trade-curve`: the rule's comment weight × k at every stage."""


def comment_scaled(rule: Any, factor: float) -> Any:
    """The rule with its comment weight × `factor` at every stage (the other weights unchanged)."""

    def policy(obs: Any) -> np.ndarray:
        action = np.array(rule(obs), np.float32)
        action[:, 4 :: hr.N_SIGNALS] *= factor
        return action

    return policy


def trade_curve(labels: list[str], users: int, factors: tuple[float, ...] = TRADE_FACTORS) -> None:
    """The rule's own watch-for-comment curve on each seed's judged users against the learners' shipped points
    (`labels`: records of earlier runs, benchmarks/results/rank_rule_start_<label>.json; module docstring)."""
    from training.envs.evaluate import paired_lift

    records = {label: json.loads((RESULTS / f"rank_rule_start_{label}.json").read_text()) for label in labels}
    seeds = [row["seed"] for row in records[labels[0]]["rows"]]
    above, points = 0, 0
    for i, seed in enumerate(seeds):
        policies = {"constant": hr.constant(hr.REFERENCE_CONSTANT)}
        policies |= {f"k={k}": comment_scaled(hr.observed_rule(), k) for k in factors}
        runs = judge(policies, users, JUDGE_OFFSET + seed)
        curve = [
            (runs[f"k={k}"][1]["comment"], paired_lift(runs[f"k={k}"][0], runs["constant"][0])[0]) for k in factors
        ]
        comments, lifts = zip(*sorted(curve), strict=True)
        print(
            f"seed {seed} rule curve (k, comment, lift): "
            + " ".join(f"({k}, {c:.3f}, {100 * lift:+.2f}%)" for k, (c, lift) in zip(factors, curve, strict=True)),
            flush=True,
        )
        for label, record in records.items():
            d = record["rows"][i]["tscac_rule"]
            comment = d["rates"]["comment"]
            inside = comments[0] <= comment <= comments[-1]
            at = float(np.interp(comment, comments, lifts)) if inside else float("nan")
            points += 1
            above += bool(inside and d["lift"] > at)
            print(
                f"   {label}: d comment {comment:.3f} lift {100 * d['lift']:+.2f}%; rule curve there "
                f"{100 * at:+.2f}% -> {'above' if inside and d['lift'] > at else 'not above'}"
                f"{'' if inside else ' (outside the curve)'}",
                flush=True,
            )
    reading = "beyond trading comments" if above >= 4 else "only trading along the rule's curve"
    print(f"TRADE CURVE: d above the rule's curve on {above} of {points} points -> {reading}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("overrides", nargs="?", default="{}", help="JSON: TSCAC config fields for both learners")
    p.add_argument("--seeds", default="100,101,102")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--label", default="shipped")
    p.add_argument("--trade-curve", default="", help="labels of earlier runs: the rule's comment trade-off curve")
    p.add_argument("--trade-factors", default="", help="k of --trade-curve, comma-separated (default TRADE_FACTORS)")
    p.add_argument("--iterations", type=int, default=40, help="run.iterations (smoke runs only; the probe: 40)")
    p.add_argument("--envs", type=int, default=64, help="run.n_envs (smoke runs only; the probe: 64)")
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    if not set(seeds) <= set(range(100, 112)):
        raise SystemExit("--seeds: tuning seeds 100-111 only (judged on worlds 2100-2111, never 2000-2004)")
    if a.trade_curve:
        factors = tuple(float(k) for k in a.trade_factors.split(",")) if a.trade_factors else TRADE_FACTORS
        trade_curve(a.trade_curve.split(","), a.users, factors)
        return
    overrides = json.loads(a.overrides)
    started = time.time()
    rows = []
    for s in seeds:
        rows.append(probe_seed(s, a.users, overrides, a.label, a.iterations, a.envs))
        print_seed(rows[-1])
    summary = summarise(rows)
    for name in ("rule", "tscac_constant", "tscac_rule", "rule_clone", "tscac_constant_last", "tscac_rule_last"):
        m = summary[name]
        print(
            f"MEAN {name}: lift {100 * m['lift']:+.2f}% ± {100 * m['half_width']:.2f} (per seed "
            f"{np.round(100 * np.asarray(m['per_seed']), 2).tolist()}), comment {np.round(m['comment'], 3).tolist()}, "
            f"feasible {m['feasible']} of {len(rows)}"
        )
    for key in ("d_minus_b", "d_minus_start"):
        m = summary[key]
        print(
            f"MEAN {key}: {100 * m['mean']:+.2f}% ± {100 * m['half_width']:.2f} "
            f"(per seed {np.round(100 * np.asarray(m['per_seed']), 2).tolist()})"
        )
    print(f"VERDICT ({a.label} {overrides}): {summary['verdict']}; {time.time() - started:.0f} s", flush=True)
    record = {"overrides": overrides, "users": a.users, "rows": rows, "summary": summary}
    (RESULTS / f"rank_rule_start_{a.label}.json").write_text(json.dumps(record, indent=1, default=float))


if __name__ == "__main__":
    main()
