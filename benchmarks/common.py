"""Writing benchmark results in the format of shared/BENCHMARKS.md.

    from benchmarks.common import Metric, write_result
    write_result("serving", [Metric("serving.slot.throughput", 3400.0, "req/s",
                                    baseline=("fastapi.constant.throughput", 9000.0),
                                    goal=(">=", 3000))], command="python -m benchmarks.serving")

`ratio` is value / baseline, both measured in the same run; `met` is computed
from `goal` and written honestly.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str
    baseline: tuple[str, float] | None = None
    goal: tuple[str, float] | None = None  # (">=" | "<=", value)
    ci: tuple[float, float] | None = None
    note: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "value": float(self.value), "unit": self.unit}
        if self.baseline is not None:
            base_name, base_value = self.baseline
            out["baseline"] = {"name": base_name, "value": float(base_value)}
            out["ratio"] = float(self.value) / float(base_value) if base_value else None
        if self.goal is not None:
            op, target = self.goal
            if op not in (">=", "<="):
                raise ValueError(f"goal op must be '>=' or '<=', got {op!r}")
            out["goal"] = {"op": op, "value": float(target)}
            out["met"] = bool(self.value >= target if op == ">=" else self.value <= target)
        if self.ci is not None:
            out["ci"] = [float(self.ci[0]), float(self.ci[1])]
        if self.note:
            out["note"] = self.note
        return out


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_result(
    name: str, metrics: Sequence[Metric], command: str | None = None, extra: dict[str, object] | None = None
) -> Path:
    """Write benchmarks/results/<name>.json and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc: dict[str, object] = {
        "benchmark": name,
        "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": _git_commit(),
        "host": {"cpus": os.cpu_count(), "gpu": _gpu_name()},
        "command": command or " ".join([Path(sys.executable).name, *sys.argv]),
        "metrics": [m.to_json() for m in metrics],
    }
    if extra:
        doc.update(extra)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs since boot, from /proc/stat ((0, 0) where it is unreadable)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_share(start: tuple[int, int]) -> float:
    """Share of CPU time the hypervisor gave to other machines since `start` (a `cpu_ticks()` reading).

    On a shared virtual machine this is time the benchmark's cores were not ours
    at all: throughput and tail latency fall with it, CPU time per request hardly.
    """
    steal, total = cpu_ticks()
    return (steal - start[0]) / (total - start[1]) if total > start[1] else 0.0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))
