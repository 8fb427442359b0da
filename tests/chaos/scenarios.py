"""The probes of issue #19 as scenarios on real processes, each returning what it counted.

Used at bounded sizes by tests/chaos/test_chaos.py (part of `make test`) and at
full sizes by benchmarks/chaos.py (`make chaos`, writes benchmarks/results/chaos.json).
Every scenario starts what it needs: the Tansu broker, `troupe serve` as a
process (one or two uvicorn workers), ingestion as processes, Redis (running on
the project's machines, db 7 with a private key prefix).

Counts every scenario reports:
* `answered` — decisions the API answered 200 (their request ids);
* `lost` — answered decisions whose event never reached Kafka;
* `server_errors` — 5xx answers;
* `lake_duplicates` — rows in the lake beyond one per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from infra.broker import EmbeddedBroker, create_topics
from models.registry import ModelRegistry
from tests.support.onnx_models import register_policy
from tests.support.requests import slot_body

REPO = Path(__file__).resolve().parents[2]
DECISIONS = "troupe.decisions.v1"
FEEDBACK = "troupe.feedback.v1"
ADMIN_KEY = "chaos-admin-key"
REDIS_URL = "redis://127.0.0.1:6379/7"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Counts:
    answered: int = 0
    lost: int = 0
    server_errors: int = 0
    other_errors: int = 0
    outages: int = 0
    kills: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# the API as a process
# ---------------------------------------------------------------------------
def serve_env(home: Path, broker: EmbeddedBroker, prefix: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TROUPE_", "PROMETHEUS_"))},
        "PYTHONPATH": str(REPO),
        "TROUPE_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "TROUPE_PROBLEMS": "slot",
        "TROUPE_ADMIN_API_KEYS": ADMIN_KEY,
        "TROUPE_REGISTRY_WATCH_S": "0",
        "TROUPE_INFERENCE_DEADLINE_MS": "1000",
        "TROUPE_STATE_STORE_URL": REDIS_URL,
        "TROUPE_STATE_STORE_PREFIX": prefix,
        # Short broker timeouts: an outage is noticed within ~2 s and replayed every 0.5 s.
        "TROUPE_PRODUCER_REQUEST_TIMEOUT_MS": "1000",
        "TROUPE_PRODUCER_DELIVERY_TIMEOUT_MS": "1500",
        "TROUPE_PRODUCER_RETRY_INTERVAL_S": "0.5",
    }


@contextlib.contextmanager
def api_process(home: Path, env: dict[str, str], workers: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`troupe serve --workers N` in its own session (kill -9 takes the whole group); yields (process, base URL)."""
    port = free_port()
    proc = start_api(env, workers, port)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        stop_api(proc)


def start_api(env: dict[str, str], workers: int, port: int, wait_s: float = 90.0) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", "from pipelines.cli import main; main()", "serve", "--port", str(port)]
    cmd += ["--workers", str(workers)]
    log = open(Path(env["TROUPE_HOME"]) / f"serve-{port}.log", "ab")  # noqa: SIM115 — closed with the process
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"troupe serve exited {proc.returncode}; log in {log.name}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                if workers > 1:
                    time.sleep(2.0)  # the other workers finish starting (readiness came from one)
                return proc
        time.sleep(0.2)
    stop_api(proc)
    raise RuntimeError(f"troupe serve not ready in {wait_s} s; log in {log.name}")


def stop_api(proc: subprocess.Popen[bytes], kill: bool = False) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def prepare_home(home: Path) -> ModelRegistry:
    registry = ModelRegistry(home / "registry")
    register_policy(registry, "slot", "v1", promote=True)
    return registry


# ---------------------------------------------------------------------------
# load and verification
# ---------------------------------------------------------------------------
async def _load(
    base: str, rate: float, duration_s: float, answered: set[str], counts: Counts, tag: str, stop: asyncio.Event
) -> None:
    """Open-loop decide requests at `rate`/s; every 200's request id goes into `answered`."""
    async with httpx.AsyncClient(base_url=base, timeout=10.0, limits=httpx.Limits(max_connections=64)) as client:
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        i = 0

        async def one(n: int) -> None:
            request_id = f"{tag}-{n}"
            try:
                r = await client.post(
                    "/v1/decide/slot", json={**slot_body(f"user-{n % 500}"), "request_id": request_id}
                )
            except httpx.HTTPError:
                counts.other_errors += 1  # connection refused/reset: the API was killed; never answered
                return
            if r.status_code == 200:
                answered.add(request_id)
            elif r.status_code >= 500:
                counts.server_errors += 1
            else:
                counts.other_errors += 1

        while time.monotonic() - start < duration_s and not stop.is_set():
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks, timeout=15.0)


def decision_ids_in_kafka(bootstrap: str, expected: set[str], timeout_s: float = 60.0) -> dict[str, int]:
    """request_id → times it is in the decisions topic, reading until every expected id is seen or time runs out."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=500)
    seen: dict[str, int] = {}
    try:
        parts = consumer.partitions_for_topic(DECISIONS) or set()
        consumer.assign([TopicPartition(DECISIONS, p) for p in parts])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=500, max_records=5000).values():
                for m in msgs:
                    rid = json.loads(m.value)["request_id"]
                    seen[rid] = seen.get(rid, 0) + 1
            if expected <= set(seen):
                break
    finally:
        consumer.close()
    return seen


def spool_drained(home: Path, timeout_s: float) -> bool:
    """Every per-process spool folder under `home/spool` is empty of unacknowledged records."""
    from serving.producer import DiskSpool

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pending = 0
        for seg_dir in {p.parent for p in (home / "spool").rglob("segment-*.spool")}:
            pending += DiskSpool(seg_dir, 1 << 40).size
        if pending == 0:
            return True
        time.sleep(0.5)
    return False


def settled_metrics(base: str, name: str, want: float, timeout_s: float) -> str:
    """/metrics once `name` reads `want`, or the last scrape at the timeout.

    Each worker writes its live gauges from a refresh loop once a second (serving/metrics.py), so a
    scrape taken the instant the spool empties on disk may still show the other worker's last value.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        text = httpx.get(f"{base}/metrics", timeout=10).text
        if _metric(text, name) == want or time.monotonic() > deadline:
            return text
        time.sleep(0.25)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


# ---------------------------------------------------------------------------
# scenario 1: two workers, broker frozen under load, experiment through the admin API
# ---------------------------------------------------------------------------
def two_workers_broker_freeze(work: Path, freeze_s: float, rate: float, cycles: int = 1) -> Counts:
    counts = Counts()
    home = work / "two-workers"
    prepare_home(home)
    broker = EmbeddedBroker(log_path=work / "tansu-two.log").start()
    prefix = f"chaos-{uuid.uuid4().hex[:8]}"
    answered: set[str] = set()
    try:
        create_topics(broker.bootstrap_servers, {DECISIONS: 4, FEEDBACK: 4})
        env = serve_env(home, broker, prefix)
        with api_process(home, env, workers=2) as (_, base):
            # An experiment created through one worker is known to every worker.
            exp = {
                "name": "chaos-exp",
                "problem": "slot",
                "salt": "chaos",
                "arms": [{"name": "a", "weight": 1.0}, {"name": "b", "weight": 1.0}],
            }
            r = httpx.post(f"{base}/v1/experiments", json=exp, headers={"X-API-Key": ADMIN_KEY}, timeout=10)
            assert r.status_code == 201, r.text
            listed = [
                [e["name"] for e in httpx.get(f"{base}/v1/experiments", headers={"X-API-Key": ADMIN_KEY}).json()]
                for _ in range(8)
            ]
            arms = [
                httpx.post(f"{base}/v1/decide/slot", json=slot_body(f"exp-user-{i}"), timeout=10).json()["arm"]
                for i in range(8)
            ]
            counts.notes["experiment_seen_by_every_call"] = all(names == ["chaos-exp"] for names in listed)
            counts.notes["users_with_an_arm"] = sum(a in ("a", "b") for a in arms)
            for cycle in range(cycles):

                async def run(cycle: int = cycle) -> None:
                    stop = asyncio.Event()
                    load = asyncio.create_task(
                        _load(base, rate, freeze_s + 4.0, answered, counts, f"freeze{cycle}", stop)
                    )
                    await asyncio.sleep(1.0)
                    broker.freeze()
                    counts.outages += 1
                    await asyncio.sleep(freeze_s)
                    broker.thaw()
                    await load

                asyncio.run(run())
            counts.notes["spool_drained"] = spool_drained(home, 60.0)
            metrics = settled_metrics(base, "troupe_spool_size", 0.0, timeout_s=10.0)
            counts.notes["spool_gauge_after"] = _metric(metrics, "troupe_spool_size")
            # Each worker flushes its request tallies once a second (serving/metrics.py): a scrape served by one
            # worker may not hold the other's last second yet, so the count is read again until it stops short.
            deadline = time.monotonic() + 5.0
            while True:
                counts.notes["http_requests_counted"] = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in metrics.splitlines()
                    if line.startswith("troupe_http_requests_total{") and 'route="/v1/decide/slot"' in line
                )
                if counts.notes["http_requests_counted"] >= len(answered) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
                metrics = httpx.get(f"{base}/metrics", timeout=10).text
            counts.notes["readyz_after"] = httpx.get(f"{base}/readyz", timeout=10).status_code
        seen = decision_ids_in_kafka(broker.bootstrap_servers, answered)
        counts.answered = len(answered)
        counts.lost = len(answered - set(seen))
        counts.notes["redelivered"] = sum(n - 1 for rid, n in seen.items() if rid in answered)
    finally:
        broker.stop()
    return counts


# ---------------------------------------------------------------------------
# scenario 2: kill -9 of the API during a broker outage, restart, nothing answered lost
# ---------------------------------------------------------------------------
def kill_9_during_outage(work: Path, kill_after_s: list[float], rate: float, workers: int = 1) -> Counts:
    counts = Counts()
    home = work / "kill-9"
    prepare_home(home)
    broker = EmbeddedBroker(log_path=work / "tansu-kill.log").start()
    prefix = f"chaos-{uuid.uuid4().hex[:8]}"
    answered: set[str] = set()
    try:
        create_topics(broker.bootstrap_servers, {DECISIONS: 4, FEEDBACK: 4})
        env = serve_env(home, broker, prefix)
        for k, after in enumerate(kill_after_s):
            port = free_port()
            proc = start_api(env, workers, port)
            url = f"http://127.0.0.1:{port}"

            async def run(
                after: float = after, k: int = k, proc: subprocess.Popen[bytes] = proc, base: str = url
            ) -> None:
                stop = asyncio.Event()
                load = asyncio.create_task(_load(base, rate, after + 5.0, answered, counts, f"kill{k}", stop))
                await asyncio.sleep(0.5)
                broker.freeze()
                counts.outages += 1
                await asyncio.sleep(after)
                stop_api(proc, kill=True)  # kill -9, the whole process group, mid-outage
                counts.kills += 1
                stop.set()
                await load
                broker.thaw()

            asyncio.run(run())
        # A clean start adopts and replays every spool left behind.
        with api_process(home, env, workers) as (_, base):
            counts.notes["spool_drained"] = spool_drained(home, 60.0)
            counts.notes["readyz_after"] = httpx.get(f"{base}/readyz", timeout=10).status_code
        seen = decision_ids_in_kafka(broker.bootstrap_servers, answered)
        counts.answered = len(answered)
        counts.lost = len(answered - set(seen))
        counts.notes["redelivered"] = sum(n - 1 for rid, n in seen.items() if rid in answered)
    finally:
        broker.thaw()
        broker.stop()
    return counts


# ---------------------------------------------------------------------------
# scenario 3: concurrent ingests with malformed and deeply nested messages
# ---------------------------------------------------------------------------
def concurrent_ingests(work: Path, trials: int, events_per_trial: int) -> Counts:
    from kafka import KafkaProducer

    from models.events import DecisionEvent, FeedbackEvent, to_json
    from pipelines.jobs.ingest import load_manifest, read_committed
    from tests.integration._events import decision, feedback

    counts = Counts()
    home = work / "ingest"
    broker = EmbeddedBroker(log_path=work / "tansu-ingest.log").start()
    try:
        create_topics(broker.bootstrap_servers, {DECISIONS: 4, FEEDBACK: 4})
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TROUPE_")},
            "PYTHONPATH": str(REPO),
            "TROUPE_HOME": str(home),
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "TROUPE_LOG_LEVEL": "WARNING",
        }
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        nested = b'{"request_id": "deep", "observation": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        good = bad = 0
        rng = random.Random(19)
        refused = 0
        for t in range(trials):
            for i in range(events_per_trial):
                d = decision(t * events_per_trial + i)
                producer.send(DECISIONS, key=d.user_id.encode(), value=to_json(d))
                producer.send(FEEDBACK, key=d.user_id.encode(), value=to_json(feedback(d, click=1.0)))
                good += 1
            for raw in (nested, b"{not json", b"\xff\xfe", b"[" * 100_000):
                producer.send(DECISIONS, key=b"bad", value=raw)
                bad += 1
            producer.flush(30)
            # Two runs at once on one lake: one waits for the other's lock (or exits with its message).
            runs = []
            for j in range(2):
                cmd = [sys.executable, "-m", "pipelines.jobs.ingest", "--commit-rows", "50"]
                if j == 1 and rng.random() < 0.5:
                    cmd += ["--lock-wait", "60"]
                runs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            for run in runs:
                _, err = run.communicate(timeout=120)
                if run.returncode != 0:
                    if b"another ingestion run holds the lake" not in err:
                        counts.other_errors += 1
                        counts.notes.setdefault("ingest_errors", []).append(err.decode()[-500:])
                    refused += 1
        producer.close()
        # A clean rerun adds nothing.
        subprocess.run([sys.executable, "-m", "pipelines.jobs.ingest"], cwd=REPO, env=env, check=True, timeout=120)
        data = home / "data"
        decisions = read_committed(data, DECISIONS, DecisionEvent)["request_id"].to_pylist()
        feedbacks = read_committed(data, FEEDBACK, FeedbackEvent)["request_id"].to_pylist()
        dead = read_committed(data, DECISIONS, kind="dead_letter").to_pylist()
        lake = data / "lake"
        on_disk = {p.relative_to(lake).as_posix() for p in lake.rglob("*.parquet")}
        counts.answered = good
        counts.lost = (good - len(set(decisions))) + (good - len(set(feedbacks)))
        counts.notes["lake_duplicates"] = (len(decisions) - len(set(decisions))) + (
            len(feedbacks) - len(set(feedbacks))
        )
        counts.notes["dead_letters"] = len(dead)
        counts.notes["malformed_sent"] = bad
        counts.notes["dead_letter_reasons"] = sorted({row["reason"][:60] for row in dead})
        counts.notes["runs_refused_by_the_lock"] = refused
        counts.notes["manifest_matches_disk"] = on_disk == set(load_manifest(lake)["files"])
    finally:
        broker.stop()
    return counts


# ---------------------------------------------------------------------------
# scenario 4: traversal names and corrupt models, through the CLI and the API
# ---------------------------------------------------------------------------
def traversal_and_corrupt_models(work: Path) -> Counts:
    counts = Counts()
    home = work / "registry-chaos"
    registry = prepare_home(home)
    register_policy(registry, "slot", "v2", seed=2)
    (home / "registry" / "slot" / "versions" / "v2" / "model.onnx").write_bytes(b"not a model")  # sha256 now wrong
    register_policy(registry, "slot", "v3", seed=3)
    v3 = home / "registry" / "slot" / "versions" / "v3"
    (v3 / "model.onnx").write_bytes(b"\x08\x07garbage that onnxruntime cannot parse")
    manifest = json.loads((v3 / "manifest.json").read_text())
    import hashlib

    manifest["files"]["model.onnx"] = hashlib.sha256((v3 / "model.onnx").read_bytes()).hexdigest()
    (v3 / "manifest.json").write_text(json.dumps(manifest))  # sha256 right, model unloadable
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TROUPE_")}, "TROUPE_HOME": str(home)}
    env["PYTHONPATH"] = str(REPO)
    refused = []
    for version in ("../../x", "..", "v1/../../x", "v2", "v3"):
        r = subprocess.run(
            [sys.executable, "-c", "from pipelines.cli import main; main()", "registry", "promote", "slot", version],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=60,
        )
        refused.append(r.returncode != 0)
    counts.notes["cli_refused"] = sum(refused)
    counts.notes["cli_tried"] = len(refused)
    counts.notes["current_after_cli"] = registry.current_version("slot")
    broker = EmbeddedBroker(log_path=work / "tansu-registry.log").start()
    try:
        create_topics(broker.bootstrap_servers, {DECISIONS: 4, FEEDBACK: 4})
        senv = serve_env(home, broker, f"chaos-{uuid.uuid4().hex[:8]}")
        for restart in range(2):
            with api_process(home, senv, workers=1) as (_, base):
                admin = {"X-API-Key": ADMIN_KEY}
                statuses = [
                    httpx.post(f"{base}/v1/models/slot/promote", json={"version": v}, headers=admin, timeout=30)
                    for v in ("../../x", "v2", "v3")
                ]
                statuses.append(httpx.post(f"{base}/v1/models/slot/rollback", headers=admin, timeout=30))
                counts.server_errors += sum(r.status_code >= 500 for r in statuses)
                counts.notes[f"api_statuses_{restart}"] = [r.status_code for r in statuses]
                decide = httpx.post(f"{base}/v1/decide/slot", json=slot_body("after"), timeout=10).json()
                counts.notes[f"serving_after_{restart}"] = [decide["policy_version"], decide["fallback"]]
                counts.notes[f"readyz_{restart}"] = httpx.get(f"{base}/readyz", timeout=10).status_code
    finally:
        broker.stop()
    return counts


# ---------------------------------------------------------------------------
# scenario 5: schemathesis --checks all against `troupe serve`
# ---------------------------------------------------------------------------
def schemathesis_all_checks(work: Path, max_examples: int, time_limit_s: float = 600.0) -> Counts:
    counts = Counts()
    home = work / "fuzz"
    prepare_home(home)
    broker = EmbeddedBroker(log_path=work / "tansu-fuzz.log").start()
    try:
        create_topics(broker.bootstrap_servers, {DECISIONS: 4, FEEDBACK: 4})
        env = serve_env(home, broker, f"chaos-{uuid.uuid4().hex[:8]}")
        with api_process(home, env, workers=1) as (_, base):
            report = work / "schemathesis.xml"
            cmd = [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{base}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(max_examples),
                "--header",
                f"X-API-Key: {ADMIN_KEY}",
                "--report",
                "junit",
                "--report-junit-path",
                str(report),
                "--seed",
                "19",
                "--no-color",
            ]
            try:
                result = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=time_limit_s)
                exit_code, tail = result.returncode, result.stdout[-3000:]
            except subprocess.TimeoutExpired as exc:  # what was sent so far still counts (from /metrics)
                exit_code = None
                out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
                tail = f"stopped after {time_limit_s} s\n" + out[-3000:]
            metrics = httpx.get(f"{base}/metrics", timeout=10).text
            total = 0.0
            fivexx = 0.0
            for line in metrics.splitlines():
                if line.startswith("troupe_http_requests_total{"):
                    value = float(line.rsplit(" ", 1)[1])
                    total += value
                    if 'status="5' in line:
                        fivexx += value
            counts.answered = int(total)
            counts.server_errors = int(fivexx)
            counts.notes["schemathesis_exit"] = exit_code
            counts.notes["schemathesis_tail"] = tail
    finally:
        broker.stop()
    return counts
