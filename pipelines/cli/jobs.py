"""`troupe loop …`: the retraining loop by hand — run any Troupe DAG in-process, or one loop job on a run folder.

troupe loop dags                                   # the DAGs, their schedules and tasks
troupe loop run troupe_ingest                      # any DAG through dag.test() (AIRFLOW_HOME, migrated once)
troupe loop retrain rank --start 2026-11-20T00:00:00+00:00 --end 2026-11-21T00:00:00+00:00 --algo rcpo
troupe loop gate rank var/runs/rank/<interval>     # re-decide a run's gate (writes gate/gate.{json,md})
troupe loop deploy rank var/runs/rank/<interval> --canary-share 0.5
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


def _airflow() -> None:
    from models.settings import get_settings
    from pipelines.airflow_runtime import prepare_airflow

    home = Path(os.environ.get("AIRFLOW_HOME") or get_settings().home / "airflow")
    prepare_airflow(home, quiet=True)


def schedule_summary(timetable: object) -> str:
    """'0 * * * *', 'on troupe_lake', '0 0 * * * or on troupe_canary_rank|…' — cron and/or the assets it waits on."""

    def names(condition: object) -> list[str]:
        if hasattr(condition, "objects"):
            return [n for c in condition.objects for n in names(c)]
        return [str(getattr(condition, "name", condition))]

    cron = getattr(timetable, "expression", None) or getattr(getattr(timetable, "timetable", None), "expression", None)
    condition = getattr(timetable, "asset_condition", None)
    assets = "on " + "|".join(names(condition)) if condition is not None else ""
    return " or ".join(part for part in (cron, assets) if part) or str(getattr(timetable, "summary", timetable))


def tasks_in_order(dag: object) -> list[str]:
    """Task ids in the order they run: upstream before downstream, ties in the DAG file's order (Kahn's algorithm)."""
    tasks = dag.task_dict  # type: ignore[attr-defined]
    position = {task_id: i for i, task_id in enumerate(tasks)}
    waiting = {task_id: set(task.upstream_task_ids) for task_id, task in tasks.items()}
    order: list[str] = []
    while waiting:
        ready = sorted((t for t, up in waiting.items() if not up), key=position.__getitem__)
        if not ready:  # a cycle: Airflow refuses such a DAG, so this is never reached for a loaded one
            raise ValueError(f"DAG {dag.dag_id}: tasks {sorted(waiting)} form a cycle")  # type: ignore[attr-defined]
        for t in ready:
            order.append(t)
            del waiting[t]
        for up in waiting.values():
            up.difference_update(ready)
    return order


@app.command("dags")
def dags() -> None:
    """List Troupe's DAGs with their schedule and their tasks in the order they run."""
    _airflow()
    from pipelines.airflow_runtime import dag_bag

    bag = dag_bag()
    for path, err in bag.import_errors.items():
        typer.echo(f"IMPORT ERROR {path}: {err}", err=True)
    for dag_id in sorted(bag.dag_ids):
        dag = bag.get_dag(dag_id)
        typer.echo(f"{dag_id:28s} {schedule_summary(dag.timetable):40s} {' '.join(tasks_in_order(dag))}")
    raise typer.Exit(1 if bag.import_errors else 0)


@app.command("run")
def run(
    dag_id: str = typer.Argument(..., help="e.g. troupe_ingest, troupe_features, troupe_retrain_rank"),
    conf: str = typer.Option("{}", help='run parameters as JSON, e.g. \'{"interval_start": "…"}\''),
) -> None:
    """Run one DAG end to end in this process (dag.test); prints each task's state and return value."""
    _airflow()
    from pipelines.airflow_runtime import run_dag

    result = run_dag(dag_id, conf=json.loads(conf), raise_on_failure=False)
    typer.echo(json.dumps({"state": result.state, "tasks": result.task_states, "returns": result.task_returns},
                          indent=2, default=str))  # fmt: skip
    raise typer.Exit(0 if result.succeeded else 1)


@app.command("retrain")
def retrain(
    problem: str = typer.Argument(..., help="rank, slot or allocate"),
    start: str = typer.Option(..., help="interval start, ISO-8601 UTC"),
    end: str = typer.Option(..., help="interval end, ISO-8601 UTC"),
    algo: str = typer.Option(None, help="training algorithm (default: the DAG's)"),
    min_lift: float = typer.Option(0.0, help="gate margin on the main signal"),
    gate_estimator: str = typer.Option(None, help="OPE estimator the gate decides with (default: the primary)"),
    canary_share: float = typer.Option(0.1, help="traffic share of the candidate arm"),
    train_config: str = typer.Option("{}", help="JSON overrides of the training config"),
) -> None:
    """troupe_retrain_<problem> for one interval: dataset → train → evaluate → gate → export → register → deploy."""
    conf: dict[str, object] = {
        "interval_start": start,
        "interval_end": end,
        "min_lift": min_lift,
        "canary_share": canary_share,
        "train_config": json.loads(train_config),
    }
    if algo:
        conf["algo"] = algo
    if gate_estimator:
        conf["gate_overrides"] = {"estimator": gate_estimator}
    run(f"troupe_retrain_{problem}", json.dumps(conf))


@app.command("gate")
def gate(
    problem: str = typer.Argument(...),
    run_dir: Path = typer.Argument(..., help="the run folder, <home>/runs/<problem>/<interval key>"),
    min_lift: float = typer.Option(0.0),
    estimator: str = typer.Option(None, help="OPE estimator (default: the report's primary one)"),
) -> None:
    """Decide a run's gate again from its evaluation report; exit 1 when refused."""
    from pipelines.jobs.gate import GateConfig, run_gate

    result = run_gate(problem, run_dir / "evaluate" / "evaluation.json", run_dir, GateConfig(min_lift, estimator))
    typer.echo(Path(result["markdown"]).read_text())
    raise typer.Exit(0 if result["passed"] else 1)


@app.command("deploy")
def deploy(
    problem: str = typer.Argument(...),
    run_dir: Path = typer.Argument(..., help="a run folder whose candidate passed the gate and is registered"),
    canary_share: float = typer.Option(0.1),
) -> None:
    """Start the canary experiment of a registered candidate (TROUPE_SERVING_URL + admin key: also on the API)."""
    from pipelines.jobs.deploy import run_deploy
    from pipelines.jobs.gate import read_gate_report
    from pipelines.jobs.loop import read_done

    if not read_gate_report(run_dir)["passed"]:
        raise typer.BadParameter(f"the gate refused the candidate of {run_dir}; nothing to deploy")
    registered = read_done(run_dir / "register")
    evaluation = read_done(run_dir / "evaluate")
    if registered is None or evaluation is None:
        raise typer.BadParameter(f"{run_dir} has no finished register/evaluate step")
    typer.echo(json.dumps(run_deploy(problem, registered, evaluation, canary_share=canary_share), indent=2))
