"""The A/B report over synthetic decision and feedback logs with a known lift."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.events import FeedbackEvent, Signals, to_arrow
from pipelines.jobs.ab_report import ABReportConfig, ABReportError, _feedback_frame, build_report, experiment_config

START = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)


def _logs(
    n_users: int = 4000, lift: float = 0.10, split: float = 0.5, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    users = np.array([f"u{i}" for i in range(n_users)])
    arm = np.where(rng.random(n_users) < split, "control", "treatment")
    propensity = rng.gamma(2.0, 10.0, n_users)  # per-user live watch time level, stable over time
    dec, fb = [], []
    k = 0
    for day in range(5):
        for u in range(n_users):
            for _ in range(rng.poisson(1.5)):
                ts = START + dt.timedelta(days=day, seconds=int(rng.integers(0, 86_000)))
                rid = f"r{k}"
                k += 1
                dec.append((rid, ts, "slot", users[u], "exp1", arm[u], True))
                level = propensity[u] * (1 + lift * (arm[u] == "treatment"))
                fb.append((rid, ts, users[u], rng.exponential(level), float(rng.random() < 0.2)))
    for u in range(n_users):  # pre-period: the same users' live watch time the week before
        for _ in range(3):
            ts = START - dt.timedelta(days=float(rng.uniform(0.1, 6.9)))
            fb.append((f"pre{u}-{_}", ts, users[u], rng.exponential(propensity[u]), 0.0))
    decisions = pd.DataFrame(
        dec, columns=["request_id", "timestamp", "problem", "user_id", "experiment", "arm", "exposed"]
    )
    feedback = pd.DataFrame(fb, columns=["request_id", "timestamp", "user_id", "live_watch_time", "live_exposure"])
    feedback["watch_time"] = 0.0
    feedback["session_end"] = 0.0
    return decisions, feedback


def test_report_finds_the_known_lift_with_cuped_and_sequential_test(tmp_path: Path) -> None:
    decisions, feedback = _logs(lift=0.3)
    cfg = ABReportConfig(experiment="exp1", output_dir=tmp_path, weights={"control": 0.5, "treatment": 0.5})
    report = build_report(cfg, decisions, feedback)
    main = report["signals"]["live_watch_time"]["vs_control"]["treatment"]
    rel = main["per_decision"]["relative"]
    assert rel["ci_low"] <= 0.3 <= rel["ci_high"] and rel["ci_low"] > 0.1
    assert not report["srm"]["alert"]
    assert main["per_user_cuped"]["ci_width_ratio"] < 0.9  # the pre-period covariate narrows the interval
    assert main["sequential"]["rejected"] and len(main["sequential"]["p_values"]) == 5
    # every signal of the problem is reported, with per-arm CIs
    assert set(report["signals"]) == {"live_watch_time", "watch_time", "session_end", "live_exposure"}
    for name in ("ab_report.json", "ab_report.md", "ab_report.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "ab_report.json").read_text())["problem"] == "slot"
    assert "Sample ratio" in (tmp_path / "ab_report.md").read_text()


def test_report_raises_the_srm_alert(tmp_path: Path) -> None:
    decisions, feedback = _logs(n_users=6000, lift=0.0, split=0.55, seed=1)
    cfg = ABReportConfig(experiment="exp1", output_dir=tmp_path, weights={"control": 0.5, "treatment": 0.5})
    report = build_report(cfg, decisions, feedback)
    assert report["srm"]["alert"]
    assert any("sample ratio mismatch" in w for w in report["warnings"])


def test_weights_come_from_the_experiments_yaml(tmp_path: Path) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text(
        "experiments:\n  - name: exp1\n    problem: slot\n    salt: s\n    arms:\n"
        "      - {name: control, weight: 0.5}\n      - {name: treatment, weight: 0.5}\n"
    )
    exp = experiment_config("exp1", path)
    assert exp is not None and exp["problem"] == "slot"
    decisions, feedback = _logs(n_users=300, seed=2)
    report = build_report(ABReportConfig(experiment="exp1", output_dir=tmp_path / "o"), decisions, feedback, exp)
    assert report["weights"] == {"control": 0.5, "treatment": 0.5}
    with pytest.raises(ABReportError, match="weights"):
        build_report(ABReportConfig(experiment="exp1", output_dir=tmp_path / "o"), decisions, feedback, None)
    with pytest.raises(ABReportError, match="experiments seen: \\['exp1'\\]"):
        build_report(
            ABReportConfig(experiment="nope", output_dir=tmp_path / "o", weights={"control": 1.0}), decisions, feedback
        )


def test_feedback_arrow_table_is_flattened_per_signal() -> None:
    events = [
        FeedbackEvent(request_id="r1", timestamp=START, user_id="u1", signals=Signals(live_watch_time=12.5)),
        FeedbackEvent(request_id="r2", timestamp=START, user_id="u2", signals=Signals(click=1.0)),
    ]
    df = _feedback_frame(to_arrow(events))
    assert df.loc[0, "live_watch_time"] == 12.5 and df.loc[1, "click"] == 1.0
    assert {"request_id", "timestamp", "user_id", "revenue"} <= set(df.columns)


def test_cli_rejects_malformed_weights() -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(app, ["ab", "report", "--experiment", "e", "--weights", "control:0.5"])
    assert result.exit_code != 0
    assert "arm=weight" in result.output


def test_run_ab_report_reads_the_lake_and_says_when_it_is_empty(tmp_path: Path) -> None:
    from models.settings import TroupeSettings
    from pipelines.jobs.ab_report import run_ab_report

    with pytest.raises(ABReportError, match="troupe ingest"):
        run_ab_report(TroupeSettings(home=tmp_path), "exp1")


def test_run_ab_report_end_to_end_on_a_lake_written_like_ingestion(tmp_path: Path) -> None:
    from models.events import DecisionEvent
    from models.settings import TroupeSettings
    from pipelines.jobs.ab_report import run_ab_report
    from pipelines.jobs.ingest import IngestConfig, commit_events

    settings = TroupeSettings(home=tmp_path)
    rng = np.random.default_rng(7)
    events: list[DecisionEvent | FeedbackEvent] = []
    for u in range(400):
        arm = "treatment" if u % 2 else "control"
        for k in range(3):
            ts = START + dt.timedelta(days=k % 2, minutes=u)
            rid = f"r{u}-{k}"
            events.append(
                DecisionEvent(
                    request_id=rid,
                    timestamp=ts,
                    problem="slot",
                    user_id=f"u{u}",
                    policy_name="p",
                    policy_version="v1",
                    experiment="exp1",
                    arm=arm,
                    observation=[0.0] * 23,
                    action=[0.0],
                    propensity=0.5,
                )
            )
            live = float(rng.exponential(30.0 * (1.3 if arm == "treatment" else 1.0)))
            events.append(
                FeedbackEvent(
                    request_id=rid,
                    timestamp=ts,
                    user_id=f"u{u}",
                    signals=Signals(live_watch_time=live, live_exposure=1.0),
                )
            )
    commit_events(IngestConfig(bootstrap_servers="unused:9092", data_dir=settings.data_dir), events)
    yaml_path = tmp_path / "experiments.yaml"
    yaml_path.write_text(
        "experiments:\n  - name: exp1\n    problem: slot\n    salt: s\n    arms:\n"
        "      - {name: control, weight: 1}\n      - {name: treatment, weight: 1}\n"
    )
    result = run_ab_report(settings, "exp1", experiments_file=yaml_path, output_dir=tmp_path / "ab")
    report = json.loads(Path(result["report"]).read_text())
    assert report["units_per_arm"] == {"control": 200, "treatment": 200}
    assert report["decisions_per_arm"] == {"control": 600, "treatment": 600}
    assert not result["srm_alert"]
    assert result["relative_lift"]["treatment"]["ci_low"] < 0.3 < result["relative_lift"]["treatment"]["ci_high"]
    assert Path(result["plot"]).stat().st_size > 0


def _with_click_drop(decisions: pd.DataFrame, feedback: pd.DataFrame, drop: float, seed: int = 0) -> pd.DataFrame:
    """Give every decision a live_exposure of 1 with probability 0.2 (control) or 0.2 · (1 + drop) (treatment).

    0.2 · 1.5 = 0.3 per decision breaks the slot problem's constraint live_exposure ≤ 0.25."""
    rng = np.random.default_rng(seed)
    arm = feedback["request_id"].map(decisions.set_index("request_id")["arm"])
    rate = np.where(arm == "treatment", 0.2 * (1 + drop), 0.2)
    return feedback.assign(live_exposure=(rng.random(len(feedback)) < rate).astype(float))


def test_one_verdict_per_metric_from_the_primary_test(tmp_path: Path) -> None:
    decisions, feedback = _logs(lift=0.3)
    feedback = _with_click_drop(decisions, feedback, drop=0.5)  # live_exposure 0.3 per decision: over its 0.25 cap
    cfg = ABReportConfig(experiment="exp1", output_dir=tmp_path, weights={"control": 0.5, "treatment": 0.5})
    report = build_report(cfg, decisions, feedback)
    v = report["verdicts"]
    assert v["live_watch_time"]["treatment"]["role"] == "goal"
    assert v["live_watch_time"]["treatment"]["verdict"] == "better"
    assert v["live_exposure"]["treatment"]["role"] == "guardrail"
    assert v["live_exposure"]["treatment"]["verdict"] == "FAIL"
    assert v["watch_time"]["treatment"]["role"] == "secondary"  # not constrained: no pass/fail
    assert v["watch_time"]["treatment"]["verdict"] == "no detectable difference"  # all zeros: no change
    assert "guardrails failed: live_exposure" in report["decision"]["treatment"]
    md = (tmp_path / "ab_report.md").read_text()
    assert md.index("## Verdict") < md.index("## Sample ratio (SRM)") < md.index("## Supporting analyses")
    assert "they do not change the verdict" in md and "CUPED" in md and "mSPRT" in md
    assert (
        "| live_exposure | guardrail (live_exposure <= 0.25 per decision) | treatment |" in md
        and "FAIL (treatment: 0.29" in md
    )


def test_no_lift_gives_no_detectable_difference_and_srm_voids_verdicts(tmp_path: Path) -> None:
    decisions, feedback = _logs(n_users=1500, lift=0.0, seed=3)
    cfg = ABReportConfig(experiment="exp1", output_dir=tmp_path, weights={"control": 0.5, "treatment": 0.5})
    report = build_report(cfg, decisions, feedback)
    assert report["verdicts"]["live_watch_time"]["treatment"]["verdict"] == "no detectable difference"
    skewed = build_report(
        ABReportConfig(experiment="exp1", output_dir=tmp_path / "s", weights={"control": 0.9, "treatment": 0.1}),
        decisions,
        feedback,
    )
    assert skewed["srm"]["alert"]
    assert all(v["treatment"]["verdict"].startswith("invalid") for v in skewed["verdicts"].values())
    assert "sample ratio mismatch" in skewed["decision"]["treatment"]


def test_a_guardrail_passes_while_its_constraint_holds_even_if_it_moved(tmp_path: Path) -> None:
    decisions, feedback = _logs(n_users=3000, lift=0.3, seed=4)
    feedback = _with_click_drop(decisions, feedback, drop=0.15)  # 0.2 → 0.23: a significant rise, still ≤ 0.25
    cfg = ABReportConfig(experiment="exp1", output_dir=tmp_path, weights={"control": 0.5, "treatment": 0.5})
    report = build_report(cfg, decisions, feedback)
    guard = report["verdicts"]["live_exposure"]["treatment"]
    assert guard["p_value"] < 0.05 and guard["relative"]["value"] > 0.05  # it did move
    assert guard["verdict"] == "PASS"
    assert report["decision"]["treatment"].startswith("treatment: ship")
