"""Bad input gets a clear 4xx in the API's one error shape, never a 500; admin changes that cannot apply get 409."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.registry import ModelRegistry
from pipelines.jobs.deploy import DeployConfig
from pipelines.traffic import TrafficConfig
from serving.app import create_app
from serving.settings import ServingSettings
from tests.support.onnx_models import register_policy
from tests.support.requests import slot_body
from tests.support.serving import NullProducer

ADMIN = {"X-API-Key": "admin-secret-1"}
NESTED = b'{"user_id": "u", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"  # ~10 KB


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    home = tmp_path_factory.mktemp("hardening")
    registry = ModelRegistry(home / "registry")
    register_policy(registry, "slot", "v1", promote=True)
    register_policy(registry, "slot", "v2", seed=2)
    settings = ServingSettings(
        home=home,
        problems=["slot"],
        registry_watch_s=0.0,
        admin_api_keys="admin-secret-1",  # type: ignore[arg-type]
        ort_cuda="never",
    )
    with TestClient(create_app(settings, producer=NullProducer(), feature_reader=None)) as c:
        yield c, home


def _shape(body: dict) -> None:  # type: ignore[type-arg]
    assert set(body) == {"message", "detail"} and isinstance(body["message"], str) and body["detail"], body
    assert all(set(d) == {"loc", "msg", "type"} for d in body["detail"]), body


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/decide/slot", "text/plain"),
        ("/v1/decide/slot", "application/x-www-form-urlencoded"),
        ("/v1/feedback", "multipart/form-data; boundary=x"),
        ("/v1/models/slot/promote", "text/plain"),
        ("/v1/decide/slot", None),
    ],
)
def test_a_body_not_declared_json_gets_415(client: tuple[TestClient, Path], path: str, content_type: str) -> None:
    c, _ = client
    headers = {**ADMIN, **({"content-type": content_type} if content_type else {})}
    r = c.post(path, content=json.dumps(slot_body("u1")).encode(), headers=headers)
    assert r.status_code == 415, r.text
    _shape(r.json())
    ok = c.post("/v1/decide/slot", content=json.dumps(slot_body("u1")), headers={"content-type": "application/json"})
    assert ok.status_code == 200


@pytest.mark.parametrize("path", ["/v1/decide/slot", "/v1/decide/rank", "/v1/feedback", "/v1/experiments"])
def test_deeply_nested_json_gets_422_not_500(client: tuple[TestClient, Path], path: str) -> None:
    c, _ = client
    r = c.post(path, content=NESTED, headers={**ADMIN, "content-type": "application/json"})
    assert r.status_code == 422, r.text
    _shape(r.json())
    assert "nested deeper than" in r.json()["message"]


def test_feedback_for_a_problem_not_served_is_refused(client: tuple[TestClient, Path]) -> None:
    c, _ = client
    body = {"request_id": "r1", "timestamp": "2026-12-04T10:00:00Z", "user_id": "u1", "signals": {"click": 1.0}}
    assert c.post("/v1/feedback", json={**body, "problem": "slot"}).status_code == 202
    r = c.post("/v1/feedback", json={**body, "problem": "rank"})
    assert r.status_code == 422 and r.json()["message"].startswith("body.problem: unknown problem 'rank'")
    assert c.post("/v1/feedback", json={**body, "problem": "nope"}).status_code == 422


def test_every_error_has_one_shape(client: tuple[TestClient, Path]) -> None:
    c, _ = client
    for r in (
        c.get("/v1/nowhere"),
        c.get("/v1/models/slot"),  # no key: 401
        c.get("/v1/models/ranking", headers=ADMIN),  # 404
        c.post("/v1/decide/slot", json={**slot_body("u"), "session_depth": -1}),  # 422
        c.put("/v1/decide/slot", json=slot_body("u")),  # 405
    ):
        assert 400 <= r.status_code < 500, r.text
        _shape(r.json())


def test_promote_and_rollback_to_an_unloadable_version_answer_409(client: tuple[TestClient, Path]) -> None:
    c, home = client
    registry = ModelRegistry(home / "registry")
    register_policy(registry, "slot", "v3", seed=3)
    (home / "registry" / "slot" / "versions" / "v3" / "model.onnx").write_bytes(b"garbage")
    r = c.post("/v1/models/slot/promote", json={"version": "v3"}, headers=ADMIN)
    assert r.status_code == 409 and "v3" in r.json()["message"], r.text
    for traversal in ("../../x", "..", "a/b"):
        r = c.post("/v1/models/slot/promote", json={"version": traversal}, headers=ADMIN)
        assert r.status_code == 422, r.text
    assert c.post("/v1/models/slot/rollback", headers=ADMIN).status_code == 409  # no earlier version
    assert c.post("/v1/models/slot/promote", json={"version": "v2"}, headers=ADMIN).status_code == 200
    (home / "registry" / "slot" / "versions" / "v1" / "model.onnx").write_bytes(b"garbage")
    r = c.post("/v1/models/slot/rollback", headers=ADMIN)
    assert r.status_code == 409, r.text
    assert registry.current_version("slot") == "v2"
    assert c.get("/v1/models/slot", headers=ADMIN).json()["version"] == "v2"


def test_secrets_stay_out_of_reprs() -> None:
    cfg = DeployConfig(serving_url="http://127.0.0.1:1", admin_api_key="very-secret-admin-key")
    assert "very-secret-admin-key" not in repr(cfg) and "very-secret-admin-key" not in str(cfg)
    assert "decide-secret" not in repr(TrafficConfig("http://127.0.0.1:1", api_key="decide-secret"))
    settings = ServingSettings(admin_api_keys="k-one,k-two", decide_api_key="k-three")  # type: ignore[arg-type]
    assert not any(k in repr(settings) for k in ("k-one", "k-two", "k-three"))


def test_readiness_per_configured_problem(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    register_policy(registry, "slot", "v1", promote=True)  # allocate has no promoted model
    settings = ServingSettings(home=tmp_path, problems=["slot", "allocate"], registry_watch_s=0.0, ort_cuda="never")
    with TestClient(create_app(settings, producer=NullProducer(), feature_reader=None)) as c:
        whole = c.get("/readyz")
        assert whole.status_code == 503 and whole.json()["models"] == {"slot": True, "allocate": False}
        assert c.get("/readyz", params={"problem": "slot"}).status_code == 200
        assert c.get("/readyz", params={"problem": "allocate"}).status_code == 503
        assert c.get("/readyz", params={"problem": "rank"}).status_code == 404  # not configured here
    only_slot = settings.model_copy(update={"problems": ["slot"]})
    with TestClient(create_app(only_slot, producer=NullProducer(), feature_reader=None)) as c:
        assert c.get("/readyz").status_code == 200, "problems not configured do not count"


def _slot_with(audience: object = None, **top: object) -> dict:  # type: ignore[type-arg]
    body = {**slot_body("u-types"), **top}
    if audience is not None:
        body["live_candidates"][0]["audience"] = audience
    return body


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (_slot_with(session_depth=True), ["body", "session_depth"]),
        (_slot_with(session_depth="3"), ["body", "session_depth"]),
        (_slot_with(hour_of_day=False), ["body", "hour_of_day"]),
        (_slot_with(audience=False), ["body", "live_candidates", 0, "audience"]),
    ],
)
def test_booleans_and_strings_are_not_numbers(client: tuple[TestClient, Path], body: dict, loc: list) -> None:  # type: ignore[type-arg]
    c, _ = client
    r = c.post("/v1/decide/slot", json=body)
    assert r.status_code == 422, r.text
    _shape(r.json())
    assert r.json()["detail"][0]["loc"] == loc, r.json()


def test_integers_may_be_written_as_whole_floats(client: tuple[TestClient, Path]) -> None:
    c, _ = client
    r = c.post("/v1/decide/slot", json=_slot_with(session_depth=3.0))
    assert r.status_code == 200, r.text


def test_feedback_signals_refuse_booleans(client: tuple[TestClient, Path]) -> None:
    c, _ = client
    body = {
        "request_id": "r-bool",
        "timestamp": "2026-12-04T10:00:00Z",
        "user_id": "u",
        "signals": {"watch_time": 3.0, "session_end": True},
    }
    r = c.post("/v1/feedback", json=body)
    assert r.status_code == 422 and "session_end" in r.json()["message"], r.text


def test_405_lists_every_method_of_the_path(client: tuple[TestClient, Path]) -> None:
    c, _ = client
    r = c.request("OPTIONS", "/v1/experiments", headers=ADMIN)
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}, r.headers


def test_a_timestamp_must_be_text_not_unix_seconds(client: tuple[TestClient, Path]) -> None:
    c, _ = client
    body = {"request_id": "r-ts", "timestamp": 0, "user_id": "u", "signals": {"click": 1.0}}
    r = c.post("/v1/feedback", json=body)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "timestamp"], r.text
