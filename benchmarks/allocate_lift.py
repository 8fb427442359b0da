"""MaRCA's agents vs the rule under the rule's own feedback λ, with longer training (a probe for #16's "revenue lift
vs the rule"; it emits `allocate.marca.revenue_lift_vs_rule_same_controller`, not the issue's headline — see
LIFT_METRIC).

    python -m benchmarks.allocate_lift [--seeds 0,1,2,3,4] [--intervals 1536] [--updates 8] [--workers 2]
                                       [--set FIELD=VALUE ...] [--name ...]
    python -m benchmarks.allocate_lift --pair NEW BASE     # names of benchmarks/results/<name>.json

allocate_quality.py once trained every variant 96 intervals (one simulated day); there MaRCA was −2.4 % against
the rule. This check trains MaRCA only, for `--intervals` intervals (default allocate_quality.TRAIN_INTERVALS,
1,536 = sixteen days), and evaluates it on
the same days (1000 + seed) against the same rule (feedback λ over v·Q̂(a) − λ·C(a), u* = RULE_TARGET) and the
same controller for MaRCA's λ (feedback, u* = RULE_TARGET, so both run at the same utilisation). Paired per day;
the lift is mean(MaRCA) / mean(rule) − 1 with a t interval over the per-day ratios.

On tuning seeds (e.g. `--seeds 10,11,12 --name allocate_lift_tuning_...`) it is the probe that chooses the
training length and `--updates` (gradient steps per interval) for the reported run; on 0–4 it is a check.
`--set` changes one numeric MarcaConfig field for a probe (e.g. `--set final_learning_rate_fraction=0.1`);
`--pair NEW BASE` trains nothing: it pairs two earlier probes' MaRCA revenues on the same days (both evaluate on
days 1000 + seed against the same rule) and prints mean(new) / mean(base) − 1 with the 95 % t-interval over the
per-day ratios, and each day's ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.allocate_quality import RULE_GAIN, RULE_TARGET, TRAIN_INTERVALS, mean_ci, paired, run_day
from benchmarks.common import RESULTS_DIR, Metric, write_result
from training.algorithms import marca as M
from training.envs import allocate_oracle as O
from training.envs.allocate import AllocateConfig

LIFT_METRIC = "allocate.marca.revenue_lift_vs_rule_same_controller"
"""What this probe measures: MaRCA's agents under the rule's own feedback λ against that rule — allocate_quality's
metric of the same name. Until 2026-12-05 it was emitted as `allocate.marca.revenue_lift_vs_rule` with the 3 % goal;
renamed (and the goal dropped) so it cannot be mistaken for issue #16's headline, which since then is MaRCA as served
(the MPC) over the best rule held to the same budget bound (allocate_quality, docs/marca.md "How the lift over the
rule is judged")."""
HEADLINE = "allocate.marca.revenue_lift_vs_rule"


def evaluate_seed(job: tuple[int, int, int, dict[str, Any]]) -> dict[str, Any]:
    seed, intervals, updates, overrides = job
    torch.set_num_threads(1)
    config = AllocateConfig()
    day = 1000 + seed
    rule = O.ValueCostRule(O.rule_quality_table(config), O.cost_table(config), "feedback", RULE_TARGET, gain=RULE_GAIN)
    started = time.perf_counter()
    cfg = M.MarcaConfig(seed=seed, train_intervals=intervals, updates_per_interval=updates, **overrides)
    learner = M.train(cfg, "marca", config).learner
    cost = M.CostTable.from_simulator(config, learner.split)
    out = {
        "seed": seed,
        "rule": run_day(rule, config, 256, day),
        "marca": run_day(M.MarcaPolicy(learner, cost, M.FeedbackLambda(RULE_TARGET, RULE_GAIN)), config, 256, day),
        "train_s": time.perf_counter() - started,
    }
    print(f"seed {seed}: rule {out['rule'].revenue_per_day:.4f} marca {out['marca'].revenue_per_day:.4f}", flush=True)
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["field=value", ...] → {field: value} for numeric MarcaConfig fields; anything else is refused by name."""
    types = {f.name: str(f.type) for f in dataclasses.fields(M.MarcaConfig) if str(f.type) in ("int", "float")}
    for fixed in ("seed", "train_intervals", "updates_per_interval"):  # set by their own options
        types.pop(fixed)
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in types:
            raise ValueError(f"--set: expected FIELD=VALUE with FIELD one of {sorted(types)}, got {item!r}")
        out[name] = int(value) if types[name] == "int" else float(value)
    return out


def pair(new_name: str, base_name: str) -> str:
    """The paired lift of probe `new_name`'s MaRCA over probe `base_name`'s on their common days (`--pair`)."""

    def marca_revenue(name: str) -> dict[str, float]:
        doc = json.loads((RESULTS_DIR / f"{name}.json").read_text())
        return {seed: float(revenues[0]) for seed, revenues in doc["per_seed"].items()}

    new, base = marca_revenue(new_name), marca_revenue(base_name)
    seeds = sorted(set(new) & set(base), key=int)
    if len(seeds) < 2:
        raise ValueError(f"--pair {new_name} {base_name}: need ≥ 2 seeds in common, got {seeds}")
    a, b = np.asarray([new[s] for s in seeds]), np.asarray([base[s] for s in seeds])
    _, ci = mean_ci(list(a / b - 1.0))
    per_day = ", ".join(f"{s}: {100 * (x / y - 1):+.2f} %" for s, x, y in zip(seeds, a, b, strict=True))
    ci_text = f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else ""
    return f"{new_name} over {base_name}, seeds {seeds}: {100 * (a.mean() / b.mean() - 1):+.2f} %{ci_text} ({per_day})"


def lift_metrics(rows: list[dict[str, Any]], intervals: int, updates: int) -> list[Metric]:
    """The probe's metrics over the seeds done (`rows`: per seed the MaRCA and rule `Day`s); the lift first."""
    lift, ci = paired([r["marca"] for r in rows], [r["rule"] for r in rows])
    metrics = [
        Metric(
            LIFT_METRIC,
            lift,
            "ratio",
            ci=ci,
            note=f"MaRCA's agents trained {intervals} intervals × {updates} updates, under the rule's own feedback λ; rule: feedback λ over v·Q̂(a) − λ·C(a), u* = {RULE_TARGET} (not issue #16's headline: {HEADLINE})",
        ),
        Metric("allocate.marca.revenue_per_request", sum(r["marca"].revenue_per_day for r in rows) / len(rows), "cents"),
        Metric("allocate.rule.revenue_per_request", sum(r["rule"].revenue_per_day for r in rows) / len(rows), "cents"),
        Metric("allocate.marca.mean_utilisation", sum(r["marca"].utilisation.mean() for r in rows) / len(rows), "budget"),
        Metric("allocate.rule.mean_utilisation", sum(r["rule"].utilisation.mean() for r in rows) / len(rows), "budget"),
    ]  # fmt: skip
    return metrics


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--intervals", type=int, default=TRAIN_INTERVALS, help="training intervals (as allocate_quality)")
    p.add_argument("--updates", type=int, default=M.MarcaConfig().updates_per_interval, help="gradient steps/interval")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a numeric MarcaConfig field for this probe (repeatable), e.g. loss_value_power=1",
    )
    p.add_argument("--name", default="allocate_lift", help="result name (benchmarks/results/<name>.json/.md)")
    p.add_argument("--pair", nargs=2, metavar=("NEW", "BASE"), help="pair two earlier probes' results; trains nothing")
    args = p.parse_args(argv)
    if args.pair:
        print(pair(*args.pair))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = parse_overrides(args.set)
    command = ("python -m benchmarks.allocate_lift " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    rows: list[dict[str, Any]] = []
    with get_context("spawn").Pool(min(args.workers, len(seeds))) as pool:
        for row in pool.imap_unordered(evaluate_seed, [(s, args.intervals, args.updates, overrides) for s in seeds]):
            rows.append(row)
            rows.sort(key=lambda r: r["seed"])
            metrics = lift_metrics(rows, args.intervals, args.updates)
            lift, ci = metrics[0].value, metrics[0].ci
            extra = {
                "seeds": seeds,
                "seeds_completed": [r["seed"] for r in rows],
                "train_intervals": args.intervals,
                "updates_per_interval": args.updates,
                "overrides": overrides,
                "per_seed": {r["seed"]: [r["marca"].revenue_per_day, r["rule"].revenue_per_day] for r in rows},
                "train_seconds": [r["train_s"] for r in rows],
            }
            path = write_result(args.name, metrics, command=command, extra=extra)
            ci_text = f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""
            Path(path).with_suffix(".md").write_text(
                f"# allocate lift vs rule — {len(rows)} of {len(seeds)} seeds, {args.intervals} training intervals × {args.updates} updates\n\n"
                f"`{command}`\n\n`{LIFT_METRIC}` {lift:+.4f}{ci_text} — MaRCA's agents under the rule's own feedback λ "
                f"(u* {RULE_TARGET}) over that rule; issue #16's headline is allocate_quality's `{HEADLINE}`\n"
            )
            print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
