"""Register and deploy jobs on a real registry and real files: versions by interval, canary experiments, Triton repo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from models.errors import RegistryError
from models.problems import RANK, get_problem
from models.registry import ModelRegistry
from models.settings import get_settings
from pipelines.behaviour_policy import behaviour_onnx, register_behaviour_policy
from pipelines.jobs.deploy import DeployConfig, run_deploy
from pipelines.jobs.register import onnx_tensor_specs, run_register

START, END = "2026-11-20T00:00:00+00:00", "2026-11-21T00:00:00+00:00"
KEY = "20261120T000000-20261121T000000"


def _estimate(value: float) -> dict[str, Any]:
    return {
        "confidence": 0.95,
        "signals": {s: {"value": value, "ci_low": value - 1, "ci_high": value + 1} for s in RANK.signal_names},
        "diagnostics": None,
        "warnings": [],
    }


@pytest.fixture
def run(troupe_home: Path) -> dict[str, Any]:
    """A run folder with an 'exported' candidate (a constant ONNX policy), an evaluation report and a gate."""
    run_dir = troupe_home / "runs" / "rank" / KEY
    onnx = behaviour_onnx(run_dir / "train" / "onnx" / "model.onnx", (0.9, 0.2, 0.2, 0.2, 0.2, 0.2) * 3, 0.15)
    report = run_dir / "evaluate" / "evaluation.json"
    report.parent.mkdir(parents=True)
    report.write_text(
        json.dumps(
            {
                "primary_estimator": "ncis",
                "main_signal": "watch_time",
                "confidence": 0.95,
                "estimators": {
                    e: {"candidate": _estimate(v + 300), "baseline": _estimate(300.0), "difference": _estimate(v)}
                    for e, v in (("ncis", 9.0), ("dm", 3.0))
                },
            }
        )
    )
    (run_dir / "gate").mkdir()
    (run_dir / "gate" / "gate.json").write_text(json.dumps({"estimator": "dm", "passed": True}))
    register_behaviour_policy(ModelRegistry(get_settings().registry_dir))
    return {
        "data": {"run_dir": str(run_dir), "interval_start": START, "interval_end": END, "interval_key": KEY},
        "exported": {"algorithm": "rcpo", "onnx": str(onnx), "agents": {}, "metrics": {"losses/actor": 0.5}},
        "evaluation": {"report": str(report), "run_dir": str(run_dir)},
    }


def test_register_names_the_version_by_interval_and_is_idempotent(run: dict[str, Any]) -> None:
    registry = ModelRegistry(get_settings().registry_dir)
    out = run_register("rank", run["exported"], run["data"], evaluation_report=run["evaluation"]["report"])
    assert out["version"] == f"rcpo-{KEY}"
    m = registry.load("rank", out["version"]).manifest
    assert registry.current_version("rank") == "behaviour-v1"  # registered, not promoted
    assert [t.name for t in m.inputs] == ["observation"] and m.inputs[0].shape == ["batch", RANK.observation_size]
    assert [t.name for t in m.outputs] == list(RANK.onnx_outputs)
    assert m.data_range is not None and m.data_range.start.isoformat() == START
    assert m.metrics["eval/ope_ncis_difference"] == 9.0 and m.metrics["losses/actor"] == 0.5
    # A re-run (the finished step's record gone, e.g. a retried task) finds the same bytes and returns them.
    (Path(run["data"]["run_dir"]) / "register" / "_DONE.json").unlink()
    assert run_register("rank", run["exported"], run["data"])["version"] == out["version"]
    # Different bytes under the same version are refused, never overwritten.
    (Path(run["data"]["run_dir"]) / "register" / "_DONE.json").unlink()
    behaviour_onnx(Path(run["exported"]["onnx"]), (0.1,) * 18, 0.15)
    with pytest.raises(RegistryError, match="already registered with a different model.onnx"):
        run_register("rank", run["exported"], run["data"])


def test_tensor_specs_are_read_from_the_onnx_graph(tmp_path: Path) -> None:
    inputs, outputs = onnx_tensor_specs(behaviour_onnx(tmp_path / "m.onnx", RANK.default_action, 0.2))
    assert [(t.name, t.shape) for t in inputs] == [("observation", ["batch", RANK.observation_size])]
    assert [(t.name, t.shape) for t in outputs] == [("action_mean", ["batch", 18]), ("action_log_std", ["batch", 18])]


def test_slot_and_allocate_behaviour_graphs_serve_the_simulators_heuristics(troupe_home: Path) -> None:
    # What serving samples from these outputs (softmax per component, temperature 1, ε 0) is exactly
    # the simulators' behaviour policy, so logged propensities are those of a known heuristic.
    import numpy as np
    import onnxruntime as ort

    from training.envs.behaviour import AllocateBehaviour, SlotBehaviour

    registry = ModelRegistry(get_settings().registry_dir)
    rng = np.random.default_rng(0)
    slot = register_behaviour_policy(registry, problem="slot", epsilon=0.05)
    obs = (rng.random((64, get_problem("slot").observation_size)) * 5).astype(np.float32)
    logits = ort.InferenceSession(str(slot.path / "model.onnx")).run(["logits"], {"observation": obs})[0]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(probs, SlotBehaviour(epsilon=0.05).action_probabilities(obs), atol=1e-6)

    allocate = register_behaviour_policy(registry, problem="allocate", epsilon=0.2)
    obs = rng.random((8, get_problem("allocate").observation_size)).astype(np.float32)
    scores = ort.InferenceSession(str(allocate.path / "model.onnx")).run(["action_scores"], {"observation": obs})[0]
    actions = np.array([[1, 1, 0, 1, 1, 1], [0, 1, 1, 3, 0, 2]] * 4)
    per_component = np.split(np.exp(scores), np.cumsum((2, 2, 2, 4, 4))[:], axis=1)
    p = np.prod([c[np.arange(8), actions[:, k]] for k, c in enumerate(per_component)], axis=0)
    np.testing.assert_allclose(p, AllocateBehaviour(epsilon=0.2).probability(obs, actions), rtol=1e-5)
    assert registry.current_version("slot") == registry.current_version("allocate") == "behaviour-v1"
    with pytest.raises(ValueError, match="epsilon"):
        register_behaviour_policy(registry, "behaviour-v2", problem="slot", epsilon=0.0)


def test_deploy_starts_a_canary_stops_the_older_one_and_writes_triton(run: dict[str, Any], troupe_home: Path) -> None:
    registered = run_register("rank", run["exported"], run["data"])
    experiments = troupe_home / "experiments.yaml"
    older = [
        {
            "name": "old-rank",
            "problem": "rank",
            "salt": "s",
            "arms": [{"name": "a", "weight": 1, "version": "current"}],
        },
        {
            "name": "slot-test",
            "problem": "slot",
            "salt": "s",
            "arms": [{"name": "a", "weight": 1, "version": "current"}],
        },
    ]
    experiments.write_text(yaml.safe_dump({"experiments": older}))
    cfg = DeployConfig(canary_share=0.25, experiments_file=experiments, triton_repository=troupe_home / "triton")
    out = run_deploy("rank", registered, {**run["evaluation"], "candidate_exploration": {"std_scale": 1.5}}, cfg=cfg)

    assert out["experiment"] == f"retrain-rank-{KEY}" and out["started_on_server"] is False
    on_file = {e["name"]: e for e in yaml.safe_load(experiments.read_text())["experiments"]}
    assert on_file["old-rank"]["status"] == "stopped"  # one running experiment per problem
    assert on_file["slot-test"].get("status", "running") == "running"  # other problems untouched
    arms = {a["name"]: a for a in on_file[out["experiment"]]["arms"]}
    assert (arms["control"]["version"], arms["control"]["weight"]) == ("current", 0.75)
    assert (arms["candidate"]["version"], arms["candidate"]["weight"]) == (registered["version"], 0.25)
    assert arms["candidate"]["exploration"] == {"std_scale": 1.5}  # the exploration the evaluation assumed
    # The OPE estimate recorded for the A/B comparison is the gate's estimator's (dm), not the primary one.
    assert out["ope"]["estimator"] == "dm" and out["ope"]["difference"] == 3.0
    assert out["ope"]["relative_lift"] == pytest.approx(0.01)
    config = (troupe_home / "triton" / f"rank__{registered['version']}" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "KIND_GPU" in config
    # Idempotent: a second call returns the recorded deployment without touching the file again.
    before = experiments.read_text()
    assert run_deploy("rank", registered, run["evaluation"], cfg=cfg) == out
    assert experiments.read_text() == before


def test_deploy_config_is_validated() -> None:
    with pytest.raises(ValueError, match="canary_share"):
        DeployConfig(canary_share=0.0)
    with pytest.raises(ValueError, match="admin key"):
        DeployConfig(serving_url="http://127.0.0.1:8080")
    with pytest.raises(ValueError, match="serving_url"):
        DeployConfig(serving_url="127.0.0.1:8080", admin_api_key="k")
