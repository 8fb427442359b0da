"""FastDecide answers the decide requests exactly as the routes behind it would (serving/api/fast_decide.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import serving.api.decide
from models.registry import ModelRegistry
from serving.api.fast_decide import FastDecide
from serving.app import create_app
from serving.settings import ServingSettings
from tests.support.onnx_models import register_policy
from tests.support.requests import allocate_body, rank_body, slot_body
from tests.support.serving import NullProducer

KEY = "decide-key-1"


def _app(home: Path, fast: bool) -> FastAPI:
    settings = ServingSettings(
        home=home,
        registry_watch_s=0,
        exploration_seed=0,  # both apps draw the same exploration noise
        decide_api_key=KEY,  # type: ignore[arg-type]
        max_body_bytes=64 * 1024,
        ort_cuda="never",
    )
    app = create_app(settings, producer=NullProducer(), feature_reader=None)
    if not fast:  # the middleware stack is built on the first request: removing it now leaves the routes
        app.user_middleware = [m for m in app.user_middleware if m.cls is not FastDecide]
    return app


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, TestClient]]:
    home = tmp_path_factory.mktemp("fast-decide")
    registry = ModelRegistry(home / "registry")
    for problem in ("rank", "slot", "allocate"):
        register_policy(registry, problem, "v1", promote=True)
    with TestClient(_app(home, fast=True)) as fast, TestClient(_app(home, fast=False)) as routes:
        yield fast, routes


def _requests() -> list[tuple[str, bytes, dict[str, str]]]:
    """(path, body, headers): valid decisions and every kind of refusal."""
    key = {"X-API-Key": KEY, "Content-Type": "application/json"}
    valid = [
        ("/v1/decide/rank", {**rank_body("u1", 50, seed=1), "request_id": "r-rank"}),
        ("/v1/decide/slot", {**slot_body("u2", seed=2), "request_id": "r-slot"}),
        ("/v1/decide/allocate", {**allocate_body("u3", seed=3), "request_id": "r-alloc"}),
    ]
    out = [(path, json.dumps(body).encode(), key) for path, body in valid]
    slot = slot_body("u4")
    out += [
        ("/v1/decide/slot", json.dumps(slot).encode(), {"Content-Type": "application/json"}),  # no key: 401
        ("/v1/decide/slot", json.dumps(slot).encode(), {**key, "X-API-Key": "wrong"}),  # 401
        ("/v1/decide/slot", json.dumps({**slot, "session_depth": -1}).encode(), key),  # 422 naming the field
        ("/v1/decide/rank", json.dumps(rank_body("u5", 3)).replace("0.", "NaN, 0.", 1).encode(), key),  # not JSON
        ("/v1/decide/rank", json.dumps({**rank_body("u5", 3), "extra": 1}).encode(), key),  # unknown field
        ("/v1/decide/rank", json.dumps(rank_body("u6", 2_001)).encode(), key),  # over 64 KB: 413
        ("/v1/decide/allocate", b"{", key),  # broken JSON
        ("/v1/decide/nope", b"{}", key),  # not a decide route: 404 from routing
    ]
    return out


def _comparable(body: bytes) -> Any:
    doc = json.loads(body)
    if isinstance(doc, dict):
        doc.pop("latency_ms", None)  # the one field that differs by how long the call took
    return doc


def test_fast_path_and_routes_answer_alike(clients: tuple[TestClient, TestClient]) -> None:
    fast, routes = clients
    statuses = []
    for path, body, headers in _requests():
        a = fast.post(path, content=body, headers=headers)
        b = routes.post(path, content=body, headers=headers)
        assert a.status_code == b.status_code, (path, a.text, b.text)
        assert _comparable(a.content) == _comparable(b.content), path
        assert a.headers.get("content-type") == b.headers.get("content-type")
        assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate")
        statuses.append(a.status_code)
    assert statuses == [200, 200, 200, 401, 401, 422, 422, 422, 413, 422, 404]


def test_decide_requests_do_not_reach_the_routes(
    clients: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, routes = clients

    async def unreachable(*_: Any, **__: Any) -> None:
        raise AssertionError("the route answered a decide request")

    monkeypatch.setattr(serving.api.decide, "_decide", unreachable)
    ok = fast.post("/v1/decide/allocate", json=allocate_body("u7"), headers={"X-API-Key": KEY})
    assert ok.status_code == 200 and ok.json()["problem"] == "allocate"
    with pytest.raises(AssertionError, match="the route answered"):
        routes.post("/v1/decide/allocate", json=allocate_body("u7"), headers={"X-API-Key": KEY})
