"""`slot` quality: SL-MGAC against the best threshold rule, greedy insertion and its ablations, 7-day ground truth.

    python -m benchmarks.slot_quality [--seeds 1000,1001,1002,1003,1004] [--users 1000] [--iterations 80]
                                      [--search-rules] [--variants sl_mgac,no_anchor,no_groups]
                                      [--result slot_quality]

Per seed (a simulated world of benchmarks/headroom_slot.py):

1. Baselines without learning: the best threshold rule (insert at position p when the
   predicted live watch time is ≥ θ, under the exposure cap less a margin) found by search on
   the world's *search users* — recorded by `benchmarks.headroom_slot` (its `RECORDED_RULES`),
   or searched again with `--search-rules`; greedy insertion (the live-watch optimum without
   the cap: always position 1).
2. SL-MGAC trained online in the same world (its training users are other users), and two
   ablations trained identically: without the supervised anchor (`use_anchor: false`) and
   without groups (`use_groups: false`). What is evaluated is what ships: the distilled student's
   most likely action (argmax of `logits`); the teacher is evaluated too (the student's gap).
3. Every policy on the same *evaluation users* (`paired_users`: user k is the same person under
   every policy), 7 days each. Lifts are ratios of mean total watch time (short video + live)
   per user-day, pooled over seeds, with paired 95 % CIs (delta method); exposure is the share
   of decisions that showed a live stream (cap 0.25); return rate the share of days 2–7 on
   which a user came back.

Also: seed-to-seed std of the lift vs the rule (SL-MGAC vs no-anchor: stability), the critic's
largest |expected Q| during training against its support (bounded), and the student's ONNX p99
at batch 1. Not measured here (said in the result): TSCAC and DQN baselines, OPE of SL-MGAC.
Writes benchmarks/results/slot_quality.json and slot_quality.md (`--result NAME`: NAME.json and
NAME.md instead, e.g. for a reduced run that must not replace the full-size record).
"""

from __future__ import annotations

import argparse
import os
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
TRAIN_OFFSET = 20_000  # training users: reset(seed + TRAIN_OFFSET), neither search nor evaluation users
VARIANTS = {"sl_mgac": {}, "no_anchor": {"use_anchor": False}, "no_groups": {"use_groups": False}}


def run_users(policy: Any, n_users: int, world_seed: int, user_seed: int) -> dict[str, Any]:
    """Per-user 7-day totals of `policy` on paired users (`headroom_slot.run_users`) as arrays by name."""
    t = headroom_run_users(policy, n_users, world_seed, user_seed)
    return {"total": t.total_watch, "live": t.live_watch, "return_rate": t.return_rate, "exposure": t.exposure_ratio}


def paired_ratio(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """mean(a)/mean(b) − 1 over paired users with its 95 % CI (delta method)."""
    ratio = a.mean() / b.mean()
    z = (a - ratio * b) / b.mean()
    half = 1.959963984540054 * z.std(ddof=1) / np.sqrt(z.shape[0])
    return float(ratio - 1.0), float(ratio - 1.0 - half), float(ratio - 1.0 + half)


def train_variant(seed: int, iterations: int, overrides: dict[str, Any], out_dir: Path) -> tuple[Any, float, float]:
    """(trained loss module, largest |mean expected Q| seen in training, seconds) for one SL-MGAC variant."""
    from training.rl.sim import BatchedSimPool
    from training.rl.task import TaskSpec
    from training.rl.trainer import OnlineSource, train
    from training.train import load_config_file

    base = load_config_file(Path(__file__).resolve().parents[1] / "configs" / "slot" / "sl_mgac.yaml")
    task = TaskSpec.from_problem(SLOT)
    source = OnlineSource(lambda n, s: BatchedSimPool("slot", n, task, world_seed=seed, days=DAYS))
    run = {**base["run"], "iterations": iterations, "seed": seed + TRAIN_OFFSET, "out_dir": str(out_dir)}
    run |= {"progress": False, "tensorboard": False}
    t0 = time.time()
    result = train("sl_mgac", task, source, {"run": run, "algo": {**base["algo"], **overrides}, "online": {}})
    q_max = max(abs(row.get("charts/q_mean", 0.0)) for row in result.history)
    return result.learner.eval(), q_max, time.time() - t0


def argmax_policy(log_probs: Any) -> Any:
    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return log_probs(torch.as_tensor(obs, dtype=torch.float32)).argmax(-1).numpy()

    return act


def onnx_p99_ms(learner: Any, out_dir: Path, calls: int = 2000) -> float:
    """p99 of one onnxruntime call at batch 1 of the exported student (what serving runs)."""
    import onnxruntime as ort

    from training.export import export_policy

    files = export_policy(learner.actor, SLOT, out_dir)
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


def one_seed(
    seed: int, n_users: int, iterations: int, search: bool, work: Path, variants: tuple[str, ...] = tuple(VARIANTS)
) -> dict[str, Any]:
    rule = search_threshold_rules(n_users // 2, seed, seed + SEARCH_OFFSET)[0] if search else RECORDED_RULES[seed][0]
    greedy = ThresholdRule(1)
    out: dict[str, Any] = {"seed": seed, "rule": rule.describe()}
    evals = {"rule": run_users(rule, n_users, seed, seed), "greedy": run_users(greedy, n_users, seed, seed)}
    learners: dict[str, Any] = {}
    for name in variants:
        learner, q_max, secs = train_variant(seed, iterations, VARIANTS[name], work / f"{seed}-{name}")
        learners[name] = learner
        evals[name] = run_users(argmax_policy(learner.actor.log_probs_all), n_users, seed, seed)
        out[f"{name}_q_max"], out[f"{name}_train_s"] = q_max, secs
    evals["teacher"] = run_users(argmax_policy(learners["sl_mgac"].teacher), n_users, seed, seed)
    out["p99_ms"] = onnx_p99_ms(learners["sl_mgac"], work / f"{seed}-onnx")
    out["q_support"] = float(max(abs(learners["sl_mgac"].cfg.value_min), abs(learners["sl_mgac"].cfg.value_max)))
    out["evals"] = evals
    summary = ", ".join(f"{k} {v['total'].mean():.0f} s exp {v['exposure']:.3f}" for k, v in evals.items())
    print(f"seed {seed} [{rule.describe()}]: {summary}", flush=True)
    return out


def pooled(runs: list[dict[str, Any]], name: str, key: str) -> np.ndarray:
    return np.concatenate([r["evals"][name][key] for r in runs])


def metrics_of(runs: list[dict[str, Any]]) -> list[Metric]:
    def lift(a: str, b: str, key: str = "total") -> tuple[float, float, float]:
        return paired_ratio(pooled(runs, a, key), pooled(runs, b, key))

    def per_seed_std(name: str) -> float:
        return float(np.std([paired_ratio(r["evals"][name]["total"], r["evals"]["rule"]["total"])[0] for r in runs]))

    def exposure(name: str) -> float:
        return float(np.mean([r["evals"][name]["exposure"] for r in runs]))

    ablations = [name for name in ("no_anchor", "no_groups") if name in runs[0]["evals"]]
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
    for name in ("sl_mgac", "rule", "greedy", *ablations, "teacher"):
        out.append(Metric(f"slot.{name}.exposure", exposure(name), "ratio", goal=("<=", CAP)))
        out.append(Metric(f"slot.{name}.total_watch_per_user_day", float(pooled(runs, name, "total").mean()), "s"))
        out.append(Metric(f"slot.{name}.return_rate", float(pooled(runs, name, "return_rate").mean()), "share"))
    value, lo, hi = lift("sl_mgac", "greedy")
    out.append(Metric("slot.sl_mgac.lift_vs_greedy", value, "ratio", goal=(">=", 0.0), ci=(lo, hi)))
    value, lo, hi = lift("sl_mgac", "greedy", "return_rate")
    out.append(Metric("slot.sl_mgac.return_rate_vs_greedy", value, "ratio", goal=(">=", 0.0), ci=(lo, hi)))
    for name in ablations:
        value, lo, hi = lift(name, "rule")
        out.append(Metric(f"slot.{name}.lift_vs_rule", value, "ratio", ci=(lo, hi), note="ablation"))
    if "no_anchor" in ablations:
        std, std_ablation = per_seed_std("sl_mgac"), per_seed_std("no_anchor")
        out.append(
            Metric(
                "slot.sl_mgac.seed_std_ratio_vs_no_anchor",
                std / max(std_ablation, 1e-12),
                "ratio",
                goal=("<=", 0.5),
                note=f"seed-to-seed std of the lift vs the rule: {std:.4f} (SL-MGAC) vs {std_ablation:.4f} (no anchor)",
            )
        )
    q_max = max(r["sl_mgac_q_max"] for r in runs)
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
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=",".join(map(str, EVAL_SEEDS)))
    ap.add_argument("--users", type=int, default=1000, help="evaluation users per seed")
    ap.add_argument("--iterations", type=int, default=80, help="training iterations per variant")
    ap.add_argument("--search-rules", action="store_true", help="search the threshold rules again")
    ap.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"SL-MGAC variants to train, among {','.join(VARIANTS)}"
    )
    ap.add_argument(
        "--result",
        default="slot_quality",
        help="writes benchmarks/results/<result>.json and .md (reduced runs: rename)",
    )
    args = ap.parse_args()
    variants = tuple(v for v in args.variants.split(",") if v)
    if "sl_mgac" not in variants or not set(variants) <= set(VARIANTS):
        ap.error(f"--variants: must include sl_mgac, each among {', '.join(VARIANTS)}; got {args.variants}")
    import tempfile

    torch.set_num_threads(1)
    t0 = time.time()
    runs = []
    with tempfile.TemporaryDirectory(prefix="troupe-slot-quality-") as tmp:
        for seed in [int(s) for s in args.seeds.split(",")]:
            runs.append(one_seed(seed, args.users, args.iterations, args.search_rules, Path(tmp), variants))
    command = (
        "python -m benchmarks.slot_quality "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "search_rules")
        + (" --search-rules" if args.search_rules else "")
    )
    metrics = metrics_of(runs)
    extra = {
        "wall_s": round(time.time() - t0, 1),
        "load_average": os.getloadavg(),
        "rules": {r["seed"]: r["rule"] for r in runs},
        "train_s": {r["seed"]: {k: round(r[f"{k}_train_s"], 1) for k in variants} for r in runs},
        "not_measured": "TSCAC and DQN baselines; OPE (NCIS, DR) of SL-MGAC from behaviour logs",
    }
    write_result(args.result, metrics, command, extra)
    write_markdown(metrics, runs, command, args.result)
    for m in metrics:
        print(f"{m.name:45s} {m.value:10.4f} {m.unit} {m.ci or ''}")


if __name__ == "__main__":
    main()
