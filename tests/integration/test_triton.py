"""The real tritonserver (nvidia-pytriton binary, python backend running the same ONNX files).

One server for the module. Shows that the Triton path over HTTP and gRPC
returns the same actions as the in-process path, and that killing Triton
under load fails no decision (fallback to the default policy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from infra.triton.server import TritonServer
from models.problems import SLOT
from models.registry import ModelRegistry
from serving.app import create_app
from serving.settings import ServingSettings
from serving.triton_repository import RepositoryOptions, export_repository
from tests.support.onnx_models import register_policy
from tests.support.requests import BODIES, slot_body
from tests.support.serving import NullProducer, load, uvicorn_thread


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonServer, ModelRegistry, Path]]:
    home = tmp_path_factory.mktemp("triton-home")
    registry = ModelRegistry(home / "registry")
    for problem in ("rank", "slot", "allocate"):
        register_policy(registry, problem, "v1", seed=11, promote=True, per_agent=problem == "rank")
    repo = home / "model-repo"
    export_repository(registry, repo, ["rank", "slot", "allocate"], RepositoryOptions(variant="cpu"))
    server = TritonServer(repo, home / "triton-work").start(timeout_s=90)
    try:
        yield server, registry, home
    finally:
        server.stop()


def _settings(home: Path, **kw: Any) -> ServingSettings:
    # Greedy exploration: the action is a deterministic function of the policy output.
    return ServingSettings(
        home=home,
        kafka_bootstrap_servers="127.0.0.1:1",
        registry_watch_s=0.0,
        exploration_temperature=0.0,
        exploration_epsilon=0.0,
        exploration_std_scale=0.0,
        **kw,
    )


def test_triton_http_and_grpc_return_the_same_actions_as_in_process(
    triton: tuple[TritonServer, ModelRegistry, Path],
) -> None:
    server, _, home = triton
    answers: dict[str, dict[str, Any]] = {}
    for backend, url in (("onnxruntime", ""), ("triton_http", server.http_url), ("triton_grpc", server.grpc_url)):
        # Parity, not latency: a deadline miss on this shared host would answer with the fallback.
        settings = _settings(home, backend=backend, triton_url=url or "127.0.0.1:1", inference_deadline_ms=5000.0)
        with TestClient(create_app(settings, producer=NullProducer(), feature_reader=None)) as c:
            answers[backend] = {}
            for problem, body in BODIES.items():
                for seed in range(3):
                    r = c.post(f"/v1/decide/{problem}", json=body(f"user-{seed}", seed=seed))
                    assert r.status_code == 200 and not r.json()["fallback"], r.text
                    answers[backend][f"{problem}-{seed}"] = r.json()
    for key, local in answers["onnxruntime"].items():
        for backend in ("triton_http", "triton_grpc"):
            remote = answers[backend][key]
            assert remote["action"] == pytest.approx(local["action"], abs=1e-6), (backend, key)
            assert remote.get("ordering") == local.get("ordering") and remote["propensity"] == local["propensity"]


def test_export_repo_cli_writes_gpu_configs(
    triton: tuple[TritonServer, ModelRegistry, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.settings import get_settings
    from pipelines.cli import app

    _, _, home = triton
    monkeypatch.setenv("TROUPE_HOME", str(home))
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(app, ["triton", "export-repo", str(tmp_path / "repo"), "-p", "slot", "-p", "rank"])
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 0, out.output
    config = (tmp_path / "repo" / "slot__v1" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "KIND_GPU" in config and "dynamic_batching" in config
    assert f"dims: [ {SLOT.observation_size} ]" in config and 'name: "logits"' in config
    assert (tmp_path / "repo" / "slot__v1" / "1" / "model.onnx").read_bytes() == (
        home / "registry/slot/versions/v1/model.onnx"
    ).read_bytes()
    assert "dims: [ 6 ]" in (tmp_path / "repo" / "rank__v1__pre_rank" / "config.pbtxt").read_text()
    assert not (tmp_path / "repo" / "slot__v1" / "1" / "model.py").exists()


@pytest.mark.parametrize("backend", ["triton_grpc"])
def test_killing_triton_under_load_fails_no_decision(
    triton: tuple[TritonServer, ModelRegistry, Path], backend: str
) -> None:
    server, _, home = triton
    settings = _settings(
        home,
        backend=backend,
        triton_url=server.grpc_url,
        problems=["slot"],
        inference_deadline_ms=200.0,
        breaker_failures=3,
        breaker_reset_s=0.5,
    )
    with uvicorn_thread(create_app(settings, producer=NullProducer(), feature_reader=None)) as url:

        async def run() -> Any:
            stop = False
            task = asyncio.create_task(
                load(url, "/v1/decide/slot", lambda i: slot_body(f"k{i}", seed=i % 5), lambda: stop, concurrency=4)
            )
            await asyncio.sleep(1.0)
            server.kill()  # last test of the module: the fixture's stop() is then a no-op
            await asyncio.sleep(1.5)
            stop = True
            return await task

        result = asyncio.run(run())
    assert result.failed == 0, result.errors[:3]
    reasons = [b["fallback_reason"] for b in result.bodies]
    served_by_triton = [b for b in result.bodies if not b["fallback"]]
    assert served_by_triton, "Triton answered before it was killed"
    assert {"error", "circuit_open"} & set(reasons), reasons[-5:]
    assert result.bodies[-1]["fallback"] and result.bodies[-1]["propensity"] == 1.0
