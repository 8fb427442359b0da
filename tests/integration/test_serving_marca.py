"""MaRCA on the serving path, as real processes: `troupe serve --workers 2` with Redis, a MaRCA version in the
registry (model.onnx + cost_table.json + load_model.json, sha256-checked), λ shared by both workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from infra.broker import EmbeddedBroker
from models.errors import IntegrityError
from models.registry import ModelRegistry
from tests.integration.test_serving_uvicorn import REPO, _port
from tests.support.marca import register_marca
from tests.support.requests import allocate_body
from tests.support.waiting import until

KEY = {"X-API-Key": "marca-key"}


def test_a_tampered_cost_table_is_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    loaded = register_marca(registry, "m1")
    table = loaded.path / "cost_table.json"
    table.write_text(table.read_text().replace("0.", "0.0", 1))
    with pytest.raises(IntegrityError, match="cost_table.json"):
        registry.load("allocate", "m1")


def test_two_workers_decide_with_one_shared_lambda(tmp_path: Path, kafka_broker: EmbeddedBroker) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    register_marca(registry, "m1", promote=True)
    port = _port()
    env = {
        **os.environ,
        "TROUPE_HOME": str(tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "TROUPE_PROBLEMS": "allocate",
        "TROUPE_ADMIN_API_KEYS": KEY["X-API-Key"],
        "TROUPE_REGISTRY_WATCH_S": "0",
        "TROUPE_INFERENCE_DEADLINE_MS": "1000",
        "TROUPE_EXPLORATION_TEMPERATURE": "0",
        "TROUPE_EXPLORATION_EPSILON": "0",
        "TROUPE_STATE_STORE_URL": "redis://127.0.0.1:6379/7",
        "TROUPE_STATE_STORE_PREFIX": f"test-marca-{uuid.uuid4().hex[:8]}",
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
        ready = until(lambda: _ready(base), 60.0)
        assert ready, proc.poll()
        body = allocate_body("u0", seed=3)
        with httpx.Client(base_url=base, timeout=5.0) as c:

            def lambdas_seen(n: int = 16) -> set[float]:
                # new connections: uvicorn's workers share the socket, so the answers come from both
                return {httpx.post(f"{base}/v1/decide/allocate", json=body).json()["lambda"] for _ in range(n)}

            first = c.post("/v1/decide/allocate", json=body).json()
            assert not first["fallback"] and first["policy_version"] == "m1", first
            assert first["lambda"] == 1.0 and first["propensity"] == 1.0  # the default λ; greedy
            assert c.get("/v1/allocate/lambda").status_code == 401
            r = c.put("/v1/allocate/lambda", json={"value": -1}, headers=KEY)
            assert r.status_code == 422 and "value" in r.text

            assert c.put("/v1/allocate/lambda", json={"value": 0.0}, headers=KEY).status_code == 200
            assert until(lambda: lambdas_seen() == {0.0}, timeout_s=10.0)
            rich = c.post("/v1/decide/allocate", json=body).json()
            assert c.put("/v1/allocate/lambda", json={"value": 20.0}, headers=KEY).json()["value"] == 20.0
            assert until(lambda: lambdas_seen() == {20.0}, timeout_s=10.0)  # every worker follows Redis
            lean = c.post("/v1/decide/allocate", json=body).json()
            assert lean["estimated_cost"] < rich["estimated_cost"]  # a higher λ buys less compute

            # the balancer: over budget → λ rises (MPC on the version's load model)
            before = c.get("/v1/allocate/lambda", headers=KEY).json()["value"]
            c.put("/v1/allocate/lambda", json={"value": 2.0}, headers=KEY)
            step = c.post("/v1/allocate/balancer/observe", json={"utilisation": 1.3, "traffic": 1.0, "slot": 40},
                          headers=KEY).json()  # fmt: skip
            assert before == 20.0 and step["controller"] == "mpc" and step["value"] > 2.0, step
            assert step["utilisation"] == 1.3 and step["steps"] == 1
            assert until(lambda: lambdas_seen() == {step["value"]}, timeout_s=10.0)
            bad = c.post("/v1/allocate/balancer/observe", json={"utilisation": 1.0, "traffic": 1.0, "slot": 96},
                         headers=KEY)  # fmt: skip
            assert bad.status_code == 422 and "slot" in bad.text
            # both gauges on /metrics (each worker refreshes its live gauges once a second)
            assert until(lambda: _gauges(c.get("/metrics").text) == (step["value"], 1.3), timeout_s=10.0), c.get(
                "/metrics"
            ).text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out = proc.communicate(timeout=30)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0].decode(errors="replace")
    assert proc.returncode == 0, out[-3000:]


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _gauges(text: str) -> tuple[float | None, float | None]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("troupe_allocate_lambda", "troupe_allocate_utilisation"):
            values[name] = float(value)
    return values.get("troupe_allocate_lambda"), values.get("troupe_allocate_utilisation")
