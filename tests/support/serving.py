"""Helpers for the serving tests: a real Feast SQLite store, an in-thread uvicorn, Kafka reads, load loops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# Users the Feast fixture knows: id → (activity group index, recent rates, live affinity)
KNOWN_USERS: dict[str, tuple[int, list[float], list[float]]] = {
    "known-high": (2, [1.5, 0.6, 0.12, 0.02, 0.04, 0.01], [0.8, 0.2]),
    "known-low": (0, [0.2, 0.1, 0.01, 0.0, 0.0, 0.0], [0.0, 0.05]),
}
# Their live sequences: (live watch s, seconds before the store was built) of the last exposures, most recent
# first; stored as (watch s, Unix time) pairs with (0, 0) padding. Users not listed have no exposure.
KNOWN_LIVE_SEQUENCES: dict[str, list[tuple[float, float]]] = {"known-high": [(150.0, 3600.0), (0.0, 2 * 86_400.0)]}


def build_feast_store(repo: Path, users: dict[str, tuple[int, list[float], list[float]]] = KNOWN_USERS) -> Path:
    """A real Feast repo (local provider, SQLite online store) from the project's declarations in feature_store/.

    Applies feature_store's entities, views and services (rank_v1, slot_v1,
    slot_v2, allocate_v1) and writes one `user_stats` row per user straight to the
    online store; the other views stay empty (serving reads only user features).
    """
    import pandas as pd
    from feast import FeatureStore

    from feature_store.entities import entities
    from feature_store.feature_services import feature_services
    from feature_store.feature_views import feature_views
    from feature_store.sources import sources

    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        f"project: troupe_serving_test\nprovider: local\nregistry:\n  registry_type: file\n  path: {repo}/registry.db\n"
        f"offline_store:\n  type: file\nonline_store:\n  type: sqlite\n  path: {repo}/online.db\n"
        "entity_key_serialization_version: 3\n"
    )
    ents = entities()
    views = feature_views(ents, sources(repo / "offline"))
    store = FeatureStore(repo_path=str(repo))
    store.apply([*ents.values(), *views.values(), *feature_services(views)])
    now = pd.Timestamp.now(tz="UTC")
    df = pd.DataFrame({"user_id": list(users), "event_timestamp": [now] * len(users), "created": [now] * len(users)})
    for f in views["user_stats"].features:
        if f.name == "user_activity_group":
            df[f.name] = [u[0] for u in users.values()]
        elif f.name == "user_recent_rates":
            df[f.name] = [u[1] for u in users.values()]
        elif f.name == "user_live_affinity":
            df[f.name] = [u[2] for u in users.values()]
        elif f.name == "user_live_sequence":
            df[f.name] = [_stored_live_sequence(KNOWN_LIVE_SEQUENCES.get(u, []), now.timestamp()) for u in users]
        else:
            df[f.name] = 0 if "requests" in f.name else 0.0
    store.write_to_online_store("user_stats", df)
    return repo


def _stored_live_sequence(exposures: list[tuple[float, float]], now: float) -> list[float]:
    from models.problems import SLOT_LIVE_SEQUENCE_LENGTH

    pairs = [(watch, now - ago) for watch, ago in exposures]
    pairs += [(0.0, 0.0)] * (SLOT_LIVE_SEQUENCE_LENGTH - len(pairs))
    return [v for pair in pairs for v in pair]


class NullProducer:
    """Counts events and drops them (the decision log's `EventProducer` protocol), where only inference matters;
    decision logging is covered with real Kafka elsewhere."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> bool:
        self.sent += 1
        return True

    def healthy(self) -> bool:
        return True

    def spool_size(self) -> int:
        return 0

    def close(self) -> None:
        return None


@contextlib.contextmanager
def uvicorn_thread(app: Any, http: str | None = None) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, in a background thread; yields its base URL.

    `http`: uvicorn's protocol; by default the one `troupe serve` runs (serving/http_protocol.py)."""
    import uvicorn

    from serving.http_protocol import PROTOCOL

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=http or PROTOCOL, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start (see the log above)")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def read_topic(bootstrap: str, topic: str, want: set[str], timeout_s: float = 30.0) -> dict[str, list[dict[str, Any]]]:
    """Events of `topic` whose request_id is in `want`, by request_id; reads until all are seen or timeout."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=500)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        found: dict[str, list[dict[str, Any]]] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not want.issubset(found):
            for records in consumer.poll(timeout_ms=300, max_records=5000).values():
                for r in records:
                    ev = json.loads(r.value)
                    if ev.get("request_id") in want:
                        found.setdefault(ev["request_id"], []).append(ev)
        return found
    finally:
        consumer.close()


@dataclass
class LoadResult:
    statuses: list[int] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    durations_s: list[float] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors) + sum(1 for s in self.statuses if s != 200)


async def load(
    base_url: str,
    path: str,
    body: Callable[[int], dict[str, Any]],
    stop: Callable[[], bool],
    concurrency: int = 8,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Closed-loop load: `concurrency` clients POST until `stop()`; every response is kept."""
    result = LoadResult()
    counter = iter(range(10**9))

    async def client(c: httpx.AsyncClient) -> None:
        while not stop():
            i = next(counter)
            try:
                t0 = time.perf_counter()
                r = await c.post(path, json=body(i), headers=headers)
                result.durations_s.append(time.perf_counter() - t0)
                result.statuses.append(r.status_code)
                result.bodies.append(r.json())
            except httpx.HTTPError as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")

    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as c:
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
    return result
