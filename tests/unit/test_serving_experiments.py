"""A/B assignment: deterministic, proportional to weights; the store validates and the hooks are isolated."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from models.events import DecisionEvent
from serving.errors import ExperimentError
from serving.experiments import Experiment, ExperimentStore, ExposureLogHook, HookSet, bucket


def _exp(weights: dict[str, float], name: str = "e1", problem: str = "slot") -> Experiment:
    return Experiment.model_validate(
        {
            "name": name,
            "problem": problem,
            "salt": "salt-1",
            "arms": [{"name": a, "weight": w} for a, w in weights.items()],
        }
    )


def test_bucket_is_sha256_of_salt_and_unit_mod_10000() -> None:
    assert bucket("s", "user-42") == int(hashlib.sha256(b"suser-42").hexdigest(), 16) % 10_000


def test_assignment_matches_weights_within_one_percent() -> None:
    exp = _exp({"control": 0.5, "a": 0.3, "b": 0.2})
    n = 100_000
    counts: dict[str, int] = {}
    for i in range(n):
        arm = exp.assign(f"user-{i}").name
        counts[arm] = counts.get(arm, 0) + 1
    for arm, w in {"control": 0.5, "a": 0.3, "b": 0.2}.items():
        assert abs(counts[arm] / n - w) < 0.01, (arm, counts[arm] / n)


def test_assignment_is_the_same_in_another_process() -> None:
    exp = _exp({"control": 0.5, "treatment": 0.5})
    units = [f"u{i}" for i in range(200)]
    here = [exp.assign(u).name for u in units]
    code = (
        "import json,sys; from serving.experiments import Experiment;"
        "e=Experiment.model_validate(json.loads(sys.argv[1]));"
        "print(','.join(e.assign(f'u{i}').name for i in range(200)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, exp.model_dump_json()],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    ).stdout.strip()
    assert out.split(",") == here
    assert set(here) == {"control", "treatment"}


def test_weight_update_moves_only_units_whose_bucket_changes_owner() -> None:
    store = ExperimentStore()
    store.create(_exp({"control": 0.5, "treatment": 0.5}))
    before = {f"u{i}": store.get("e1").assign(f"u{i}").name for i in range(5000)}
    store.update_weights("e1", {"treatment": 1.0 / 3.0, "control": 2.0 / 3.0})
    after = {u: store.get("e1").assign(u).name for u in before}
    moved = [u for u in before if before[u] != after[u]]
    assert all(before[u] == "treatment" and after[u] == "control" for u in moved)
    assert 0.1 < len(moved) / len(before) < 0.24  # about 1/6 of units move


def test_store_rules() -> None:
    store = ExperimentStore()
    store.create(_exp({"a": 1.0}))
    with pytest.raises(ExperimentError, match="already runs experiment 'e1'"):
        store.create(_exp({"a": 1.0}, name="e2"))
    with pytest.raises(ExperimentError, match="has no arms"):
        store.update_weights("e1", {"zzz": 1.0})
    with pytest.raises(ExperimentError, match="weight > 0"):
        store.update_weights("e1", {"a": 0.0})
    store.stop("e1")
    assert store.running_for("slot") is None
    store.create(_exp({"a": 1.0}, name="e2"))
    assert store.running_for("slot").name == "e2"  # type: ignore[union-attr]


def test_yaml_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("experiments:\n  - name: x\n    problem: nope\n    salt: s\n    arms: [{name: a, weight: 1}]\n")
    with pytest.raises(ExperimentError, match=r"experiments\[0\]\.problem: .*unknown problem 'nope'"):
        ExperimentStore.from_yaml(path)
    path.write_text(
        "experiments:\n  - name: x\n    problem: slot\n    salt: s\n"
        "    arms: [{name: a, weight: 1, exploration: {temperature: 0.5}}, {name: b, weight: 3, version: v2}]\n"
    )
    exp = ExperimentStore.from_yaml(path).get("x")
    assert exp.arms[0].exploration.temperature == 0.5 and exp.arms[1].version == "v2"
    assert exp.boundaries() == [2500, 10_000]


def _event(arm: str, user: str) -> DecisionEvent:
    import datetime as dt

    return DecisionEvent(
        request_id="r",
        timestamp=dt.datetime.now(dt.UTC),
        problem="slot",
        user_id=user,
        policy_name="p",
        policy_version="v1",
        experiment="e1",
        arm=arm,
        observation=[0.0],
        action=[1.0],
        propensity=0.5,
    )


def test_exposure_hook_logs_first_exposure_and_failing_hook_is_isolated() -> None:
    class Broken:
        def on_assign(self, *a: object) -> None:
            raise RuntimeError("boom")

        def on_decision(self, *a: object) -> None:
            raise RuntimeError("boom")

        def on_feedback(self, *a: object) -> None:
            raise RuntimeError("boom")

    errors: list[str] = []
    exposures = ExposureLogHook()
    hooks = HookSet([Broken(), exposures], on_error=errors.append)
    hooks.on_decision(_event("a", "u1"))
    hooks.on_decision(_event("a", "u1"))
    hooks.on_decision(_event("b", "u1"))
    assert exposures.exposures_logged == 2
    assert errors == ["Broken"] * 3
