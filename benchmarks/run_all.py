"""`make bench`: run every benchmark module in benchmarks/ (each writes benchmarks/results/<name>.json).

Each benchmark runs in its own process, one after the other, so they do not
compete for the two cores. A failing benchmark is reported and the rest still run;
the exit code is non-zero if any failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"__init__", "__main__", "common", "run_all"}


def benchmark_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem not in NOT_BENCHMARKS and not p.stem.startswith("_"))


def main() -> int:
    failed: list[str] = []
    for name in benchmark_names():
        start = time.monotonic()
        print(f"==> benchmarks.{name}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"], cwd=HERE.parent)
        print(f"<== benchmarks.{name}: exit {code} in {time.monotonic() - start:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
