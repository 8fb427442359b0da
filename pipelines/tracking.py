"""Experiment tracking: every train, evaluate and gate step of the retraining DAGs logged to MLflow.

Where: `TROUPE_MLFLOW_TRACKING_URI`, else `MLFLOW_TRACKING_URI`, else a local
file store `file://<TROUPE_HOME>/mlruns` (read it with MLflow's client or UI, or
point the variable at a tracking server or a sqlite:/// database). `TROUPE_MLFLOW=off`
switches tracking off. The file registry (models/registry.py) stays the serving
contract; MLflow only records what each run did, so runs of different days
can be compared side by side.

Layout (ours): one MLflow experiment per problem, `troupe-retrain-<problem>`;
one MLflow run per step and data interval, named `<step> <interval key>`,
tagged with the step, the interval, the run folder and the candidate's
registry version (`<algorithm>-<interval key>`, the name the register step
gives it). Metric keys are the jobs' own (`losses/…`, `charts/…`,
`ope/<estimator>/…`, `gate/…`), so a key means the same thing every day.
The training curves are logged per iteration (metrics.csv → MLflow metric
history) and as the curves.png / metrics.csv artifacts.

A tracking failure (a server that is down) never fails the step: it is logged
as a warning and the DAG goes on — the run folder keeps everything.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.logging import log_event
from models.settings import get_settings

log = logging.getLogger("troupe.pipelines.tracking")


def tracking_uri() -> str | None:
    """The MLflow tracking URI in force, or None when tracking is off."""
    if os.environ.get("TROUPE_MLFLOW", "").lower() in ("off", "0", "false"):
        return None
    uri = os.environ.get("TROUPE_MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    # Ours: the local default is MLflow's file store, which MLflow keeps in maintenance mode and refuses unless
    # allowed: a sqlite:// store costs a ~30 s schema migration on first use here (measured, 2 busy cores) —
    # on every fresh demo folder. Point TROUPE_MLFLOW_TRACKING_URI at sqlite:///… or a server to use one.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (get_settings().home / "mlruns").resolve().as_uri()


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isfinite(float(v)):
            out[k.replace(" ", "_")] = float(v)
    return out


def log_step(
    problem: str,
    step: str,
    interval_key: str,
    *,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    curves_csv: Path | None = None,
    artifacts: list[Path] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str | None:
    """One MLflow run for one step of one interval; returns its run id (None when off or on failure)."""
    uri = tracking_uri()
    if uri is None:
        return None
    # mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into this process's environment, which
    # tracking_uri() reads as the user's choice: put back what was there, so one TROUPE_HOME's store
    # does not leak into the next step run from another home in the same process (tests, `troupe loop`).
    user_choice = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(f"troupe-retrain-{problem}")
        flat: dict[str, Any] = {}
        _flat("", dict(params or {}), flat)
        with mlflow.start_run(run_name=f"{step} {interval_key}") as run:
            mlflow.set_tags({"troupe.step": step, "troupe.problem": problem, "troupe.interval": interval_key,
                             **{k: str(v) for k, v in (tags or {}).items()}})  # fmt: skip
            if flat:
                mlflow.log_params({k: str(v)[:6000] for k, v in flat.items()})
            last_step = 0
            if curves_csv is not None and curves_csv.is_file():
                last_step = _log_curves(mlflow, curves_csv)
            if metrics:  # the step's summary, at the curves' last step so MLflow's "latest value" is it
                mlflow.log_metrics(_finite(metrics), step=last_step)
            for path in artifacts or []:
                if path.is_file():
                    mlflow.log_artifact(str(path))
            run_id = str(run.info.run_id)
        log_event(log, "tracking.logged", problem=problem, step=step, interval=interval_key, run_id=run_id, uri=uri)
        return run_id
    except Exception as exc:  # noqa: BLE001 — see the module docstring: tracking never fails a step
        log.warning("MLflow tracking of %s %s failed (%s: %s); the run folder keeps the results",
                    problem, step, type(exc).__name__, exc)  # fmt: skip
        return None
    finally:
        if user_choice is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = user_choice


def _log_curves(mlflow: Any, path: Path) -> int:
    """metrics.csv (one row per training iteration) → MLflow metric history, step = iteration; returns the last step."""
    step = 0
    with path.open() as f:
        for row in csv.DictReader(f):
            step = int(float(row.pop("step", 0) or 0))
            values = {k: float(v) for k, v in row.items() if v not in ("", None)}
            mlflow.log_metrics(_finite(values), step=step)
    return step


def log_register(problem: str, registered: Mapping[str, Any]) -> None:
    log_step(problem, "register", str(registered["interval_key"]), params={"version": registered["version"]},
             tags={"troupe.registry_version": str(registered["version"]), "troupe.registry_path": str(registered["path"]),
                   "troupe.run_dir": str(registered["run_dir"])})  # fmt: skip


def log_train(problem: str, data: Mapping[str, Any], trained: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    run_dir = Path(str(data["run_dir"]))
    train_dir = run_dir / "train"  # pipelines/jobs/train.py TRAIN_DIR
    log_step(
        problem,
        "train",
        str(data["interval_key"]),
        params={"algo": trained.get("algorithm"), **params},
        metrics=dict(trained.get("metrics") or {}),
        curves_csv=next(iter(sorted(train_dir.rglob("metrics.csv"))), None) if train_dir.is_dir() else None,
        artifacts=sorted(train_dir.rglob("curves.png")) if train_dir.is_dir() else [],
        tags={
            "troupe.run_dir": str(run_dir),
            "troupe.registry_version": f"{trained.get('algorithm')}-{data['interval_key']}",
            "troupe.dataset": str(data.get("dataset")),
        },  # fmt: skip
    )


def log_evaluation(problem: str, evaluation: Mapping[str, Any], candidate_version: str) -> None:
    import json

    report_path = Path(str(evaluation["report"]))
    report = json.loads(report_path.read_text())
    main = report["main_signal"]
    metrics: dict[str, Any] = {"ope/n_rows": report.get("n_rows"), "ope/n_sessions": report.get("n_sessions")}
    for name, entry in report["estimators"].items():
        for part in ("candidate", "baseline", "difference"):
            s = (entry.get(part) or {}).get("signals", {}).get(main)
            if s:
                for stat in ("value", "ci_low", "ci_high"):
                    metrics[f"ope/{name}/{part}_{main}_{stat}"] = s.get(stat)
    log_step(
        problem,
        "evaluate",
        str(evaluation["interval_key"]),
        params={
            "primary_estimator": report.get("primary_estimator"),
            "ci_method": report.get("ci_method"),
            "confidence": report.get("confidence"),
            "candidate": report.get("candidate"),
            "baseline": report.get("baseline"),
        },  # fmt: skip
        metrics=metrics,
        artifacts=[report_path, report_path.with_suffix(".md"), report_path.with_name("evaluation.png")],
        tags={"troupe.run_dir": str(evaluation["run_dir"]), "troupe.registry_version": candidate_version},
    )


def log_gate(problem: str, evaluation: Mapping[str, Any], gate: Mapping[str, Any], candidate_version: str,
             config: Mapping[str, Any]) -> None:  # fmt: skip
    import json

    report_path = Path(str(gate["report"]))
    decision = json.loads(report_path.read_text())
    main = decision.get("main", {})
    lo, hi = (main.get("difference_ci") or [float("nan"), float("nan")])[:2]
    log_step(
        problem,
        "gate",
        str(evaluation["interval_key"]),
        params={"estimator": decision.get("estimator"), **dict(config)},
        metrics={
            "gate/passed": 1.0 if gate["passed"] else 0.0,
            "gate/main_difference": main.get("difference"),
            "gate/main_difference_ci_low": lo,
            "gate/main_difference_ci_high": hi,
        },  # fmt: skip
        artifacts=[report_path, report_path.with_suffix(".md"), report_path.with_name("gate.png")],
        tags={
            "troupe.run_dir": str(evaluation["run_dir"]),
            "troupe.registry_version": candidate_version,
            "troupe.gate": "passed" if gate["passed"] else "refused: " + "; ".join(gate.get("reasons", []))[:4000],
        },  # fmt: skip
    )
