"""Short probes for `benchmarks/rank_quality.py` on TUNING seeds only (issue 18, NOTES ninth round).

    python -m benchmarks.rank_probe '{"deviation_bound": 0.2}' --seeds 100,101,102,103 --users 1000
    python -m benchmarks.rank_probe --eval-noise

Probe: train `--algo` (default ma_rdpg) on each training seed s with the shipped config of
configs/rank/<algo>.yaml plus the JSON overrides, warm-started at the recorded fixed-fusion constant
(benchmarks/results/rank_quality.json), and evaluate what ships — and, for MA-RDPG, the last iterate —
on `--users` users of world 3000 + s against that constant on the same users. Prints the lift, the
comment rate relative to the constant's and, per iteration, the comment multiplier and the training
batch's comment rate and watch time per request.

--eval-noise: the paired lift's 95 % half-width over worlds 3100–3104 between two fixed constants (the
incumbent and its comment weight × 0.6) at 200 and 1 000 users — evaluation noise without training noise.
Never run on the reported seeds (0–4, evaluation worlds 1000–1004).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
from scipy import stats

from benchmarks import rank_quality as rq
from benchmarks.common import RESULTS_DIR

THRESHOLDS = {"click": 3.0, "like": 1.6, "follow": 0.3, "comment": 1.1, "share": 0.45}


def _incumbent() -> np.ndarray:
    return np.asarray(json.loads((RESULTS_DIR / "rank_quality.json").read_text())["fixed_fusion_best"], np.float32)


def probe(algo: str, overrides: dict[str, object], seeds: list[int], users: int, iterations: int) -> float:
    """Mean lift of what ships over the incumbent constant across `seeds`."""
    import torch

    from training.envs import constant_policy
    from training.train import train_problem

    best = _incumbent()
    torch.set_num_threads(1)
    lifts = []
    for s in seeds:
        t0 = time.time()
        cfg = {**rq._algo_config(algo, None, best), **overrides}
        run = {
            "seed": s,
            "iterations": iterations,
            "n_envs": 64,
            "rollout_steps": 32,
            "progress": False,
            "tensorboard": False,
            "plots": False,
            "out_dir": f"var/bench/rank_probe/{algo}/seed{s}",
        }
        res = train_problem(
            "rank",
            "ma_rdpg" if algo in rq.OFF_POLICY else algo,
            sim=True,
            config={"run": run, "algo": cfg, "online": rq._online(algo)},
        )
        wt, pd = rq.evaluate(algo, res.learner, users, 3, 3000 + s)
        cwt, cpd = rq.evaluate("fixed_fusion", constant_policy("rank", best), users, 3, 3000 + s)
        if algo in rq.OFF_POLICY:
            from training.algorithms.ma_rdpg import message_policy
            from training.rl.sim import evaluate_sequential

            module: Any = res.learner
            policy = message_policy(list(module.actors), message=algo == "ma_rdpg")
            r = evaluate_sequential(policy, module.state_size, users, 3, seed=3000 + s)
            last = float(r["per_user_day"]["watch_time"].mean())
            print(f"   last iterate: lift {100 * (last / cwt - 1):+.1f}% comment {r['per_decision']['comment']:.3f}")
        h = res.history
        lifts.append(wt / cwt - 1)
        violated = [k for k, t in THRESHOLDS.items() if pd[k] < t]
        print(
            f"seed {s} {algo} {overrides}: lift {100 * (wt / cwt - 1):+.1f}% wt {wt:.0f} vs {cwt:.0f} "
            f"comment {pd['comment']:.3f} vs {cpd['comment']:.3f} ({100 * (pd['comment'] / cpd['comment'] - 1):+.1f}%) "
            f"violated {violated} kept {h[-1].get('charts/best_feasible_iteration', -1)} [{time.time() - t0:.0f} s]",
            flush=True,
        )
        for label, key in (
            ("mult_comment", "charts/multiplier_comment"),
            ("train_comment", "losses/per_request_comment"),
            ("train_wt", "losses/per_request_watch_time"),
        ):
            print(f"   {label} " + " ".join(f"{row.get(key, float('nan')):.2f}" for row in h), flush=True)
    print(f"MEAN {overrides} lift {100 * float(np.mean(lifts)):+.2f}%", flush=True)
    return float(np.mean(lifts))


def eval_noise() -> None:
    from training.envs import constant_policy
    from training.envs.evaluate import evaluate_policy

    best = _incumbent()
    alt = best.copy().reshape(3, 6)
    alt[:, 4] *= 0.6  # the comment weight at every stage
    for users in (200, 1000):
        lifts = []
        for s in range(3100, 3105):
            a, b = (
                evaluate_policy("rank", constant_policy("rank", w), n_users=users, days=3, seed=s)
                .signals["watch_time"]
                .mean
                for w in (best, alt.reshape(-1))
            )
            lifts.append(b / a - 1)
        x = np.asarray(lifts)
        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
        print(
            f"users {users}: per-seed lifts {np.round(100 * x, 2).tolist()} mean {100 * x.mean():+.2f}% ±{100 * half:.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("overrides", nargs="?", default="{}", help="JSON: algo config fields to override")
    p.add_argument("--algo", default="ma_rdpg")
    p.add_argument("--seeds", default="100,101,102,103")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--eval-noise", action="store_true")
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    if set(seeds) & set(range(5)):
        raise SystemExit("--seeds: 0-4 are the reported seeds; probe on tuning seeds (e.g. 100-103)")
    if a.eval_noise:
        eval_noise()
    else:
        probe(a.algo, json.loads(a.overrides), seeds, a.users, a.iterations)


if __name__ == "__main__":
    main()
