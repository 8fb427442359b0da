"""The evaluate job end to end: Parquet transitions + two registered ONNX policies → JSON, Markdown, PNG."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.problems import RANK, SLOT
from models.registry import ModelRegistry
from pipelines.jobs.evaluate import EvaluateConfig, EvaluationInputError, run_evaluate
from pipelines.jobs.gate import inputs_from_report
from tests.support.rl import one_step_rank_columns
from tests.unit._ope_onnx import register_linear_policy
from training.ope.policies import clipped_gaussian_log_density
from training.ope.weights import softmax


def _write(path: Path, cols: dict[str, object]) -> Path:
    pq.write_table(pa.table(cols), path)
    return path


def _slot_logs(tmp_path: Path, n_sessions: int = 600, steps: int = 3) -> tuple[Path, ModelRegistry, float]:
    rng = np.random.default_rng(0)
    d = SLOT.observation_size
    w_base, w_cand = rng.normal(0, 0.3, (d, 7)), rng.normal(0, 0.3, (d, 7))
    b_base, b_cand = np.zeros(7), np.linspace(-0.5, 0.5, 7)
    reg = ModelRegistry(tmp_path / "registry")
    register_linear_policy(reg, "slot", "v1", {"logits": (w_base, b_base)}, tmp_path)
    register_linear_policy(reg, "slot", "v2", {"logits": (w_cand, b_cand)}, tmp_path)
    reg.promote("slot", "v1")
    n = n_sessions * steps
    x = rng.normal(size=(n, d)).astype(np.float32)
    p_base = softmax(x.astype(np.float64) @ w_base.astype(np.float32) + b_base)
    a = np.array([rng.choice(7, p=p) for p in p_base])
    mu = np.linspace(0.0, 3.0, 7)  # live watch time grows with the position index
    rewards = mu[a] + rng.normal(0, 0.5, n)
    p_cand = softmax(x.astype(np.float64) @ w_cand.astype(np.float32) + b_cand)
    truth = float((p_cand @ mu).mean())
    session = np.repeat(np.arange(n_sessions), steps)
    step = np.tile(np.arange(steps), n_sessions)
    propensity = p_base[np.arange(n), a]
    prop_col = [None if i == 5 else float(p) for i, p in enumerate(propensity)]  # one row without a propensity
    ts = [dt.datetime(2026, 11, 21, tzinfo=dt.UTC) + dt.timedelta(seconds=int(k)) for k in range(n)]
    nxt = [x[i + 1].tolist() if step[i] < steps - 1 else None for i in range(n)]
    cols = {
        "observation": [r.tolist() for r in x],
        "action": [[float(v)] for v in a],
        "reward_live_watch_time": rewards,
        "reward_watch_time": rng.normal(10, 1, n),
        "reward_session_end": (step == steps - 1).astype(float),
        "reward_live_exposure": (a > 0).astype(float),
        "next_observation": nxt,
        "done": step == steps - 1,
        "propensity": pa.array(prop_col, pa.float64()),
        "log_density": pa.array([None] * n, pa.float64()),
        "policy_version": ["v1"] * n,
        "arm": ["control"] * n,
        "user_id": [f"u{s}" for s in session],
        "session_id": [f"s{s:04d}" for s in session],
        "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
    }
    return _write(tmp_path / "slot.parquet", cols), reg, truth


def test_slot_evaluation_writes_reports_the_gate_can_read(tmp_path: Path) -> None:
    data, reg, truth = _slot_logs(tmp_path)
    cfg = EvaluateConfig(
        problem="slot",
        candidate="v2",
        dataset=data,
        output_dir=tmp_path / "out",
        registry_root=reg.root,
        fqe_bootstrap=20,
    )
    report = run_evaluate(cfg)
    for name in ("evaluation.json", "evaluation.md", "evaluation.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert set(report["estimators"]) == {
        "dm",
        "ips",
        "snips",
        "dr",
        "switch_dr",
        "pdis",
        "wpdis",
        "fqe",
        "sequential_dr",
    }
    dr = report["estimators"]["dr"]
    main = dr["candidate"]["signals"]["live_watch_time"]
    assert main["ci_low"] <= truth <= main["ci_high"]
    assert abs(main["value"] - truth) / truth < 0.1
    # every signal is estimated; the missing propensity is reported, not dropped silently
    assert set(dr["candidate"]["signals"]) == set(SLOT.signal_names)
    assert dr["candidate"]["diagnostics"]["n_missing_propensity"] == 1
    assert any("excluded" in w for w in dr["candidate"]["warnings"])
    # the gate reads the primary estimator straight from the JSON on disk
    gate_inputs = inputs_from_report(json.loads((tmp_path / "out" / "evaluation.json").read_text()))
    assert gate_inputs.estimator == "dr"
    assert gate_inputs.signals["live_watch_time"].difference == pytest.approx(
        main["value"] - dr["baseline"]["signals"]["live_watch_time"]["value"]
    )
    # the baseline is the production policy that logged the data: its IPS equals the logged mean
    ips_base = report["estimators"]["ips"]["baseline"]["signals"]["watch_time"]["value"]
    assert ips_base == pytest.approx(report["behaviour_on_policy_mean"]["watch_time"], rel=0.01)
    assert "| dr |" in (tmp_path / "out" / "evaluation.md").read_text()


def test_rank_evaluation_uses_densities_and_ncis(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    d = RANK.observation_size
    reg = ModelRegistry(tmp_path / "registry")
    mean_b = (np.zeros((d, 18)), np.full(18, 0.5))
    cand_mean = (rng.normal(0, 0.01, (d, 18)), np.full(18, 0.55))
    log_std = (np.zeros((d, 18)), np.full(18, np.log(0.2)))
    register_linear_policy(reg, "rank", "base", {"action_mean": mean_b, "action_log_std": log_std}, tmp_path)
    register_linear_policy(reg, "rank", "cand", {"action_mean": cand_mean, "action_log_std": log_std}, tmp_path)
    reg.promote("rank", "base")
    n = 800
    x = rng.normal(size=(n, d)).astype(np.float32)
    a = np.clip(0.5 + 0.2 * rng.normal(size=(n, 18)), 0, 1)
    ld = clipped_gaussian_log_density(a, np.full((n, 18), 0.5), np.full((n, 18), 0.2), 0.0, 1.0)
    r = a[:, 0] * 10 + rng.normal(0, 1, n)
    rewards = {s: (r if s == "watch_time" else rng.uniform(0, 1, n)) for s in RANK.signal_names}
    cols = one_step_rank_columns(x, a, ld, rewards)
    folder = tmp_path / "datasets" / "rank"  # laid out like pipelines/jobs/dataset.py writes it
    folder.mkdir(parents=True)
    _write(folder / "transitions.parquet", cols)
    (folder / "card.json").write_text("{}")
    data = folder
    report = run_evaluate(
        EvaluateConfig(
            problem="rank", candidate="cand", dataset=data, output_dir=tmp_path / "out", registry_root=reg.root
        )
    )
    assert report["primary_estimator"] == "ncis"
    assert "fqe" not in report["estimators"]  # one-step sessions: no sequential estimators
    base_ips = report["estimators"]["ips"]["baseline"]["signals"]["watch_time"]["value"]
    assert base_ips == pytest.approx(float(r.mean()), rel=1e-6)  # the logging policy's weights are exactly 1
    assert len(report["constraints"]) == len(RANK.constraints)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    data = _write(tmp_path / "bad.parquet", {"observation": [[0.0]], "action": [[0.0]]})
    cfg = EvaluateConfig(problem="slot", candidate="v2", dataset=data, output_dir=tmp_path, registry_root=tmp_path)
    with pytest.raises(EvaluationInputError, match="reward_live_watch_time"):
        run_evaluate(cfg, policy_loader=lambda v: None)
    with pytest.raises(EvaluationInputError, match="ci_method"):
        EvaluateConfig(
            problem="slot",
            candidate="v2",
            dataset=data,
            output_dir=tmp_path,
            registry_root=tmp_path,
            ci_method="jackknife",
        )


def test_cli_troupe_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from models.settings import get_settings
    from pipelines.cli import app

    data, reg, _ = _slot_logs(tmp_path, n_sessions=100)
    monkeypatch.setenv("TROUPE_HOME", str(tmp_path))  # the registry lives at <home>/registry
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            [
                "evaluate",
                "--problem",
                "slot",
                "--candidate",
                "v2",
                "--dataset",
                str(data),
                "--output",
                str(tmp_path / "cli"),
                "--no-sequential",
            ],
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "| dr |" in result.output
    assert json.loads((tmp_path / "cli" / "evaluation.json").read_text())["baseline"] == "slot/v1"


def test_allocate_evaluation_multi_discrete(tmp_path: Path) -> None:
    from models.problems import ALLOCATE

    rng = np.random.default_rng(4)
    d, nvec = ALLOCATE.observation_size, ALLOCATE.action.nvec  # type: ignore[union-attr]
    reg = ModelRegistry(tmp_path / "registry")
    zero = (np.zeros((d, sum(nvec))), np.zeros(sum(nvec)))  # uniform over every component
    tilted = (np.zeros((d, sum(nvec))), rng.normal(0, 0.3, sum(nvec)))
    register_linear_policy(reg, "allocate", "static", {"action_scores": zero}, tmp_path)
    register_linear_policy(reg, "allocate", "tilted", {"action_scores": tilted}, tmp_path)
    reg.promote("allocate", "static")
    n = 1500
    x = rng.normal(size=(n, d))
    a = np.stack([rng.integers(0, k, n) for k in nvec], axis=1)
    revenue = a[:, 3] * 2.0 + rng.normal(0, 1, n)  # longer pre-rank queues earn more
    cols = {
        "observation": [v.tolist() for v in x],
        "action": [v.astype(float).tolist() for v in a],
        "reward_revenue": revenue,
        "reward_compute_cost": a[:, 3] * 0.5 + a[:, 5] * 0.3,
        "next_observation": [v.tolist() for v in x],
        "done": np.ones(n, bool),
        "propensity": np.full(n, 1.0 / np.prod(nvec)),
        "log_density": pa.array([None] * n, pa.float64()),
        "session_id": [f"s{i}" for i in range(n)],
        "timestamp": pa.array([dt.datetime(2026, 11, 21, tzinfo=dt.UTC)] * n, pa.timestamp("us", tz="UTC")),
    }
    data = _write(tmp_path / "allocate.parquet", cols)
    report = run_evaluate(
        EvaluateConfig(
            problem="allocate", candidate="tilted", dataset=data, output_dir=tmp_path / "out", registry_root=reg.root
        )
    )
    probs = softmax(tilted[1][None, 6:10])[0]  # the pre-rank queue component of the tilted policy
    truth = float(2.0 * probs @ np.arange(4))
    dr = report["estimators"]["dr"]["candidate"]["signals"]["revenue"]
    assert dr["ci_low"] <= truth <= dr["ci_high"]
    base = report["estimators"]["dr"]["baseline"]["signals"]["revenue"]["value"]
    assert base == pytest.approx(3.0, abs=0.2)  # uniform over 4 queue lengths: 2 · 1.5
