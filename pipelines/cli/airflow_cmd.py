"""`troupe airflow init|standalone`: a project airflow.cfg so a stock Airflow finds Troupe's DAGs.

troupe airflow init          # AIRFLOW_HOME/airflow.cfg (DAG folder, no examples, SQLite), migrate, reserialize
AIRFLOW_HOME=var/airflow airflow dags list
troupe airflow standalone    # init, then `airflow standalone` (api-server, scheduler, dag-processor, triggerer)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


def _home() -> Path:
    from models.settings import get_settings

    return Path(os.environ.get("AIRFLOW_HOME") or get_settings().home / "airflow").resolve()


@app.command("init")
def init() -> None:
    """Write AIRFLOW_HOME/airflow.cfg pointing at Troupe's DAG folder, migrate the DB and register the DAGs."""
    from pipelines.airflow_runtime import init_airflow

    home = _home()
    path = init_airflow(home)
    typer.echo(f"wrote {path}; now `AIRFLOW_HOME={home} airflow dags list` shows Troupe's DAGs")


@app.command("standalone")
def standalone() -> None:
    """`troupe airflow init`, then run `airflow standalone` with that home (Ctrl-C stops it)."""
    init()
    home = _home()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env["AIRFLOW_HOME"] = str(home)
    os.execvpe(sys.executable, [sys.executable, "-m", "airflow", "standalone"], env)
