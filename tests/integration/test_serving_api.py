"""The decision API end to end: real app, real Kafka (session broker), real Feast (SQLite), ONNX policies from the registry."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from infra.broker import EmbeddedBroker
from models.observations import SIGNAL_SCALE, activity_one_hot
from models.problems import PREDICTED_SIGNALS, RANK, SLOT
from models.registry import ModelRegistry
from serving.app import create_app
from serving.backends import OnnxRuntimeBackend
from serving.lifecycle import default_backend_factory
from serving.settings import ServingSettings
from tests.support.onnx_models import register_policy
from tests.support.requests import BODIES, allocate_body, rank_body, slot_body
from tests.support.serving import KNOWN_LIVE_SEQUENCES, KNOWN_USERS, build_feast_store, load, read_topic, uvicorn_thread

ADMIN_KEY = "admin-key-7f3c9e"
ADMIN = {"X-API-Key": ADMIN_KEY}
DECISIONS = "troupe.decisions.v1"
FEEDBACK = "troupe.feedback.v1"


@dataclass
class Served:
    client: TestClient
    settings: ServingSettings
    registry: ModelRegistry
    broker: EmbeddedBroker


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, kafka_broker: EmbeddedBroker) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("serving-home")
    registry = ModelRegistry(home / "registry")
    for problem in ("rank", "slot", "allocate"):
        register_policy(registry, problem, "v1", promote=True)
    register_policy(registry, "slot", "v2", seed=7, bias=0.5)
    register_policy(registry, "rank", "v2-agents", seed=3, per_agent=True)
    settings = ServingSettings(
        home=home,
        kafka_bootstrap_servers=kafka_broker.bootstrap_servers,
        feast_repo=build_feast_store(home / "feast"),
        admin_api_keys=[ADMIN_KEY],  # type: ignore[list-item]
        registry_watch_s=0.2,
        exploration_seed=0,
        # Generous: these tests check behaviour, and this 2-core host is shared; the
        # deadline itself is tested with 10 ms below.
        inference_deadline_ms=1000.0,
    )
    with TestClient(create_app(settings)) as client:
        yield Served(client, settings, registry, kafka_broker)


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_each_problem_decides_with_feast_features_and_logs_to_kafka(served: Served) -> None:
    c = served.client
    responses: dict[str, dict[str, Any]] = {}
    bodies = {problem: body("known-high") for problem, body in BODIES.items()}
    for cand in bodies["rank"]["candidates"]:  # key order is the caller's; signals are read by name
        cand["signals"] = dict(reversed(list(cand["signals"].items())))
    for problem, body in bodies.items():
        r = c.post(f"/v1/decide/{problem}", json=body)
        assert r.status_code == 200, r.text
        responses[problem] = r.json()
    rank, slot, alloc = responses["rank"], responses["slot"], responses["allocate"]
    for res in responses.values():
        assert res["fallback"] is False and res["policy_version"] == "v1" and res["latency_ms"] > 0
    assert rank["log_density"] is not None and rank["propensity"] is None and len(rank["action"]) == 18
    assert len(rank["ordering"]) == 6 and set(rank["stage_weights"]) == {"pre_rank", "rank", "re_rank"}
    assert 0 < slot["propensity"] <= 1 and slot["action"][0] in range(7)
    assert 0 < alloc["propensity"] <= 1 and alloc["estimated_cost"] > 0

    events = read_topic(served.broker.bootstrap_servers, DECISIONS, {r["request_id"] for r in responses.values()})
    assert set(events) == {r["request_id"] for r in responses.values()}
    group, rates, affinity = KNOWN_USERS["known-high"]
    slot_event = events[slot["request_id"]][0]
    assert slot_event["action"] == slot["action"] and slot_event["propensity"] == slot["propensity"]
    sl = SLOT.observation_slices()
    obs = slot_event["observation"]
    # The observation carries the Feast features of this user, not the defaults.
    assert obs[sl["user_activity_group"]] == activity_one_hot([group])[0].tolist()
    assert obs[sl["user_recent_rates"]] == pytest.approx(rates, rel=1e-6)
    assert obs[sl["user_live_affinity"]] == pytest.approx(affinity, rel=1e-6)
    # The stored live sequence (watch s, Unix time) becomes (minutes, freshness by the hours since).
    (watch1, ago1), (watch2, ago2) = KNOWN_LIVE_SEQUENCES["known-high"]
    fresh = [1.0 - np.log1p(ago / 3600.0) / np.log1p(168.0) for ago in (ago1, ago2)]
    sequence = obs[sl["user_live_sequence"]]
    assert sequence[:4] == pytest.approx([watch1 / 60.0, fresh[0], watch2 / 60.0, fresh[1]], abs=2e-3)
    assert sequence[4:] == [0.0] * (len(sequence) - 4)
    rank_event = events[rank["request_id"]][0]
    assert len(rank_event["observation"]) == 3 * RANK.observation_size
    assert rank_event["candidate_ids"] == rank["ordering"] and rank_event["log_density"] == rank["log_density"]
    # The pre-rank stage observes the whole pool: its signal means are those of the request.
    cands = bodies["rank"]["candidates"]
    expected_mean = np.mean([[c["signals"][k] for k in PREDICTED_SIGNALS] for c in cands], axis=0) * SIGNAL_SCALE
    obs0 = rank_event["observation"][RANK.observation_slices()["candidate_signal_mean"]]
    assert obs0 == pytest.approx(expected_mean.tolist(), rel=1e-4)
    assert events[alloc["request_id"]][0]["problem"] == "allocate"


def test_unknown_user_gets_documented_defaults_and_is_counted(served: Served) -> None:
    c = served.client
    features = ("user_live_affinity", "user_live_sequence")
    text = c.get("/metrics").text
    before = [_metric(text, "troupe_feature_defaults_total", problem="slot", feature=f) for f in features]
    r = c.post("/v1/decide/slot", json=slot_body("nobody-knows-me"))
    assert r.status_code == 200
    text = c.get("/metrics").text
    after = [_metric(text, "troupe_feature_defaults_total", problem="slot", feature=f) for f in features]
    assert after == [b + 1 for b in before]
    events = read_topic(served.broker.bootstrap_servers, DECISIONS, {r.json()["request_id"]})
    obs = events[r.json()["request_id"]][0]["observation"]
    sl = SLOT.observation_slices()
    assert obs[sl["user_activity_group"]] == [0.0, 1.0, 0.0] and obs[sl["user_recent_rates"]] == [0.0] * 6
    assert not any(obs[sl["user_live_sequence"]])  # no live exposure: all padding
    # Request features override the store.
    body = slot_body("known-high") | {"user_features": {"user_activity_group": "low"}}
    r2 = c.post("/v1/decide/slot", json=body)
    ev = read_topic(served.broker.bootstrap_servers, DECISIONS, {r2.json()["request_id"]})[r2.json()["request_id"]][0]
    assert ev["observation"][sl["user_activity_group"]] == [1.0, 0.0, 0.0]
    sent = [120.0, time.time() - 7200.0] + [0.0, 0.0] * 4  # one exposure two hours ago, 2 minutes watched
    r3 = c.post("/v1/decide/slot", json=slot_body("nobody-knows-me") | {"user_features": {"user_live_sequence": sent}})
    ev = read_topic(served.broker.bootstrap_servers, DECISIONS, {r3.json()["request_id"]})[r3.json()["request_id"]][0]
    expected = [2.0, 1.0 - np.log1p(2.0) / np.log1p(168.0)] + [0.0] * 8
    assert ev["observation"][sl["user_live_sequence"]] == pytest.approx(expected, abs=1e-3)


def test_feedback_reaches_the_feedback_topic(served: Served) -> None:
    fb = {
        "request_id": "fb-req-1",
        "timestamp": "2026-11-21T12:00:00Z",
        "user_id": "known-low",
        "problem": "slot",
        "signals": {"live_watch_time": 42.0, "live_exposure": 1.0},
    }
    r = served.client.post("/v1/feedback", json=fb)
    assert r.status_code == 202 and r.json()["request_id"] == "fb-req-1"
    got = read_topic(served.broker.bootstrap_servers, FEEDBACK, {"fb-req-1"})
    assert got["fb-req-1"][0]["signals"]["live_watch_time"] == 42.0
    bad = served.client.post("/v1/feedback", json=fb | {"signals": {"live_exposure": 2.0}})
    assert bad.status_code == 422 and "signals.live_exposure" in bad.json()["message"]


def _raw(c: TestClient, path: str, content: bytes, headers: dict[str, str] | None = None) -> Any:
    return c.post(path, content=content, headers={"content-type": "application/json", **(headers or {})})


@pytest.mark.parametrize(
    ("path", "make", "field"),
    [
        ("/v1/decide/rank", lambda: rank_body("u", 2001, seed=1), "body.candidates"),
        ("/v1/decide/rank", lambda: rank_body("u", 0), "body.candidates"),
        ("/v1/decide/slot", lambda: slot_body("u") | {"page": slot_body("u")["page"][:5]}, "body.page"),
        (
            "/v1/decide/slot",
            lambda: slot_body("u") | {"user_features": {"user_recent_rates": [0.1] * 5}},
            "body.user_features.user_recent_rates",
        ),
        (
            "/v1/decide/allocate",
            lambda: {k: v for k, v in allocate_body("u").items() if k != "system_load"},
            "body.system_load",
        ),
        ("/v1/decide/allocate", lambda: allocate_body("u") | {"hour_of_day": 24.0}, "body.hour_of_day"),
        ("/v1/decide/allocate", lambda: allocate_body("u") | {"surprise": 1}, "body.surprise"),
    ],
)
def test_validation_errors_name_the_field(served: Served, path: str, make: Any, field: str) -> None:
    body = make()
    if path.endswith("rank") and len(body["candidates"]) > 2000:
        # Short candidates keep the body under the 256 KB limit, so the count check answers.
        body["candidates"] = [
            {"id": str(i), "signals": {"watch_time": 1, "click": 0, "like": 0, "follow": 0, "comment": 0, "share": 0}}
            for i in range(2001)
        ]
        assert len(json.dumps(body)) < 256 * 1024
    r = served.client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["message"].startswith(field), r.json()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected_naming_the_field(served: Served, literal: str) -> None:
    body = rank_body("u", 3)
    raw = json.dumps(body).replace(str(body["candidates"][1]["signals"]["like"]), literal, 1)
    r = _raw(served.client, "/v1/decide/rank", raw.encode())
    assert r.status_code == 422, r.text
    assert r.json()["message"].startswith("body.candidates.1.signals.like"), r.json()


def test_body_over_256_kb_is_413_before_parsing(served: Served) -> None:
    big = b'{"user_id": "u", "pad": "' + b"x" * (256 * 1024) + b'"}'
    r = _raw(served.client, "/v1/decide/allocate", big)
    assert r.status_code == 413 and "256 KB" in r.json()["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size is checked
        yield b'{"user_id": "u", "pad": "'
        for _ in range(80):
            yield b"y" * 4096
        yield b'"}'

    r2 = served.client.post("/v1/decide/allocate", content=chunks(), headers={"content-type": "application/json"})
    assert r2.status_code == 413 and "256 KB" in r2.text, r2.text


def test_admin_endpoints_require_the_key_and_never_log_it(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    c = served.client
    caplog.set_level(logging.DEBUG)
    assert c.get("/v1/models/slot").status_code == 401
    assert c.get("/v1/models/slot", headers={"X-API-Key": "wrong"}).status_code == 401
    r = c.get("/v1/models/slot", headers=ADMIN)
    assert r.status_code == 200 and r.json()["version"] == "v1"
    assert c.post("/v1/models/slot/promote", json={"version": "nope"}, headers=ADMIN).status_code == 409
    assert c.get("/v1/models/unknown", headers=ADMIN).status_code == 404
    assert ADMIN_KEY not in caplog.text


def test_experiment_assignment_is_stable_across_two_app_instances(served: Served, tmp_path: Path) -> None:
    exp = {
        "name": "slot-temp",
        "problem": "slot",
        "salt": "slot-temp-salt",
        "arms": [
            {"name": "control", "weight": 0.5},
            {"name": "treatment", "weight": 0.5, "version": "v2", "exploration": {"temperature": 0.5}},
        ],
    }
    c = served.client
    r = c.post("/v1/experiments", json=exp, headers=ADMIN)
    assert r.status_code == 201, r.text
    try:
        users = [f"ab-user-{i}" for i in range(40)]
        first = {u: c.post("/v1/decide/slot", json=slot_body(u)).json() for u in users}
        yaml_file = tmp_path / "experiments.yaml"
        yaml_file.write_text(json.dumps({"experiments": [exp]}))  # JSON is YAML
        other_settings = served.settings.model_copy(
            update={"experiments_file": yaml_file, "feast_repo": None, "registry_watch_s": 0.0}
        )
        with TestClient(create_app(other_settings)) as other:
            second = {u: other.post("/v1/decide/slot", json=slot_body(u)).json() for u in users}
        assert {u: b["arm"] for u, b in first.items()} == {u: b["arm"] for u, b in second.items()}
        assert {b["arm"] for b in first.values()} == {"control", "treatment"}
        for b in first.values():
            assert b["experiment"] == "slot-temp"
            assert b["policy_version"] == ("v2" if b["arm"] == "treatment" else "v1")
        ids = {b["request_id"] for b in first.values()}
        events = read_topic(served.broker.bootstrap_servers, DECISIONS, ids)
        assert all(events[i][0]["experiment"] == "slot-temp" and events[i][0]["exposed"] for i in ids)
        # All traffic to treatment, then stop.
        r = c.patch(
            "/v1/experiments/slot-temp/weights", json={"weights": {"control": 0.0, "treatment": 1.0}}, headers=ADMIN
        )
        assert r.status_code == 200
        assert {c.post("/v1/decide/slot", json=slot_body(u)).json()["arm"] for u in users[:10]} == {"treatment"}
    finally:
        assert c.post("/v1/experiments/slot-temp/stop", headers=ADMIN).status_code == 200
    assert c.post("/v1/decide/slot", json=slot_body("after")).json()["arm"] is None


def test_metrics_and_readiness(served: Served) -> None:
    c = served.client
    c.post("/v1/decide/allocate", json=allocate_body("known-low"))
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {
        "ready": True,
        "models": {"rank": True, "slot": True, "allocate": True},
        "features": True,
        "producer": True,
    }
    text = c.get("/metrics").text
    assert _metric(text, "troupe_decisions_total", problem="allocate", arm="none", fallback="false") >= 1
    assert _metric(text, "troupe_decision_latency_seconds_count", problem="allocate", arm="none") >= 1
    # The spool holds each event from its write until Kafka acknowledges it: it drains to zero.
    deadline = time.monotonic() + 10
    while "troupe_spool_size 0.0" not in text and time.monotonic() < deadline:
        time.sleep(0.05)
        text = c.get("/metrics").text
    assert "troupe_spool_size 0.0" in text
    assert _metric(text, "troupe_producer_events_total", outcome="sent") >= 1
    assert _metric(text, "troupe_http_requests_total", route="/v1/decide/allocate", status="200") >= 1
    assert _metric(text, "troupe_http_requests_total", route="/readyz", status="200") >= 1
    c.get("/no/such/path/12345")
    text = c.get("/metrics").text
    assert _metric(text, "troupe_http_requests_total", route="unmatched", status="404") >= 1
    assert "/no/such/path" not in text, "raw paths never become labels"
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/openapi.json").json()["paths"]["/v1/decide/rank"]["post"]["responses"]["200"]


def test_slow_inference_falls_back_and_opens_the_breaker(served: Served) -> None:
    class Slow:
        name = "slow"

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def score(self, inputs: Any) -> Any:
            await asyncio.sleep(0.05)
            return await self.inner.score(inputs)

        async def close(self) -> None:
            return None

    settings = served.settings.model_copy(
        update={
            "inference_deadline_ms": 10.0,
            "breaker_failures": 2,
            "breaker_reset_s": 60.0,
            "feast_repo": None,
            "problems": ["allocate"],
            "registry_watch_s": 0.0,
        }
    )
    real = default_backend_factory(settings)
    app = create_app(settings, backend_factory=lambda spec, loaded, agent: Slow(real(spec, loaded, agent)))
    with TestClient(app) as c:
        out = [c.post("/v1/decide/allocate", json=allocate_body(f"s{i}")).json() for i in range(4)]
        text = c.get("/metrics").text
    assert [o["fallback_reason"] for o in out] == ["deadline", "deadline", "circuit_open", "circuit_open"]
    assert all(o["fallback"] and o["propensity"] == 1.0 and o["action"] == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0] for o in out)
    assert _metric(text, "troupe_fallbacks_total", problem="allocate", reason="circuit_open") == 2
    assert _metric(text, "troupe_breaker_open", problem="allocate") == 1.0


def test_swap_under_concurrent_load_has_zero_failed_requests(served: Served) -> None:
    settings = served.settings.model_copy(
        update={"feast_repo": None, "registry_watch_s": 0.0, "problems": ["slot", "rank"]}
    )
    app = create_app(settings)
    with uvicorn_thread(app) as url:
        done = False

        async def scenario() -> Any:
            import httpx

            task = asyncio.create_task(
                load(url, "/v1/decide/slot", lambda i: slot_body(f"swap-{i}"), lambda: done, concurrency=8)
            )
            await asyncio.sleep(0.5)
            async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=30) as admin:
                promoted = await admin.post("/v1/models/slot/promote", json={"version": "v2"})
                await asyncio.sleep(0.5)
                per_agent = await admin.post("/v1/models/rank/promote", json={"version": "v2-agents"})
                rank = await admin.post("/v1/decide/rank", json=rank_body("swap-rank", 50))
                rolled = await admin.post("/v1/models/slot/rollback")
                await admin.post("/v1/models/rank/rollback")
            await asyncio.sleep(0.5)
            return promoted, per_agent, rank, rolled, task

        async def run() -> Any:
            nonlocal done
            promoted, per_agent, rank, rolled, task = await scenario()
            done = True
            return promoted, per_agent, rank, rolled, await task

        promoted, per_agent, rank, rolled, result = asyncio.run(run())
    assert promoted.status_code == 200 and promoted.json()["version"] == "v2"
    assert per_agent.json()["version"] == "v2-agents"
    assert rank.json()["policy_version"] == "v2-agents" and not rank.json()["fallback"]
    assert rolled.json()["version"] == "v1"
    assert result.failed == 0 and len(result.statuses) > 50
    assert not any(b["fallback"] for b in result.bodies), "a swap must not push requests to the fallback"
    versions = [b["policy_version"] for b in result.bodies]
    assert "v2" in versions and versions[-1] == "v1"
    assert served.registry.current_version("slot") == "v1"


def test_registry_watch_switches_to_a_version_promoted_elsewhere(served: Served) -> None:
    c = served.client
    served.registry.promote("slot", "v2")  # e.g. `troupe registry promote slot v2` on another host
    try:
        deadline = time.monotonic() + 10
        version = None
        while time.monotonic() < deadline:
            version = c.post("/v1/decide/slot", json=slot_body("watch")).json()["policy_version"]
            if version == "v2":
                break
            time.sleep(0.1)
        assert version == "v2"
    finally:
        served.registry.rollback("slot")


def test_in_process_backend_is_onnxruntime_cpu_here(served: Served) -> None:
    loaded = served.registry.load("slot", "v1")
    backend = OnnxRuntimeBackend(loaded.model_path, ["logits"])
    assert backend.session.get_providers() == ["CPUExecutionProvider"]
