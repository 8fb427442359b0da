"""`make demo` as a fresh clone runs it: a new TROUPE_HOME and a new AIRFLOW_HOME, the demo in its own process.

The whole loop on embedded defaults (broker, API, simulated days, the DAGs
through dag.test(), gate, canary, A/B report) must finish. For its default seed
the gate normally passes, and then the canary must go live and the A/B lift be
printed next to the OPE estimate made before launch (the README's promise). The
gate may still refuse honestly — the candidate is trained on one day of logs,
and benchmarks/demo_reliability.py measures how often — and a refusal must then
say why (the gate's reasons) and what to try (a remedy for each kind of
reason), deploy nothing and run no A/B test. A fresh AIRFLOW_HOME matters: an
Airflow configuration read before the demo has set its environment once left
dag.test() without DAGs, which only a new folder shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.demo import HINT_CONSTRAINT, HINT_DAY_BELOW, HINT_LOWER_BOUND, HINT_OVERLAP

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
    assert "[py.warnings]" not in out  # third-party deprecation notices stay out of the demo's output
    (summary_file,) = (tmp_path / "home" / "demo").glob("*/demo_summary.json")
    summary = json.loads(summary_file.read_text())
    gate = summary["gate"]
    assert summary["day1"]["errors"] == 0 and summary["ingest_day1"]["decisions_total"] >= summary["day1"]["requests"]
    if gate["passed"]:
        assert "gate PASSED" in out
        assert "canary live: experiment" in out
        assert summary["deploy"]["canary_share"] == 0.5
        assert summary["day2"]["truth_per_arm"]["candidate"]["decisions"] > 0
        assert "A/B measured lift on watch_time per decision" in out
        assert "OPE estimate before launch (dr)" in out
        assert "A/B verdict (primary test)" in out
        assert summary["ab"] is not None
    else:
        # Why: every reason of the gate, printed; what to try: one remedy per kind of reason.
        assert gate["reasons"], summary
        refused = next(line for line in out.splitlines() if line.strip().startswith("gate REFUSED: "))
        assert all(reason in refused for reason in gate["reasons"])
        hint = gate["what_to_try"]
        assert f"what to try: {hint}" in out
        remedies = {
            "constraint ": (HINT_CONSTRAINT, HINT_DAY_BELOW.split("{signals}")[0]),
            "effective sample size": (HINT_OVERLAP,),
            "watch_time: lower bound": (HINT_LOWER_BOUND,),
        }
        for reason in gate["reasons"]:
            kind = next(k for k in remedies if reason.startswith(k))
            assert any(r in hint for r in remedies[kind]), (reason, hint)
        assert "nothing was deployed" in out and "deploy" not in summary and "A/B measured lift" not in out
