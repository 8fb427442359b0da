"""`allocate` with MaRCA on the path: throughput, p99 at 1,000 req/s and CPU per request, against the MLP policy.

    python -m benchmarks.serving_allocate [--duration 5] [--repeats 3]

Same harness as benchmarks/serving.py (one uvicorn worker and the Tansu broker
on core 0, the raw-socket load generator on core 1, real Feast SQLite features,
every decision logged to Kafka), and the state store on the shared Redis (λ read
from it per decision, as with several workers). Two servers in one run:
* baseline — allocate served by the two-layer MLP test policy (one ONNX call,
  per-component logits: what `serving.allocate.*` in serving.json measures);
* MaRCA — a MaRCA version at the default MarcaConfig sizes (three GRU agents
  with 4 heads, the analytic mixer slope: one ONNX graph), its cost table and
  load model shipped in the version, the balancer stepped once through the admin
  endpoint before measuring (λ in Redis).
Ratios are MaRCA / baseline from the same run (the host is shared).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import httpx

from benchmarks.common import Metric, cpu_ticks, steal_share, write_result
from benchmarks.serving import (
    GOAL_THROUGHPUT,
    GOALS_P99_MS,
    LOAD_CORE,
    N_USERS,
    RATES,
    REPO,
    SERVER_CORE,
    _free_port,
    _pin,
    inherited_env,
    measure_app,
    server_process,
)

ADMIN_KEY = "bench-admin"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    _pin(LOAD_CORE)
    load_before, ticks_before = os.getloadavg(), cpu_ticks()

    sys.path.insert(0, str(REPO))
    from infra.broker import EmbeddedBroker, create_topics
    from models.registry import ModelRegistry
    from tests.support.marca import register_marca
    from tests.support.onnx_models import register_policy
    from tests.support.requests import allocate_body
    from tests.support.serving import build_feast_store
    from training.algorithms.marca import MarcaConfig

    bodies = {"allocate": [json.dumps(allocate_body(f"user-{i}", seed=i)).encode() for i in range(64)]}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="troupe-bench-marca-") as tmp:
        home = Path(tmp)
        users = {f"user-{i}": (i % 3, [0.5, 0.3, 0.05, 0.01, 0.02, 0.01], [0.2, 0.1]) for i in range(N_USERS)}
        feast_repo = build_feast_store(home / "feast", users)
        broker = EmbeddedBroker(log_path=home / "tansu.log")
        broker.start()
        assert broker.process is not None
        with contextlib.suppress(OSError):
            os.sched_setaffinity(broker.process.pid, {SERVER_CORE})
        try:
            create_topics(broker.bootstrap_servers, {"troupe.decisions.v1": 4, "troupe.feedback.v1": 4})
            for name in ("baseline", "marca"):
                server_home = home / name  # each server its own TROUPE_HOME, so its own registry
                registry = ModelRegistry(server_home / "registry")
                if name == "baseline":
                    register_policy(registry, "allocate", "v1", promote=True)
                else:
                    register_marca(registry, "v1", promote=True, config=MarcaConfig())
                env = {
                    **inherited_env(),
                    "TROUPE_HOME": str(server_home),
                    "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                    "TROUPE_FEAST_REPO": str(feast_repo),
                    "TROUPE_REGISTRY_WATCH_S": "0",
                    "TROUPE_PROBLEMS": "allocate",
                    "TROUPE_ADMIN_API_KEYS": ADMIN_KEY,
                    "TROUPE_STATE_STORE_URL": "redis://127.0.0.1:6379/7",
                    "TROUPE_STATE_STORE_PREFIX": f"bench-marca-{os.getpid()}-{name}",
                    "PYTHONPATH": str(REPO),
                }
                serve = [sys.executable, "-c", "from pipelines.cli import main; main()", "serve", "--workers", "1"]
                port = _free_port()
                print(f"allocate, {name} ...", flush=True)
                with server_process([*serve, "--port", str(port)], env, port, "/readyz") as proc:
                    if name == "marca":
                        step = httpx.post(
                            f"http://127.0.0.1:{port}/v1/allocate/balancer/observe",
                            json={"utilisation": 0.9, "traffic": 1.0, "slot": 40},
                            headers={"X-API-Key": ADMIN_KEY},
                        ).json()
                        print(f"  balancer step: {step}", flush=True)
                    results[name] = measure_app(port, ["allocate"], bodies, args.duration, args.repeats, [proc.pid])[
                        "allocate"
                    ]
                    if name == "marca":
                        probe = httpx.post(f"http://127.0.0.1:{port}/v1/decide/allocate", content=bodies["allocate"][0],
                                           headers={"content-type": "application/json"}).json()  # fmt: skip
                        assert "lambda" in probe and not probe["fallback"], probe
        finally:
            broker.stop()

    base, marca = results["baseline"], results["marca"]
    note = f"fallback fraction {marca['fallback_fraction']:.4f}, non-200 {int(marca['non_200'])}"
    metrics = [
        Metric("serving.allocate_mlp.throughput", base["throughput"], "req/s", note="the MLP test policy, same run"),
        Metric("serving.allocate_mlp.cpu_ms_per_request", base["cpu_ms"], "ms"),
        Metric("serving.allocate_mlp.p99_ms_at_1000rps", base["p99_ms"], "ms"),
        Metric(
            "serving.allocate.throughput",
            marca["throughput"],
            "req/s",
            baseline=("serving.allocate_mlp.throughput", base["throughput"]),
            goal=(">=", GOAL_THROUGHPUT),
            note="MaRCA + cost table + balancer λ from Redis; " + note,
        ),
        Metric(
            f"serving.allocate.p99_ms_at_{RATES['allocate']}rps",
            marca["p99_ms"],
            "ms",
            baseline=("serving.allocate_mlp.p99_ms_at_1000rps", base["p99_ms"]),
            goal=("<=", GOALS_P99_MS["allocate"]),
        ),
        Metric("serving.allocate.p50_ms", marca["p50_ms"], "ms", note=f"open loop at {RATES['allocate']} req/s"),
        Metric(
            "serving.allocate.cpu_ms_per_request",
            marca["cpu_ms"],
            "ms",
            baseline=("serving.allocate_mlp.cpu_ms_per_request", base["cpu_ms"]),
            note="server CPU per decision: one idle core serves about 1000 / this per second",
        ),
    ]
    cmd = "python -m benchmarks.serving_allocate " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result(
        "serving_allocate",
        metrics,
        command=cmd.strip(),
        extra={
            "setup": {
                "server": "troupe serve, 1 uvicorn worker pinned to core 0 with Tansu; Redis state store",
                "duration_s": args.duration,
                "repeats": args.repeats,
                "statistic": "median over repeats",
                "host_load_1min": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
                "host_cpu_steal_share": round(steal_share(ticks_before), 3),
            }
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
