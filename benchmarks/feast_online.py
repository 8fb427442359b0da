"""Feast online read latency: one user, the slot_v2 feature service (4 user features), SQLite and Redis.

    python -m benchmarks.feast_online [--users 5000] [--reads 2000]

Builds a lake of synthetic feedback for `users` users (rank feedback for the
rates, slot feedback with live exposures for the live affinity and the live
sequence), computes the features, `feast apply` + materialize into a fresh
repo, then times
`get_online_features(features=<slot_v2>, entity_rows=[{"user_id": u}])` for
random users after a warm-up. p50/p99 over all timed reads (one process, one
thread). Redis is measured when 127.0.0.1:6379 answers.

slot_v2 is what serving reads for `slot` (models/problems.py SLOT.feature_service):
slot_v1's three features plus `user_live_sequence` (10 floats). Until
2026-12-04 this benchmark measured slot_v1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Metric, write_result

SERVICE = "slot_v2"


def _lake(data_dir: Path, users: int) -> tuple[dt.datetime, dt.datetime]:
    from models.events import FeedbackEvent, Signals
    from pipelines.jobs.ingest import IngestConfig, commit_events

    rng = np.random.default_rng(0)
    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(days=2)
    events = []
    for i in range(users * 4):
        ts = start + dt.timedelta(seconds=int(rng.integers(0, 2 * 86_400 - 3600)))
        sig = Signals(
            watch_time=float(rng.exponential(30)), click=float(rng.random() < 0.4), like=float(rng.random() < 0.1)
        )
        events.append(
            FeedbackEvent(request_id=f"r{i}", timestamp=ts, user_id=f"u{i % users}", problem="rank", signals=sig)
        )
    for i in range(users * 2):  # slot feedback: a live stream shown on about a quarter of the pages
        ts = start + dt.timedelta(seconds=int(rng.integers(0, 2 * 86_400 - 3600)))
        shown = float(rng.random() < 0.25)
        sig = Signals(
            watch_time=float(rng.exponential(30)),
            live_exposure=shown,
            live_watch_time=shown * float(rng.exponential(60)) * float(rng.random() < 0.5),
        )
        events.append(
            FeedbackEvent(request_id=f"s{i}", timestamp=ts, user_id=f"u{i % users}", problem="slot", signals=sig)
        )
    commit_events(IngestConfig("127.0.0.1:1", data_dir), events)  # type: ignore[arg-type]
    return start - dt.timedelta(hours=1), end + dt.timedelta(hours=1)


def _time_reads(store: Any, users: int, reads: int) -> tuple[float, float]:
    service = store.get_feature_service(SERVICE)
    rng = np.random.default_rng(1)
    for i in range(200):  # warm-up
        store.get_online_features(features=service, entity_rows=[{"user_id": f"u{i % users}"}])
    lat = []
    for u in rng.integers(0, users, reads):
        t0 = time.perf_counter()
        out = store.get_online_features(features=service, entity_rows=[{"user_id": f"u{u}"}]).to_dict()
        lat.append((time.perf_counter() - t0) * 1000)
    if out["user_recent_rates"][0] is None or out["user_live_sequence"][0] is None:
        raise RuntimeError("online read returned no value: materialization failed")
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def main(argv: list[str] | None = None) -> None:
    from pipelines.jobs.features import FeaturesConfig, apply, materialize

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="troupe-bench-feast-"))
    metrics = []
    try:
        start, end = _lake(folder / "data", args.users)
        cfg = FeaturesConfig(data_dir=folder / "data", repo_dir=folder / "feature_repo")
        store = apply(cfg)
        materialize(cfg, start=start, end=end)
        p50, p99 = _time_reads(store, args.users, args.reads)
        print(f"sqlite p50 {p50:.3f} ms p99 {p99:.3f} ms", flush=True)
        note = f"{SERVICE} (4 user features), 1 entity row, {args.users} users, {args.reads} reads"
        metrics += [
            Metric("feast.online_read_p50_ms", p50, "ms", note=f"SQLite; {note}"),
            Metric("feast.online_read_p99_ms", p99, "ms", note=f"SQLite; {note}"),
        ]
        try:
            import redis

            redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
        except Exception as exc:  # noqa: BLE001 — Redis is optional for the benchmark
            print(f"redis not measured: {exc}")
        else:
            rcfg = FeaturesConfig(
                data_dir=cfg.data_dir,
                repo_dir=folder / "feature_repo_redis",
                project=f"troupe_bench_{uuid.uuid4().hex[:8]}",
                online_store="redis",
            )
            rstore = apply(rcfg)
            try:
                materialize(rcfg, start=start, end=end, compute=False)
                p50, p99 = _time_reads(rstore, args.users, args.reads)
                print(f"redis p50 {p50:.3f} ms p99 {p99:.3f} ms", flush=True)
                metrics += [
                    Metric("feast.redis.online_read_p50_ms", p50, "ms", note=f"Redis 127.0.0.1; {note}"),
                    Metric("feast.redis.online_read_p99_ms", p99, "ms", note=f"Redis 127.0.0.1; {note}"),
                ]
            finally:
                rstore.teardown()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    path = write_result(
        "feast_online", metrics, command=f"python -m benchmarks.feast_online --users {args.users} --reads {args.reads}"
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
