"""`troupe serve` as a real process: uvicorn with two workers, settings from TROUPE_ variables."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from infra.broker import EmbeddedBroker
from models.registry import ModelRegistry
from tests.support.onnx_models import register_policy
from tests.support.requests import allocate_body, slot_body

REPO = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_troupe_serve_runs_uvicorn_workers_that_decide(tmp_path: Path, kafka_broker: EmbeddedBroker) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    register_policy(registry, "slot", "v1", promote=True)
    register_policy(registry, "allocate", "v1", promote=True)
    port = _port()
    env = {
        **os.environ,
        "TROUPE_HOME": str(tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "TROUPE_PROBLEMS": "slot,allocate",
        "TROUPE_ADMIN_API_KEYS": "proc-key",
        "TROUPE_REGISTRY_WATCH_S": "0",
        "TROUPE_INFERENCE_DEADLINE_MS": "1000",
        # Two workers share experiments through Redis (a private prefix: parallel runs never collide).
        "TROUPE_STATE_STORE_URL": "redis://127.0.0.1:6379/7",
        "TROUPE_STATE_STORE_PREFIX": f"test-uvicorn-{uuid.uuid4().hex[:8]}",
    }
    cmd = [
        sys.executable,
        "-c",
        "from pipelines.cli import main; main()",
        "serve",
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=1.0)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, (ready and ready.text, proc.poll())
        with httpx.Client(base_url=base, timeout=5.0) as c:
            slots = [c.post("/v1/decide/slot", json=slot_body(f"p{i}")) for i in range(20)]
            alloc = c.post("/v1/decide/allocate", json=allocate_body("p0"))
            big = c.post(
                "/v1/decide/slot",
                content=b"{" + b" " * (300 * 1024) + b"}",
                headers={"content-type": "application/json"},
            )
            admin = c.get("/v1/models/slot", headers={"X-API-Key": "proc-key"})
        assert all(r.status_code == 200 and r.json()["policy_version"] == "v1" for r in slots)
        assert alloc.status_code == 200 and not alloc.json()["fallback"]
        assert big.status_code == 413
        assert admin.json()["version"] == "v1"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out = proc.communicate(timeout=30)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0].decode(errors="replace")
    assert proc.returncode == 0, out[-3000:]
    assert "proc-key" not in out
