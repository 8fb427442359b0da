"""What the write-ahead spool costs per decision, in CPU time: quick, in-process, load-insensitive.

    python -m benchmarks.serving_wal [--n 4000] [--rounds 3] [--concurrency 16] [--profile wal]

The slot decision API's ASGI app is called directly (no sockets) by
`--concurrency` concurrent callers, the way uvicorn runs concurrent requests on
one event loop, with three decision logs:

* `no_log` — a producer that counts and drops events (no Kafka, no spool):
  the baseline, what the decision itself costs;
* `wal` — the real producer (Kafka on a real Tansu broker) with its
  write-ahead spool, the default: each event written to the spool before its
  answer, fdatasynced by group commit right after;
* `wal_fsync_wait` — the same, each answer awaiting its group's fdatasync
  (TROUPE_DECISION_LOG_WAIT_FSYNC=true).

CPU is the whole process's (`time.process_time`: event loop, the producer's
writer and dispatcher threads and librdkafka's threads), per request; the
minimum over interleaved rounds is the least disturbed by the host. The ratio
`wal / no_log` from one run is what the spool costs; `1000 / cpu_ms` is
the requests per second one idle core would serve (in-process: the HTTP
server's own share comes on top). The harness's own calls
cost the same in every variant. benchmarks/serving.py measures the real server
(uvicorn, load generator, Feast) and is the one behind `serving.slot.throughput`:

    python -m benchmarks.serving --problems slot --no-triton --result serving_wal   # ~8 min
    ... --duration 2 --repeats 1 --warm-up 3                                        # ~2 min, rougher
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Metric, median, write_result
from benchmarks.serving_profile import MemoryReader, call

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("no_log", "wal", "wal_fsync_wait")


def thread_cpu() -> dict[str, float]:
    """CPU seconds per thread of this process, by Python thread name (others: librdkafka's and onnxruntime's)."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = names.get(int(task.name), "native")
            name = "executor" if name.startswith(("uvloop", "asyncio", "ThreadPool")) else name
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


async def _drive(app: Any, bodies: list[bytes], n: int, concurrency: int) -> int:
    """`n` slot decisions from `concurrency` concurrent callers; returns how many were not 200."""
    bad = 0

    async def caller(offset: int) -> None:
        nonlocal bad
        for i in range(offset, n, concurrency):
            status, _ = await call(app, "/v1/decide/slot", bodies[i % len(bodies)])
            bad += status != 200

    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    return bad


async def run(args: argparse.Namespace, bootstrap: str, home: Path) -> dict[str, dict[str, float]]:
    from models.registry import ModelRegistry
    from serving.app import create_app
    from serving.producer import EventProducer, ProducerConfig
    from serving.settings import ServingSettings
    from tests.support.onnx_models import register_policy
    from tests.support.requests import slot_body
    from tests.support.serving import NullProducer

    bodies = [json.dumps(slot_body(f"user-{i}", seed=i)).encode() for i in range(64)]
    users = {
        f"user-{i}": {
            "user_activity_group": i % 3,
            "user_recent_rates": [0.5, 0.3, 0.05, 0.01, 0.02, 0.01],
            "user_live_affinity": [0.2, 0.1],
        }
        for i in range(64)
    }
    registry = ModelRegistry(home / "registry")
    register_policy(registry, "slot", "v1", promote=True)
    apps: dict[str, tuple[Any, Any]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for variant in args.variants:
            settings = ServingSettings(
                home=home,
                problems=["slot"],
                registry_watch_s=0,
                ort_cuda="never",
                decision_log_wait_fsync=variant == "wal_fsync_wait",
            )
            producer: Any = NullProducer()
            if variant != "no_log":
                producer = EventProducer(ProducerConfig(bootstrap, home / f"spool-{variant}")).start()
                stack.callback(producer.close)
            app = create_app(settings, producer=producer, feature_reader=MemoryReader(users))
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps[variant] = (app, producer)
        for app, _ in apps.values():  # warm-up: caches, first-call costs, the broker's partitions
            await _drive(app, bodies, 2000, args.concurrency)
        cpu: dict[str, list[float]] = {v: [] for v in apps}
        wall: dict[str, list[float]] = {v: [] for v in apps}
        bad = dict.fromkeys(apps, 0)
        per_thread: dict[str, dict[str, float]] = {v: {} for v in apps}
        for _ in range(args.rounds):  # interleaved, so a busy moment of the host hits every variant
            for variant, (app, _) in apps.items():
                th0 = thread_cpu()
                c0, t0 = time.process_time(), time.perf_counter()
                bad[variant] += await _drive(app, bodies, args.n, args.concurrency)
                for name, sec in thread_cpu().items():
                    acc = per_thread[variant]
                    acc[name] = acc.get(name, 0.0) + (sec - th0.get(name, 0.0)) / args.n / args.rounds * 1e6
                cpu[variant].append((time.process_time() - c0) / args.n * 1000)
                wall[variant].append(args.n / (time.perf_counter() - t0))
        out = {
            v: {"cpu_ms": min(cpu[v]), "cpu_ms_median": median(cpu[v]), "rps": median(wall[v]), "non_200": bad[v]}
            for v in apps
        }
        for v, r in out.items():
            print(
                f"{v:12s} cpu {r['cpu_ms'] * 1000:6.1f} µs/request (median {r['cpu_ms_median'] * 1000:6.1f}), "
                f"{r['rps']:7.0f} req/s in-process, non-200 {int(r['non_200'])}",
                flush=True,
            )
            by_thread = sorted(per_thread[v].items(), key=lambda kv: -kv[1])
            print(
                "             per thread (µs/request, mean):",
                ", ".join(f"{k} {x:.1f}" for k, x in by_thread if x >= 0.5),
            )
        if args.profile:
            app, _ = apps[args.profile]
            prof = cProfile.Profile()
            prof.enable()
            await _drive(app, bodies, args.n, args.concurrency)
            prof.disable()
            pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)
        for _, producer in apps.values():  # everything accepted reached Kafka before the numbers count
            if hasattr(producer, "flush") and not producer.flush(30.0):
                raise RuntimeError("producer did not deliver everything within 30 s")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="requests per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent callers (the load generator's 16)")
    ap.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS), help="comma-separated subset")
    ap.add_argument("--profile", choices=VARIANTS, default=None, help="cProfile (event-loop thread) one variant")
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--result", default="serving_wal_cpu", help="results file name; '' = do not write one")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from infra.broker import EmbeddedBroker, create_topics

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="troupe-walbench-") as tmp, EmbeddedBroker() as broker:
        create_topics(broker.bootstrap_servers, {"troupe.decisions.v1": 4, "troupe.feedback.v1": 4})
        try:
            import uvloop

            out = uvloop.run(run(args, broker.bootstrap_servers, Path(tmp)))
        except ImportError:
            out = asyncio.run(run(args, broker.bootstrap_servers, Path(tmp)))
    if not args.result or set(out) != set(VARIANTS):
        return 0
    base = out["no_log"]["cpu_ms"]
    wal = out["wal"]["cpu_ms"]
    metrics = [
        Metric(
            "serving_wal.slot.cpu_ms_per_request_no_log", base, "ms", note="decision log dropped (no Kafka, no spool)"
        ),
        Metric(
            "serving_wal.slot.cpu_ms_per_request",
            wal,
            "ms",
            baseline=("serving_wal.slot.cpu_ms_per_request_no_log", base),
            note="default: event written to the spool before the answer, fdatasynced by group commit; "
            "ratio - 1 = what the spool and Kafka cost",
        ),
        Metric(
            "serving_wal.slot.cpu_ms_per_request_fsync_wait",
            out["wal_fsync_wait"]["cpu_ms"],
            "ms",
            baseline=("serving_wal.slot.cpu_ms_per_request", wal),
            note="each answer awaits its group's fdatasync (TROUPE_DECISION_LOG_WAIT_FSYNC=true)",
        ),
        Metric(
            "serving_wal.slot.inprocess_throughput",
            out["wal"]["rps"],
            "req/s",
            baseline=("serving_wal.slot.inprocess_throughput_no_log", out["no_log"]["rps"]),
            note="in-process, no HTTP; wall clock, so the host's load shows here and not in cpu_ms",
        ),
        Metric(
            "serving_wal.slot.inprocess_throughput_fsync_wait",
            out["wal_fsync_wait"]["rps"],
            "req/s",
            baseline=("serving_wal.slot.inprocess_throughput", out["wal"]["rps"]),
            note=f"{args.concurrency} callers each waiting for an fdatasync: bounded by callers / fdatasync latency",
        ),
    ]
    cmd = "python -m benchmarks.serving_wal " + " ".join(argv if argv is not None else sys.argv[1:])
    extra: dict[str, object] = {
        "setup": {
            "harness": f"ASGI app called in-process by {args.concurrency} concurrent callers (uvloop); "
            "real EventProducer with fdatasync'd spool and Tansu; features from memory",
            "n_per_round": args.n,
            "rounds": args.rounds,
            "statistic": "minimum over interleaved rounds (CPU time of the whole process)",
            "host_load_1min": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
        }
    }
    print(f"wrote {write_result(args.result, metrics, command=cmd.strip(), extra=extra)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
