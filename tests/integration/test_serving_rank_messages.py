"""MA-RDPG served: per-stage ONNX with a message, the session's message in the real Redis StateStore.

Real app, real Kafka (session broker), real Feast (SQLite), Redis on 127.0.0.1:6379 (db 7, a private prefix).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import redis.asyncio
from fastapi.testclient import TestClient

from infra.broker import EmbeddedBroker
from models.problems import RANK
from models.registry import ModelRegistry
from serving.app import create_app
from serving.rank_messages import MESSAGE_KEY, SessionMessages
from serving.settings import ServingSettings
from serving.state_store import StateStore
from tests.support.requests import rank_body
from tests.support.serving import build_feast_store
from tests.support.waiting import until
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
    # write-behind (serving/rank_messages.py): in Redis within flush_after_s of the answer
    assert until(lambda: served.store.get_session("session-a") is not None)
    stored = served.store.get_session("session-a")
    assert stored is not None and stored["version"] == "v1" and len(stored[MESSAGE_KEY]) == served.message_size
    assert any(v != 0.0 for v in stored[MESSAGE_KEY])
    key = served.store.key("session", served.store._session_name("session-a"))
    assert 0 < served.store._redis.pttl(key) <= 1800 * 1000  # expiring
    second = _decide(served, "session-a")
    # the same request with the carried message: other weights than from the session's zero message
    assert second["stage_weights"] != first["stage_weights"]
    assert until(lambda: served.store.get_session("session-a")[MESSAGE_KEY] != stored[MESSAGE_KEY])
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
    session = f"session-odd-{uuid.uuid4().hex[:8]}"  # its own: no earlier decision's write-behind lands on it
    served.store.set_session(session, stored, ttl_s=60)
    assert _decide(served, session)["stage_weights"] == zero


def test_write_behind_reads_its_own_writes_at_once_and_other_workers_within_the_flush_delay() -> None:
    prefix = f"test-msg-wb-{uuid.uuid4().hex[:10]}"
    store = StateStore(URL, prefix).start()
    message = np.arange(4, dtype=np.float32).reshape(1, 4) + 0.5

    async def scenario() -> None:
        worker_a = SessionMessages(store, flush_after_s=0.2)
        worker_b = SessionMessages(store, flush_after_s=0.2)
        try:
            worker_a.save("s1", "v1", message)
            assert store.get_session("s1") is None  # not written before the answer goes out
            own, found = await worker_a.load("s1", "v1", 4)  # the pending SET rides along with this GET
            assert found and np.array_equal(own, message)
            other, found = await worker_b.load("s1", "v1", 4)
            assert found and np.array_equal(other, message)
            # another session's write goes out on its own after flush_after_s when no read comes
            worker_a.save("s2", "v1", message * 2)
            started = time.monotonic()
            while store.get_session("s2") is None and time.monotonic() - started < 3.0:
                await asyncio.sleep(0.01)
            assert store.get_session("s2") is not None and time.monotonic() - started >= 0.15
            # a clean shutdown flushes what is pending
            worker_a.save("s3", "v1", message * 3)
            await worker_a.close()
            assert store.get_session("s3")[MESSAGE_KEY] == (message * 3).reshape(-1).tolist()
        finally:
            await worker_a.close()
            await worker_b.close()

    try:
        asyncio.run(scenario())
    finally:
        for key in store._redis.scan_iter(match=f"{prefix}:*"):
            store._redis.delete(key)
        store.close()


def test_an_unreachable_store_serves_zero_messages_and_drops_writes_with_a_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = StateStore(URL, f"test-msg-down-{uuid.uuid4().hex[:10]}").start()

    async def scenario() -> None:
        messages = SessionMessages(store, flush_after_s=0.05)
        messages._client = redis.asyncio.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens there
        messages.save("s1", "v1", np.ones((1, 4), np.float32))
        zero, found = await messages.load("s1", "v1", 4)  # the pipeline fails: both reported, nothing raised
        assert not found and not zero.any()
        messages.save("s2", "v1", np.ones((1, 4), np.float32))
        await messages.close()

    try:
        with caplog.at_level("WARNING", logger="troupe.serving.rank_messages"):
            asyncio.run(scenario())
    finally:
        store.close()
    events = caplog.text
    assert "rank_message.read_error" in events and events.count("rank_message.write_error") == 2
