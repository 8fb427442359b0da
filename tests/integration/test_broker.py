"""The embedded broker: the fixture's real Tansu process, and the `troupe broker` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from infra.broker import EmbeddedBroker, create_topics, status

# A topic of this file's own: the session broker's decision/feedback topics are
# shared with tests that parse every message on them.
TOPIC = "troupe.test.broker"

TROUPE = [sys.executable, "-m", "pipelines.cli"]


def test_fixture_broker_round_trips_messages(kafka_broker: EmbeddedBroker) -> None:
    create_topics(kafka_broker.bootstrap_servers, {TOPIC: 4})
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    for i in range(20):
        producer.send(TOPIC, key=f"user-{i % 3}".encode(), value=f"m{i}".encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers, enable_auto_commit=False)
    parts = [TopicPartition(TOPIC, p) for p in consumer.partitions_for_topic(TOPIC)]
    assert len(parts) == 4
    consumer.assign(parts)
    ends = consumer.end_offsets(parts)
    values = {m.value for tp in parts for m in _drain(consumer, tp, ends[tp])}
    consumer.close()
    assert {f"m{i}".encode() for i in range(20)} <= values


def _drain(consumer: KafkaConsumer, tp: TopicPartition, end: int) -> list:  # type: ignore[type-arg]
    consumer.seek_to_beginning(tp)
    out = []
    while consumer.position(tp) < end:
        out.extend(consumer.poll(timeout_ms=1000).get(tp, []))
    return out


def test_cli_start_status_stop(tmp_path: Path) -> None:
    env = {**os.environ, "TROUPE_HOME": str(tmp_path)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    started = subprocess.run([*TROUPE, "broker", "start"], env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    state = json.loads(started.stdout.strip().splitlines()[-1])
    try:
        assert state["running"] and status(tmp_path / "broker.json")["running"]
        ok = subprocess.run([*TROUPE, "broker", "status"], env=env, capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0
        consumer = KafkaConsumer(bootstrap_servers=state["bootstrap_servers"])
        assert {"troupe.decisions.v1", "troupe.feedback.v1"} <= consumer.topics()
        consumer.close()
    finally:
        stopped = subprocess.run([*TROUPE, "broker", "stop"], env=env, capture_output=True, text=True, timeout=30)
    assert stopped.stdout.strip() == "stopped"
    assert not status(tmp_path / "broker.json")["running"]
    down = subprocess.run([*TROUPE, "broker", "status"], env=env, capture_output=True, text=True, timeout=30)
    assert down.returncode == 1


def test_freeze_and_thaw(fresh_kafka_broker: EmbeddedBroker) -> None:
    fresh_kafka_broker.freeze()
    assert fresh_kafka_broker.process is not None
    stat = Path(f"/proc/{fresh_kafka_broker.process.pid}/stat").read_text()
    assert stat.split(") ", 1)[1][0] == "T"  # stopped
    fresh_kafka_broker.thaw()
    producer = KafkaProducer(bootstrap_servers=fresh_kafka_broker.bootstrap_servers, acks="all")
    producer.send("troupe.decisions.v1", b"after-thaw").get(timeout=10)  # a private broker: nobody else reads it
    producer.close()
