"""Troupe's Airflow DAGs: every file imports, every DAG has the intended task graph, schedule, retries and timeouts.

Real Airflow 3 (DagBag over pipelines/dags) with a private AIRFLOW_HOME whose
SQLite DB is migrated once per test session (tests/airflow_support.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

RETRAIN_EDGES = {
    ("dataset", "train"),
    ("dataset", "evaluate"),
    ("dataset", "register"),
    ("train", "evaluate"),
    ("train", "export"),
    ("evaluate", "gate"),
    ("evaluate", "refused"),
    ("evaluate", "deploy_canary"),
    ("evaluate", "register"),
    ("gate", "export"),
    ("gate", "refused"),
    ("export", "register"),
    ("register", "deploy_canary"),
}
EXPECTED: dict[str, dict[str, Any]] = {
    "troupe_ingest": {"schedule": "0 * * * *", "edges": set(), "tasks": {"ingest"}},
    "troupe_features": {
        "schedule": "0 * * * *",
        "edges": {("aggregate", "materialize")},
        "tasks": {"aggregate", "materialize"},
    },
    "troupe_ab_report": {"schedule": "0 0 * * *", "edges": set(), "tasks": {"ab_report"}},
    **{
        f"troupe_retrain_{p}": {
            "schedule": "0 0 * * *",
            "edges": RETRAIN_EDGES,
            "tasks": {"dataset", "train", "evaluate", "gate", "export", "register", "deploy_canary", "refused"},
        }
        for p in ("rank", "slot", "allocate")
    },
}


@pytest.fixture(scope="module")
def bag(airflow_home: Any) -> Any:
    from pipelines.airflow_runtime import dag_bag

    return dag_bag()


def test_every_dag_file_imports_without_errors(bag: Any) -> None:
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == set(EXPECTED)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_structure_schedule_retries_and_timeouts(bag: Any, dag_id: str) -> None:
    dag = bag.get_dag(dag_id)
    want = EXPECTED[dag_id]
    assert set(dag.task_dict) == want["tasks"]
    edges = {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}
    assert edges == want["edges"]
    assert dag.timetable.expression == want["schedule"]
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.dagrun_timeout is not None
    for t in dag.tasks:
        assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
        assert t.execution_timeout is not None and t.execution_timeout <= dt.timedelta(hours=2)


def test_retrain_gate_is_a_branch_between_export_and_refused(bag: Any) -> None:
    from airflow.providers.standard.operators.python import BranchPythonOperator

    dag = bag.get_dag("troupe_retrain_rank")
    gate = dag.get_task("gate")
    assert isinstance(gate, BranchPythonOperator)
    assert gate.downstream_task_ids == {"export", "refused"}
    # Nothing that deploys can run unless export ran: deploy_canary's only path goes through export → register.
    assert dag.get_task("deploy_canary").upstream_task_ids == {"register", "evaluate"}
    assert dag.get_task("register").upstream_task_ids == {"export", "dataset", "evaluate"}
    assert dag.params["algo"] == "tscac"
    assert bag.get_dag("troupe_retrain_slot").params["algo"] == "tscac"
    assert bag.get_dag("troupe_retrain_allocate").params["algo"] == "tscac"


def test_a_missing_piece_fails_the_task_at_once_instead_of_retrying(airflow_home: Any) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.dags.common import fail_fast
    from pipelines.jobs.loop import MissingPieceError, require

    with pytest.raises(MissingPieceError, match=r"module training\.nowhere is missing: it is provided by issue X"):
        require("training.nowhere", None, "issue X")
    with pytest.raises(MissingPieceError, match=r"models\.problems\.NOPE is missing"):
        require("models.problems", "NOPE", "issue X")
    with pytest.raises(AirflowFailException, match="MissingPieceError: module training.nowhere"), fail_fast():
        require("training.nowhere", None, "issue X")
    # Anything else (a broker that is down, a full disk) still goes through the task's retries.
    with pytest.raises(ConnectionError), fail_fast():
        raise ConnectionError("broker unreachable")


def test_interval_resolution_prefers_params_then_data_interval_then_logical_date() -> None:
    from pipelines.dags.common import interval_from_context

    day = dt.timedelta(days=1)
    t0 = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    t1 = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    params = {"interval_start": "2026-11-21T10:00:00+00:00", "interval_end": "2026-11-21T11:00:00+00:00"}
    assert interval_from_context({"params": params, "data_interval_start": t0, "data_interval_end": t1}, day) == (
        params["interval_start"],
        params["interval_end"],
    )
    scheduled = {
        "params": {"interval_start": "", "interval_end": ""},
        "data_interval_start": t0,
        "data_interval_end": t1,
    }
    assert interval_from_context(scheduled, day) == (t0.isoformat(), t1.isoformat())
    manual = {"params": {}, "data_interval_start": t1, "data_interval_end": t1, "logical_date": t1}
    assert interval_from_context(manual, day) == (t0.isoformat(), t1.isoformat())
    with pytest.raises(ValueError, match="must be given together"):
        interval_from_context({"params": {"interval_start": "2026-11-21T10:00:00+00:00"}}, day)
