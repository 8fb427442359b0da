"""Dataset build time for 1M logged events (500k rank decisions + 500k feedback), in seconds.

    python -m benchmarks.dataset_build [--events 1000000] [--repeats 3]

The lake is generated directly as committed Parquet (the same layout and
manifest ingestion writes), so only `pipelines.jobs.dataset.build_dataset`
is timed: read, dedupe, join within the window, sessions, trajectories,
write. 5% of the feedback is late and 5% missing, 20k users, session ids on
half of the users. Median of `repeats` builds.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.common import Metric, median, write_result


def make_lake(data_dir: Path, events: int, seed: int = 0) -> None:
    from models.events import DecisionEvent, FeedbackEvent, arrow_schema
    from models.problems import FEEDBACK_SIGNALS, RANK
    from pipelines.jobs.ingest import _write_manifest, _write_parquet, empty_manifest, lake_dir

    rng = np.random.default_rng(seed)
    n = events // 2
    users = rng.integers(0, 20_000, n)
    t0 = np.datetime64("2026-11-20T00:00:00", "us").astype(np.int64)
    ts = t0 + np.sort(rng.integers(0, 86_400 * 1_000_000, n))
    rid = np.char.add("r", np.arange(n).astype(str))
    user_ids = np.char.add("u", users.astype(str))
    session = np.where(users % 2 == 0, np.char.add(np.char.add("s", users.astype(str)), "-1"), None)
    obs_size, act_size = RANK.observation_size, RANK.action.flat_size
    obs = pa.ListArray.from_arrays(
        pa.array(np.arange(0, (n + 1) * obs_size, obs_size, dtype=np.int32)), pa.array(rng.random(n * obs_size))
    )
    act = pa.ListArray.from_arrays(
        pa.array(np.arange(0, (n + 1) * act_size, act_size, dtype=np.int32)), pa.array(rng.random(n * act_size))
    )
    utc = pa.timestamp("us", tz="UTC")
    dschema = arrow_schema(DecisionEvent)
    cols = {
        "schema_version": pa.array(np.ones(n, np.int64)),
        "request_id": pa.array(rid),
        "timestamp": pa.array(ts, utc),
        "problem": pa.array(["rank"] * n),
        "user_id": pa.array(user_ids),
        "session_id": pa.array(session, pa.string()),
        "policy_name": pa.array(["tscac"] * n),
        "policy_version": pa.array(["3"] * n),
        "experiment": pa.array(["e1"] * n),
        "arm": pa.array(np.where(users % 2 == 0, "control", "treatment")),
        "exposed": pa.array(np.ones(n, bool)),
        "observation": obs,
        "action": act,
        "propensity": pa.nulls(n, pa.float64()),
        "log_density": pa.array(rng.normal(-3, 1, n)),
        "candidate_ids": pa.nulls(n, pa.list_(pa.string())),
        "fallback": pa.array(np.zeros(n, bool)),
    }
    decisions = pa.Table.from_arrays([cols[f.name] for f in dschema], schema=dschema)
    kind = rng.random(n)
    has_fb = kind >= 0.05  # 5% missing
    late = kind < 0.10  # of those, half late
    delay = np.where(late & has_fb, 7_200_000_000, rng.integers(1_000_000, 600_000_000, n))
    fschema = arrow_schema(FeedbackEvent)
    m = int(has_fb.sum())
    signal_arrays = [
        pa.array(rng.exponential(1.0, m) if s != "session_end" else (rng.random(m) < 0.05).astype(float))
        for s in FEEDBACK_SIGNALS
    ]
    signals = pa.StructArray.from_arrays(signal_arrays, fields=list(fschema.field("signals").type))
    fcols = {
        "schema_version": pa.array(np.ones(m, np.int64)),
        "request_id": pa.array(rid[has_fb]),
        "timestamp": pa.array((ts + delay)[has_fb], utc),
        "user_id": pa.array(user_ids[has_fb]),
        "problem": pa.array(["rank"] * m),
        "signals": signals,
    }
    feedback = pa.Table.from_arrays([fcols[f.name] for f in fschema], schema=fschema)
    # One committed file per topic (hour partitioning does not matter to the builder).
    lake = lake_dir(data_dir)
    lake.mkdir(parents=True, exist_ok=True)
    manifest = empty_manifest()
    for topic, table in (("troupe.decisions.v1", decisions), ("troupe.feedback.v1", feedback)):
        rel = f"topic={topic}/problem=rank/date=2026-11-20/hour=00/part-00000001.parquet"
        _write_parquet(table, lake / rel, 128 * 1024)
        manifest["files"][rel] = {"kind": "events", "topic": topic, "rows": table.num_rows, "seq": 1}
    manifest["seq"] = 1
    _write_manifest(lake, manifest)


def main(argv: list[str] | None = None) -> None:
    from pipelines.jobs.dataset import DatasetConfig, build_dataset

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="troupe-bench-dataset-"))
    try:
        make_lake(folder, args.events)
        times, card = [], {}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            card = build_dataset(DatasetConfig(folder, "rank")).card
            times.append(time.perf_counter() - t0)
            print(f"build {times[-1]:.2f} s, rows {card['rows']}, join rate {card['join_rate']:.3f}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    per_1m = median(times) * 1_000_000 / args.events
    path = write_result(
        "dataset_build",
        [
            Metric(
                "dataset.build_s_per_1m_events",
                per_1m,
                "s",
                note=f"{args.events} events (half decisions, half feedback), rank, median of {args.repeats}; "
                f"{card.get('rows')} transitions, join rate {card.get('join_rate', 0):.3f}",
            )
        ],
        command=f"python -m benchmarks.dataset_build --events {args.events} --repeats {args.repeats}",
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
