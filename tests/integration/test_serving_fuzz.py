"""Fuzz the decision API over its own OpenAPI schema (schemathesis strategies, valid and invalid): never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core import NotSet
from schemathesis.generation import GenerationMode

from infra.broker import EmbeddedBroker
from models.registry import ModelRegistry
from serving.app import create_app
from serving.settings import ServingSettings
from tests.support.onnx_models import register_policy

ADMIN_KEY = "fuzz-admin-key"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, kafka_broker: EmbeddedBroker) -> Iterator[TestClient]:
    home: Path = tmp_path_factory.mktemp("fuzz-home")
    registry = ModelRegistry(home / "registry")
    for problem in ("rank", "slot", "allocate"):
        register_policy(registry, problem, "v1", promote=True)
    settings = ServingSettings(
        home=home,
        kafka_bootstrap_servers=kafka_broker.bootstrap_servers,
        admin_api_keys=[ADMIN_KEY],
        registry_watch_s=0.0,  # type: ignore[list-item]
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_no_request_generated_from_the_openapi_schema_gets_a_5xx(client: TestClient) -> None:
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    strategies = [
        op.as_strategy(generation_mode=mode)
        for op in (result.ok() for result in schema.get_all_operations())
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if op.method.upper() != "GET" or mode == GenerationMode.POSITIVE
    ]
    seen: dict[int, int] = {}

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=st.one_of(strategies))
    def check(case: schemathesis.Case) -> None:
        headers = {**(case.headers or {}), "X-API-Key": ADMIN_KEY}
        kwargs = {"json": case.body} if not isinstance(case.body, NotSet | bytes) else {}
        r = client.request(case.method, case.formatted_path, headers=headers, params=case.query, **kwargs)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (
            f"{case.method} {case.formatted_path} {case.body!r} → {r.status_code} {r.text[:300]}"
        )

    check()
    assert any(code == 200 for code in seen) and any(code == 422 for code in seen), seen
