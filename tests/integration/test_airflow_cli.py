"""A stock `airflow` command finds Troupe's DAGs through the project's airflow.cfg (`troupe airflow init`), no env vars."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipelines.airflow_runtime import DAGS_FOLDER, init_airflow

TROUPE_DAGS = {
    "troupe_ingest",
    "troupe_features",
    "troupe_ab_report",
    "troupe_retrain_rank",
    "troupe_retrain_slot",
    "troupe_retrain_allocate",
}


def test_airflow_dags_list_shows_the_dags_and_no_examples(tmp_path: Path) -> None:
    home = tmp_path / "airflow"
    cfg = init_airflow(home)
    text = cfg.read_text()
    assert f"dags_folder = {DAGS_FOLDER}" in text and "load_examples = False" in text
    # A plain shell: AIRFLOW_HOME only — no AIRFLOW__* variable points anywhere.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env["AIRFLOW_HOME"] = str(home)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "dags", "list", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    table = next(line for line in out.stdout.splitlines() if line.startswith("[{"))  # Airflow logs go to stdout too
    listed = {d["dag_id"] for d in json.loads(table)}
    assert listed == TROUPE_DAGS, out.stdout + out.stderr
    # init keeps what an operator added to the file
    cfg.write_text(text + "\n[webserver]\nexpose_config = True\n")
    init_airflow(home)
    assert "expose_config = True" in cfg.read_text()
