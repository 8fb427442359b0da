"""MA-RDPG served: per-stage ONNX with a message, the session's message in the real Redis StateStore.

Real app, real Kafka (session broker), real Feast (SQLite), Redis on 127.0.0.1:6379 (db 7, a private prefix).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from infra.broker import EmbeddedBroker
from models.problems import RANK
from models.registry import ModelRegistry
from serving.app import create_app
from serving.rank_messages import MESSAGE_KEY
from serving.settings import ServingSettings
from serving.state_store import StateStore
from tests.support.requests import rank_body
from tests.support.serving import build_feast_store
from training.algorithms import ma_rdpg
from training.export import register_policy
from training.rl.task import TaskSpec

URL = "redis://127.0.0.1:6379/7"


@dataclass
class Served:
    client: TestClient
    store: StateStore
    message_size: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, kafka_broker: EmbeddedBroker) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("rank-messages")
    # Untrained, not started at the default weights: the actions depend on the message.
    module = ma_rdpg.MARDPG(
        TaskSpec.from_problem(RANK, multi_agent=True), ma_rdpg.MARDPGConfig(message_size=8, init_at_default=False)
    )
    files = ma_rdpg.export_for_serving(module, home / "export")
    registry = ModelRegistry(home / "registry")
    register_policy(registry, RANK, "ma_rdpg", "v1", files)
    registry.promote("rank", "v1")
    prefix = f"test-msg-{uuid.uuid4().hex[:10]}"
    settings = ServingSettings(
        home=home,
        kafka_bootstrap_servers=kafka_broker.bootstrap_servers,
        feast_repo=build_feast_store(home / "feast"),
        exploration_seed=0,
        exploration_std_scale=0.0,  # greedy: equal messages give equal weights
        inference_deadline_ms=1000.0,
        state_store_url=URL,
        state_store_prefix=prefix,
    )
    store = StateStore(URL, prefix).start()
    try:
        with TestClient(create_app(settings)) as client:
            yield Served(client, store, module.state_size)
    finally:
        for key in store._redis.scan_iter(match=f"{prefix}:*"):
            store._redis.delete(key)
        store.close()


def _decide(served: Served, session_id: str | None) -> dict[str, Any]:
    body = rank_body("known-high")
    if session_id is not None:
        body["session_id"] = session_id
    r = served.client.post("/v1/decide/rank", json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert out["fallback"] is False and out["policy_version"] == "v1"
    return out


def test_the_session_message_is_carried_across_requests_and_expires(served: Served) -> None:
    first = _decide(served, "session-a")
    stored = served.store.get_session("session-a")
    assert stored is not None and stored["version"] == "v1" and len(stored[MESSAGE_KEY]) == served.message_size
    assert any(v != 0.0 for v in stored[MESSAGE_KEY])
    key = served.store.key("session", served.store._session_name("session-a"))
    assert 0 < served.store._redis.pttl(key) <= 1800 * 1000  # expiring
    second = _decide(served, "session-a")
    # the same request with the carried message: other weights than from the session's zero message
    assert second["stage_weights"] != first["stage_weights"]
    assert served.store.get_session("session-a")[MESSAGE_KEY] != stored[MESSAGE_KEY]
    # a new session, and a request without a session id, start from the zero message
    assert _decide(served, "session-b")["stage_weights"] == first["stage_weights"]
    assert _decide(served, None)["stage_weights"] == first["stage_weights"]


@pytest.mark.parametrize(
    "stored",
    [{"version": "v0", MESSAGE_KEY: [0.5] * 4}, {"version": "v1", MESSAGE_KEY: [0.5] * 3}, {"version": "v1"}],
    ids=["another-version", "wrong-size", "no-message"],
)
def test_a_message_that_does_not_fit_the_served_version_falls_back_to_zero(
    served: Served, stored: dict[str, Any]
) -> None:
    zero = _decide(served, None)["stage_weights"]
    if stored.get(MESSAGE_KEY) is not None and stored["version"] == "v0":
        stored[MESSAGE_KEY] = [0.5] * served.message_size  # the right size, but for another policy version
    served.store.set_session("session-odd", stored, ttl_s=60)
    assert _decide(served, "session-odd")["stage_weights"] == zero
