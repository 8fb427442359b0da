"""`make demo` as a fresh clone runs it: a new TROUPE_HOME and a new AIRFLOW_HOME, the demo in its own process.

The whole loop on embedded defaults (broker, API, simulated days, the DAGs
through dag.test(), gate, canary, A/B report) must finish and print the OPE
estimate next to the measured A/B lift — the README's promise. A fresh
AIRFLOW_HOME matters: an Airflow configuration read before the demo has set its
environment once left dag.test() without DAGs, which only a new folder shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_the_whole_loop_from_fresh_folders(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TROUPE_", "AIRFLOW"))}
    env |= {"TROUPE_HOME": str(tmp_path / "home"), "AIRFLOW_HOME": str(tmp_path / "airflow")}
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "gate PASSED" in out or "gate refused" in out.lower()
    if "gate PASSED" in out:
        assert "A/B measured lift on watch_time per decision" in out
        assert "OPE estimate before launch" in out
    assert "[py.warnings]" not in out  # third-party deprecation notices stay out of the demo's output
