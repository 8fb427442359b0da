"""The DAG tasks' one call each, for the jobs other parts of the project own (ingest, features, dataset, evaluate, A/B report).

Each function turns the run's settings and data interval into the job's own
config, calls the job once, and returns a small JSON-able dict of paths and
counts (what Airflow passes between tasks through XCom — never data). Jobs
owned by the retraining loop (train, gate, export, register, deploy) are
called directly from the DAGs.

When a job's module is not there, the call fails with MissingPieceError naming
the piece and who provides it (pipelines/jobs/loop.py `require`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from models.settings import get_settings
from pipelines.jobs.loop import Interval, read_done, require, run_dir, write_done

DATA_PLANE = "the data-plane issue (#4)"
OPE = "the OPE / A-B issue (#7)"


def _jsonable(obj: Any) -> Any:
    """Dataclasses, paths and datetimes → plain JSON values (for XCom)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dt.datetime):
        return obj.isoformat()
    return obj


# ---------------------------------------------------------------------------
# data plane
# ---------------------------------------------------------------------------
def ingest_step(**overrides: Any) -> dict[str, Any]:
    """Drain both topics into the Parquet lake once (exactly once; resumes from the lake's manifest)."""
    ingest = require("pipelines.jobs.ingest", None, DATA_PLANE)
    cfg = ingest.IngestConfig.from_settings(get_settings(), mode="once", **overrides)
    report = ingest.ingest(cfg)
    return {"lake": str(cfg.lake_dir), **_jsonable(report)}


def aggregate_features_step(start: str, end: str) -> dict[str, Any]:
    """`feast apply` (idempotent), then the lake → the offline feature tables (the Feast sources)."""
    features = require("pipelines.jobs.features", None, DATA_PLANE)
    cfg = features.FeaturesConfig.from_settings(get_settings())
    features.apply(cfg)
    rows = features.compute_features(cfg)
    return {"interval_start": start, "interval_end": end, "rows": _jsonable(rows), "repo": str(cfg.repo_dir)}


def _ceil_hour(t: dt.datetime) -> dt.datetime:
    floor = t.replace(minute=0, second=0, microsecond=0)
    return floor if floor == t else floor + dt.timedelta(hours=1)


def materialize_features_step(aggregated: dict[str, Any]) -> dict[str, Any]:
    """Incremental materialisation into the online store, up to the end of the interval's last hour.

    Feature rows are stamped with the end of the hour they aggregate
    (pipelines/jobs/features.py); an interval that ends inside an hour (a
    manual run, the demo's minutes-long day) materialises that hour's row too.
    """
    features = require("pipelines.jobs.features", None, DATA_PLANE)
    cfg = features.FeaturesConfig.from_settings(get_settings())
    end = _ceil_hour(Interval.parse(aggregated["interval_start"], aggregated["interval_end"]).end)
    features.materialize(cfg, None, end, compute=False)
    return {"materialized_until": end.isoformat(), "repo": str(cfg.repo_dir)}


def dataset_step(problem: str, start: str, end: str) -> dict[str, Any]:
    """Join decisions with feedback for the interval into the problem's transitions dataset."""
    interval = Interval.parse(start, end)
    home = get_settings().home
    rdir = run_dir(home, problem, interval)
    step_dir = rdir / "dataset"
    done = read_done(step_dir)
    if done is not None:
        return done
    dataset = require("pipelines.jobs.dataset", None, DATA_PLANE)
    # The run's own copy of the dataset: a later run of another interval must not overwrite what this run trained on.
    cfg = dataset.DatasetConfig.from_settings(
        get_settings(), problem, start=interval.start, end=interval.end, output_dir=step_dir
    )
    result = dataset.build_dataset(cfg)
    return write_done(
        step_dir,
        {
            "problem": problem,
            "dataset": str(result.path),
            "card": str(result.card_path),
            "rows": int(result.card.get("rows", 0)),
            "run_dir": str(rdir),
            "interval_key": interval.key,
            "interval_start": start,
            "interval_end": end,
        },
    )


# ---------------------------------------------------------------------------
# OPE and A/B
# ---------------------------------------------------------------------------
def train_step(
    problem: str, data: dict[str, Any], *, algo: str, config: dict[str, Any], seed: int, holdout_share: float
) -> dict[str, Any]:
    """Train the candidate on the day's sessions outside the holdout; `evaluation_dataset` names the holdout.

    The evaluate step reads `evaluation_dataset` when it is set, so the gate judges the candidate on sessions
    it never trained on (`pipelines/jobs/dataset.split_by_session` says why); holdout_share 0 trains on every row.
    """
    from pipelines.jobs.dataset import split_by_session
    from pipelines.jobs.train import run_train

    train_rows, holdout = data["dataset"], None
    if holdout_share > 0:
        train_rows, holdout = split_by_session(data["dataset"], Path(data["run_dir"]) / "split", holdout_share)
    trained = run_train(problem, train_rows, data["run_dir"], algo=algo, config=config, seed=seed)
    return {**trained, "evaluation_dataset": str(holdout) if holdout else None}


def _marca_policy(
    problem: str,
    registry: Any,
    version: str,
    candidate_name: str,
    trained: dict[str, Any],
    data: dict[str, Any],
    exploration: dict[str, Any],
) -> Any:
    """A MaRCA candidate or registered MaRCA version as an OPE policy (pipelines/jobs/marca_ope.py); else None.

    The candidate is scored at the λ its train step calibrated; a registered MaRCA version at the λ that
    spends the budget on this run's logged requests (the same calibration)."""
    if problem != "allocate":
        return None
    from pipelines.jobs.marca_ope import MarcaOnnxPolicy
    from serving.allocate_marca import COST_FILE
    from training.ope.policies import PRODUCTION, Exploration

    explore = Exploration(**exploration)
    if version == candidate_name:
        if trained.get("algorithm") != "marca":
            return None
        side = trained["side_files"]
        return MarcaOnnxPolicy.from_files(Path(trained["onnx"]), Path(side[COST_FILE]), trained["lambda_eval"], explore)
    loaded = registry.current(problem) if version == PRODUCTION else registry.load(problem, version)
    if COST_FILE not in loaded.manifest.files:
        return None
    from models.problems import ALLOCATE
    from pipelines.jobs.evaluate import read_transitions

    policy = MarcaOnnxPolicy.from_registry_version(registry, version)
    policy.calibrate_lambda(read_transitions(Path(data["dataset"]), ALLOCATE).observation, 1.0)
    return policy


def evaluate_step(
    problem: str,
    data: dict[str, Any],
    trained: dict[str, Any],
    candidate_exploration: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Off-policy evaluation of the trained candidate (its staged ONNX file) against production on the dataset.

    The candidate is not registered yet (only a gated candidate is): it is
    evaluated from the ONNX file the train step staged in the run folder, with
    the exploration its canary arm will be deployed with (`candidate_exploration`:
    temperature, epsilon, std_scale — serving's ExplorationConfig), so the
    estimate is of the policy as it will serve.
    """
    evaluate = require("pipelines.jobs.evaluate", None, OPE)
    policies = require("training.ope.policies", None, OPE)
    from models.problems import get_problem
    from models.registry import ModelRegistry

    rdir = Path(data["run_dir"])
    step_dir = rdir / "evaluate"
    exploration = dict(candidate_exploration or {})
    done = read_done(step_dir)
    if done is not None and done.get("overrides") == overrides and done.get("candidate_exploration") == exploration:
        return done
    settings = get_settings()
    registry = ModelRegistry(settings.registry_dir)
    # The name the register step will give it (pipelines/jobs/register.py): one name in evaluation and registry.
    candidate_name = f"{trained['algorithm']}-{data['interval_key']}"
    spec = get_problem(problem)

    def load(version: str) -> Any:
        marca = _marca_policy(problem, registry, version, candidate_name, trained, data, exploration)
        if marca is not None:
            return marca
        if version == candidate_name:
            agents = {k: Path(v) for k, v in (trained.get("agents") or {}).items()}
            model = Path(trained["onnx"]) if trained.get("onnx") else None
            return policies.OnnxPolicy(
                spec, model, agents, policies.Exploration(**exploration), name=f"{problem}/{candidate_name}"
            )
        return policies.OnnxPolicy.from_registry(registry, problem, version)

    cfg = evaluate.EvaluateConfig(
        problem=problem,
        candidate=candidate_name,
        # The sessions the train step held out (troupe_retrain's holdout_share), else the whole day.
        dataset=Path(trained.get("evaluation_dataset") or data["dataset"]),
        output_dir=step_dir,
        registry_root=settings.registry_dir,
        **overrides,
    )
    report = evaluate.run_evaluate(cfg, policy_loader=load)
    return write_done(
        step_dir,
        {
            "report": str(step_dir / "evaluation.json"),
            "markdown": str(step_dir / "evaluation.md"),
            "plot": str(step_dir / "evaluation.png"),
            "primary_estimator": report.get("primary_estimator"),
            "run_dir": str(rdir),
            "interval_key": data["interval_key"],
            "overrides": overrides,
            "candidate_exploration": exploration,
        },
    )


def ab_report_step(start: str, end: str, experiment: str | None = None) -> list[dict[str, Any]]:
    """The A/B report of `experiment` (or of every running retrain canary) over the interval."""
    ab = require("pipelines.jobs.ab_report", "run_ab_report", OPE)
    from pipelines.jobs.deploy import running_experiments

    interval = Interval.parse(start, end)
    names = [experiment] if experiment else [e["name"] for e in running_experiments()]
    out: list[dict[str, Any]] = []
    from pipelines.jobs.ab_report import ABReportError

    for name in names:
        try:
            result = ab(get_settings(), name, interval.start, interval.end)
        except ABReportError as err:
            if experiment is not None or "no decisions" not in str(err):
                raise
            # A canary deployed moments ago (this run was triggered by its asset) has no traffic yet.
            out.append({"experiment": name, "waiting": str(err)})
            continue
        out.append({"experiment": name, "result": _jsonable(result)})
    return out
