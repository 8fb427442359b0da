"""Probe (#16): MaRCA at its OWN best feedback u*, chosen by the rule's own search, against the rule at its u*.

    python -m benchmarks.allocate_own_target_probe [--seeds 10,11,12] [--targets 0.83,...,0.92]
                                                   [--name allocate_own_target_probe]

`allocate.marca.revenue_lift_vs_rule_same_controller` (allocate_quality; issue #16's headline until 2026-12-05) runs
MaRCA's feedback λ at the RULE's u* (allocate_quality.RULE_TARGET, 0.85). The rule's u* was chosen by benchmarks/headroom_allocate.py's `search`: the highest-revenue u* on the
search days 3000–3007 (300 requests per interval) whose over-budget share stays ≤ SEARCH_OVER_BUDGET_LIMIT
(0.5 %). This probe gives MaRCA the same search, for its own u*:

1. per tuning seed, MaRCA trained exactly as benchmarks/allocate_lift.py trains it (collecting at u* 0.85;
   cached by allocate_diagnosis.trained_learner under runs/allocate_diagnosis/);
2. `headroom_allocate.search` over `--targets` for MaRCA's feedback u* (gain RULE_GAIN), and for the rule
   with the same gain beside it (the rule's rows are the same for every seed, so searched once);
3. on day 1000 + seed, as allocate_lift: MaRCA at its own u*, MaRCA at 0.85 and the rule at 0.85, paired.

A probe on tuning seeds only: nothing here changes allocate_quality's defaults.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.allocate_diagnosis import trained_learner
from benchmarks.allocate_quality import RULE_GAIN, RULE_TARGET, TRAIN_INTERVALS, Day, paired, run_day
from benchmarks.common import Metric, write_result
from benchmarks.headroom_allocate import FULL, SEARCH_OVER_BUDGET_LIMIT, SEARCH_SEED_OFFSET, search
from training.algorithms import marca as M
from training.envs import allocate_oracle as O
from training.envs.allocate import AllocateConfig

EVAL_REQUESTS = 256  # per interval on the evaluation days, as allocate_lift
LIFT = "revenue_lift_vs_rule_same_controller"
"""The probe's lifts (`allocate.marca.*` and `allocate.marca_own_target.*`): MaRCA's agents under a feedback λ against
the rule under its own feedback λ. Until 2026-12-05 emitted as `…revenue_lift_vs_rule` with the 3 % goal; renamed
(goal dropped) as allocate_lift.LIFT_METRIC was, so neither can be mistaken for issue #16's headline
`allocate.marca.revenue_lift_vs_rule` (MaRCA as served over the best rule under the same bound: allocate_quality)."""


def over_budget(days: list[Day]) -> float:
    """Share of the evaluation intervals over the interval budget (the search's definition: utilisation > 1)."""
    return float(np.mean([(d.utilisation > 1.0).mean() for d in days]))


def marca_policy(learner: M.MarcaLearner, cost: M.CostTable, target: float) -> M.MarcaPolicy:
    """MaRCA deciding under the feedback λ at `target` (the rule's gain), as allocate_lift runs it."""
    return M.MarcaPolicy(learner, cost, M.FeedbackLambda(target, RULE_GAIN))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seeds", default="10,11,12", help="tuning seeds (evaluation day 1000 + seed)")
    p.add_argument("--targets", default=",".join(f"{u / 100:.2f}" for u in range(83, 93)))
    p.add_argument("--name", default="allocate_own_target_probe")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    targets = [float(u) for u in args.targets.split(",")]
    command = "python -m benchmarks.allocate_own_target_probe " + " ".join(sys.argv[1:] if argv is None else argv)
    config = AllocateConfig()
    search_days = [SEARCH_SEED_OFFSET + k for k in range(FULL.search_days)]
    quality, cost_table = O.rule_quality_table(config), O.cost_table(config)

    def rule(u: float) -> O.ValueCostRule:
        return O.ValueCostRule(quality, cost_table, "feedback", u, gain=RULE_GAIN)

    started = time.perf_counter()
    rule_rows: list[dict[str, Any]] = []
    rule_pick = search("feedback", rule, targets, config, FULL, search_days, rule_rows)
    print(f"rule: u* {rule_pick.parameter}  rows {rule_rows}", flush=True)

    per_seed: dict[int, dict[str, Any]] = {}
    own, at_rule, base = [], [], []
    for seed in seeds:
        learner = trained_learner(seed, TRAIN_INTERVALS, 8, config)
        cost = M.CostTable.from_simulator(config, learner.split)

        marca = partial(marca_policy, learner, cost)
        rows: list[dict[str, Any]] = []
        pick = search("marca", marca, targets, config, FULL, search_days, rows)
        day = 1000 + seed
        own.append(run_day(marca(pick.parameter), config, EVAL_REQUESTS, day))
        at_rule.append(run_day(marca(RULE_TARGET), config, EVAL_REQUESTS, day))
        base.append(run_day(rule(RULE_TARGET), config, EVAL_REQUESTS, day))
        per_seed[seed] = {
            "marca_target": pick.parameter,
            "search_rows": rows,
            "revenue": {"marca_own": own[-1].revenue_per_day, "marca_085": at_rule[-1].revenue_per_day,
                        "rule_085": base[-1].revenue_per_day},
            "over_budget": {"marca_own": over_budget(own[-1:]), "marca_085": over_budget(at_rule[-1:]),
                            "rule_085": over_budget(base[-1:])},
        }  # fmt: skip
        print(f"seed {seed}: MaRCA u* {pick.parameter} {per_seed[seed]}", flush=True)

    note = f"MaRCA {TRAIN_INTERVALS} × 8; u* by headroom_allocate.search on days {search_days[0]}–{search_days[-1]}"
    metrics = lift_metrics(own, at_rule, base, note)
    extra = {
        "seeds": seeds,
        "targets": targets,
        "search_days": search_days,
        "search_over_budget_limit": SEARCH_OVER_BUDGET_LIMIT,
        "rule_search": {"target": rule_pick.parameter, "rows": rule_rows},
        "per_seed": per_seed,
        "seconds": time.perf_counter() - started,
    }
    path = write_result(args.name, metrics, command=command, extra=extra)
    Path(path).with_suffix(".md").write_text(report(command, metrics, extra))
    print(Path(path).with_suffix(".md").read_text(), flush=True)


def lift_metrics(own: list[Day], at_rule: list[Day], base: list[Day], note: str) -> list[Metric]:
    """The probe's metrics (per evaluation day: MaRCA at its own u*, MaRCA at 0.85, the rule at 0.85); the lifts
    are named `LIFT`, not issue #16's headline."""
    lift_own, ci_own = paired(own, base)
    lift_085, ci_085 = paired(at_rule, base)
    lift_gain, ci_gain = paired(own, at_rule)
    return [
        Metric(f"allocate.marca_own_target.{LIFT}", lift_own, "ratio", ci=ci_own, note=note),
        Metric(f"allocate.marca.{LIFT}", lift_085, "ratio", ci=ci_085, note="both at u* 0.85"),
        Metric("allocate.marca_own_target.lift_vs_marca_085", lift_gain, "ratio", ci=ci_gain),
        Metric("allocate.marca_own_target.over_budget_fraction", over_budget(own), "share"),
        Metric("allocate.marca.over_budget_fraction", over_budget(at_rule), "share"),
        Metric("allocate.rule.over_budget_fraction", over_budget(base), "share"),
    ]  # fmt: skip


def report(command: str, metrics: list[Metric], extra: dict[str, Any]) -> str:
    """Markdown: the search rows (revenue / over-budget per u*) and the paired lifts on the evaluation days."""
    seeds, per_seed = extra["seeds"], extra["per_seed"]
    lines = [f"# MaRCA at its own u* vs the rule — tuning seeds {seeds} (probe)", "", f"`{command}`", ""]
    lines += [f"Search days {extra['search_days'][0]}–{extra['search_days'][-1]}, 300 requests per interval, "
              f"limit {100 * extra['search_over_budget_limit']:.1f} % over budget; revenue (cents per request) / "
              "over-budget share per u* (* = chosen, ✗ = over the limit).", ""]  # fmt: skip
    header = ["u*", "rule"] + [f"MaRCA s{s}" for s in seeds]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    columns = [(extra["rule_search"]["rows"], extra["rule_search"]["target"])]
    columns += [(per_seed[s]["search_rows"], per_seed[s]["marca_target"]) for s in seeds]
    for i, u in enumerate(extra["targets"]):
        cells = [f"{u:.2f}"]
        for rows, chosen in columns:
            r = rows[i]
            mark = "*" if r["value"] == chosen else ("" if r["feasible"] else " ✗")
            cells.append(f"{r['revenue']:.4f} / {100 * r['over_budget']:.2f} %{mark}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Evaluation days 1000 + seed (256 requests per interval, as allocate_lift):", ""]
    lines += ["| seed | MaRCA u* | MaRCA own / MaRCA 0.85 / rule 0.85 (cents) | own vs rule | 0.85 vs rule | over budget own / 0.85 / rule |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for s in seeds:
        rev, ob = per_seed[s]["revenue"], per_seed[s]["over_budget"]
        lines.append(
            f"| {s} | {per_seed[s]['marca_target']:.2f} | {rev['marca_own']:.4f} / {rev['marca_085']:.4f} / "
            f"{rev['rule_085']:.4f} | {100 * (rev['marca_own'] / rev['rule_085'] - 1):+.2f} % | "
            f"{100 * (rev['marca_085'] / rev['rule_085'] - 1):+.2f} % | "
            f"{100 * ob['marca_own']:.2f} / {100 * ob['marca_085']:.2f} / {100 * ob['rule_085']:.2f} % |"
        )
    lines.append("")
    for m in metrics:
        ci = f" [{m.ci[0]:+.4f}, {m.ci[1]:+.4f}]" if m.ci else ""
        lines.append(f"- {m.name}: {m.value:+.4f}{ci}")
    lines.append(f"\n{extra['seconds']:.0f} s on the shared host (learners cached).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
