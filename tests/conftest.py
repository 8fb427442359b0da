"""Shared fixtures. Real components only: a component that cannot start fails the test with its reason."""

from __future__ import annotations

import os

# One BLAS thread before numpy loads: on the 2-core CI machine under parallel load,
# OpenBLAS's second thread made small solves ~100× slower (Cholesky 168×168: 83 ms vs 0.9 ms).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

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


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private AIRFLOW_HOME for the whole session, its SQLite DB migrated once (pipelines/airflow_runtime.py).

    Airflow reads its configuration once per process, so every test that uses Airflow shares this one.
    """
    from pipelines.airflow_runtime import prepare_airflow

    home = tmp_path_factory.mktemp("airflow")
    prepare_airflow(home)
    return home


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests are the only tests allowed to skip: when no CUDA device is present."""
    has_gpu = os.path.exists("/dev/nvidia0") or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if has_gpu:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
