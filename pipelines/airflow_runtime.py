"""Run Troupe's Airflow DAGs in-process with `dag.test()`, against a project-local SQLite metadata DB.

Airflow reads `AIRFLOW_HOME` (and every `AIRFLOW__*` variable) once, when it
is first imported, so `prepare_airflow(home)` must run before anything imports
`airflow`; it refuses, with the reason, when Airflow was already imported with
another home. `airflow db migrate` runs in a subprocess, once per home: a stamp
file next to the DB records the Airflow version it was migrated with, and a
file lock keeps two processes from migrating the same DB at once.

Measured here (Airflow 3.3.2, 2 cores): `db migrate` on a fresh SQLite DB about
3 s; `dag.test()` runs every task in this process (no api-server, no
scheduler, no worker), honours retries (after `retry_delay`) and branching.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import TroupeError

DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
_STAMP = ".troupe-migrated"


class AirflowRuntimeError(TroupeError):
    """Airflow could not be prepared, a DAG failed to import, or a DAG run failed."""


def airflow_env(home: Path, *, quiet: bool = False) -> dict[str, str]:
    """The environment variables that point Airflow at `home` and Troupe's DAG folder."""
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The DAG files are trusted project code; parse every .py in the folder.
        "AIRFLOW__CORE__DAG_DISCOVERY_SAFE_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    if quiet:
        env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    return env


def _installed_airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow-core")


def migrate_db(home: Path, *, timeout_s: float = 300.0, environ: Mapping[str, str] | None = None) -> bool:
    """Run `airflow db migrate` for `home` unless it was already done; True when it ran now.

    `environ`: the environment the subprocess starts from (default: this process's); a caller that runs
    this in a thread while it keeps changing os.environ passes a copy.
    """
    home.mkdir(parents=True, exist_ok=True)
    stamp = home / _STAMP
    wanted = _installed_airflow_version()
    with (home / ".migrate.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if stamp.exists() and stamp.read_text().strip() == wanted and (home / "airflow.db").exists():
                return False
            env = {**(os.environ if environ is None else environ), **airflow_env(home, quiet=True)}
            proc = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr)[-3000:]
                raise AirflowRuntimeError(f"`airflow db migrate` failed for AIRFLOW_HOME={home}:\n{tail}")
            stamp.write_text(wanted + "\n")
            return True
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def prepare_airflow(home: Path, *, quiet: bool = False) -> None:
    """Point this process's Airflow at `home` (env vars), migrating its DB first when needed.

    Call before the first `import airflow`; calling again with the same home is a no-op.
    """
    home = home.resolve()
    if "airflow" in sys.modules:
        current = os.environ.get("AIRFLOW_HOME")
        if current is None or Path(current).resolve() != home:
            raise AirflowRuntimeError(
                f"Airflow was already imported in this process with AIRFLOW_HOME={current!r}; "
                f"it reads its configuration once, so it cannot switch to {home}. "
                f"Call prepare_airflow({str(home)!r}) before anything imports airflow."
            )
    migrate_db(home)
    os.environ.update(airflow_env(home, quiet=quiet))


def write_airflow_cfg(home: Path) -> Path:
    """Write (or update) `<home>/airflow.cfg` so a stock `airflow` command finds Troupe's DAGs.

    Sets only what Troupe needs — the DAG folder, no example DAGs, every .py
    parsed, the SQLite DB inside `home` — and keeps any other setting already
    in the file. With AIRFLOW_HOME=<home>, `airflow dags list`, `airflow
    standalone` and the scheduler read it; no environment variable is needed.
    """
    import configparser

    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "airflow.cfg"
    cfg = configparser.ConfigParser(interpolation=None)
    if path.exists():
        cfg.read(path)
    wanted = {
        ("core", "dags_folder"): str(DAGS_FOLDER),
        ("core", "load_examples"): "False",
        ("core", "dag_discovery_safe_mode"): "False",
        ("database", "sql_alchemy_conn"): f"sqlite:///{home / 'airflow.db'}",
    }
    for (section, key), value in wanted.items():
        if not cfg.has_section(section):
            cfg.add_section(section)
        cfg.set(section, key, value)
    with path.open("w") as f:
        f.write("# Written by `troupe airflow init` (pipelines/airflow_runtime.py); other settings are kept.\n")
        cfg.write(f)
    return path


def init_airflow(home: Path, *, timeout_s: float = 600.0) -> Path:
    """airflow.cfg, `airflow db migrate`, then `airflow dags reserialize`: `airflow dags list` shows the DAGs at once.

    (Airflow 3 lists DAGs from the metadata DB; a running dag-processor fills it
    too, reserialize does it now.) Returns the config file.
    """
    path = write_airflow_cfg(home)
    migrate_db(home.resolve(), timeout_s=timeout_s)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env["AIRFLOW_HOME"] = str(home.resolve())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(DAGS_FOLDER.parents[1]), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "reserialize"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise AirflowRuntimeError(f"`airflow dags reserialize` failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return path


def dag_bag() -> Any:
    """A DagBag over Troupe's DAG folder (after `prepare_airflow`)."""
    if "AIRFLOW_HOME" not in os.environ:
        raise AirflowRuntimeError("call prepare_airflow(home) before loading DAGs")
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def load_dag(dag_id: str) -> Any:
    """One DAG by id; an import error in any DAG file is raised with its traceback."""
    bag = dag_bag()
    if bag.import_errors:
        details = "\n".join(f"{path}:\n{err}" for path, err in bag.import_errors.items())
        raise AirflowRuntimeError(f"DAG files failed to import:\n{details}")
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise AirflowRuntimeError(f"no DAG {dag_id!r} in {DAGS_FOLDER}; DAGs: {sorted(bag.dag_ids)}")
    return dag


@dataclass(frozen=True)
class DagRunResult:
    """What one `dag.test()` run did: the run's state and each task's final state and return value."""

    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str]
    task_returns: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.state == "success"

    def ran(self, task_id: str) -> bool:
        return self.task_states.get(task_id) == "success"


def run_dag(
    dag_id: str,
    conf: Mapping[str, Any] | None = None,
    logical_date: dt.datetime | None = None,
    *,
    raise_on_failure: bool = True,
) -> DagRunResult:
    """Run one DAG end to end in this process with `dag.test()` and report every task's outcome."""
    dag = load_dag(dag_id)
    run = dag.test(run_conf=dict(conf or {}), logical_date=logical_date)
    states: dict[str, str] = {}
    returns: dict[str, Any] = {}
    for ti in run.get_task_instances():
        states[ti.task_id] = str(ti.state) if ti.state is not None else "none"
    returns = _task_returns(dag_id, run.run_id, list(states))
    result = DagRunResult(dag_id, run.run_id, str(run.state), states, returns)
    if raise_on_failure and not result.succeeded:
        failed = sorted(t for t, s in states.items() if s in ("failed", "upstream_failed"))
        raise AirflowRuntimeError(
            f"DAG {dag_id} run {run.run_id} ended {run.state}; failed tasks: {failed}. "
            f"The task logs above carry each failure's traceback."
        )
    return result


def _task_returns(dag_id: str, run_id: str, task_ids: list[str]) -> dict[str, Any]:
    """Each task's return value (XCom `return_value`), read back from the metadata DB."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    out: dict[str, Any] = {}
    with create_session() as session:
        rows = session.query(XComModel).filter(
            XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key == "return_value"
        )
        for row in rows:
            if row.task_id in task_ids:
                out[row.task_id] = XComModel.deserialize_value(row)
    return out
