"""Ingestion rate (events/s) next to the raw kafka-python consume rate, both measured in this run.

    python -m benchmarks.ingest [--events 100000] [--repeats 3]

One embedded Tansu broker, one partition per topic, N decision events
produced once. Then, alternately and `repeats` times: (a) a bare kafka-python
consumer reads all N messages (explicit assignment, no processing) and (b)
`pipelines.jobs.ingest` in once mode ingests all N into a fresh lake
(validation, Parquet, fsync, manifest, group commit). Medians are reported;
the goal is ingestion ≥ 80% of the bare consume rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import Metric, median, write_result

DECISIONS = "bench.decisions"
FEEDBACK = "bench.feedback"


def _events(n: int) -> list[tuple[bytes, bytes]]:
    from models.events import DecisionEvent, to_json

    t0 = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    out = []
    for i in range(n):
        e = DecisionEvent(
            request_id=f"r{i}",
            timestamp=t0 + dt.timedelta(milliseconds=i),
            problem="rank",
            user_id=f"u{i % 5000}",
            session_id=f"s{i % 20000}",
            policy_name="tscac",
            policy_version="3",
            experiment="e1",
            arm="treatment",
            observation=[0.125] * 24,
            action=[0.5] * 18,
            log_density=-3.25,
        )
        out.append((e.user_id.encode(), to_json(e)))
    return out


def _raw_consume(bootstrap: str, n: int) -> float:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=5000, fetch_max_wait_ms=200,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )  # fmt: skip
    try:
        consumer.assign([TopicPartition(DECISIONS, 0)])
        consumer.seek_to_beginning()
        got, t0 = 0, time.perf_counter()
        while got < n:
            for msgs in consumer.poll(timeout_ms=500).values():
                got += len(msgs)
        return n / (time.perf_counter() - t0)
    finally:
        consumer.close()


def _ingest(bootstrap: str, n: int) -> float:
    from pipelines.jobs.ingest import IngestConfig, ingest

    folder = Path(tempfile.mkdtemp(prefix="troupe-bench-ingest-"))
    try:
        cfg = IngestConfig(bootstrap, folder, decisions_topic=DECISIONS, feedback_topic=FEEDBACK, progress_every_s=3600)
        t0 = time.perf_counter()
        report = ingest(cfg)
        seconds = time.perf_counter() - t0
        if sum(report.rows.values()) != n:
            raise RuntimeError(f"ingested {report.rows}, expected {n}")
        return n / seconds
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    from kafka import KafkaProducer

    from infra.broker import EmbeddedBroker, create_topics

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap_servers, {DECISIONS: 1, FEEDBACK: 1})
        producer = KafkaProducer(
            bootstrap_servers=broker.bootstrap_servers, acks="all", linger_ms=20, batch_size=256 * 1024
        )
        for key, value in _events(args.events):
            producer.send(DECISIONS, value=value, key=key)
        producer.flush()
        producer.close()
        raw, ing = [], []
        for _ in range(args.repeats):
            raw.append(_raw_consume(broker.bootstrap_servers, args.events))
            ing.append(_ingest(broker.bootstrap_servers, args.events))
            print(f"raw consume {raw[-1]:,.0f}/s  ingest {ing[-1]:,.0f}/s", flush=True)
    path = write_result(
        "ingest",
        [
            Metric(
                "ingest.events_per_s",
                median(ing),
                "events/s",
                baseline=("kafka_python.consume_per_s", median(raw)),
                goal=(">=", 0.8 * median(raw)),
                note=f"{args.events} rank decisions (~500 B), 1 partition, medians of {args.repeats} alternating runs; "
                f"paired ratios {[round(i / r, 3) for i, r in zip(ing, raw, strict=True)]}; goal = 80% of the baseline",
            )
        ],
        command=f"python -m benchmarks.ingest --events {args.events} --repeats {args.repeats}",
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
