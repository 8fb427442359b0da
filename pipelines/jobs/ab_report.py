"""A/B report job: the lake's decisions and feedback → pipelines.ab.report → ab_report.{json,md,png}.

`run_ab_report(settings, experiment, start, end)` is what the DAG and
`troupe ab report --experiment E` call. Arms and weights come from the
experiments YAML (`TROUPE_EXPERIMENTS_FILE`, else `<home>/experiments.yaml`,
the file serving and the deploy job use) unless given explicitly. The
statistics live in pipelines/ab/ and work on plain DataFrames; this module
only reads files and writes the report.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from models.errors import TroupeError
from models.logging import log_event
from models.problems import get_problem
from models.settings import TroupeSettings

log = logging.getLogger("troupe.pipelines.ab_report")


class ABReportError(TroupeError):
    """The report cannot be built (unknown experiment, no data); the message says what to fix."""


@dataclass(frozen=True)
class ABReportConfig:
    """One A/B report."""

    experiment: str
    """Experiment name, as logged on every DecisionEvent."""
    output_dir: Path
    """Folder for ab_report.json / .md / .png (created)."""
    start: dt.datetime | None = None
    """First decision time included (UTC); None = from the first logged decision."""
    end: dt.datetime | None = None
    """Decisions at or after this time are left out (UTC); None = up to the last one."""
    weights: Mapping[str, float] | None = None
    """Arm → configured traffic weight; None = read from the experiments YAML."""
    control: str | None = None
    """Control arm; None = the arm named 'control', else the first configured arm."""
    problem: str | None = None
    """Problem whose signals are reported; None = from the experiment config or the decisions."""
    pre_period_days: float = 7.0
    """Length of the pre-period before the experiment's first decision that feeds the CUPED covariate."""
    confidence: float = 0.95
    """Two-sided confidence level."""
    alpha: float = 0.05
    """Level of the always-valid sequential test."""

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ABReportError(f"confidence: expected a level in (0, 1), got {self.confidence}")
        if not 0 < self.alpha < 1:
            raise ABReportError(f"alpha: expected a level in (0, 1), got {self.alpha}")
        if self.pre_period_days < 0:
            raise ABReportError(f"pre_period_days: expected >= 0, got {self.pre_period_days}")
        if self.start is not None and self.end is not None and not self.start < self.end:
            raise ABReportError(f"start ({self.start}) must be before end ({self.end})")
        if self.weights is not None and (not self.weights or any(w < 0 for w in self.weights.values())):
            raise ABReportError(f"weights: expected arm → non-negative weight, got {dict(self.weights)}")


def experiment_config(
    name: str, experiments_file: Path | None = None, home: Path | None = None
) -> dict[str, Any] | None:
    """The experiment as serving knows it (running or stopped), or None.

    With `TROUPE_STATE_STORE_URL` set, serving's shared store (Redis) is read
    first: experiments created or changed through the admin API live there,
    not in the YAML (which only seeds it). Otherwise, or when the store does
    not have it, the experiments YAML.
    """
    import yaml

    shared = _experiment_in_state_store(name)
    if shared is not None:
        return shared
    path = experiments_file or Path(
        os.environ.get("TROUPE_EXPERIMENTS_FILE") or (home or Path("var")) / "experiments.yaml"
    )
    if not path.exists():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    for e in data.get("experiments", []):
        if e.get("name") == name:
            return dict(e)
    return None


def _experiment_in_state_store(name: str) -> dict[str, Any] | None:
    url = os.environ.get("TROUPE_STATE_STORE_URL")
    if not url:
        return None
    from serving.experiments import NAMESPACE
    from serving.state_store import StateStore

    store = StateStore(url, os.environ.get("TROUPE_STATE_STORE_PREFIX", "troupe"))
    try:
        value = store.get(NAMESPACE, name)  # not cached: one read from Redis
    finally:
        store.close()
    return dict(value) if isinstance(value, dict) else None


def build_report(
    cfg: ABReportConfig, decisions: pd.DataFrame, feedback: pd.DataFrame, experiment: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The report from DataFrames (columns in pipelines/ab/report.py); writes the three files."""
    from pipelines.ab.report import (
        PRIMARY_TEST,
        analyse,
        experiment_decisions,
        overall_decision,
        plot,
        pre_period_totals,
        render_markdown,
        verdicts,
    )

    if "experiment" not in decisions.columns or not (decisions["experiment"] == cfg.experiment).any():
        seen = sorted(decisions["experiment"].dropna().unique()) if "experiment" in decisions.columns else []
        raise ABReportError(f"no decisions of experiment {cfg.experiment!r} in the logs; experiments seen: {seen}")
    weights = dict(cfg.weights) if cfg.weights else None
    if weights is None and experiment is not None:
        weights = {str(a["name"]): float(a.get("weight", 0.0)) for a in experiment.get("arms", [])}
    if not weights:
        raise ABReportError(
            f"no arm weights for experiment {cfg.experiment!r}: add it to the experiments YAML or pass --weights"
        )
    problem = cfg.problem or (experiment or {}).get("problem")
    if problem is None:
        problems = decisions.loc[decisions["experiment"] == cfg.experiment, "problem"].unique()
        if len(problems) != 1:
            raise ABReportError(
                f"cannot tell the problem of {cfg.experiment!r} from the decisions ({list(problems)}); pass --problem"
            )
        problem = str(problems[0])
    signals = list(get_problem(problem).signal_names)
    control = cfg.control or ("control" if "control" in weights else next(iter(weights)))
    rows = experiment_decisions(decisions, feedback, cfg.experiment, signals, cfg.start, cfg.end)
    first = rows["timestamp"].min().to_pydatetime()
    pre = pre_period_totals(feedback, signals, first, cfg.pre_period_days) if cfg.pre_period_days > 0 else None
    report = analyse(rows, signals, weights, control, pre, cfg.confidence, cfg.alpha)
    report = {
        "experiment": cfg.experiment,
        "problem": problem,
        "main_signal": get_problem(problem).main_signal,
        "start": cfg.start.isoformat() if cfg.start else first.isoformat(),
        "end": cfg.end.isoformat() if cfg.end else rows["timestamp"].max().isoformat(),
        "pre_period_days": cfg.pre_period_days,
        **report,
    }
    report["primary_test"] = PRIMARY_TEST
    report["verdicts"] = verdicts(report, report["main_signal"], get_problem(problem).constraints)
    report["decision"] = {a: overall_decision(report["verdicts"], a) for a in report["arms"] if a != control}
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    (cfg.output_dir / "ab_report.json").write_text(json.dumps(_finite(report), indent=2, default=str) + "\n")
    (cfg.output_dir / "ab_report.md").write_text(render_markdown(report))
    plot(report, cfg.output_dir / "ab_report.png", report["main_signal"])
    return report


def _finite(x: Any) -> Any:
    """NaN/inf → None, so the JSON is strict (relative lift is NaN when the control mean is 0)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _feedback_frame(table: pa.Table) -> pd.DataFrame:
    """FeedbackEvent rows with the `signals` struct flattened into one column per signal."""
    signals = table.column("signals").combine_chunks().flatten()
    names = [f.name for f in table.schema.field("signals").type]
    base = table.select(["request_id", "timestamp", "user_id"]).to_pandas()
    for name, col in zip(names, signals, strict=True):
        base[name] = col.to_numpy(zero_copy_only=False)
    return base


def load_lake(data_dir: Path, decisions_topic: str, feedback_topic: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Committed decisions and feedback from the ingestion lake (pipelines/jobs/ingest.py)."""
    from models.events import DecisionEvent, FeedbackEvent
    from pipelines.jobs.ingest import read_committed

    dec = read_committed(
        data_dir,
        decisions_topic,
        DecisionEvent,
        columns=["request_id", "timestamp", "problem", "user_id", "experiment", "arm", "exposed"],
    )
    fb = read_committed(data_dir, feedback_topic, FeedbackEvent)
    return dec.to_pandas(), _feedback_frame(fb)


def run_ab_report(
    settings: TroupeSettings,
    experiment: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    *,
    output_dir: Path | None = None,
    weights: Mapping[str, float] | None = None,
    control: str | None = None,
    problem: str | None = None,
    experiments_file: Path | None = None,
    pre_period_days: float = 7.0,
) -> dict[str, Any]:
    """Build the report of `experiment` from the lake; returns {report, markdown, plot, srm_alert, ...}."""
    out = output_dir or settings.home / "reports" / "ab" / experiment / (end.date().isoformat() if end else "latest")
    cfg = ABReportConfig(
        experiment=experiment,
        output_dir=out,
        start=start,
        end=end,
        weights=weights,
        control=control,
        problem=problem,
        pre_period_days=pre_period_days,
    )
    decisions, feedback = load_lake(settings.data_dir, settings.decisions_topic, settings.feedback_topic)
    if decisions.empty:
        raise ABReportError(f"no decisions in the lake under {settings.data_dir}; run `troupe ingest` first")
    report = build_report(cfg, decisions, feedback, experiment_config(experiment, experiments_file, settings.home))
    main = report["main_signal"]
    lifts = {a: c["per_decision"]["relative"] for a, c in report["signals"][main]["vs_control"].items()}
    log_event(log, "ab_report.done", experiment=experiment, srm_alert=report["srm"]["alert"], output=str(out))
    return {
        "report": str(out / "ab_report.json"),
        "markdown": str(out / "ab_report.md"),
        "plot": str(out / "ab_report.png"),
        "srm_alert": report["srm"]["alert"],
        "main_signal": main,
        "relative_lift": lifts,
        "verdicts": {a: v[a]["verdict"] for s, v in report["verdicts"].items() if s == main for a in v},
        "decision": report["decision"],
    }
