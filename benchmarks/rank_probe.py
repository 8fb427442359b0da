"""Short probes for `benchmarks/rank_quality.py` on TUNING seeds only (issue 18, NOTES ninth to eleventh rounds).

    python -m benchmarks.rank_probe '{"margin": 0.01}' --seeds 100,101,102,103 --users 1000
    python -m benchmarks.rank_probe --eval-noise
    python -m benchmarks.rank_probe --constant-noise --seeds 100,101,102,103,104,105 [--search-margin 0]
    python -m benchmarks.rank_probe --train-world own --start incumbent --search-users 200 --seeds 100,101,102,103
    python -m benchmarks.rank_probe --algo ma_cascade '{"lambda_control": "pid"}' --iterations 120 --envs 64

--iterations / --envs: the training budget (run.iterations × run.n_envs rows × 32 steps; default 40 × 64, as
rank_quality's `--iterations` / `--n-envs`; the configs' own run section is overridden, as there).

Defaults (eleventh round): rank_quality's one-world layout on the tuning worlds (`rank_quality.seed_plan(s,
"one", world_offset=3000)`): the constant is searched in world 3000 + s on `--search-users` 1 000 users drawn
from user seed 20 000 + s (rank_quality's cached `searched_constant`), the learner warm-starts at it and trains
on world 3000 + s's catalog with the users of seed s, and both are judged on world 3000 + s's own users.

--train-world (NOTES tenth round): `eval` (default) trains in the evaluation world 3000 + s itself — the same
catalog (`BatchedSimPool(world_seed=3000 + s)`: the simulator's constructor seed draws the catalog and the
creators), other users (the reset seed s draws the users and the dynamics; evaluation draws its users from
3000 + s); `own` trains in world s (its catalog from seed s), as rank_quality's `--worlds split`.
Both print the reference constant's comment rate in the training world (1 000 users of that world).
--start: `local` (default) — the reference constant and the warm start are rank_quality's fixed-fusion search
run in the training world on `--search-users` users drawn from seed 20 000 + s (neither training nor
evaluation users); `incumbent` — the split layout's constant (searched on 200 users of world 10 000). The
tenth round's commands were `--train-world own|eval --start incumbent --search-users 200`.
--local-constant: only that search, per evaluation world, scored against the split layout's constant.

Probe: train `--algo` (default ma_rdpg) on each training seed s with the shipped config of
configs/rank/<algo>.yaml plus the JSON overrides, warm-started at the reference constant, and evaluate what
ships — and, for MA-RDPG, the last iterate — on `--users` users of world 3000 + s against that constant on the
same users. Prints the lift, the comment rate relative to the constant's and, per iteration, the comment
multiplier and the training batch's comment rate and watch time per request.

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

THRESHOLDS = {"click": 3.0, "like": 1.6, "follow": 0.3, "comment": 1.1, "share": 0.45}


def mean_half_width(x: np.ndarray) -> float:
    """95 % half-width of the mean of `x` over seeds (t, n − 1 df); nan for fewer than two."""
    return float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def _incumbent() -> np.ndarray:
    """The split layout's constant: rank_quality's search on 200 users of world 10 000 (cached; before the
    eleventh round it was read from rank_quality.json, (0.25, 0, 0.5, 0.2, 0.5, 0.5) at every stage)."""
    return rq.searched_constant(10_000, 200, 3)[0]


def probe(
    algo: str,
    overrides: dict[str, object],
    seeds: list[int],
    users: int,
    iterations: int,
    train_world: str = "own",
    start: str = "incumbent",
    search_users: int = 200,
    search_margin: float = 0.03,
    n_envs: int = 64,
) -> float:
    """Mean lift of what ships over the reference constant across `seeds`; `train_world` "eval" trains in
    the evaluation world's catalog (other users) instead of world s's. `start` "local": the reference (and
    the warm start) is the constant searched in the training world (`search_constant`), not the incumbent."""
    import torch

    from training.envs import constant_policy
    from training.train import train_problem

    incumbent = _incumbent()
    torch.set_num_threads(1)
    lifts, comments, feasible = [], [], 0
    last_lifts: list[float] = []  # the last iterate's lift per seed (MA-RDPG, TSCAC, MA cascade): the drift
    started = time.time()
    for s in seeds:
        t0 = time.time()
        # The catalog comes from the simulator's constructor seed (world_seed), the users from the reset seed s.
        world = 3000 + s if train_world == "eval" else s
        best = incumbent if start == "incumbent" else search_constant(world, s, search_users, search_margin)
        cfg = {**rq._algo_config(algo, None, best), **overrides}
        run = {
            "seed": s,
            "iterations": iterations,
            "n_envs": n_envs,
            "rollout_steps": 32,
            "progress": False,
            "tensorboard": False,
            "plots": False,
            "out_dir": f"var/bench/rank_probe/{algo}/{train_world}/seed{s}",
        }
        sim = {"world_seed": world} if train_world == "eval" else {}
        # `train` lays the config's online section over its algo section, so the overrides go on top of both
        # (else the shipped online `exploration` / `advantage` would win over an override of them).
        online = {**rq._online(algo), **overrides}
        res = train_problem(
            "rank",
            "ma_rdpg" if algo in rq.OFF_POLICY else algo,
            sim=True,
            config={"run": run, "algo": cfg, "online": online, "sim": sim},
        )
        wt, pd = rq.evaluate(algo, res.learner, users, 3, 3000 + s)
        cwt, cpd = rq.evaluate("fixed_fusion", constant_policy("rank", best), users, 3, 3000 + s)
        if world != 3000 + s:
            _, tpd = rq.evaluate("fixed_fusion", constant_policy("rank", best), users, 3, world)
        else:
            tpd = cpd  # same catalog; its users differ from training's, as training's differ between batches
        if algo in rq.OFF_POLICY:
            from training.algorithms.ma_rdpg import message_policy
            from training.rl.sim import evaluate_sequential

            module: Any = res.learner
            policy = message_policy(list(module.actors), message=algo == "ma_rdpg")
            r = evaluate_sequential(policy, module.state_size, users, 3, seed=3000 + s)
            last = float(r["per_user_day"]["watch_time"].mean())
            last_lifts.append(last / cwt - 1)
            print(f"   last iterate: lift {100 * (last / cwt - 1):+.1f}% comment {r['per_decision']['comment']:.3f}")
            if getattr(module, "holdout", None):  # MARDPGConfig.holdout_users: what the held-out users judged
                ho = module.holdout
                print(
                    f"   holdout: iterations {ho['iterations']} wt {np.round(ho['main'], 1).tolist()} constrained "
                    f"{np.round(ho['constrained'], 3).tolist()} chosen {ho['chosen']}"
                )
        elif hasattr(res.learner, "shipped_actor"):  # TSCAC, MA cascade: what ships is the best feasible iterate
            lwt, lpd = _last_iterate(algo, res.learner, users, 3000 + s)
            last_lifts.append(lwt / cwt - 1)
            print(f"   last iterate: lift {100 * (lwt / cwt - 1):+.1f}% comment {lpd['comment']:.3f}")
        if start != "incumbent":
            iwt, ipd = rq.evaluate("fixed_fusion", constant_policy("rank", incumbent), users, 3, 3000 + s)
            print(
                f"   local constant {np.round(best[:6], 2).tolist()}: vs incumbent {100 * (cwt / iwt - 1):+.1f}% "
                f"(comment {cpd['comment']:.3f} vs {ipd['comment']:.3f}); learner vs incumbent {100 * (wt / iwt - 1):+.1f}%"
            )
        h = res.history
        lifts.append(wt / cwt - 1)
        comments.append(pd["comment"])
        violated = [k for k, t in THRESHOLDS.items() if pd[k] < t]
        feasible += not violated
        print(
            f"seed {s} {algo} {overrides}: lift {100 * (wt / cwt - 1):+.1f}% wt {wt:.0f} vs {cwt:.0f} "
            f"comment {pd['comment']:.3f} vs {cpd['comment']:.3f} ({100 * (pd['comment'] / cpd['comment'] - 1):+.1f}%) "
            f"violated {violated} kept {h[-1].get('charts/best_feasible_iteration', -1)} "
            f"train world {world} (reference constant's comment there {tpd['comment']:.3f}) [{time.time() - t0:.0f} s]",
            flush=True,
        )
        for label, keys in HISTORY_KEYS:
            print(f"   {label} " + " ".join(f"{_first(row, keys):.2f}" for row in h), flush=True)
    x = np.asarray(lifts)
    half = mean_half_width(x)
    print(
        f"MEAN {overrides} train-world {train_world}: lift {100 * x.mean():+.2f}% ±{100 * half:.2f} "
        f"(sd {100 * x.std(ddof=1) if len(x) > 1 else float('nan'):.2f}; per seed {np.round(100 * x, 1).tolist()}) "
        f"comment {np.round(comments, 3).tolist()} (mean {np.mean(comments):.3f}); every constraint met on "
        f"{feasible} of {len(seeds)} seeds; {iterations} iterations × {n_envs} envs; {time.time() - started:.0f} s",
        flush=True,
    )
    if last_lifts:  # issue 18 sixteenth round: the drift of the last iterate against what ships, per seed
        y = np.asarray(last_lifts)
        lhalf = mean_half_width(y)
        print(
            f"LAST ITERATE {overrides}: lift {100 * y.mean():+.2f}% ±{100 * lhalf:.2f} (per seed "
            f"{np.round(100 * y, 1).tolist()}); last minus shipped {100 * (y.mean() - x.mean()):+.2f} points",
            flush=True,
        )
    return float(np.mean(lifts))


def _last_iterate(algo: str, learner: Any, users: int, seed: int) -> tuple[float, dict[str, float]]:
    """The last iterate (`learner.actor`) judged as rank_quality judges what ships (its best feasible iterate):
    whether a longer run moved the policy even where the tracker keeps an early iterate."""
    from training.envs.evaluate import evaluate_policy
    from training.rl.sim import actor_policy, evaluate_sequential, joint_actor_stage_policy

    if algo == "ma_cascade":
        r = evaluate_sequential(joint_actor_stage_policy(learner.actor), 0, users, 3, seed=seed)
        return float(r["per_user_day"]["watch_time"].mean()), r["per_decision"]
    ev = evaluate_policy("rank", actor_policy(learner.actor), n_users=users, days=3, seed=seed)
    return ev.signals["watch_time"].mean, dict(ev.per_decision)


HISTORY_KEYS = (
    ("mult_comment", ("charts/multiplier_comment", "losses/charts/multiplier_comment", "charts/lambda_comment")),
    ("train_comment", ("losses/per_request_comment", "charts/signal_comment")),
    ("train_wt", ("losses/per_request_watch_time", "charts/signal_watch_time")),
)
"""Per-iteration history printed by `probe`, the first key a row has: MA-RDPG's own loop logs its rows under
losses/ (training/rl/offpolicy_runner.py, its multiplier as losses/charts/…), the generic Trainer (TSCAC, MA
cascade) λ_comment and the batch's per-decision rates under charts/ (before, those printed nan)."""


def _first(row: dict[str, float], keys: tuple[str, ...]) -> float:
    """The first of `keys` that `row` has (nan if none): the learners name the same quantity differently."""
    return next((float(row[k]) for k in keys if k in row), float("nan"))


def search_constant(world: int, s: int, search_users: int, search_margin: float = 0.03) -> np.ndarray:
    """rank_quality's fixed-fusion search run in `world` on `search_users` users drawn from seed 20 000 + s
    (every constraint clearing its threshold × (1 + `search_margin`) there; rank_quality's safety margin)
    (neither the training users, seed s, nor the evaluation users, world 3000 + s's own), cached."""
    return rq.searched_constant(world, search_users, 3, 20_000 + s, margin=search_margin)[0]


def local_constant(seeds: list[int], users: int, search_users: int, search_margin: float = 0.03) -> None:
    """The fixed-fusion search (as rank_quality's, 2 refine sweeps) in each evaluation world 3000 + s, on
    `search_users` users of that world drawn from seed 20 000 + s (not the evaluation users); then that
    constant against the split layout's constant on the `users` evaluation users of 3000 + s."""
    from training.envs import constant_policy

    best = _incumbent()
    for s in seeds:
        t0 = time.time()
        local = search_constant(3000 + s, s, search_users, search_margin)
        searched = time.time() - t0
        lwt, lpd = rq.evaluate("fixed_fusion", constant_policy("rank", local), users, 3, 3000 + s)
        cwt, cpd = rq.evaluate("fixed_fusion", constant_policy("rank", best), users, 3, 3000 + s)
        violated = [k for k, t in THRESHOLDS.items() if lpd[k] < t]
        print(
            f"world {3000 + s}: local constant {np.round(local[:6], 2).tolist()} ({searched:.0f} s) vs incumbent: "
            f"{100 * (lwt / cwt - 1):+.1f}% wt {lwt:.0f} vs {cwt:.0f} comment {lpd['comment']:.3f} vs "
            f"{cpd['comment']:.3f} violated {violated}",
            flush=True,
        )


def constant_noise(seeds: list[int], search_users: int, samples: int = 5, search_margin: float = 0.03) -> None:
    """Each world's searched constant (the cached `search_constant`, world 3000 + s): its comment rate on its
    search users, on the judged users (world 3000 + s's own) and on `samples` fresh 1 000-user samples of the
    same world (user seeds 40 000 + 100·k + s, used for nothing else) — how far a constant searched onto the
    threshold moves between samples of users, and whether the search's pick regresses on fresh users."""
    from training.envs import constant_policy
    from training.envs.evaluate import evaluate_policy

    gaps, sds, met, n = [], [], 0, 0
    for s in seeds:
        world = 3000 + s
        c, table = rq.searched_constant(world, search_users, 3, 20_000 + s, margin=search_margin)
        searched = rq._on_search_users(c, table)["comment"]

        def judge(user_seed: int | None, c: np.ndarray = c, world: int = world) -> tuple[float, float]:
            r = evaluate_policy("rank", constant_policy("rank", c), 1000, 3, seed=world, user_seed=user_seed)
            return float(r.per_decision["comment"]), float(r.signals["watch_time"].mean)

        fresh = [judge(40_000 + 100 * k + s)[0] for k in range(samples)]
        met += sum(f >= THRESHOLDS["comment"] for f in fresh)
        n += len(fresh)
        gaps.append(searched - float(np.mean(fresh)))
        sds.append(float(np.std(fresh, ddof=1)))
        judged, wt = judge(None)
        cost = ""
        if search_margin:  # what the margin costs: watch time on the judged users against the margin-0 pick
            c0 = rq.searched_constant(world, search_users, 3, 20_000 + s)[0]
            cost = f", watch time vs the margin-0 constant {100 * (wt / judge(None, c0)[1] - 1):+.1f}%"
        print(
            f"world {world}: constant {np.round(c[:6].astype(float), 2).tolist()} comment on search users "
            f"{searched:.3f}, judged {judged:.3f}, fresh {np.round(fresh, 3).tolist()} (mean {np.mean(fresh):.3f}, "
            f"sd {sds[-1]:.3f}){cost}",
            flush=True,
        )
    print(
        f"search minus fresh mean: mean {np.mean(gaps):+.3f} (per world {np.round(gaps, 3).tolist()}); "
        f"sd between samples {np.mean(sds):.3f}; fresh samples meeting comment 1.1: {met} of {n}"
    )


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
        half = mean_half_width(x)
        print(
            f"users {users}: per-seed lifts {np.round(100 * x, 2).tolist()} mean {100 * x.mean():+.2f}% ±{100 * half:.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("overrides", nargs="?", default="{}", help="JSON: algo (and online) config fields to override")
    p.add_argument("--algo", default="ma_rdpg")
    p.add_argument("--seeds", default="100,101,102,103")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--iterations", type=int, default=40, help="run.iterations (× --envs rows × 32 steps)")
    p.add_argument("--envs", type=int, default=64, help="run.n_envs: simulator rows per iteration (rank_quality's 64)")
    p.add_argument("--eval-noise", action="store_true")
    p.add_argument(
        "--constant-noise", action="store_true", help="the searched constants' comment rate on fresh user samples"
    )
    p.add_argument("--local-constant", action="store_true", help="search the constant in each evaluation world")
    p.add_argument("--search-users", type=int, default=1000)
    p.add_argument(
        "--search-margin",
        type=float,
        default=0.03,
        help="the search's relative safety margin on every constraint (rank_quality's one-world default; 0: before)",
    )
    p.add_argument(
        "--start",
        choices=("incumbent", "local"),
        default="local",
        help="reference constant and warm start: the recorded incumbent, or one searched in the training world",
    )
    p.add_argument(
        "--train-world",
        choices=("own", "eval"),
        default="eval",
        help="eval: train in evaluation world 3000+s's catalog, users from s (as rank_quality); own: in world s",
    )
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    if set(seeds) & set(range(5)):
        raise SystemExit("--seeds: 0-4 are the reported seeds; probe on tuning seeds (e.g. 100-103)")
    if a.eval_noise:
        eval_noise()
    elif a.constant_noise:
        constant_noise(seeds, a.search_users, search_margin=a.search_margin)
    elif a.local_constant:
        local_constant(seeds, a.users, a.search_users, a.search_margin)
    else:
        probe(
            a.algo,
            json.loads(a.overrides),
            seeds,
            a.users,
            a.iterations,
            a.train_world,
            a.start,
            a.search_users,
            a.search_margin,
            a.envs,
        )


if __name__ == "__main__":
    main()
