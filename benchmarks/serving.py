"""Decision API throughput and latency: one uvicorn worker on core 0, a load generator on core 1.

    python -m benchmarks.serving [--duration 5] [--repeats 3] [--no-triton]

What runs where (2-core machine):
* core 0: the API (`troupe serve`, one uvicorn worker) with everything it
  needs on the serving side — the Tansu broker receiving the decision log, and
  Triton for the `serving.triton.*` rows;
* core 1: this process, a raw-socket asyncio (uvloop) HTTP/1.1 load generator with
  keep-alive connections and pre-serialised bodies (so the generator is cheap
  per request; its ceiling shows in the bare FastAPI baseline).

Each server is warmed up first (every problem, closed-loop, for `WARM_UP_S`).
Per problem and backend: *throughput* is closed-loop (16 connections, as fast
as answers come); *p50/p99 at a rate* is open-loop — requests are scheduled at
fixed intervals and latency is measured from the scheduled send time, so a
stalled server is not hidden (no coordinated omission). Each figure is the
median over `--repeats` runs. The same run measures a bare FastAPI endpoint
returning a constant (`fastapi.constant.throughput`), the baseline of every
throughput ratio. Features come from a real Feast SQLite store (1,000 users,
TTL cache as configured) and every decision is logged to Kafka. The Triton rows
run with a 1 s inference deadline so they measure Triton rather than the
fallback; their notes give the fraction that still fell back. Every row also
records the server-side CPU milliseconds per request (API process, plus Triton
for the Triton rows), which does not depend on what else the host is running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

from benchmarks.common import Metric, cpu_ticks, median, steal_share, write_result

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
SERVER_CORE = 0
LOAD_CORE = 1
N_USERS = 1000
RATES = {"slot": 1000, "allocate": 1000, "rank": 500}
GOALS_P99_MS = {"slot": 10.0, "allocate": 10.0, "rank": 15.0}
GOAL_THROUGHPUT = 3000.0
CONCURRENCY = 16
TRITON_DEADLINE_MS = 1000
WARM_UP_S = 10.0
SIDE_PIDS: list[int] = []  # the broker: shares core 0 with the server

CONSTANT_APP = """
from fastapi import FastAPI
app = FastAPI()

@app.post("/v1/decide/{problem}")
async def constant(problem: str) -> dict[str, object]:
    return {"action": [0.0], "propensity": 1.0, "fallback": False}
"""


NO_LOG_APP = """
from serving.app import create_app
from tests.support.serving import NullProducer


def create():
    return create_app(producer=NullProducer())
"""
NO_LOG_SERVE = (
    "import uvicorn; from serving.http_protocol import PROTOCOL; "
    "uvicorn.run('no_log_app:create', factory=True, app_dir={app_dir!r}, port={port}, http=PROTOCOL, "
    "log_level='warning', access_log=False)"
)


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run one measurement of the load generator, on uvloop when installed (uvicorn[standard]
    brings it: less CPU per request than asyncio's own loop, so the generator's core is less of
    a ceiling), with the garbage collector off.

    Why no GC: this process imports Feast and pandas to build the store, and its full
    collections took 200–280 ms each (measured with gc.callbacks). During one the generator
    neither sends nor reads, and every request scheduled meanwhile counted that pause as
    server latency: the p99 of 200+ ms that allocate showed at half its capacity was this
    process, not the API. Collected between measurements instead, outside the timed window.
    """
    try:
        import uvloop

        run: Callable[[Coroutine[Any, Any, T]], T] = uvloop.run
    except ImportError:
        run = asyncio.run
    gc.collect()
    gc.disable()
    try:
        return run(coro)
    finally:
        gc.enable()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(core: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {core % (os.cpu_count() or 1)})


# ---------------------------------------------------------------------------
# load generator
# ---------------------------------------------------------------------------
class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        await self.reader.readexactly(length)
        return status


def build_requests(port: int, path: str, bodies: list[bytes]) -> list[bytes]:
    return [
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(b)}\r\n\r\n"
        ).encode()
        + b
        for b in bodies
    ]


async def _connect(port: int, n: int) -> list[Conn]:
    conns = []
    for _ in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        conns.append(Conn(r, w))
    return conns


async def closed_loop(port: int, requests: list[bytes], duration_s: float) -> tuple[float, int, int]:
    """(responses per second, responses, non-200 count) with CONCURRENCY connections."""
    conns = await _connect(port, CONCURRENCY)
    done = 0
    bad = 0
    stop_at = time.perf_counter() + duration_s

    async def worker(c: Conn, offset: int) -> None:
        nonlocal done, bad
        i = offset
        while time.perf_counter() < stop_at:
            status = await c.request(requests[i % len(requests)])
            done += 1
            bad += status != 200
            i += CONCURRENCY

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c, k) for k, c in enumerate(conns)))
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.writer.close()
    return done / elapsed, done, bad


async def open_loop(port: int, requests: list[bytes], rate: float, duration_s: float) -> tuple[np.ndarray, int]:
    """Latencies (s) from each request's scheduled time at a fixed rate, and the non-200 count."""
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for c in await _connect(port, 64):
        pool.put_nowait(c)
    n = int(rate * duration_s)
    lat = np.zeros(n)
    bad = 0
    t0 = time.perf_counter() + 0.05

    async def one(i: int, scheduled: float) -> None:
        nonlocal bad
        c = await pool.get()
        try:
            status = await c.request(requests[i % len(requests)])
        finally:
            pool.put_nowait(c)
        lat[i] = time.perf_counter() - scheduled
        bad += status != 200

    tasks = []
    for i in range(n):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait().writer.close()
    return lat, bad


def inherited_env() -> dict[str, str]:
    """This process's environment for a server, less prometheus_client's multiprocess folder.

    Feast sets PROMETHEUS_MULTIPROCESS_DIR when it is imported (feast/metrics.py), and the
    benchmark imports it: inherited, every server would run prometheus_client in multiprocess mode
    in one shared folder (slower, and each /metrics adding up the others'). `troupe serve` makes
    its own folder when it runs several workers; one worker runs single-process, as in production.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_MULTIPROC")}


# ---------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------
@contextlib.contextmanager
def server_process(
    cmd: list[str], env: dict[str, str], port: int, ready_path: str
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: _pin(SERVER_CORE)
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready in 90 s")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _fallbacks(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("troupe_fallbacks_total{")
    )


def _cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the serving-side processes (from /proc), independent of how busy the host is."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure_app(
    port: int,
    problems: list[str],
    bodies: dict[str, list[bytes]],
    duration: float,
    repeats: int,
    pids: list[int],
    warm_up_s: float = WARM_UP_S,
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    # A fresh server spends more CPU per request for its first half minute or so (measured: slot
    # then allocate, each run twice in that order, cost 0.295 / 0.321 ms the first time and
    # 0.268 / 0.270 ms the second), so every problem is exercised for WARM_UP_S before any
    # measurement, and again for 1 s right before its own. Steady state is what a long-running
    # server serves in.
    requests = {problem: build_requests(port, f"/v1/decide/{problem}", bodies[problem]) for problem in problems}
    for reqs in requests.values():
        _run_async(closed_loop(port, reqs, warm_up_s))
    for problem, reqs in requests.items():
        _run_async(closed_loop(port, reqs, 1.0))
        tput, p50, p99, cpu, side, bad = [], [], [], [], [], 0
        fb0 = _fallbacks(port) if problem != "constant" else 0.0
        total = 0.0
        for _ in range(repeats):
            cpu0, side0 = _cpu_seconds(pids), _cpu_seconds(SIDE_PIDS)
            rps, n_done, b1 = _run_async(closed_loop(port, reqs, duration))
            cpu.append((_cpu_seconds(pids) - cpu0) / n_done * 1000)
            side.append((_cpu_seconds(SIDE_PIDS) - side0) / n_done * 1000)
            lat, b2 = _run_async(open_loop(port, reqs, RATES.get(problem, 1000), duration))
            tput.append(rps)
            p50.append(float(np.percentile(lat, 50)) * 1000)
            p99.append(float(np.percentile(lat, 99)) * 1000)
            bad += b1 + b2
            total += n_done + len(lat)
        # Latency where the server is not saturated: half the measured capacity.
        half_rate = max(50, int(median(tput) / 2 / 50) * 50)
        p50_half, p99_half = [], []
        if problem != "constant":
            for _ in range(repeats):
                lat, b3 = _run_async(open_loop(port, reqs, half_rate, duration))
                p50_half.append(float(np.percentile(lat, 50)) * 1000)
                p99_half.append(float(np.percentile(lat, 99)) * 1000)
                bad += b3
                total += len(lat)
        fallback_fraction = ((_fallbacks(port) - fb0) / total) if problem != "constant" else 0.0
        out[problem] = {
            "half_rate": half_rate,
            "p50_ms_half": median(p50_half) if p50_half else 0.0,
            "p99_ms_half": median(p99_half) if p99_half else 0.0,
            "throughput": median(tput),
            "p50_ms": median(p50),
            "p99_ms": median(p99),
            "non_200": bad,
            "cpu_ms": median(cpu),
            "broker_cpu_ms": median(side),
            "fallback_fraction": fallback_fraction,
        }
        print(f"  {problem}: {out[problem]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-triton", action="store_true", help="skip the serving.triton.* rows")
    ap.add_argument("--problems", default="slot,allocate,rank", help="comma-separated problems to measure")
    ap.add_argument(
        "--result", default="serving", help="results file name (a partial run must not overwrite serving.json)"
    )
    ap.add_argument(
        "--no-wal-cost",
        action="store_true",
        help="skip the slot rows that price the write-ahead spool (no decision log; answers awaiting the "
        "fdatasync) and two workers",
    )
    ap.add_argument("--warm-up", type=float, default=WARM_UP_S, help="seconds each problem is exercised first")
    ap.add_argument(
        "--rank-policy",
        choices=("gaussian", "ma_rdpg"),
        default="gaussian",
        help="ma_rdpg: rank is served by MA-RDPG stage models (message in and out), each request of a session "
        "reading and writing its message in Redis (onnxruntime only: implies --no-triton)",
    )
    ap.add_argument(
        "--slot-policy",
        choices=("mlp", "sl_mgac"),
        default="mlp",
        help="sl_mgac: slot is served by SL-MGAC's exported student actor (23 → 32 → 7 logits), what the slot "
        "retrain ships",
    )
    args = ap.parse_args(argv)
    if args.rank_policy == "ma_rdpg":
        args.no_triton = True
    _pin(LOAD_CORE)
    # Other processes on the host inflate every figure here; record how busy it was.
    load_before = os.getloadavg()
    ticks_before = cpu_ticks()

    sys.path.insert(0, str(REPO))
    from infra.broker import EmbeddedBroker, create_topics
    from models.registry import ModelRegistry
    from serving.triton_repository import RepositoryOptions, export_repository
    from tests.support.onnx_models import register_policy
    from tests.support.requests import allocate_body, rank_body, slot_body
    from tests.support.serving import build_feast_store

    problems = [p for p in args.problems.split(",") if p]
    bodies = {
        "slot": [json.dumps(slot_body(f"user-{i}", seed=i)).encode() for i in range(64)],
        "allocate": [json.dumps(allocate_body(f"user-{i}", seed=i)).encode() for i in range(64)],
        "rank": [json.dumps(rank_body(f"user-{i}", 200, seed=i)).encode() for i in range(16)],
    }
    if args.rank_policy == "ma_rdpg":  # one session per body: every request carries a stored message
        bodies["rank"] = [
            json.dumps({**rank_body(f"user-{i}", 200, seed=i), "session_id": f"session-{i}"}).encode()
            for i in range(16)
        ]
    bodies["constant"] = bodies["slot"]
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="troupe-bench-") as tmp:
        home = Path(tmp)
        registry = ModelRegistry(home / "registry")
        for p in problems:
            if p == "rank" and args.rank_policy == "ma_rdpg":
                _register_ma_rdpg(registry, home / "ma_rdpg")
            elif p == "slot" and args.slot_policy == "sl_mgac":
                _register_sl_mgac_student(registry, home / "sl_mgac")
            else:
                register_policy(registry, p, "v1", promote=True)
        users = {f"user-{i}": (i % 3, [0.5, 0.3, 0.05, 0.01, 0.02, 0.01], [0.2, 0.1]) for i in range(N_USERS)}
        print("building the Feast store ...", flush=True)
        feast_repo = build_feast_store(home / "feast", users)
        broker = EmbeddedBroker(log_path=home / "tansu.log")
        broker.start()
        assert broker.process is not None
        SIDE_PIDS.append(broker.process.pid)  # its CPU per request is recorded beside the server's
        with contextlib.suppress(OSError):
            os.sched_setaffinity(broker.process.pid, {SERVER_CORE})
        try:
            create_topics(broker.bootstrap_servers, {"troupe.decisions.v1": 4, "troupe.feedback.v1": 4})
            base_env = {
                **inherited_env(),
                "TROUPE_HOME": str(home),
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "TROUPE_FEAST_REPO": str(feast_repo),
                "TROUPE_REGISTRY_WATCH_S": "0",
                "TROUPE_PROBLEMS": ",".join(problems),  # /readyz waits for these only
                "PYTHONPATH": str(REPO),
            }
            if args.rank_policy == "ma_rdpg":  # the session messages live in Redis
                base_env["TROUPE_STATE_STORE_URL"] = "redis://127.0.0.1:6379/7"
                base_env["TROUPE_STATE_STORE_PREFIX"] = f"bench-ma-rdpg-{os.getpid()}"
            serve = [sys.executable, "-c", "from pipelines.cli import main; main()", "serve", "--workers", "1"]

            port = _free_port()
            print("fastapi constant baseline ...", flush=True)
            const_file = home / "constant_app.py"
            const_file.write_text(CONSTANT_APP)
            const_cmd = [
                sys.executable,
                "-m",
                "uvicorn",
                "constant_app:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
                "--app-dir",
                str(home),
            ]
            with server_process(const_cmd, base_env, port, "/docs") as proc:
                results["constant"] = measure_app(
                    port, ["constant"], bodies, args.duration, args.repeats, [proc.pid], args.warm_up
                )

            port = _free_port()
            print("in-process onnxruntime ...", flush=True)
            with server_process([*serve, "--port", str(port)], base_env, port, "/readyz") as proc:
                results["onnxruntime"] = measure_app(
                    port, problems, bodies, args.duration, args.repeats, [proc.pid], args.warm_up
                )

            if not args.no_wal_cost and "slot" in problems:
                # What the write-ahead spool costs: the same server with the decision log dropped
                # (no spool, no Kafka), the same server answering only after each event's group is
                # fdatasynced, and two workers sharing core 0.
                port = _free_port()
                print("slot, decision log dropped (no spool, no Kafka) ...", flush=True)
                app_file = home / "no_log_app.py"
                app_file.write_text(NO_LOG_APP)
                # uvicorn as `troupe serve` runs it (its protocol, serving/http_protocol.py), so that the
                # two rows differ by the decision log only.
                no_log = [sys.executable, "-c", NO_LOG_SERVE.format(port=port, app_dir=str(home))]
                with server_process(no_log, base_env, port, "/readyz") as proc:
                    results["no_log"] = measure_app(
                        port, ["slot"], bodies, args.duration, args.repeats, [proc.pid], args.warm_up
                    )
                port = _free_port()
                print("slot, answers awaiting the fdatasync ...", flush=True)
                env = {**base_env, "TROUPE_DECISION_LOG_WAIT_FSYNC": "true"}
                with server_process([*serve, "--port", str(port)], env, port, "/readyz") as proc:
                    results["fsync_wait"] = measure_app(
                        port, ["slot"], bodies, args.duration, args.repeats, [proc.pid], args.warm_up
                    )
                port = _free_port()
                print("slot, two uvicorn workers ...", flush=True)
                two = [*serve[:-1], "2", "--port", str(port)]
                shared = {  # several workers share their state through Redis (required)
                    **base_env,
                    "TROUPE_STATE_STORE_URL": "redis://127.0.0.1:6379/7",
                    "TROUPE_STATE_STORE_PREFIX": f"bench-serving-{os.getpid()}",
                }
                with server_process(two, shared, port, "/readyz") as proc:
                    time.sleep(3.0)  # both workers up (readiness answered by the first one)
                    pids = [proc.pid, *_children(proc.pid)]
                    results["two_workers"] = measure_app(
                        port, ["slot"], bodies, args.duration, args.repeats, pids, args.warm_up
                    )

            if not args.no_triton:
                from infra.triton.server import TritonServer

                export_repository(registry, home / "triton-repo", problems, RepositoryOptions(variant="cpu"))
                triton = TritonServer(home / "triton-repo", home / "triton-work").start(timeout_s=120)
                assert triton.process is not None
                with contextlib.suppress(OSError):
                    for pid in [triton.process.pid, *_children(triton.process.pid)]:
                        os.sched_setaffinity(pid, {SERVER_CORE})
                try:
                    port = _free_port()
                    print("Triton over gRPC ...", flush=True)
                    # A generous deadline: these rows measure Triton, not the fallback that a
                    # 50 ms deadline switches to when the shared core is saturated.
                    env = {
                        **base_env,
                        "TROUPE_BACKEND": "triton_grpc",
                        "TROUPE_TRITON_URL": triton.grpc_url,
                        "TROUPE_INFERENCE_DEADLINE_MS": str(TRITON_DEADLINE_MS),
                    }
                    with server_process([*serve, "--port", str(port)], env, port, "/readyz") as proc:
                        pids = [proc.pid, triton.process.pid, *_children(triton.process.pid)]
                        results["triton"] = measure_app(
                            port, problems, bodies, args.duration, args.repeats, pids, args.warm_up
                        )
                finally:
                    triton.stop()
        finally:
            broker.stop()

    const = results["constant"]["constant"]["throughput"]
    const_cpu = results["constant"]["constant"]["cpu_ms"]
    metrics = [
        Metric("fastapi.constant.throughput", const, "req/s"),
        Metric("fastapi.constant.cpu_ms_per_request", const_cpu, "ms", note="server CPU time per request"),
    ]
    for backend, prefix in (("onnxruntime", "serving"), ("triton", "serving.triton")):
        if backend not in results:
            continue
        for p in problems:
            r = results[backend][p]
            ours = backend == "onnxruntime"
            note = f"fallback fraction {r['fallback_fraction']:.4f}, non-200 {int(r['non_200'])}"
            metrics += [
                Metric(
                    f"{prefix}.{p}.throughput",
                    r["throughput"],
                    "req/s",
                    baseline=("fastapi.constant.throughput", const),
                    goal=(">=", GOAL_THROUGHPUT) if ours and p != "rank" else None,
                    note=note,
                ),
                Metric(f"{prefix}.{p}.p50_ms", r["p50_ms"], "ms", note=f"open loop at {RATES[p]} req/s"),
                Metric(
                    f"{prefix}.{p}.p99_ms_at_{RATES[p]}rps",
                    r["p99_ms"],
                    "ms",
                    goal=("<=", GOALS_P99_MS[p]) if ours else None,
                ),
                *(
                    [
                        Metric(
                            f"{prefix}.{p}.p99_ms_at_{int(r['half_rate'])}rps",
                            r["p99_ms_half"],
                            "ms",
                            note=f"half the measured capacity; p50 {r['p50_ms_half']:.2f} ms",
                        )
                    ]
                    if int(r["half_rate"]) != RATES[p]
                    else []
                ),
                # Server-side CPU per decision (API process, plus Triton for the triton rows):
                # one idle core serves about 1000 / this per second, whatever else the host runs.
                Metric(
                    f"{prefix}.{p}.cpu_ms_per_request",
                    r["cpu_ms"],
                    "ms",
                    baseline=("fastapi.constant.cpu_ms_per_request", const_cpu),
                ),
            ]
    if "no_log" in results and "slot" in results.get("onnxruntime", {}):
        with_wal = results["onnxruntime"]["slot"]
        no_log = results["no_log"]["slot"]
        wait = results["fsync_wait"]["slot"]
        core0_ms = with_wal["cpu_ms"] + with_wal["broker_cpu_ms"]
        metrics += [
            Metric(
                "serving.slot.broker_cpu_ms_per_request",
                with_wal["broker_cpu_ms"],
                "ms",
                note="Tansu's CPU per decision; it shares core 0 with the server",
            ),
            Metric(
                "serving.slot.expected_throughput",
                1000.0 / core0_ms,
                "req/s",
                baseline=("serving.slot.throughput", with_wal["throughput"]),
                note="what core 0 serves when nothing else runs on it: 1000 / (server + broker CPU ms per "
                "request); load-insensitive, unlike the measured throughput on a busy host",
            ),
            Metric(
                "serving.slot.throughput_no_log",
                no_log["throughput"],
                "req/s",
                baseline=("fastapi.constant.throughput", const),
                note="the same server with the decision log dropped (no spool, no Kafka); on a loaded host this "
                "single-threaded server got far less of core 0 than the default (1,100-2,000 req/s with a quarter of "
                "a core busy, not understood): compare CPU per request",
            ),
            Metric(
                "serving.slot.cpu_ms_per_request_no_log",
                no_log["cpu_ms"],
                "ms",
                baseline=("serving.slot.cpu_ms_per_request", with_wal["cpu_ms"]),
                note="ratio = share of the default's CPU left without the spool and Kafka",
            ),
            Metric(
                "serving.slot.throughput_fsync_wait",
                wait["throughput"],
                "req/s",
                baseline=("serving.slot.throughput", with_wal["throughput"]),
                note="each answer awaits its group's fdatasync (TROUPE_DECISION_LOG_WAIT_FSYNC=true): with "
                f"{CONCURRENCY} connections capped near {CONCURRENCY} / fdatasync latency",
            ),
            Metric(
                "serving.slot.cpu_ms_per_request_fsync_wait",
                wait["cpu_ms"],
                "ms",
                baseline=("serving.slot.cpu_ms_per_request", with_wal["cpu_ms"]),
            ),
            Metric(
                "serving.slot.p99_ms_at_1000rps_fsync_wait",
                wait["p99_ms"],
                "ms",
            ),
        ]
    if "two_workers" in results:
        two = results["two_workers"]["slot"]
        metrics += [
            Metric(
                "serving.slot.throughput_2_workers",
                two["throughput"],
                "req/s",
                baseline=("fastapi.constant.throughput", const),
                note=f"two uvicorn workers sharing core 0 (the load generator has core 1); non-200 {int(two['non_200'])}",
            ),
            Metric("serving.slot.p99_ms_at_1000rps_2_workers", two["p99_ms"], "ms"),
        ]
    cmd = "python -m benchmarks.serving " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result(
        args.result,
        metrics,
        command=cmd.strip(),
        extra={
            "setup": {
                "server": "troupe serve, 1 uvicorn worker, pinned to core 0 with Tansu (decision log) and Triton",
                "load": f"asyncio (uvloop) raw HTTP/1.1 on core 1; closed loop {CONCURRENCY} connections; open loop fixed rate",
                "rank_candidates": 200,
                "rank_policy": args.rank_policy
                + (
                    " (3 stage models + a 32-float session message read and written in Redis per request)"
                    if args.rank_policy == "ma_rdpg"
                    else ""
                ),
                "slot_policy": args.slot_policy,
                "duration_s": args.duration,
                "repeats": args.repeats,
                "statistic": "median over repeats",
                "host_load_1min": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
                "host_load_note": "1-minute load average of the 2-core host (other engineers' tests run "
                "concurrently); above 2 the server and load generator share their cores with others, so "
                "compare ratios to fastapi.constant from the same run",
                "host_cpu_steal_share": round(steal_share(ticks_before), 3),
                "host_cpu_steal_note": "share of CPU time the hypervisor gave to other virtual machines during "
                "the run (/proc/stat steal): the cores were not ours for that long, which lowers throughput "
                "and inflates p99 while leaving cpu_ms_per_request about the same",
            }
        },
    )
    print(f"wrote {path}")
    return 0


def _register_ma_rdpg(registry: Any, out_dir: Path) -> None:
    """rank/v1: MA-RDPG's three stage models and model.onnx (untrained, the shipped sizes: 64×64 actors,
    a 16-wide LSTM message) — what serving pays per request does not depend on the weights."""
    from models.problems import RANK
    from training.algorithms import ma_rdpg
    from training.export import register_policy as register_exported
    from training.rl.task import TaskSpec

    module = ma_rdpg.MARDPG(TaskSpec.from_problem(RANK, multi_agent=True), ma_rdpg.MARDPGConfig())
    register_exported(registry, RANK, "ma_rdpg", "v1", ma_rdpg.export_for_serving(module, out_dir))
    registry.promote("rank", "v1")


def _register_sl_mgac_student(registry: Any, out_dir: Path) -> None:
    """slot/v1: SL-MGAC's student actor (untrained, the shipped size) — serving's cost does not depend on the weights."""
    from models.problems import SLOT
    from training.algorithms.sl_mgac import SLMGACConfig, SLMGACLoss
    from training.export import export_policy
    from training.export import register_policy as register_exported
    from training.rl.task import TaskSpec

    learner = SLMGACLoss(TaskSpec.from_problem(SLOT), SLMGACConfig())
    register_exported(registry, SLOT, "sl_mgac", "v1", export_policy(learner.actor, SLOT, out_dir))
    registry.promote("slot", "v1")


def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    except OSError:
        return []
    return [int(x) for x in out]


if __name__ == "__main__":
    raise SystemExit(main())
