"""Shared fixtures. Real components only: a component that cannot start fails the test with its reason."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.broker import EmbeddedBroker, create_topics
from models.settings import TroupeSettings, get_settings

DECISIONS_TOPIC = "troupe.decisions.v1"
FEEDBACK_TOPIC = "troupe.feedback.v1"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A real Tansu broker on a free loopback port for the whole session, topics created, always stopped.

    Tests that freeze the broker or need a private one use `fresh_kafka_broker`.
    """
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    broker = EmbeddedBroker(log_path=log).start()
    try:
        create_topics(broker.bootstrap_servers, {DECISIONS_TOPIC: 4, FEEDBACK_TOPIC: 4})
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def fresh_kafka_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A private broker for one test (freeze/thaw, topic recreation)."""
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    try:
        create_topics(broker.bootstrap_servers, {DECISIONS_TOPIC: 4, FEEDBACK_TOPIC: 4})
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def troupe_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private TROUPE_HOME for one test; get_settings() sees it."""
    home = tmp_path / "troupe-home"
    home.mkdir()
    monkeypatch.setenv("TROUPE_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def settings(troupe_home: Path, kafka_broker: EmbeddedBroker) -> TroupeSettings:
    """Settings pointing at the session broker and a private home."""
    return TroupeSettings(home=troupe_home, kafka_bootstrap_servers=kafka_broker.bootstrap_servers)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests are the only tests allowed to skip: when no CUDA device is present."""
    has_gpu = os.path.exists("/dev/nvidia0") or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if has_gpu:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
