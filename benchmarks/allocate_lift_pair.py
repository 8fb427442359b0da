"""Paired lift of one allocate_lift probe over another on the same days (e.g. a longer training over 768 intervals).

    python -m benchmarks.allocate_lift_pair NEW BASE      # names of benchmarks/results/<name>.json

Both runs evaluate MaRCA on days 1000 + seed against the same rule, so their MaRCA revenues pair by seed. Prints
lift = mean(new) / mean(base) − 1 and the 95 % t-interval over the per-day ratios (allocate_quality.paired's
definitions), and each run's lift over the rule.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.allocate_quality import mean_ci
from benchmarks.common import RESULTS_DIR


def marca_revenue(name: str) -> dict[str, float]:
    doc = json.loads((RESULTS_DIR / f"{name}.json").read_text())
    return {seed: float(pair[0]) for seed, pair in doc["per_seed"].items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("new")
    p.add_argument("base")
    args = p.parse_args(argv)
    new, base = marca_revenue(args.new), marca_revenue(args.base)
    seeds = sorted(set(new) & set(base), key=int)
    if len(seeds) < 2:
        raise ValueError(f"{args.new} / {args.base}: need ≥ 2 seeds in common, got {seeds}")
    a, b = np.asarray([new[s] for s in seeds]), np.asarray([base[s] for s in seeds])
    _, ci = mean_ci(list(a / b - 1.0))
    per_day = ", ".join(f"{s}: {100 * (x / y - 1):+.2f} %" for s, x, y in zip(seeds, a, b, strict=True))
    ci_text = f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else ""
    print(f"{args.new} over {args.base}, seeds {seeds}: {100 * (a.mean() / b.mean() - 1):+.2f} %{ci_text} ({per_day})")


if __name__ == "__main__":
    main()
