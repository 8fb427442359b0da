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
        "schedule": "on troupe_lake",
        "edges": {("aggregate", "materialize")},
        "tasks": {"aggregate", "materialize"},
    },
    "troupe_ab_report": {
        "schedule": "0 0 * * * or on troupe_canary_rank|troupe_canary_slot|troupe_canary_allocate",
        "edges": set(),
        "tasks": {"ab_report"},
    },
    **{
        f"troupe_retrain_{p}": {
            "schedule": "on troupe_feature_store",
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
    from pipelines.cli.jobs import schedule_summary

    assert schedule_summary(dag.timetable) == want["schedule"]
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.dagrun_timeout is not None
    assert dag.on_failure_callback is not None
    for t in dag.tasks:
        assert t.on_failure_callback, f"{dag_id}.{t.task_id} has no failure callback"
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
    assert bag.get_dag("troupe_retrain_slot").params["algo"] == "sl_mgac"
    assert bag.get_dag("troupe_retrain_allocate").params["algo"] == "marca"  # MaRCA (#16), TSCAC on request


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


def test_assets_chain_ingest_features_retrain_ab_report(bag: Any) -> None:
    """Data-aware scheduling: each DAG's outlet asset is what the next one is scheduled on."""

    def outlets(dag_id: str, task_id: str) -> set[str]:
        return {a.name for a in bag.get_dag(dag_id).get_task(task_id).outlets}

    def scheduled_on(dag_id: str) -> set[str]:
        condition = bag.get_dag(dag_id).timetable.asset_condition
        return {a.name for a in condition.objects}

    assert outlets("troupe_ingest", "ingest") == {"troupe_lake"} == scheduled_on("troupe_features")
    assert outlets("troupe_features", "materialize") == {"troupe_feature_store"}
    for problem in ("rank", "slot", "allocate"):
        assert scheduled_on(f"troupe_retrain_{problem}") == {"troupe_feature_store"}
        assert outlets(f"troupe_retrain_{problem}", "deploy_canary") == {f"troupe_canary_{problem}"}
        assert outlets(f"troupe_retrain_{problem}", "refused") == set()  # a refused candidate starts no A/B report
    assert scheduled_on("troupe_ab_report") == {f"troupe_canary_{p}" for p in ("rank", "slot", "allocate")}


def test_an_asset_triggered_retrain_works_on_the_last_complete_day() -> None:
    from pipelines.dags.common import interval_from_context

    start, end = interval_from_context({"params": {}, "triggering_asset_events": {"troupe_feature_store": [1]}},
                                       dt.timedelta(days=1))  # fmt: skip
    s, e = dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)
    assert e - s == dt.timedelta(days=1) and e.hour == e.minute == 0
    assert e <= dt.datetime.now(dt.UTC) < e + dt.timedelta(days=1)


def test_a_failed_task_calls_the_failure_callback(airflow_home: Any, troupe_home: Any) -> None:
    import json

    from pipelines.airflow_runtime import run_dag

    # Half an interval is a parameter error: fail_fast fails the task at once (no retry wait), then the callback runs.
    result = run_dag("troupe_features", conf={"interval_start": "2026-11-21T10:00:00+00:00", "interval_end": ""},
                     raise_on_failure=False)  # fmt: skip
    assert result.task_states["aggregate"] == "failed"
    lines = (troupe_home / "alerts" / "failures.jsonl").read_text().splitlines()
    alerts = [json.loads(line) for line in lines]
    assert any(a["dag_id"] == "troupe_features" and a["task_id"] == "aggregate" and "ValueError" in a["error"]
               for a in alerts), alerts  # fmt: skip
