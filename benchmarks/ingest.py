"""Ingestion rate (events/s) next to the raw kafka-python consume rate, both measured in this run.

    python -m benchmarks.ingest [--events 100000] [--repeats 3]

One embedded Tansu broker, one partition per topic, N decision events
produced once. Then, after one untimed warm-up round, alternately and
`repeats` times: (a) a bare kafka-python consumer reads all N messages
(explicit assignment, no processing) and (b) `pipelines.jobs.ingest` in once
mode ingests all N into a fresh lake (validation, Parquet, fsync, manifest,
group commit). Medians are reported;
the goal is ingestion ≥ 80% of the bare consume rate. Both use the same
consumer settings (`CONSUMER_SETTINGS`: poll size, fetch sizes and wait).

A third, informative row, (c) `ingest.unvalidated_parquet_events_per_s`, is
the ceiling of any ingestion that keeps what it reads: the bare consumer of
(a) that also puts each poll's raw message bytes into an Arrow binary column
and writes them as one zstd Parquet file (temp → fsync → rename), with no
parsing or validation at all. Where (c) is itself near 80 % of (a), the goal
leaves nothing for validating the messages.

The note also gives the CPU time per message of each (process CPU, all
threads): on a shared machine the wall-clock rates move with other load, the
CPU times much less.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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


def _raw_consume(bootstrap: str, n: int, write_parquet: bool = False) -> tuple[float, float]:
    """(messages/s, CPU µs per message) of a bare consumer reading all n messages.

    `write_parquet`: also keep each poll's raw message bytes in an Arrow binary column and write
    them to one zstd Parquet file at the end (temp → fsync → rename), row (c) of the module doc.
    """
    from kafka import KafkaConsumer, TopicPartition

    from pipelines.jobs.ingest import CONSUMER_SETTINGS

    folder = Path(tempfile.mkdtemp(prefix="troupe-bench-raw-"))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **CONSUMER_SETTINGS)
    try:
        consumer.assign([TopicPartition(DECISIONS, 0)])
        consumer.seek_to_beginning()
        got, t0, c0 = 0, time.perf_counter(), time.process_time()
        parts: list[pa.Array] = []
        while got < n:
            for msgs in consumer.poll(timeout_ms=500).values():
                got += len(msgs)
                if write_parquet:
                    parts.append(pa.array([m.value for m in msgs], pa.binary()))
        if write_parquet:
            tmp = folder / ".tmp-raw.parquet"
            with tmp.open("wb") as f:
                pq.write_table(pa.table({"raw": pa.chunked_array(parts)}), f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(folder / "raw.parquet")
        return n / (time.perf_counter() - t0), (time.process_time() - c0) / n * 1e6
    finally:
        consumer.close()
        shutil.rmtree(folder, ignore_errors=True)


def _unvalidated_parquet(bootstrap: str, n: int) -> tuple[float, float]:
    return _raw_consume(bootstrap, n, write_parquet=True)


def _ingest(bootstrap: str, n: int) -> tuple[float, float]:
    """(events/s, CPU µs per event) of one once-mode ingestion of all n messages into a fresh lake."""
    from pipelines.jobs.ingest import IngestConfig, ingest

    folder = Path(tempfile.mkdtemp(prefix="troupe-bench-ingest-"))
    try:
        cfg = IngestConfig(bootstrap, folder, decisions_topic=DECISIONS, feedback_topic=FEEDBACK, progress_every_s=3600)
        t0, c0 = time.perf_counter(), time.process_time()
        report = ingest(cfg)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        if sum(report.rows.values()) != n:
            raise RuntimeError(f"ingested {report.rows}, expected {n}")
        return n / seconds, cpu / n * 1e6
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
        # One untimed round first: one-off costs (kafka-python's protocol classes, pyarrow's
        # lazy pandas import, ...) are not part of either rate.
        runs = {"raw": _raw_consume, "ingest": _ingest, "floor": _unvalidated_parquet}
        for run in runs.values():
            run(broker.bootstrap_servers, args.events)
        rates: dict[str, list[float]] = {name: [] for name in runs}
        cpus: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                rate, cpu = run(broker.bootstrap_servers, args.events)
                rates[name].append(rate)
                cpus[name].append(cpu)
            print(
                "  ".join(f"{name} {rates[name][-1]:,.0f}/s ({cpus[name][-1]:.1f} µs CPU/msg)" for name in runs),
                flush=True,
            )
    raw, ing, floor = rates["raw"], rates["ingest"], rates["floor"]
    raw_cpu, ing_cpu, floor_cpu = cpus["raw"], cpus["ingest"], cpus["floor"]
    path = write_result(
        "ingest",
        [
            Metric(
                "ingest.events_per_s",
                median(ing),
                "events/s",
                baseline=("kafka_python.consume_per_s", median(raw)),
                goal=(">=", 0.8 * median(raw)),
                note=f"{args.events} rank decisions (~500 B), 1 partition, medians of {args.repeats} alternating runs after an untimed warm-up; "
                f"paired ratios {[round(i / r, 3) for i, r in zip(ing, raw, strict=True)]}; goal = 80% of the baseline; "
                f"CPU per message (median): raw consume {median(raw_cpu):.1f} µs, ingest {median(ing_cpu):.1f} µs, "
                f"paired CPU ratios {[round(r / i, 3) for i, r in zip(ing_cpu, raw_cpu, strict=True)]}",
            ),
            Metric(
                "ingest.unvalidated_parquet_events_per_s",
                median(floor),
                "events/s",
                baseline=("kafka_python.consume_per_s", median(raw)),
                note="ceiling of any ingestion that keeps what it reads: the bare consumer plus the raw bytes "
                "written to one zstd Parquet file (fsync, rename), no parsing or validation; "
                f"paired ratios {[round(f / r, 3) for f, r in zip(floor, raw, strict=True)]}; "
                f"CPU per message (median) {median(floor_cpu):.1f} µs",
            ),
        ],
        command=f"python -m benchmarks.ingest --events {args.events} --repeats {args.repeats}",
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
