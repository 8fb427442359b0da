"""Ingestion against the real broker: exact rows, kill -9 restarts, broker freeze, dead letters, offset resets."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kafka import KafkaAdminClient, KafkaProducer

from infra.broker import EmbeddedBroker, create_topics
from models.events import MAX_EVENT_BYTES, DecisionEvent, FeedbackEvent, to_json
from pipelines.jobs.ingest import (
    MANIFEST_NAME,
    IngestConfig,
    LakeLockedError,
    OffsetsMovedBackwardsError,
    committed_files,
    ingest,
    load_manifest,
    read_committed,
)
from tests.integration._events import decision, feedback

REPO = Path(__file__).resolve().parents[2]


def topics_for(broker: EmbeddedBroker, partitions: int = 4) -> tuple[str, str]:
    """Private topics on the shared broker, so other tests' traffic never mixes in."""
    tag = uuid.uuid4().hex[:8]
    dec, fb = f"it.decisions.{tag}", f"it.feedback.{tag}"
    create_topics(broker.bootstrap_servers, {dec: partitions, fb: partitions})
    return dec, fb


def produce(bootstrap: str, messages: list[tuple[str, bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=2 * MAX_EVENT_BYTES)
    try:
        for topic, key, value in messages:
            producer.send(topic, value=value, key=key)
        producer.flush(30)
    finally:
        producer.close()


def events(dec: str, fb: str, n: int, start: int = 0) -> list[tuple[str, bytes | None, bytes]]:
    out: list[tuple[str, bytes | None, bytes]] = []
    for i in range(start, start + n):
        d = decision(i, problem=("rank", "slot", "allocate")[i % 3])
        out.append((dec, d.user_id.encode(), to_json(d)))
        out.append((fb, d.user_id.encode(), to_json(feedback(d, click=1.0))))
    return out


def test_rows_equal_the_topic_messages_and_a_rerun_adds_nothing(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    dec, fb = topics_for(kafka_broker)
    produce(kafka_broker.bootstrap_servers, events(dec, fb, 300))
    cfg = IngestConfig(
        kafka_broker.bootstrap_servers,
        tmp_path,
        decisions_topic=dec,
        feedback_topic=fb,
        commit_rows=250,
        poll_max_records=100,
    )
    report = ingest(cfg)
    assert report.rows == {dec: 300, fb: 300} and report.dead_letters == 0 and report.commits >= 2
    decisions = read_committed(tmp_path, dec, DecisionEvent)
    feedbacks = read_committed(tmp_path, fb, FeedbackEvent)
    expected_ids = sorted(decision(i, problem=("rank", "slot", "allocate")[i % 3]).request_id for i in range(300))
    assert sorted(decisions["request_id"].to_pylist()) == expected_ids
    assert sorted(feedbacks["request_id"].to_pylist()) == expected_ids
    # Round trip: a row equals the event that was produced.
    row = next(r for r in decisions.to_pylist() if r["request_id"] == decision(4, problem="slot").request_id)
    assert DecisionEvent.model_validate(row) == decision(4, problem="slot")
    # Partitioned topic / problem / date / hour.
    for path in committed_files(tmp_path, dec):
        rel = path.relative_to(tmp_path / "lake").parts
        assert rel[0] == f"topic={dec}" and rel[1].split("=")[1] in {"rank", "slot", "allocate"}
        assert rel[2] == "date=2026-11-20" and rel[3].startswith("hour=")
        problems = set(pq.read_table(path, columns=["problem"])["problem"].to_pylist())
        assert problems == {rel[1].split("=")[1]}
    # Offsets are also committed to the consumer group, for lag monitoring.
    from kafka import KafkaConsumer, TopicPartition

    manifest = load_manifest(tmp_path / "lake")
    watcher = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers, group_id=cfg.group_id)
    try:
        for part, state in manifest["partitions"][dec].items():
            assert (watcher.committed(TopicPartition(dec, int(part))) or 0) == state["next_offset"]
    finally:
        watcher.close()
    assert sum(s["next_offset"] for s in manifest["partitions"][dec].values()) == 300
    again = ingest(cfg)
    assert again.rows == {} and again.dead_letters == 0
    assert read_committed(tmp_path, dec, DecisionEvent).num_rows == 300


def malformed_cases() -> dict[str, tuple[bytes | None, str]]:
    """name → (raw message, field the dead letter must name)."""
    good = json.loads(to_json(decision(1)))
    nan_obs = to_json(decision(2)).replace(b'"observation":[', b'"observation":[NaN,', 1)
    cases: dict[str, tuple[bytes | None, str]] = {
        "bad_json": (b'{"request_id": "r1", ', "<event>"),
        "not_an_object": (b"[1, 2, 3]", "<event>"),
        "unknown_schema_version": (json.dumps({**good, "schema_version": 7}).encode(), "schema_version"),
        "missing_field": (json.dumps({k: v for k, v in good.items() if k != "user_id"}).encode(), "user_id"),
        "ill_typed_field": (json.dumps({**good, "observation": "zero"}).encode(), "observation"),
        "nan": (nan_obs, "<event>"),
        "inf": (json.dumps({**good, "propensity": 1e999}).encode(), "<event>"),
        "out_of_range": (json.dumps({**good, "propensity": 1.5}).encode(), "propensity"),
        "oversized": (json.dumps({**good, "candidate_ids": ["x" * 1000] * 300}).encode(), "<event>"),
        "unknown_problem": (json.dumps({**good, "problem": "../../etc"}).encode(), "problem"),
        "null_value": (None, "<event>"),
        # ~10 KB nested 5,000 deep: json.loads raises RecursionError, which once stopped every topic.
        "deeply_nested": (b'{"request_id": "r", "observation": ' + b"[" * 5000 + b"]" * 5000 + b"}", "<event>"),
        "nested_in_a_field": (json.dumps({**good, "observation": [[[[[[1.0]]]]]]}).encode(), "observation.0"),
        "bad_utf8": (b'{"request_id": "\xff\xfe"}', "<event>"),
    }
    assert len(cases["oversized"][0] or b"") > MAX_EVENT_BYTES
    return cases


def test_every_malformed_case_lands_in_the_dead_letter_dataset(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    dec, fb = topics_for(kafka_broker, partitions=1)
    cases = malformed_cases()
    messages: list[tuple[str, bytes | None, bytes]] = []
    for i, (raw, _) in enumerate(cases.values()):
        d = decision(100 + i)
        messages += [(dec, b"k", to_json(d)), (dec, b"k", raw)]  # type: ignore[list-item]
    produce(kafka_broker.bootstrap_servers, messages)
    report = ingest(IngestConfig(kafka_broker.bootstrap_servers, tmp_path, decisions_topic=dec, feedback_topic=fb))
    # Ingestion kept going: every good message after a bad one is in.
    assert report.rows == {dec: len(cases)} and report.dead_letters == len(cases)
    dead = read_committed(tmp_path, dec, kind="dead_letter").to_pylist()
    assert len(dead) == len(cases)
    by_offset = {row["offset"]: row for row in dead}
    for i, (name, (raw, field)) in enumerate(cases.items()):
        row = by_offset[2 * i + 1]  # produced right after its good twin, one partition
        assert row["raw"] == (raw or b""), name
        assert row["field"] == field, f"{name}: {row['field']} ({row['reason']})"
        assert row["reason"] and row["topic"] == dec and row["partition"] == 0, name
    assert "over the" in by_offset[2 * list(cases).index("oversized") + 1]["reason"]
    assert (
        "NaN" in by_offset[2 * list(cases).index("nan") + 1]["reason"]
        or "nan" in by_offset[2 * list(cases).index("nan") + 1]["reason"].lower()
    )


def _run_ingest_subprocess(home: Path, bootstrap: str, dec: str, fb: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TROUPE_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TROUPE_DECISIONS_TOPIC": dec,
        "TROUPE_FEEDBACK_TOPIC": fb,
        "TROUPE_LOG_LEVEL": "WARNING",
    }
    cmd = [
        sys.executable,
        "-m",
        "pipelines.jobs.ingest",
        "--mode",
        "continuous",
        "--commit-rows",
        "40",
        "--poll-max-records",
        "40",
    ]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_kill_9_at_random_points_loses_and_duplicates_nothing(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    dec, fb = topics_for(kafka_broker)
    rng = random.Random(7)
    data = tmp_path / "data"
    n, per_round, rounds = 0, 300, 4
    for _ in range(rounds):
        # New traffic each round, so every run has work to be killed in the middle of.
        produce(kafka_broker.bootstrap_servers, events(dec, fb, per_round, start=n))
        n += per_round
        proc = _run_ingest_subprocess(tmp_path, kafka_broker.bootstrap_servers, dec, fb)
        before = load_manifest(data / "lake")["seq"] if (data / "lake" / MANIFEST_NAME).exists() else 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if (data / "lake" / MANIFEST_NAME).exists() and load_manifest(data / "lake")["seq"] > before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert load_manifest(data / "lake")["seq"] > before, "the run committed before it was killed"
    report = ingest(IngestConfig(kafka_broker.bootstrap_servers, data, decisions_topic=dec, feedback_topic=fb))
    total = n
    decisions = read_committed(data, dec, DecisionEvent)["request_id"].to_pylist()
    feedbacks = read_committed(data, fb, FeedbackEvent)["request_id"].to_pylist()
    assert len(decisions) == total and len(set(decisions)) == total
    assert len(feedbacks) == total and len(set(feedbacks)) == total
    # Nothing uncommitted is left behind, and every committed file exists.
    lake = data / "lake"
    on_disk = {p.relative_to(lake).as_posix() for p in lake.rglob("*.parquet")}
    assert on_disk == set(load_manifest(lake)["files"])
    assert report.lag == 0


def test_freeze_and_thaw_mid_ingestion_loses_and_duplicates_nothing(
    fresh_kafka_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    broker = fresh_kafka_broker
    dec, fb = "troupe.decisions.v1", "troupe.feedback.v1"
    produce(broker.bootstrap_servers, events(dec, fb, 2000))
    cfg = IngestConfig(
        broker.bootstrap_servers, tmp_path, commit_rows=200, poll_max_records=100, idle_stop_s=30, mode="continuous"
    )
    from pipelines.jobs.ingest import Ingestor

    ingestor = Ingestor(cfg)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ingestor.run()
        except BaseException as exc:  # noqa: BLE001 — re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 20
    while ingestor.report.commits < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    broker.freeze()
    rows_at_freeze = sum(ingestor.report.rows.values())
    time.sleep(2.0)
    broker.thaw()
    produce(broker.bootstrap_servers, events(dec, fb, 200, start=2000))
    deadline = time.monotonic() + 30
    while sum(ingestor.report.rows.values()) < 4400 and time.monotonic() < deadline and not errors:
        time.sleep(0.05)
    ingestor.stop()
    thread.join(30)
    assert not errors, errors
    assert 0 < rows_at_freeze < 4400, "the freeze happened mid-ingestion"
    decisions = read_committed(tmp_path, dec, DecisionEvent)["request_id"].to_pylist()
    assert len(decisions) == 2200 and len(set(decisions)) == 2200
    assert read_committed(tmp_path, fb, FeedbackEvent).num_rows == 2200


def test_offsets_moving_backwards_are_reported_not_skipped(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    dec, fb = topics_for(kafka_broker, partitions=1)
    produce(kafka_broker.bootstrap_servers, events(dec, fb, 30))
    cfg = IngestConfig(kafka_broker.bootstrap_servers, tmp_path, decisions_topic=dec, feedback_topic=fb)
    assert ingest(cfg).rows == {dec: 30, fb: 30}
    # Recreate the decisions topic with fewer messages than were ingested.
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        admin.delete_topics([dec])
    finally:
        admin.close()
    time.sleep(0.5)
    create_topics(kafka_broker.bootstrap_servers, {dec: 1})
    produce(kafka_broker.bootstrap_servers, [m for m in events(dec, fb, 5, start=500) if m[0] == dec])
    with pytest.raises(OffsetsMovedBackwardsError) as info:
        ingest(cfg)
    assert info.value.topic == dec and info.value.partition == 0 and info.value.expected == 30
    assert read_committed(tmp_path, dec, DecisionEvent).num_rows == 30, "nothing was read past the incident"
    # The operator accepts the reset: the new topic's messages are ingested, the incident recorded.
    report = ingest(IngestConfig(**{**cfg.__dict__, "on_offset_reset": "restart"}))
    assert report.rows == {dec: 5} and len(report.resets) == 1
    assert load_manifest(tmp_path / "lake")["resets"][0]["topic"] == dec
    assert read_committed(tmp_path, dec, DecisionEvent).num_rows == 35


def test_a_second_run_on_a_locked_lake_exits_with_a_clear_message_or_waits(
    kafka_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    from pipelines.jobs.ingest import lake_lock

    dec, fb = topics_for(kafka_broker, partitions=2)
    produce(kafka_broker.bootstrap_servers, events(dec, fb, 50))
    cfg = IngestConfig(kafka_broker.bootstrap_servers, tmp_path, decisions_topic=dec, feedback_topic=fb)
    with lake_lock(cfg.lake_dir):  # another writer holds the lake
        with pytest.raises(LakeLockedError, match=r"another ingestion run holds the lake \(pid \d+"):
            ingest(cfg)
        results: list[object] = []
        waiter = threading.Thread(
            target=lambda: results.append(ingest(IngestConfig(**{**cfg.__dict__, "lock_wait_s": 30.0})))
        )
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and not results, "it waits for the lock"
    waiter.join(60)
    assert len(results) == 1
    ids = read_committed(tmp_path, dec, DecisionEvent)["request_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 50
