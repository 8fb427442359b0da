"""serving/producer.py against the real Tansu broker: direct delivery, outage spooling, ordered replay."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from infra.broker import EmbeddedBroker
from serving.producer import DeliveryReport, DiskSpool, EventProducer, ProducerConfig, _Record
from tests.conftest import DECISIONS_TOPIC

FAST = {"request_timeout_ms": 800, "delivery_timeout_ms": 1500, "retry_interval_s": 0.3, "replay_chunk": 50}


def consume_all(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0
) -> list[tuple[int, int, bytes, bytes]]:
    """(partition, offset, key, value) of every message, read with explicit assignment."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=500)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        consumer.seek_to_beginning()
        out: list[tuple[int, int, bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for tp, msgs in consumer.poll(timeout_ms=300).items():
                out += [(tp.partition, m.offset, m.key, m.value) for m in msgs]
            if len(out) >= expected:
                time.sleep(0.3)  # a short grace period shows up extra messages, if any
                for tp, msgs in consumer.poll(timeout_ms=300).items():
                    out += [(tp.partition, m.offset, m.key, m.value) for m in msgs]
                break
        return out
    finally:
        consumer.close()


def assert_per_key_order(messages: list[tuple[int, int, bytes, bytes]], sent: dict[bytes, list[bytes]]) -> None:
    """Each key's first occurrences, in offset order, equal the order the key's values were sent."""
    by_key: dict[bytes, list[tuple[int, bytes]]] = defaultdict(list)
    for _part, off, key, value in messages:
        by_key[key].append((off, value))
    for key, values in sent.items():
        seen: list[bytes] = []
        for _off, v in sorted(by_key[key]):
            if v not in seen:
                seen.append(v)
        assert seen == values, f"key {key!r}: delivered order differs from sent order"


def test_direct_delivery_acks_and_callbacks(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = "producer.direct"
    from infra.broker import create_topics

    create_topics(kafka_broker.bootstrap_servers, {topic: 4})
    reports: list[DeliveryReport] = []
    cfg = ProducerConfig(kafka_broker.bootstrap_servers, tmp_path / "spool", **FAST)  # type: ignore[arg-type]
    sent: dict[bytes, list[bytes]] = defaultdict(list)
    with EventProducer(cfg, on_delivery=reports.append) as producer:
        for i in range(300):
            key, value = f"user-{i % 7}".encode(), f"event-{i}".encode()
            assert producer.send(topic, value, key=key)
            sent[key].append(value)
        assert producer.flush(20)
        assert producer.healthy()
        assert producer.counters() == {"sent": 300, "spooled": 0, "replayed": 0, "dropped": 0, "corrupt": 0}
    assert len(reports) == 300 and all(r.error is None and r.offset is not None for r in reports)
    messages = consume_all(kafka_broker.bootstrap_servers, topic, 300)
    assert sorted(m[3] for m in messages) == sorted(v for vs in sent.values() for v in vs)
    # Keyed by user: one user's events share a partition.
    assert all(len({m[0] for m in messages if m[2] == k}) == 1 for k in sent)
    assert_per_key_order(messages, sent)


def test_outage_spools_then_replays_everything_in_order(fresh_kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    broker = fresh_kafka_broker
    cfg = ProducerConfig(broker.bootstrap_servers, tmp_path / "spool", **FAST)  # type: ignore[arg-type]
    sent: dict[bytes, list[bytes]] = defaultdict(list)

    def send(i: int, producer: EventProducer) -> None:
        key, value = f"user-{i % 5}".encode(), f"event-{i}".encode()
        t0 = time.perf_counter()
        assert producer.send(DECISIONS_TOPIC, value, key=key)
        # Never blocks the caller, outage or not.
        assert time.perf_counter() - t0 < 0.05
        sent[key].append(value)

    with EventProducer(cfg) as producer:
        for i in range(50):
            send(i, producer)
        assert producer.flush(10)
        broker.freeze()
        try:
            for i in range(50, 250):
                send(i, producer)
                if i % 50 == 0:
                    time.sleep(0.2)
            deadline = time.monotonic() + 10
            while producer.counters()["spooled"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # let the rest reach the spool
            assert not producer.healthy()
            assert producer.spool_size() > 0
            spool_files = list((tmp_path / "spool").rglob("segment-*.spool"))
            assert spool_files and sum(f.stat().st_size for f in spool_files) > 0
        finally:
            broker.thaw()
        assert producer.flush(30), f"not drained: {producer.counters()}, spool {producer.spool_size()}"
        counts = producer.counters()
        assert producer.healthy() and producer.spool_size() == 0
    assert counts["dropped"] == 0
    assert counts["sent"] + counts["replayed"] == 250
    assert counts["replayed"] == counts["spooled"] > 0
    messages = consume_all(broker.bootstrap_servers, DECISIONS_TOPIC, 250)
    assert {m[3] for m in messages} == {v for vs in sent.values() for v in vs}
    assert_per_key_order(messages, sent)
    assert not list((tmp_path / "spool").rglob("segment-*.spool")), "replayed segments are deleted"


def test_spool_left_by_an_earlier_process_is_replayed_first(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = "producer.restart"
    from infra.broker import create_topics

    create_topics(kafka_broker.bootstrap_servers, {topic: 1})
    spool = tmp_path / "spool"
    # What a process that crashed during an outage leaves behind, torn last record included.
    earlier = DiskSpool(spool, 1 << 20)
    earlier.append([_Record(topic, b"u", f"old-{i}".encode()) for i in range(40)])
    earlier.close()
    seg = next(spool.glob("segment-*.spool"))
    with seg.open("ab") as f:
        f.write(b"\x00\x00\x01\x00torn")
    producer = EventProducer(ProducerConfig(kafka_broker.bootstrap_servers, spool, **FAST)).start()  # type: ignore[arg-type]
    assert producer.spool_size() == 40 and not producer.healthy()
    for i in range(10):
        producer.send(topic, f"new-{i}".encode(), key=b"u")
    assert producer.flush(30)
    producer.close()
    assert producer.counters()["replayed"] >= 40
    messages = consume_all(kafka_broker.bootstrap_servers, topic, 50)
    assert [m[3] for m in sorted(messages, key=lambda m: m[1])] == [f"old-{i}".encode() for i in range(40)] + [
        f"new-{i}".encode() for i in range(10)
    ]
