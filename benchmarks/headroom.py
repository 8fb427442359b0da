"""Issue 15's check: learnable headroom and a binding constraint in every world.

    python -m benchmarks.headroom [--quick] [--problems rank,slot,allocate] [--seeds 0,1,2,3,4]
    python -m benchmarks.headroom --from-results   # gather the per-problem full runs already measured

For each problem, `benchmarks.headroom_<problem>.run(seeds, quick)` compares a
state-aware reference policy (built with knowledge of the simulator) with the
best constant or threshold rule found by search on separate users, paired on
≥ 5 evaluation seeds, and reports the unconstrained main-signal optimum's
constraint violations. This file only gathers: it writes
benchmarks/results/headroom.json (the BENCHMARKS.md format, goals from the
issue) and prints a Markdown table.

Goals: `headroom.rank.lift` ≥ 0.05 (watch time per user-day, returns
included, constraints met), `headroom.slot.lift` ≥ 0.05 (7-day total watch
time within the exposure cap), `headroom.allocate.lift` ≥ 0.10 (revenue at
equal compute, over-utilisation ≤ 1 %), and `headroom.<problem>.unconstrained_violations`
≥ 1 for each. Each module's own seeds are used unless --seeds is given.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Metric, write_result

PROBLEMS = ("rank", "slot", "allocate")
RESULTS = Path(__file__).resolve().parent / "results"
GOALS: dict[str, tuple[str, float]] = {
    "headroom.rank.lift": (">=", 0.05),
    "headroom.slot.lift": (">=", 0.05),
    "headroom.allocate.lift": (">=", 0.10),
    "headroom.rank.unconstrained_violations": (">=", 1.0),
    "headroom.slot.unconstrained_violations": (">=", 1.0),
    "headroom.allocate.unconstrained_violations": (">=", 1.0),
}


def _metrics(problem: str, values: dict[str, float]) -> list[Metric]:
    """One Metric per value; `<name>_ci_low` / `_ci_high` pairs become the CI of `<name>`."""
    out = []
    for name, value in values.items():
        if name.endswith(("_ci_low", "_ci_high")):
            continue
        low, high = values.get(f"{name}_ci_low"), values.get(f"{name}_ci_high")
        ci = (float(low), float(high)) if low is not None and high is not None else None
        unit = "count" if name.endswith("violations") else ("ratio" if name.endswith("lift") else "")
        out.append(Metric(name, float(value), unit, goal=GOALS.get(name), ci=ci))
    return out


def markdown(metrics: list[Metric]) -> str:
    """The metrics as a Markdown table (name, value, 95 % CI, goal, met)."""
    lines = ["| metric | value | 95 % CI | goal | met |", "|---|---|---|---|---|"]
    for m in metrics:
        ci = f"[{m.ci[0]:.3f}, {m.ci[1]:.3f}]" if m.ci else ""
        goal = f"{m.goal[0]} {m.goal[1]:g}" if m.goal else ""
        met = ""
        if m.goal:
            ok = m.value >= m.goal[1] if m.goal[0] == ">=" else m.value <= m.goal[1]
            met = "yes" if ok else "**no**"
        lines.append(f"| `{m.name}` | {m.value:.4g} | {ci} | {goal} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="each module's quick mode (recorded rules / fewer users)")
    p.add_argument("--problems", default=",".join(PROBLEMS))
    p.add_argument("--seeds", default="", help="evaluation seeds for every problem (default: each module's own)")
    p.add_argument(
        "--from-results",
        action="store_true",
        help="do not rerun: gather benchmarks/results/headroom_<problem>.json (each module's own full run; "
        "a full run of all three takes ~30 min on 2 cores)",
    )
    a = p.parse_args(argv)
    problems = [x for x in a.problems.split(",") if x]
    unknown = sorted(set(problems) - set(PROBLEMS))
    if unknown:
        raise SystemExit(f"--problems: unknown {unknown}; known: {list(PROBLEMS)}")
    metrics: list[Metric] = []
    seconds: dict[str, float] = {}
    sources: dict[str, str] = {}
    for problem in problems:
        if a.from_results:
            own = json.loads((RESULTS / f"headroom_{problem}.json").read_text())
            values = {m["name"]: m["value"] for m in own["metrics"]}
            for m in own["metrics"]:
                if m.get("ci"):
                    values[f"{m['name']}_ci_low"], values[f"{m['name']}_ci_high"] = m["ci"]
            sources[problem] = f"{own['command']} (commit {own.get('git_commit', '?')}, {own.get('timestamp', '?')})"
            metrics += _metrics(problem, values)
            continue
        module: Any = importlib.import_module(f"benchmarks.headroom_{problem}")
        seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else list(module.EVAL_SEEDS)
        t0 = time.monotonic()
        print(f"{problem}: seeds {seeds}{' (quick)' if a.quick else ''} ...", flush=True)
        values = module.run(seeds, a.quick)
        seconds[problem] = time.monotonic() - t0
        metrics += _metrics(problem, values)
        print(markdown(_metrics(problem, values)), flush=True)
    table = markdown(metrics)
    path = write_result(
        "headroom",
        metrics,
        command="python -m benchmarks.headroom"
        + (" --from-results" if a.from_results else "")
        + (" --quick" if a.quick else "")
        + (f" --problems {a.problems}" if a.problems != ",".join(PROBLEMS) else "")
        + (f" --seeds {a.seeds}" if a.seeds else ""),
        extra={"markdown": table, "seconds": seconds, "gathered_from": sources},
    )
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
