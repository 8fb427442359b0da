"""The retraining loop end to end through Airflow's `dag.test()`, on real components.

A real broker (the session's Tansu, private topics), the real decision API
(uvicorn subprocess) serving the `rank` behaviour policy, a real Feast repo
(SQLite online store), simulated users for a small day. Then `troupe_ingest`,
`troupe_features` and `troupe_retrain_rank` run in-process:

1. with a gate threshold no candidate can meet: the gate refuses with its
   reason, and nothing is exported, registered or deployed;
2. on the same interval with the gate relaxed: dataset, training and
   evaluation are reused (each job is idempotent for its interval), the
   candidate is registered (not promoted) and goes live as a canary arm on
   the running API.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from infra.broker import EmbeddedBroker, create_topics
from models.registry import ModelRegistry
from models.settings import TroupeSettings, get_settings

pytestmark = pytest.mark.slow

TINY_TRAINING = {
    "run": {"iterations": 2, "offline_steps": 5, "behaviour_steps": 20},
    "algo": {"warm_start_steps": 20, "minibatch_size": 64},
}


@contextlib.contextmanager
def _running_loop(
    problem: str, troupe_home: Path, kafka_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """Private topics and home, the Feast repo applied, `problem`'s behaviour policy promoted, the API running."""
    from pipelines.behaviour_policy import register_behaviour_policy
    from pipelines.services import apply_feature_store, running_api

    suffix = uuid.uuid4().hex[:8]
    env = {
        "TROUPE_HOME": str(troupe_home),
        "TROUPE_KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "TROUPE_DECISIONS_TOPIC": f"e2e.decisions.{suffix}",
        "TROUPE_FEEDBACK_TOPIC": f"e2e.feedback.{suffix}",
        "TROUPE_EXPERIMENTS_FILE": str(troupe_home / "experiments.yaml"),
        "TROUPE_PROBLEMS": problem,
        "TROUPE_REGISTRY_WATCH_S": "1.0",
    }
    create_topics(kafka_broker.bootstrap_servers, {env["TROUPE_DECISIONS_TOPIC"]: 2, env["TROUPE_FEEDBACK_TOPIC"]: 2})
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    settings = TroupeSettings()
    register_behaviour_policy(ModelRegistry(settings.registry_dir), problem=problem)
    env["TROUPE_FEAST_REPO"] = str(apply_feature_store(settings))
    admin_key = uuid.uuid4().hex
    with running_api(env, troupe_home / "api.log", admin_key) as api:
        monkeypatch.setenv("TROUPE_SERVING_URL", api.url)
        monkeypatch.setenv("TROUPE_DEPLOY_ADMIN_KEY", admin_key)
        yield {"settings": settings, "api": api, "admin_key": admin_key}
    get_settings.cache_clear()


@pytest.fixture
def loop_env(
    troupe_home: Path, kafka_broker: EmbeddedBroker, airflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    with _running_loop("rank", troupe_home, kafka_broker, monkeypatch) as env:
        yield env


def _first_day_in_the_lake(settings: TroupeSettings, traffic: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """Run a simulated day on the behaviour policy, ingest all of it, build its features.

    Returns the day's interval and the rows each feature table got from it."""
    from pipelines.airflow_runtime import run_dag
    from pipelines.traffic import run_day

    day = run_day(traffic)
    assert day.errors == 0 and day.requests >= 150 and day.feedback == day.requests
    # A decision whose inference misses its deadline on a busy machine falls back to the default policy.
    assert set(day.versions) <= {"behaviour-v1", "default"} and day.versions["behaviour-v1"] >= 0.9 * day.requests
    interval = day.interval()

    ingested = 0
    for _ in range(5):  # the API's producer sends asynchronously: drain until the day is in the lake
        res = run_dag("troupe_ingest", conf={"ingest_overrides": {"idle_stop_s": 2.0}})
        ingested += res.task_returns["ingest"]["rows"].get(settings.decisions_topic, 0)
        if ingested >= day.requests:
            break
    assert ingested == day.requests

    features = run_dag("troupe_features", conf=interval)
    assert features.task_states == {"aggregate": "success", "materialize": "success"}
    return interval, features.task_returns["aggregate"]["rows"]


def test_retrain_dag_refuses_then_deploys_a_canary(loop_env: dict[str, Any]) -> None:
    from pipelines.airflow_runtime import run_dag
    from pipelines.traffic import TrafficConfig, run_day

    settings: TroupeSettings = loop_env["settings"]
    api = loop_env["api"]
    registry = ModelRegistry(settings.registry_dir)

    interval, feature_rows = _first_day_in_the_lake(
        settings, TrafficConfig(api.url, users=16, concurrency=16, seed=3, max_requests=300)
    )
    assert feature_rows["user_stats"] > 0

    # 1. A threshold no candidate can meet: refused, nothing downstream runs.
    base = {**interval, "algo": "tscac", "train_config": TINY_TRAINING, "canary_share": 0.5,
            "evaluate_overrides": {"sequential": False}}  # fmt: skip
    refused = run_dag("troupe_retrain_rank", conf={**base, "min_lift": 1e9})
    assert refused.task_states == {
        "dataset": "success", "train": "success", "evaluate": "success", "gate": "success",
        "refused": "success", "export": "skipped", "register": "skipped", "deploy_canary": "skipped",
    }  # fmt: skip
    run_dir = Path(refused.task_returns["dataset"]["run_dir"])
    assert refused.task_returns["dataset"]["rows"] > 100
    gate = json.loads((run_dir / "gate" / "gate.json").read_text())
    assert gate["passed"] is False
    assert any(r.startswith("watch_time: lower bound") and "not above 1e+09" in r for r in gate["reasons"])
    assert refused.task_returns["refused"]["reasons"] == gate["reasons"]
    assert [m.version for m in registry.list("rank")] == ["behaviour-v1"]
    assert yaml.safe_load((settings.home / "experiments.yaml").read_text()) == {"experiments": []}
    assert not (run_dir / "deploy").exists()
    train_done = (run_dir / "train" / "_DONE.json").stat().st_mtime_ns

    # 2. Same interval, gate relaxed: earlier steps are reused, the candidate goes live as a canary.
    waive = ["click", "like", "follow", "comment", "share"]
    passed = run_dag(
        "troupe_retrain_rank",
        conf={**base, "min_lift": -1e9, "gate_overrides": {"waive_constraints": waive, "min_effective_sample_size": 0}},
    )
    assert passed.task_states["refused"] == "skipped"
    assert all(passed.task_states[t] == "success" for t in ("gate", "export", "register", "deploy_canary"))
    assert (run_dir / "train" / "_DONE.json").stat().st_mtime_ns == train_done  # not retrained
    version = passed.task_returns["register"]["version"]
    assert version == f"tscac-{refused.task_returns['dataset']['interval_key']}"
    assert registry.current_version("rank") == "behaviour-v1"  # a canary is not a promotion
    assert registry.load("rank", version).manifest.data_range is not None

    deployed = passed.task_returns["deploy_canary"]
    assert deployed["started_on_server"] is True
    assert {a["name"]: (a["version"], a["weight"]) for a in deployed["arms"]} == {
        "control": ("current", 0.5),
        "candidate": (version, 0.5),
    }
    assert deployed["ope"]["signal"] == "watch_time"
    on_file = yaml.safe_load((settings.home / "experiments.yaml").read_text())["experiments"]
    assert [(e["name"], e["status"]) for e in on_file] == [(deployed["experiment"], "running")]
    listed = httpx.get(f"{api.url}/v1/experiments", headers={"X-API-Key": loop_env["admin_key"]}).json()
    assert [(e["name"], e["status"]) for e in listed] == [(deployed["experiment"], "running")]

    # The live API now serves the candidate to about half of the users.
    day2 = run_day(TrafficConfig(api.url, users=12, concurrency=12, seed=4, max_requests=120))
    assert day2.errors == 0
    assert {"behaviour-v1", version} <= set(day2.versions) <= {"behaviour-v1", version, "default"}
    assert set(day2.arms) == {"control", "candidate"}


# The other problems' DAGs, each on its own small simulated day through the API: slot's live-stream
# position (categorical) and allocate's per-stage choices (MaRCA, trained offline from the day's
# trajectories, its cost table and load model refitted and registered with it).
MARCA_TRAINING = {"offline_steps": 60, "batch_size": 128, "load_model_days": 1, "load_model_requests": 64}
TRAIN_CONFIG = {"slot": TINY_TRAINING, "allocate": MARCA_TRAINING}
OTHER_PROBLEMS = {
    # problem: (main signal, constrained signals, traffic for the first day)
    "slot": ("live_watch_time", ["live_exposure"], {"users": 16, "concurrency": 16, "max_requests": 300}),
    "allocate": ("revenue", ["compute_cost"], {"users": 1, "concurrency": 8, "max_requests": 400}),
}


@pytest.mark.parametrize("problem", sorted(OTHER_PROBLEMS))
def test_other_problems_retrain_dags_refuse_then_deploy_a_canary(
    problem: str, troupe_home: Path, kafka_broker: EmbeddedBroker, airflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.airflow_runtime import run_dag
    from pipelines.traffic import TrafficConfig, run_day

    main_signal, constrained, traffic = OTHER_PROBLEMS[problem]
    with _running_loop(problem, troupe_home, kafka_broker, monkeypatch) as loop:
        settings: TroupeSettings = loop["settings"]
        api = loop["api"]
        registry = ModelRegistry(settings.registry_dir)
        interval, _ = _first_day_in_the_lake(settings, TrafficConfig(api.url, problem=problem, seed=3, **traffic))

        base = {**interval, "train_config": TRAIN_CONFIG[problem], "canary_share": 0.5,
                "evaluate_overrides": {"sequential": False}}  # fmt: skip
        refused = run_dag(f"troupe_retrain_{problem}", conf={**base, "min_lift": 1e9})
        assert refused.task_states["refused"] == "success"
        assert {refused.task_states[t] for t in ("export", "register", "deploy_canary")} == {"skipped"}
        assert refused.task_returns["dataset"]["rows"] > 100
        assert any(r.startswith(f"{main_signal}: lower bound") for r in refused.task_returns["refused"]["reasons"])
        assert [m.version for m in registry.list(problem)] == ["behaviour-v1"]

        passed = run_dag(
            f"troupe_retrain_{problem}",
            conf={
                **base,
                "min_lift": -1e9,
                "gate_overrides": {"waive_constraints": constrained, "min_effective_sample_size": 0},
            },
        )
        assert passed.task_states["refused"] == "skipped"
        assert all(passed.task_states[t] == "success" for t in ("gate", "export", "register", "deploy_canary"))
        version = passed.task_returns["register"]["version"]
        assert registry.current_version(problem) == "behaviour-v1"  # a canary is not a promotion
        if problem == "slot":  # SL-MGAC by default: its distilled student is the model that ships
            assert version.startswith("sl_mgac-") and passed.task_returns["train"]["algorithm"] == "sl_mgac"
        if problem == "allocate":  # MaRCA ships its cost table and load model, sha256-checked with the model
            assert version.startswith("marca-")
            files = registry.load(problem, version).manifest.files
            assert {"model.onnx", "cost_table.json", "load_model.json"} <= set(files)
            assert passed.task_returns["train"]["lambda_eval"] >= 0.0
        deployed = passed.task_returns["deploy_canary"]
        assert deployed["started_on_server"] is True and deployed["ope"]["signal"] == main_signal

        # The live API serves the trained candidate (its ONNX policy) to about half of the traffic.
        day2 = run_day(TrafficConfig(api.url, problem=problem, seed=4, **{**traffic, "max_requests": 160}))
        assert day2.errors == 0
        assert {"behaviour-v1", version} <= set(day2.versions) <= {"behaviour-v1", version, "default"}
        assert set(day2.arms) == {"control", "candidate"}
