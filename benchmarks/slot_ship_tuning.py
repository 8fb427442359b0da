"""Tuning for issue 17 on worlds that are not reported: which SL-MGAC iterate ships, and which OPE interval.

    python -m benchmarks.slot_ship_tuning [--seeds 2000,2001,2002] [--train-seeds 3] [--users 4000]
                                          [--windows 5,10,20] [--ope-draws 20] [--ope-sizes 4000,16000]

1. Shipping rule. Per tuning world (the best threshold rule searched on its search users, as
   `slot_quality --search-rules`), SL-MGAC is trained as in `benchmarks.slot_quality` with
   `--train-seeds` training seeds, keeping the students of the last max(windows) batches. From one
   training run every candidate is read: the last iterate, and the average of the last W collecting
   students (`ship: window_average`, `ship_window: W`, fitted as SL-MGAC does when training ends), and the
   parameter-wise mean of those W students (`weights_W`, as stochastic weight averaging).
   Each is evaluated 7 days on `--users` paired users: lift vs the rule, exposure, and the std of the
   lift across training seeds pooled over worlds (with the part evaluation noise alone gives).
2. OPE interval. For each world's first-seed student (the largest window's average), `--ope-draws`
   independent logs of each size in `--ope-sizes` (behaviour as in `slot_quality`); per log the NCIS with
   the MSE-chosen cap (`ncis_mse_cap`) with its normal interval, and at the smallest size also the
   bootstrap of the whole selection (cap chosen again on each of `--bootstrap` row resamples; percentile
   and basic intervals), and DR. Coverage of the truth (the student on 50,000 other fresh users).

Writes benchmarks/results/slot_ship_tuning.json (BENCHMARKS.md format: the summary as metrics, each world's
rows under "worlds"; after each world a partial file without metrics).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import Metric, write_result  # noqa: E402
from benchmarks.headroom_slot import SEARCH_OFFSET, search_threshold_rules  # noqa: E402
from benchmarks.slot_quality import (  # noqa: E402
    OPE_EPSILON,
    OPE_OFFSET,
    TRUTH_OFFSET,
    argmax_policy,
    explored,
    first_requests,
    ope_estimates,
    paired_ratio,
    run_users,
    train_policy,
)
from training.rl.policy_average import average_weights, distil_window  # noqa: E402


def bootstrap_ncis(logs: dict[str, Any], probs: Any, target: Any, n_boot: int, seed: int) -> dict[str, Any]:
    """The MSE-capped NCIS recomputed on `n_boot` row resamples (the cap chosen again each time): percentile and
    basic (reflected) 95 % intervals around the full-log estimate."""
    from training.ope import ncis_mse_cap

    x, a, r = logs["obs"], logs["action"], logs["total"][:, None]
    n = x.shape[0]
    rows = np.arange(n)
    mu = probs(x)[rows, a]
    hit = (np.asarray(target(x), dtype=np.int64) == a).astype(np.float64)
    with np.errstate(divide="ignore"):
        target_log, behaviour_log = np.log(hit), np.log(mu)
    value = float(ncis_mse_cap(r, target_log, behaviour_log).value[0])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        draws.append(float(ncis_mse_cap(r[idx], target_log[idx], behaviour_log[idx]).value[0]))
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"value": value, "percentile": (float(lo), float(hi)), "basic": (2 * value - hi, 2 * value - lo)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="2000,2001,2002")
    ap.add_argument("--train-seeds", type=int, default=3)
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--iterations", type=int, default=80)
    ap.add_argument("--windows", default="5,10,20")
    ap.add_argument("--ope-draws", type=int, default=20)
    ap.add_argument("--ope-sizes", default="4000,16000")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--result", default="slot_ship_tuning")
    args = ap.parse_args()
    torch.set_num_threads(1)
    windows = [int(w) for w in args.windows.split(",")]
    sizes = [int(s) for s in args.ope_sizes.split(",")]
    out: dict[str, Any] = {
        "command": "python -m benchmarks.slot_ship_tuning "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "worlds": {},
    }
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="troupe-slot-ship-") as tmp:
        for seed in [int(s) for s in args.seeds.split(",")]:
            rule = search_threshold_rules(args.users // 8, seed, seed + SEARCH_OFFSET)[0]
            base = run_users(rule, args.users, seed, seed)
            world: dict[str, Any] = {"rule": rule.describe(), "rule_total": float(base["total"].mean()), "seeds": []}
            totals: dict[str, list[np.ndarray]] = {}
            ope_student = None
            for k in range(args.train_seeds):
                overrides = {"ship": "window_average", "ship_window": max(windows)}
                learner, _, _, secs = train_policy(
                    "sl_mgac", seed, k, args.iterations, Path(tmp) / f"{seed}-{k}", overrides
                )
                snapshots = learner.window.contents()
                candidates = {"last_iterate": learner.actor}
                for w in windows:
                    student = copy.deepcopy(learner.actor)
                    kl = distil_window(
                        student, snapshots[-w:], steps=learner.cfg.window_average_steps, lr=learner.cfg.actor_lr
                    )[-1]
                    candidates[f"window_{w}"] = student.requires_grad_(False).eval()
                    print(f"  {seed}@{k} window {w}: fit KL {kl:.4f}", flush=True)
                    averaged = copy.deepcopy(learner.actor)
                    averaged.load_state_dict(average_weights(snapshots[-w:]))
                    candidates[f"weights_{w}"] = averaged.requires_grad_(False).eval()
                row: dict[str, Any] = {"train_s": round(secs, 1)}
                for name, actor in candidates.items():
                    ev = run_users(argmax_policy(actor.log_probs_all), args.users, seed, seed)
                    totals.setdefault(name, []).append(ev["total"])
                    lift = paired_ratio(ev["total"], base["total"])
                    row[name] = {"lift": lift[0], "exposure": float(ev["exposure"])}
                world["seeds"].append(row)
                print(
                    f"{seed}@{k} ({secs:.0f} s): "
                    + ", ".join(
                        f"{n} {v['lift']:+.4f} exp {v['exposure']:.3f}" for n, v in row.items() if n != "train_s"
                    ),
                    flush=True,
                )
                if k == 0:
                    ope_student = argmax_policy(candidates[f"window_{max(windows)}"].log_probs_all)
            # Evaluation noise alone in the seeds' spread (as slot_quality.seed_eval_noise).
            scale = base["total"].mean()
            world["eval_noise"] = {}
            for name, rows in totals.items():
                halves = [
                    float(np.var((rows[i] - rows[j]) / scale, ddof=1) / rows[i].shape[0] / 2.0)
                    for i in range(len(rows))
                    for j in range(i + 1, len(rows))
                ]
                world["eval_noise"][name] = float(np.mean(halves))
            # OPE interval methods on this world's student.
            truth = float(first_requests(ope_student, 50_000, seed, seed + TRUTH_OFFSET)["total"].mean())
            ope: dict[str, Any] = {"truth": truth, "draws": []}
            for rep in range(args.ope_draws):
                draw: dict[str, Any] = {}
                for size in sizes:
                    sample, probs = explored(rule, OPE_EPSILON, np.random.default_rng([seed, rep, 11, size]))
                    logs = first_requests(sample, size, seed, seed + OPE_OFFSET + rep * 100 + sizes.index(size))
                    est = ope_estimates(logs, probs, ope_student)
                    draw[f"ncis_{size}"] = est["ncis"]
                    draw[f"ncis_uncapped_{size}"] = est["ncis_uncapped"]
                    draw[f"dr_{size}"] = est["dr"]
                    draw[f"ess_{size}"] = est["ess_share"]
                    if size == min(sizes):
                        boot = bootstrap_ncis(logs, probs, ope_student, args.bootstrap, rep)
                        draw[f"ncis_boot_percentile_{size}"] = (boot["value"], *boot["percentile"])
                        draw[f"ncis_boot_basic_{size}"] = (boot["value"], *boot["basic"])
                ope["draws"].append(draw)
            world["ope"] = ope
            cover = {
                k: float(np.mean([d[k][1] <= truth <= d[k][2] for d in ope["draws"]]))
                for k in ope["draws"][0]
                if not k.startswith("ess")
            }
            print(f"{seed} OPE truth {truth:.1f}: coverage {cover}", flush=True)
            out["worlds"][str(seed)] = world
            write_result(args.result, [], out["command"], {"worlds": out["worlds"]})
    summary = summarise(out["worlds"])
    extra = {"worlds": out["worlds"], "summary": summary, "wall_s": round(time.time() - t0, 1)}
    write_result(args.result, tuning_metrics(summary), out["command"], extra)
    print(json.dumps(summary, indent=1))


def tuning_metrics(summary: dict[str, Any]) -> list[Metric]:
    """The summary as BENCHMARKS.md metrics: per shipping candidate its seed spread and mean lift, per OPE
    method its coverage."""
    out: list[Metric] = []
    for name, v in summary.items():
        if name == "ope":
            continue
        note = f"lifts {v['lifts']}, exposures {v['exposures']}"
        out.append(Metric(f"slot_tuning.{name}.seed_std", v["seed_std"], "ratio", note=note))
        out.append(Metric(f"slot_tuning.{name}.seed_eval_noise", v["eval_noise"], "ratio"))
        out.append(Metric(f"slot_tuning.{name}.mean_lift_vs_rule", v["mean_lift"], "ratio"))
    for name, v in summary["ope"].items():
        if name == "draws":
            continue
        note = f"{summary['ope']['draws']} draws; mean width {v['mean_width']:.1f} s, relative error {v['relative_error']:.3f}"
        out.append(Metric(f"slot_tuning.ope.{name}.ci_coverage", v["coverage"], "share", note=note))
    return out


def summarise(worlds: dict[str, Any]) -> dict[str, Any]:
    names = [n for n in next(iter(worlds.values()))["seeds"][0] if n != "train_s"]
    summary: dict[str, Any] = {}
    for name in names:
        variances = [np.var([s[name]["lift"] for s in w["seeds"]], ddof=1) for w in worlds.values()]
        summary[name] = {
            "seed_std": float(np.sqrt(np.mean(variances))),
            "eval_noise": float(np.sqrt(np.mean([w["eval_noise"][name] for w in worlds.values()]))),
            "mean_lift": float(np.mean([s[name]["lift"] for w in worlds.values() for s in w["seeds"]])),
            "exposures": [round(s[name]["exposure"], 3) for w in worlds.values() for s in w["seeds"]],
            "lifts": [round(s[name]["lift"], 4) for w in worlds.values() for s in w["seeds"]],
        }
    draws = [(d, w["ope"]["truth"]) for w in worlds.values() for d in w["ope"]["draws"]]
    methods = [k for k in draws[0][0] if not k.startswith("ess")]
    summary["ope"] = {
        m: {
            "coverage": float(np.mean([d[m][1] <= t <= d[m][2] for d, t in draws])),
            "mean_width": float(np.mean([d[m][2] - d[m][1] for d, t in draws])),
            "relative_error": float(np.mean([abs(d[m][0] - t) / t for d, t in draws])),
        }
        for m in methods
    }
    summary["ope"]["draws"] = len(draws)
    return summary


if __name__ == "__main__":
    main()
