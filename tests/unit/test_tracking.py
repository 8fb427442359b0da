"""Retrain steps logged to MLflow: params, metrics, per-iteration curves, artifacts and the registry version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import tracking
from tests.unit.test_plots import evaluation_report

KEY = "20261120T000000Z-20261121T000000Z"


def _run_folder(root: Path) -> Path:
    run = root / "runs" / "rank" / KEY
    (run / "train").mkdir(parents=True)
    (run / "train" / "metrics.csv").write_text(
        "step,charts/signal_watch_time,losses/actor\n0,300.0,1.0\n1,310.0,0.5\n2,320.0,0.25\n"
    )
    (run / "train" / "curves.png").write_bytes(b"\x89PNG fake")
    (run / "evaluate").mkdir()
    (run / "evaluate" / "evaluation.json").write_text(json.dumps(evaluation_report()))
    (run / "gate").mkdir()
    gate = {"estimator": "dr", "main": {"difference": 15.4, "difference_ci": [12.3, 18.5]}, "passed": True}
    (run / "gate" / "gate.json").write_text(json.dumps(gate))
    return run


def test_train_evaluate_gate_register_are_logged(troupe_home: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    run = _run_folder(troupe_home)
    data = {"run_dir": str(run), "interval_key": KEY, "dataset": str(run / "dataset")}
    trained = {"algorithm": "rcpo", "metrics": {"charts/signal_watch_time": 320.0}}
    tracking.log_train("rank", data, trained, {"seed": 0, "train_config": {"run": {"iterations": 3}}})
    evaluation = {"report": str(run / "evaluate" / "evaluation.json"), "run_dir": str(run), "interval_key": KEY}
    tracking.log_evaluation("rank", evaluation, f"rcpo-{KEY}")
    gate = {"passed": True, "reasons": [], "report": str(run / "gate" / "gate.json")}
    tracking.log_gate("rank", evaluation, gate, f"rcpo-{KEY}", {"min_lift": 0.0})
    tracking.log_register("rank", {"version": f"rcpo-{KEY}", "path": "x", "run_dir": str(run), "interval_key": KEY})

    assert tracking.tracking_uri() == (troupe_home / "mlruns").resolve().as_uri()
    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()
    experiment = client.get_experiment_by_name("troupe-retrain-rank")
    runs = {r.data.tags["troupe.step"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"train", "evaluate", "gate", "register"}
    for r in runs.values():
        assert r.data.tags["troupe.registry_version"] == f"rcpo-{KEY}" and r.data.tags["troupe.interval"] == KEY
    train = runs["train"]
    assert train.data.params["algo"] == "rcpo" and train.data.params["train_config.run.iterations"] == "3"
    history = client.get_metric_history(train.info.run_id, "charts/signal_watch_time")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)][:3] == [
        (0, 300.0),
        (1, 310.0),
        (2, 320.0),
    ]
    assert "curves.png" in {a.path for a in client.list_artifacts(train.info.run_id)}
    evaluate = runs["evaluate"]
    assert evaluate.data.metrics["ope/ncis/difference_watch_time_value"] == pytest.approx(306.0 * 0.05)
    assert evaluate.data.params["primary_estimator"] == "ncis"
    gate_run = runs["gate"]
    assert gate_run.data.metrics["gate/passed"] == 1.0 and gate_run.data.metrics["gate/main_difference_ci_low"] == 12.3


def test_tracking_off_or_unreachable_never_fails_the_step(troupe_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROUPE_MLFLOW", "off")
    assert tracking.log_step("rank", "train", KEY, metrics={"x": 1.0}) is None
    monkeypatch.delenv("TROUPE_MLFLOW")
    # A store MLflow cannot open (a server that is down fails the same way, after MLflow's own retries).
    monkeypatch.setenv("TROUPE_MLFLOW_TRACKING_URI", "nosuchscheme://tracking")
    assert tracking.log_step("rank", "train", KEY, metrics={"x": 1.0}) is None
