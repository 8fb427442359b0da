"""`slot` quality: SL-MGAC against the best threshold rule, greedy, TSCAC, DQN and its ablations; 7-day truth; OPE.

    python -m benchmarks.slot_quality [--seeds 1000,1001,1002,1003,1004] [--users 1000] [--iterations 80]
                                      [--search-rules] [--variants sl_mgac,no_anchor,no_groups,tscac,dqn]
                                      [--train-seeds 3] [--ope-users 16000] [--ope-repetitions 10]
                                      [--reuse sl_mgac,no_anchor,...|all] [--result slot_quality]

Per seed (a simulated world of benchmarks/headroom_slot.py):

1. Baselines without learning: the best threshold rule (insert at position p when the
   predicted live watch time is ≥ θ, under the exposure cap less a margin) found by search on
   the world's *search users* — recorded by `benchmarks.headroom_slot` (its `RECORDED_RULES`),
   or searched again with `--search-rules`; greedy insertion (the live-watch optimum without
   the cap: always position 1).
2. Learned policies, each trained online in the same world (`BatchedSimPool(world_seed=seed)`: the
   world's catalog and streams stay; the training users `reset(seed + TRAIN_OFFSET + k)` are neither
   search nor evaluation users) with the same budget (iterations × 32 steps × 128 rows):
   * SL-MGAC (configs/slot/sl_mgac.yaml) and two ablations trained identically: without the
     supervised anchor (`use_anchor: false`) and without groups (`use_groups: false`). What is
     evaluated is what ships: the distilled student's argmax of `logits`; the teacher's argmax too, the
     teacher of the same kind as the shipped student (`shipped_teacher`: since 2026-12-05 the mean of the
     teachers of the last 10 batches, as the student is the mean of their students; before, the last teacher);
   * TSCAC (the registered `tscac`, its default config) on the constrained task "total watch time
     (short video + live, minutes) subject to live exposure ≤ 0.25" — ours: the problem's main signal
     is live watch time, but the benchmark judges total watch, the same quantity SL-MGAC's reward
     counts before its exposure price; evaluated: its shipped actor's argmax;
   * DQN "without groups or supervision": the registered `dqn` (a Q-network with a hard-copied target
     network, double-Q targets, ε-greedy collection, argmax acting; no actor, no groups, no supervised
     heads) on total watch time in minutes with SL-MGAC's γ = 0.95 — ours: it has no constraint
     machinery (the registered DQN refuses a constrained task), so the cap is not in its objective and
     its exposure is reported against the cap as measured; 2 updates of 128 rows per collection step
     (SL-MGAC's 2 epochs of 256-row minibatches per rollout see as many rows), ε decays over the first
     third of the budget, (64, 64) ReLU MLP.
   SL-MGAC and the no-anchor ablation are trained with `--train-seeds` training seeds per world
   (k = 0 is the reported row; the others measure training stability).
3. Every policy on the same *evaluation users* (`paired_users`: user k is the same person under
   every policy), 7 days each. Lifts are ratios of mean total watch time (short video + live)
   per user-day, pooled over seeds, with paired 95 % CIs (delta method); exposure is the share
   of decisions that showed a live stream (cap 0.25); return rate the share of days 2–7 on
   which a user came back.
4. OPE of the SL-MGAC student (k = 0) from behaviour logs, per world. Behaviour: the world's threshold
   rule with ε-uniform exploration (ε = 0.3; propensity (1 − ε)·1[a = rule] + ε/7, known exactly).
   Quantity, *one step*: the expected total watch time (s) of the page served on a fresh user's first
   request (the context distribution of first requests does not depend on the policy, so this is a
   contextual bandit), estimated from `--ope-users` logged first requests by NCIS (self-normalised
   importance ratios whose cap is chosen from each log by estimated MSE, with the interval widened by the
   shift the cap causes: `training.ope.ncis_mse_cap`; the chosen cap is kept per draw as `ncis_cap`) and
   DR (ridge reward model on action × context features, 2-fold cross-fitted, `training.ope.doubly_robust`),
   normal 95 % CIs; truth: the student on 50,000 other fresh users' first requests in the same world.
   For comparison: `ncis_cap10`, the fixed cap at 10 × the mean ratio (what `ncis` meant until
   2026-12-05: it binds on every row where the student leaves the rule — those rows' ratio is 7/ε ≈ 23 —
   and pulls the estimate towards the rule's value), and `ncis_uncapped` (plain self-normalised IS).
   Repeated on `--ope-repetitions` independent log draws: `covers_truth` per world is the first draw, the
   share pools every draw of every world (a 95 % CI should cover about 95 % of them). `--ope-only` trains
   the student again and redoes only this step (`ope_only_seed`).

Stability: `slot.sl_mgac.seed_std_ratio_vs_no_anchor` is the std of the lift vs the rule across *training
seeds* within a world (same world, same evaluation users), pooled over worlds (root of the mean
within-world variance), SL-MGAC over no-anchor. With `--stability-users N` (since 2026-12-05) every training
seed of SL-MGAC and no-anchor and the rule are also evaluated on N users (rows `wide-<row>`) and the ratio is
measured on those (with 1,000 users evaluation noise alone put a floor of ≈ 0.6 under it); the ratio a
perfectly stable SL-MGAC would measure, its evaluation noise over no-anchor's spread, is reported beside it
(`slot.sl_mgac.seed_std_ratio_floor`), and the 1,000-user ratio as `..._vs_no_anchor_main_users`.
Until 2026-12-04 it was the std across *worlds* of the
k = 0 rows, which mixes how hard each world is with how stable training is; that number is kept as
`slot.sl_mgac.world_std_ratio_vs_no_anchor`.

Rows: each world's per-user results go to benchmarks/results/slot_quality_rows/<seed>.npz as soon as
the world is done, each trained row with the commit that produced it. `--reuse NAMES` reads those rows
(from files made with the same --users and --iterations) instead of training again — only for code
paths that did not change since; `--reuse all` only summarises. Writes benchmarks/results/<result>.json
and .md (`--result NAME`, e.g. for a reduced run that must not replace the full-size record; reduced
runs should also pass `--rows-dir`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import Metric, write_result  # noqa: E402
from benchmarks.headroom_slot import (  # noqa: E402
    CAP,
    DAYS,
    EVAL_SEEDS,
    RECORDED_RULES,
    SEARCH_OFFSET,
    ThresholdRule,
    search_threshold_rules,
)
from benchmarks.headroom_slot import run_users as headroom_run_users  # noqa: E402
from models.problems import SLOT  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROWS_DIR = RESULTS / "slot_quality_rows"
TRAIN_OFFSET = 20_000  # training users: reset(seed + TRAIN_OFFSET + k), neither search nor evaluation users
OPE_OFFSET = 30_000  # logged users of OPE draw r: reset(seed + OPE_OFFSET + r)
TRUTH_OFFSET = 40_000  # the OPE truth's users: reset(seed + TRUTH_OFFSET + chunk)
VARIANTS: dict[str, dict[str, Any]] = {
    "sl_mgac": {},
    "no_anchor": {"use_anchor": False},
    "no_groups": {"use_groups": False},
}
BASELINES = ("tscac", "dqn")
TRAINED = (*VARIANTS, *BASELINES)
STABILITY = ("sl_mgac", "no_anchor")
"""Trained with every training seed (the others once)."""
WIDE = "wide-"
"""Prefix of the rows evaluated on `--stability-users` users (the rule and every training seed of STABILITY):
the seed-to-seed spread is measured on them, so that evaluation noise does not swamp it."""
OPE_EPSILON = 0.3
OPE_ESTIMATORS = ("ncis", "ncis_cap10", "ncis_uncapped", "dr")
"""ncis: self-normalised, the cap on the ratios chosen from the logs by estimated MSE with a bias-aware interval
(`training.ope.ncis_mse_cap`); ncis_cap10: the fixed cap at 10 × the mean ratio (the project's default, reported
as ncis until 2026-12-05); ncis_uncapped: no cap (self-normalised IS); dr: doubly robust."""
OPE_TRUTH_USERS = 50_000
N_ACTIONS = SLOT.action.n  # type: ignore[union-attr]
SECONDS_PER_MINUTE = 60.0


def run_users(policy: Any, n_users: int, world_seed: int, user_seed: int) -> dict[str, Any]:
    """Per-user 7-day totals of `policy` on paired users (`headroom_slot.run_users`) as arrays by name."""
    t = headroom_run_users(policy, n_users, world_seed, user_seed)
    return {"total": t.total_watch, "return_rate": t.return_rate, "exposure": t.exposure_ratio}


def paired_ratio(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """mean(a)/mean(b) − 1 over paired users with its 95 % CI (delta method)."""
    ratio = a.mean() / b.mean()
    z = (a - ratio * b) / b.mean()
    half = 1.959963984540054 * z.std(ddof=1) / np.sqrt(z.shape[0])
    return float(ratio - 1.0), float(ratio - 1.0 - half), float(ratio - 1.0 + half)


SOURCES = ("slot_quality.py", "headroom_slot.py", "common.py")
"""The benchmark files the rows depend on (with training/, models/, configs/)."""


def commit() -> str:
    """HEAD's short hash, "+dirty" when code that the rows depend on differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--",
                "training",
                "models",
                "configs",
                *(f"benchmarks/{f}" for f in SOURCES),
            ],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
class _TotalWatchSim:
    """The slot simulator with one more reward signal: `total_watch` = short-video + live watch time, minutes."""

    def __init__(self, sim: Any) -> None:
        self._sim = sim

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sim, name)

    def step(self, actions: np.ndarray) -> Any:
        obs, rewards, done, info = self._sim.step(actions)
        total = (np.asarray(rewards["watch_time"]) + np.asarray(rewards["live_watch_time"])) / SECONDS_PER_MINUTE
        return obs, {**rewards, "total_watch": total}, done, info


def total_watch_task(constrained: bool) -> Any:
    """The task of the baselines: total watch time (minutes, γ 0.95 as SL-MGAC's critic) first, live exposure
    (γ 0, the per-decision signal of the cap) second; with the slot problem's cap when `constrained`."""
    from training.rl.task import TaskSignal, TaskSpec

    return TaskSpec(
        obs_size=SLOT.observation_size,
        action=SLOT.action,  # type: ignore[arg-type]
        signals=(TaskSignal("total_watch", 0.95), TaskSignal("live_exposure", 0.0)),
        constraints=SLOT.constraints if constrained else (),
        name="slot",
    )


def _source(world_seed: int, total_watch: bool) -> Any:
    from training.rl.sim import BatchedSimPool

    class TotalWatchPool(BatchedSimPool):
        def reset(self, seed: int) -> np.ndarray:
            obs = super().reset(seed)
            self.sim = _TotalWatchSim(self.sim)
            return obs

    pool = TotalWatchPool if total_watch else BatchedSimPool

    def make(n: int, task: Any) -> Any:
        return pool("slot", n, task, world_seed=world_seed, days=DAYS)

    return make


def train_policy(
    name: str, seed: int, train_seed: int, iterations: int, out_dir: Path, algo_overrides: dict[str, Any] | None = None
) -> tuple[Any, Any, float, float]:
    """(trained learner, numpy policy obs → action, largest |mean expected Q| seen (SL-MGAC; else nan), seconds).
    The SL-MGAC variants act with what ships (`shipped_policy`: the window's average student by default);
    `algo_overrides` change their config (tuning)."""
    from training.rl.losses import shipped_policy
    from training.rl.task import TaskSpec
    from training.rl.trainer import OnlineSource, train
    from training.train import load_config_file

    base = load_config_file(Path(__file__).resolve().parents[1] / "configs" / "slot" / "sl_mgac.yaml")
    run = {**base["run"], "iterations": iterations, "seed": seed + TRAIN_OFFSET + train_seed, "out_dir": str(out_dir)}
    run |= {"progress": False, "tensorboard": False}
    t0 = time.time()
    if name in VARIANTS:
        task = TaskSpec.from_problem(SLOT)
        make = _source(seed, total_watch=False)
        source = OnlineSource(lambda n, s: make(n, task))
        algo = {**base["algo"], **VARIANTS[name], **(algo_overrides or {})}
        result = train("sl_mgac", task, source, {"run": run, "algo": algo, "online": {}})
        learner = result.learner.eval()
        q_max = max(abs(row.get("charts/q_mean", 0.0)) for row in result.history)
        return learner, argmax_policy(shipped_policy(learner).log_probs_all), q_max, time.time() - t0
    if name == "tscac":
        task = total_watch_task(constrained=True)
        make = _source(seed, total_watch=True)
        result = train("tscac", task, OnlineSource(lambda n, s: make(n, task)), {"run": run, "algo": {}, "online": {}})
        learner = result.learner.eval()
        return learner, argmax_policy(learner.shipped_actor().log_probs_all), float("nan"), time.time() - t0
    if name == "dqn":
        task = total_watch_task(constrained=False)
        make = _source(seed, total_watch=True)
        budget = iterations * int(run["rollout_steps"]) * int(run["n_envs"])
        algo = {"hidden_sizes": [64, 64], "batch_size": 128, "updates_per_step": 2, "epsilon_decay_steps": budget // 3}
        result = train("dqn", task, OnlineSource(lambda n, s: make(n, task)), {"run": run, "algo": algo, "online": {}})
        learner = result.learner.eval()

        def act(obs: np.ndarray) -> np.ndarray:
            return learner.greedy_action(torch.as_tensor(obs, dtype=torch.float32))[:, 0].numpy()

        return learner, act, float("nan"), time.time() - t0
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(TRAINED)}")


def argmax_policy(log_probs: Any) -> Any:
    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return log_probs(torch.as_tensor(obs, dtype=torch.float32)).argmax(-1).numpy()

    return act


def onnx_p99_ms(learner: Any, out_dir: Path, calls: int = 2000) -> float:
    """p99 of one onnxruntime call at batch 1 of the exported student (what serving runs)."""
    import onnxruntime as ort

    from training.export import export_policy
    from training.rl.losses import shipped_policy

    files = export_policy(shipped_policy(learner), SLOT, out_dir)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(files["model.onnx"].path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    obs = np.random.default_rng(0).random((1, SLOT.observation_size), dtype=np.float32)
    times = []
    for i in range(calls + 200):
        t = time.perf_counter()
        session.run(None, {name: obs})
        if i >= 200:
            times.append((time.perf_counter() - t) * 1000.0)
    return float(np.percentile(times, 99))


# ---------------------------------------------------------------------------
# OPE of the student from behaviour logs (one step: a fresh user's first request)
# ---------------------------------------------------------------------------
def first_requests(policy: Any, n_users: int, world_seed: int, user_seed: int, chunk: int = 10_000) -> dict[str, Any]:
    """The first request of `n_users` fresh users of the world under `policy`: obs, action, total watch (s),
    live exposure; chunked so that the users' affinity tables stay small."""
    from training.envs import make_batched

    parts: dict[str, list[np.ndarray]] = {"obs": [], "action": [], "total": [], "exposure": []}
    for k, start in enumerate(range(0, n_users, chunk)):
        n = min(chunk, n_users - start)
        sim = make_batched("slot", n, world_seed, autoreset=False, days=DAYS)
        obs = sim.reset(seed=user_seed * 1000 + k)
        action = np.asarray(policy(obs), dtype=np.int64)
        _, rewards, _, _ = sim.step(action)
        parts["obs"].append(np.asarray(obs, np.float64))
        parts["action"].append(action)
        parts["total"].append(np.asarray(rewards["watch_time"] + rewards["live_watch_time"], np.float64))
        parts["exposure"].append(np.asarray(rewards["live_exposure"], np.float64))
    return {k: np.concatenate(v) for k, v in parts.items()}


def explored(rule: Any, epsilon: float, rng: np.random.Generator) -> tuple[Any, Any]:
    """(sampling policy, propensities obs → (N, 7)) of `rule` with ε-uniform exploration."""

    def probs(obs: np.ndarray) -> np.ndarray:
        p = np.full((obs.shape[0], N_ACTIONS), epsilon / N_ACTIONS)
        p[np.arange(obs.shape[0]), np.asarray(rule(obs), dtype=np.int64)] += 1.0 - epsilon
        return p

    def sample(obs: np.ndarray) -> np.ndarray:
        cdf = np.cumsum(probs(obs), axis=1)
        return np.minimum((rng.random((obs.shape[0], 1)) > cdf).sum(1), N_ACTIONS - 1)

    return sample, probs


def ope_estimates(logs: dict[str, Any], behaviour_probs: Any, target: Any) -> dict[str, Any]:
    """NCIS and DR of the deterministic `target` on logged first requests: {name: (value, low, high)} of the
    mean total watch (s), and the importance weights' ESS share."""
    from training.ope import doubly_robust, ncis, ncis_mse_cap
    from training.ope.reward_models import categorical_expected_features, categorical_features, fit_ridge

    x, a, r = logs["obs"], logs["action"], logs["total"][:, None]
    n = x.shape[0]
    rows = np.arange(n)
    mu = behaviour_probs(x)[rows, a]
    pi_action = np.asarray(target(x), dtype=np.int64)
    pi = np.zeros((n, N_ACTIONS))
    pi[rows, pi_action] = 1.0
    target_prob = pi[rows, a]
    with np.errstate(divide="ignore"):
        target_log = np.log(target_prob)
    est_ncis = ncis_mse_cap(r, target_log, np.log(mu), signals=("total_watch",))
    est_cap10 = ncis(r, target_log, np.log(mu), clip=10.0, signals=("total_watch",))
    est_uncapped = ncis(r, target_log, np.log(mu), clip=1e9, signals=("total_watch",))
    # Reward model cross-fitted on two halves: each row's q̂ comes from a model that never saw it.
    q_logged, q_target = np.zeros((n, 1)), np.zeros((n, 1))
    half = np.random.default_rng(0).permutation(n) < n // 2
    for fold in (half, ~half):
        model = fit_ridge(categorical_features(x[~fold], a[~fold], (N_ACTIONS,)), r[~fold], l2=1e-3)
        q_logged[fold] = model.predict(categorical_features(x[fold], a[fold], (N_ACTIONS,)))
        q_target[fold] = model.predict(categorical_expected_features(x[fold], [pi[fold]]))
    est_dr = doubly_robust(r, target_prob, mu, q_logged, q_target, signals=("total_watch",))
    out: dict[str, Any] = {}
    for name, est in (("ncis", est_ncis), ("ncis_cap10", est_cap10), ("ncis_uncapped", est_uncapped), ("dr", est_dr)):
        out[name] = (float(est.value[0]), float(est.ci_low[0]), float(est.ci_high[0]))
    w = target_prob / mu
    out["ess_share"] = float(w.sum() ** 2 / max((w**2).sum(), 1e-12) / n)
    # The cap ncis_mse_cap chose, read off its weights (a finite choice always binds: the capped maximum is
    # the cap); None: no cap.
    diag = est_ncis.diagnostics
    out["ncis_cap"] = diag.weight_max if diag is not None and diag.share_clipped > 0 else None
    out["logged_mean"] = float(r.mean())
    return out


def ope_of_student(
    student: Any, rule: Any, seed: int, n_users: int, repetitions: int, truth_users: int = OPE_TRUTH_USERS
) -> dict[str, Any]:
    """Truth and per-draw NCIS / DR estimates of the student's one-step value in world `seed`."""
    truth = first_requests(student, truth_users, seed, seed + TRUTH_OFFSET)
    value = float(truth["total"].mean())
    draws = []
    for rep in range(repetitions):
        sample, probs = explored(rule, OPE_EPSILON, np.random.default_rng([seed, rep, 11]))
        logs = first_requests(sample, n_users, seed, seed + OPE_OFFSET + rep)
        est = ope_estimates(logs, probs, student)
        for name in OPE_ESTIMATORS:
            est[f"{name}_covers"] = bool(est[name][1] <= value <= est[name][2])
        draws.append(est)
    return {
        "truth": value,
        "truth_stderr": float(truth["total"].std(ddof=1) / np.sqrt(truth_users)),
        "truth_exposure": float(truth["exposure"].mean()),
        "draws": draws,
    }


# ---------------------------------------------------------------------------
# One world, and its rows file
# ---------------------------------------------------------------------------
def rows_path(rows_dir: Path, seed: int) -> Path:
    return rows_dir / f"{seed}.npz"


def save_world(path: Path, world: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{row}.{k}": np.asarray(v[k], np.float64) for row, v in world["evals"].items() for k in ("total",)}
    arrays |= {f"{row}.return_rate": np.asarray(v["return_rate"], np.float64) for row, v in world["evals"].items()}
    meta = {k: v for k, v in world.items() if k != "evals"}
    meta["exposure"] = {row: v["exposure"] for row, v in world["evals"].items()}
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(path)


def load_world(path: Path) -> dict[str, Any]:
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        evals: dict[str, dict[str, Any]] = {}
        for key in data.files:
            if key == "meta":
                continue
            row, _, field = key.rpartition(".")
            evals.setdefault(row, {})[field] = data[key].astype(np.float64)
    for row, exposure in meta.pop("exposure").items():
        evals[row]["exposure"] = exposure
    return {**meta, "evals": evals}


def units_of(name: str, train_seeds: int) -> list[str]:
    """Rows a trained policy contributes: its own, its seed replicas (name@k), the teacher for sl_mgac."""
    rows = [name] + ([f"{name}@{k}" for k in range(1, train_seeds)] if name in STABILITY else [])
    wide = [WIDE + row for row in rows] if name in STABILITY else []
    return rows + wide + (["teacher"] if name == "sl_mgac" else [])


def one_seed(seed: int, args: argparse.Namespace, work: Path, reuse: set[str]) -> dict[str, Any]:
    path = rows_path(Path(args.rows_dir), seed)
    previous = load_world(path) if path.exists() and reuse else None
    if previous is not None and (previous["users"] != args.users or previous["iterations"] != args.iterations):
        raise SystemExit(
            f"--reuse: {path} holds --users {previous['users']} --iterations {previous['iterations']}, "
            f"not {args.users} / {args.iterations}; rerun those rows or point --rows-dir elsewhere"
        )
    if reuse and previous is None:
        raise SystemExit(f"--reuse: {path} does not exist; run the world first")
    now = args.commit
    if args.search_rules:
        rule = search_threshold_rules(args.users // 2, seed, seed + SEARCH_OFFSET)[0]
    else:
        rule = RECORDED_RULES[seed][0]
    world: dict[str, Any] = {"seed": seed, "users": args.users, "iterations": args.iterations}
    world |= {"rule": rule.describe(), "commits": {}, "train_s": {}, "evals": {}}
    if previous is not None and "rule" in reuse:
        for row in ("rule", "greedy"):
            world["evals"][row] = previous["evals"][row]
            world["commits"][row] = previous["commits"][row]
    else:
        for row, policy in (("rule", rule), ("greedy", ThresholdRule(1))):
            world["evals"][row] = run_users(policy, args.users, seed, seed)
            world["commits"][row] = now
    if args.stability_users:
        world["evals"][WIDE + "rule"] = run_users(rule, args.stability_users, seed, seed)
        world["commits"][WIDE + "rule"] = now
    for name in args.variant_list:
        if previous is not None and name in reuse:
            for row in units_of(name, args.train_seeds):
                if row not in previous["evals"] and row.startswith(WIDE):
                    continue  # rows from before --stability-users
                world["evals"][row] = previous["evals"][row]
                world["commits"][row] = previous["commits"][row]
                if row in previous["train_s"]:
                    world["train_s"][row] = previous["train_s"][row]
            if name == "sl_mgac":
                for key in ("q_max", "q_support", "p99_ms", "ope"):
                    world[key] = previous[key]
            continue
        for k in range(args.train_seeds if name in STABILITY else 1):
            row = name if k == 0 else f"{name}@{k}"
            learner, act, q_max, secs = train_policy(name, seed, k, args.iterations, work / f"{seed}-{row}")
            world["evals"][row] = run_users(act, args.users, seed, seed)
            world["commits"][row], world["train_s"][row] = now, round(secs, 1)
            if name in STABILITY and args.stability_users:
                world["evals"][WIDE + row] = run_users(act, args.stability_users, seed, seed)
                world["commits"][WIDE + row] = now
            print(f"seed {seed} {row}: {world['evals'][row]['total'].mean():.0f} s in {secs:.0f} s", flush=True)
            if row != "sl_mgac":
                continue
            world["evals"]["teacher"] = run_users(argmax_policy(learner.shipped_teacher()), args.users, seed, seed)
            world["commits"]["teacher"] = now
            world["q_max"] = q_max
            world["q_support"] = float(max(abs(learner.cfg.value_min), abs(learner.cfg.value_max)))
            world["p99_ms"] = onnx_p99_ms(learner, work / f"{seed}-onnx")
            t0 = time.time()
            world["ope"] = ope_of_student(act, rule, seed, args.ope_users, args.ope_repetitions, args.ope_truth_users)
            world["ope"]["commit"] = now
            truth = world["ope"]["truth"]
            print(
                f"seed {seed} OPE in {time.time() - t0:.0f} s: truth {truth:.1f}, {world['ope']['draws'][0]}",
                flush=True,
            )
    save_world(path, world)
    summary = ", ".join(f"{k} {v['total'].mean():.0f} s exp {v['exposure']:.3f}" for k, v in world["evals"].items())
    print(f"seed {seed} [{rule.describe()}]: {summary}", flush=True)
    return world


def ope_only_seed(seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """`--ope-only`: train the SL-MGAC student (k = 0) again and redo only its OPE. A world with a rows file keeps
    its rows; the student counts as the same one when its 7-day totals on the evaluation users equal the stored
    row's user for user (`ope.student_reproduced`). A world without one gets a rows file with the OPE alone."""
    path = rows_path(Path(args.rows_dir), seed)
    if args.search_rules:
        rule = search_threshold_rules(args.users // 2, seed, seed + SEARCH_OFFSET)[0]
    else:
        rule = RECORDED_RULES[seed][0]
    _, act, _, secs = train_policy("sl_mgac", seed, 0, args.iterations, work / f"{seed}-sl_mgac")
    t0 = time.time()
    ope = ope_of_student(act, rule, seed, args.ope_users, args.ope_repetitions, args.ope_truth_users)
    ope["commit"] = args.commit
    if path.exists():
        world = load_world(path)
        if world["users"] != args.users or world["iterations"] != args.iterations:
            raise SystemExit(f"--ope-only: {path} holds other --users / --iterations; point --rows-dir elsewhere")
        again = run_users(act, args.users, seed, seed)["total"]
        ope["student_reproduced"] = bool(np.array_equal(again, world["evals"]["sl_mgac"]["total"]))
    else:
        world = {"seed": seed, "users": args.users, "iterations": args.iterations, "rule": rule.describe()}
        world |= {"commits": {}, "train_s": {"sl_mgac": round(secs, 1)}, "evals": {}}
    world["ope"] = ope
    save_world(path, world)
    first = {k: v for k, v in ope["draws"][0].items() if not k.endswith("_covers")}
    print(
        f"seed {seed} [{rule.describe()}] trained in {secs:.0f} s, OPE in {time.time() - t0:.0f} s: truth "
        f"{ope['truth']:.1f}, student reproduced {ope.get('student_reproduced')}, first draw {first}",
        flush=True,
    )
    return world


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------
def pooled(runs: list[dict[str, Any]], name: str, key: str) -> np.ndarray:
    return np.concatenate([r["evals"][name][key] for r in runs])


def seed_std(runs: list[dict[str, Any]], name: str, rule: str = "rule") -> tuple[float, int]:
    """(pooled within-world std of the lift vs the rule across training seeds, seeds per world). `name` and `rule`
    with the WIDE prefix: on the --stability-users rows."""
    variances, n = [], 0
    for r in runs:
        rows = [row for row in r["evals"] if row == name or row.startswith(f"{name}@")]
        lifts = [paired_ratio(r["evals"][row]["total"], r["evals"][rule]["total"])[0] for row in rows]
        n = len(lifts)
        if n >= 2:
            variances.append(float(np.var(lifts, ddof=1)))
    return (float(np.sqrt(np.mean(variances))) if variances else float("nan")), n


def seed_eval_noise(runs: list[dict[str, Any]], name: str, rule: str = "rule") -> float:
    """The part of `seed_std` that evaluation noise alone would give: two training seeds of one world are
    evaluated on the same users, and the paired variance of the difference of their lifts, Var(d)/n with
    d = (total_k − total_j) / mean(rule total) per user, halved (the expected sample variance of the seeds'
    lifts when they differ by noise only), pooled over pairs and worlds; its root."""
    halves = []
    for r in runs:
        rows = [row for row in r["evals"] if row == name or row.startswith(f"{name}@")]
        scale = r["evals"][rule]["total"].mean()
        for i, a in enumerate(rows):
            for b in rows[i + 1 :]:
                d = (r["evals"][a]["total"] - r["evals"][b]["total"]) / scale
                halves.append(float(np.var(d, ddof=1) / d.shape[0] / 2.0))
    return float(np.sqrt(np.mean(halves))) if halves else float("nan")


def stability_metrics(runs: list[dict[str, Any]]) -> list[Metric]:
    """The seed-to-seed spread of SL-MGAC over no-anchor's: on the --stability-users rows where every world has
    them, also on the main evaluation users; with each arm's spread and the part evaluation noise alone gives."""
    out: list[Metric] = []
    wide = all(WIDE + "rule" in r["evals"] for r in runs)
    for prefix, suffix in ((WIDE, ""), ("", "_main_users")) if wide else (("", ""),):
        rule = prefix + "rule"
        (std, n), (std_ablation, _) = (
            seed_std(runs, prefix + "sl_mgac", rule),
            seed_std(runs, prefix + "no_anchor", rule),
        )
        if n < 2:
            continue
        users = runs[0]["evals"][rule]["total"].shape[0]
        noise, noise_ablation = (
            seed_eval_noise(runs, prefix + "sl_mgac", rule),
            seed_eval_noise(runs, prefix + "no_anchor", rule),
        )
        out.append(
            Metric(
                f"slot.sl_mgac.seed_std_ratio_vs_no_anchor{suffix}",
                std / max(std_ablation, 1e-12),
                "ratio",
                goal=("<=", 0.5) if not suffix else None,
                note=(
                    f"std of the lift vs the rule across {n} training seeds within a world (same world and "
                    f"{users} evaluation users), pooled over {len(runs)} worlds: {std:.4f} (SL-MGAC) vs "
                    f"{std_ablation:.4f} (no anchor); evaluation noise alone would give "
                    f"{noise:.4f} / {noise_ablation:.4f}. "
                    "Before 2026-12-04 the std across worlds: slot.sl_mgac.world_std_ratio_vs_no_anchor"
                ),
            )
        )
        if suffix:
            continue
        out.append(
            Metric(
                "slot.sl_mgac.seed_std_ratio_floor",
                noise / max(std_ablation, 1e-12),
                "ratio",
                note=f"what a perfectly stable SL-MGAC would measure: its evaluation noise ({users} users) over "
                "no-anchor's measured spread",
            )
        )
        for name, value, noise_value in (("sl_mgac", std, noise), ("no_anchor", std_ablation, noise_ablation)):
            out.append(
                Metric(f"slot.{name}.seed_std", value, "ratio", note=f"lift std across training seeds, {users} users")
            )
            out.append(Metric(f"slot.{name}.seed_eval_noise", noise_value, "ratio", note="its evaluation-noise part"))
    return out


def metrics_of(runs: list[dict[str, Any]]) -> list[Metric]:
    def lift(a: str, b: str, key: str = "total") -> tuple[float, float, float]:
        return paired_ratio(pooled(runs, a, key), pooled(runs, b, key))

    def world_std(name: str) -> float:
        return float(np.std([paired_ratio(r["evals"][name]["total"], r["evals"]["rule"]["total"])[0] for r in runs]))

    def exposure(name: str) -> float:
        return float(np.mean([r["evals"][name]["exposure"] for r in runs]))

    present = runs[0]["evals"]
    ablations = [name for name in ("no_anchor", "no_groups") if name in present]
    baselines = [name for name in BASELINES if name in present]
    out: list[Metric] = []
    value, lo, hi = lift("sl_mgac", "rule")
    out.append(
        Metric(
            "slot.sl_mgac.lift_vs_rule",
            value,
            "ratio",
            baseline=("slot.rule.total_watch_per_user_day", float(pooled(runs, "rule", "total").mean())),
            goal=(">=", 0.03),
            ci=(lo, hi),
            note="7-day total watch time per user-day, paired users pooled over seeds; the student's argmax",
        )
    )
    for name in ("sl_mgac", "rule", "greedy", *baselines, *ablations, "teacher"):
        out.append(Metric(f"slot.{name}.exposure", exposure(name), "ratio", goal=("<=", CAP)))
        out.append(Metric(f"slot.{name}.total_watch_per_user_day", float(pooled(runs, name, "total").mean()), "s"))
        out.append(Metric(f"slot.{name}.return_rate", float(pooled(runs, name, "return_rate").mean()), "share"))
    value, lo, hi = lift("sl_mgac", "greedy")
    out.append(Metric("slot.sl_mgac.lift_vs_greedy", value, "ratio", goal=(">=", 0.0), ci=(lo, hi)))
    value, lo, hi = lift("sl_mgac", "greedy", "return_rate")
    out.append(Metric("slot.sl_mgac.return_rate_vs_greedy", value, "ratio", goal=(">=", 0.0), ci=(lo, hi)))
    for name in baselines:
        value, lo, hi = lift(name, "rule")
        out.append(Metric(f"slot.{name}.lift_vs_rule", value, "ratio", ci=(lo, hi), note="baseline"))
        value, lo, hi = lift("sl_mgac", name)
        out.append(
            Metric(f"slot.sl_mgac.lift_vs_{name}", value, "ratio", goal=(">=", 0.0), ci=(lo, hi), note="paired users")
        )
    for name in ablations:
        value, lo, hi = lift(name, "rule")
        out.append(Metric(f"slot.{name}.lift_vs_rule", value, "ratio", ci=(lo, hi), note="ablation"))
    if "no_anchor" in ablations:
        out += stability_metrics(runs)
        std_w, std_w_ablation = world_std("sl_mgac"), world_std("no_anchor")
        out.append(
            Metric(
                "slot.sl_mgac.world_std_ratio_vs_no_anchor",
                std_w / max(std_w_ablation, 1e-12),
                "ratio",
                note=(
                    f"the former definition: std across worlds of the k = 0 rows' lift vs the rule, {std_w:.4f} "
                    f"(SL-MGAC) vs {std_w_ablation:.4f} (no anchor); mixes world difficulty with training stability"
                ),
            )
        )
    q_max = max(r["q_max"] for r in runs)
    out.append(
        Metric(
            "slot.sl_mgac.critic_max_abs_q",
            q_max,
            "minutes",
            goal=("<=", runs[0]["q_support"]),
            note="largest |mean expected Q| in any training batch of any seed; the two-hot support bounds it",
        )
    )
    value, lo, hi = lift("sl_mgac", "teacher")
    out.append(
        Metric(
            "slot.sl_mgac.student_vs_teacher",
            value,
            "ratio",
            goal=(">=", -0.01),
            ci=(lo, hi),
            note=f"the distilled {SLOT.observation_size}→32→7 student against the teacher it learned from, same users",
        )
    )
    out.append(Metric("slot.sl_mgac.student_onnx_p99_ms", max(r["p99_ms"] for r in runs), "ms", note="batch 1, CPU"))
    out += ope_metrics(runs)
    return out


def ope_metrics(runs: list[dict[str, Any]]) -> list[Metric]:
    what = (
        "one step: expected total watch (s) of the page served on a fresh user's first request; behaviour: the "
        f"threshold rule with ε = {OPE_EPSILON} uniform exploration"
    )
    out: list[Metric] = []
    for r in runs:
        ope = r["ope"]
        first = ope["draws"][0]
        for name in OPE_ESTIMATORS:
            value, lo, hi = first[name]
            out.append(
                Metric(
                    f"slot.sl_mgac.ope.{name}.covers_truth.{r['seed']}",
                    float(first[f"{name}_covers"]),
                    "bool",
                    baseline=(f"slot.sl_mgac.ope.truth.{r['seed']}", ope["truth"]),
                    goal=(">=", 1.0),
                    ci=(lo, hi),
                    note=(
                        f"estimate {value:.1f} s, 95 % CI [{lo:.1f}, {hi:.1f}] vs truth {ope['truth']:.1f} s "
                        f"(± {ope['truth_stderr']:.1f}); ESS share {first['ess_share']:.2f}; first log draw"
                    ),
                )
            )
    draws = [d for r in runs for d in r["ope"]["draws"]]
    for name in OPE_ESTIMATORS:
        share = float(np.mean([d[f"{name}_covers"] for d in draws]))
        rel = [abs(d[name][0] - r["ope"]["truth"]) / r["ope"]["truth"] for r in runs for d in r["ope"]["draws"]]
        out.append(
            Metric(
                f"slot.sl_mgac.ope.{name}.covers_truth",
                float(np.mean([r["ope"]["draws"][0][f"{name}_covers"] for r in runs])),
                "share",
                goal=(">=", 1.0),
                note=f"share of worlds whose first log draw's 95 % CI covers the truth; {what}",
            )
        )
        out.append(
            Metric(
                f"slot.sl_mgac.ope.{name}.ci_coverage",
                share,
                "share",
                goal=(">=", 0.9),
                note=f"{len(draws)} log draws ({len(runs)} worlds × {len(draws) // len(runs)}); nominal 0.95",
            )
        )
        out.append(
            Metric(
                f"slot.sl_mgac.ope.{name}.relative_error",
                float(np.mean(rel)),
                "ratio",
                note="mean |estimate − truth| / truth over every draw",
            )
        )
    return out


def write_markdown(metrics: list[Metric], runs: list[dict[str, Any]], command: str, name: str) -> None:
    lines = [
        f"# slot quality (SL-MGAC) — {len(runs)} seeds, 7-day ground truth, paired users",
        "",
        f"`{command}`",
        "",
        "| metric | value | 95 % CI | goal | met |",
        "|---|---|---|---|---|",
    ]
    for m in metrics:
        ci = f"[{m.ci[0]:+.4f}, {m.ci[1]:+.4f}]" if m.ci else ""
        goal = f"{m.goal[0]} {m.goal[1]}" if m.goal else ""
        met = (
            ""
            if m.goal is None
            else ("yes" if (m.value >= m.goal[1] if m.goal[0] == ">=" else m.value <= m.goal[1]) else "**no**")
        )
        lines.append(f"| `{m.name}` | {m.value:.4f} {m.unit} | {ci} | {goal} | {met} |")
    lines += ["", "Rules per seed:", ""] + [f"- {r['seed']}: {r['rule']}" for r in runs]
    lines += ["", "Rows and the commits that produced them:", ""]
    for r in runs:
        by_commit: dict[str, list[str]] = {}
        for row, c in r["commits"].items():
            by_commit.setdefault(c, []).append(row)
        lines.append(f"- {r['seed']}: " + "; ".join(f"{c}: {', '.join(rows)}" for c, rows in by_commit.items()))
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=",".join(map(str, EVAL_SEEDS)))
    ap.add_argument("--users", type=int, default=1000, help="evaluation users per seed")
    ap.add_argument("--iterations", type=int, default=80, help="training iterations per trained policy")
    ap.add_argument("--search-rules", action="store_true", help="search the threshold rules again")
    ap.add_argument(
        "--variants", default=",".join(TRAINED), help=f"trained policies, among {','.join(TRAINED)} (sl_mgac required)"
    )
    ap.add_argument("--train-seeds", type=int, default=3, help=f"training seeds per world of {', '.join(STABILITY)}")
    ap.add_argument(
        "--ope-users", type=int, default=16000, help="logged first requests per OPE draw (4000 until 2026-12-05)"
    )
    ap.add_argument("--ope-repetitions", type=int, default=10, help="independent log draws per world")
    ap.add_argument("--ope-truth-users", type=int, default=OPE_TRUTH_USERS, help="users of the OPE truth")
    ap.add_argument(
        "--reuse",
        default="",
        help="rows read from --rows-dir instead of recomputed: trained policies by name, 'rule' (rule and greedy), "
        "or 'all' (summarise only)",
    )
    ap.add_argument("--rows-dir", default=str(ROWS_DIR), help="where each world's per-user rows are kept")
    ap.add_argument(
        "--stability-users",
        type=int,
        default=4000,
        help="users on which every training seed of sl_mgac / no_anchor and the rule are also evaluated (0: none)",
    )
    ap.add_argument("--no-summary", action="store_true", help="only write the worlds' rows (parallel parts)")
    ap.add_argument(
        "--ope-only",
        action="store_true",
        help="train the SL-MGAC student again and redo only its OPE (other rows kept; see ope_only_seed)",
    )
    ap.add_argument(
        "--result",
        default="slot_quality",
        help="writes benchmarks/results/<result>.json and .md (reduced runs: rename)",
    )
    args = ap.parse_args()
    args.variant_list = tuple(v for v in args.variants.split(",") if v)
    if "sl_mgac" not in args.variant_list or not set(args.variant_list) <= set(TRAINED):
        ap.error(f"--variants: must include sl_mgac, each among {', '.join(TRAINED)}; got {args.variants}")
    reuse = {v for v in args.reuse.split(",") if v}
    if "all" in reuse:
        reuse = {*args.variant_list, "rule"}
    if not reuse <= {*TRAINED, "rule"}:
        ap.error(f"--reuse: among {', '.join((*TRAINED, 'rule', 'all'))}; got {args.reuse}")
    if args.train_seeds < 1:
        ap.error("--train-seeds: at least 1")
    import tempfile

    torch.set_num_threads(1)
    args.commit = commit()
    t0 = time.time()
    runs = []
    with tempfile.TemporaryDirectory(prefix="troupe-slot-quality-") as tmp:
        for seed in [int(s) for s in args.seeds.split(",")]:
            if args.ope_only:
                runs.append(ope_only_seed(seed, args, Path(tmp)))
            else:
                runs.append(one_seed(seed, args, Path(tmp), reuse))
    if args.no_summary:
        return
    command = (
        "python -m benchmarks.slot_quality "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k not in ("search_rules", "no_summary", "ope_only", "variant_list", "reuse", "rows_dir", "commit")
        )
        + (f" --reuse {args.reuse}" if args.reuse else "")
        + (" --search-rules" if args.search_rules else "")
        + (" --ope-only" if args.ope_only else "")
    )
    metrics = metrics_of(runs) if all("rule" in r["evals"] for r in runs) else ope_metrics(runs)
    extra = {
        "wall_s": round(time.time() - t0, 1),
        "load_average": os.getloadavg(),
        "rules": {r["seed"]: r["rule"] for r in runs},
        "train_s": {r["seed"]: r["train_s"] for r in runs},
        "row_commits": {r["seed"]: r["commits"] for r in runs},
        "ope": {
            r["seed"]: {k: v for k, v in r["ope"].items() if k != "draws"} | {"first_draw": r["ope"]["draws"][0]}
            for r in runs
        },
    }
    if args.ope_only:
        extra["ope_only_note"] = (
            "the OPE of every world was redone with --ope-only at " + args.commit + " (the SL-MGAC student trained "
            "again; the other rows kept)"
        )
    write_result(args.result, metrics, command, extra)
    write_markdown(metrics, runs, command, args.result)
    for m in metrics:
        print(f"{m.name:50s} {m.value:10.4f} {m.unit} {m.ci or ''}")


if __name__ == "__main__":
    main()
