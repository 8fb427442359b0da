from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
from pathlib import Path

import pytest

from models.errors import IntegrityError, RegistryError, UnknownProblemError
from models.registry import ArtifactManifest, ModelRegistry, TensorSpec, validate_name
from tests.support.onnx_models import mlp_model


def manifest(version: str, problem: str = "slot") -> ArtifactManifest:
    return ArtifactManifest(
        name=f"{problem}-test",
        version=version,
        problem=problem,
        algorithm="test",
        created_at=dt.datetime(2026, 11, 21, tzinfo=dt.UTC) + dt.timedelta(minutes=int(version[1:])),
        inputs=[TensorSpec(name="observation", shape=["batch", 23])],
        outputs=[TensorSpec(name="logits", shape=["batch", 7])],
        feature_service="slot_v1",
        metrics={"eval/ope_dr": 1.5},
    )


def register(reg: ModelRegistry, tmp: Path, version: str, payload: bytes | None = None) -> None:
    """A real ONNX policy (promote runs it once), or `payload` bytes that onnxruntime cannot load."""
    src = tmp / f"{version}.onnx"
    model = mlp_model(23, {"logits": 7}, seed=int(version[1:]))
    src.write_bytes(payload if payload is not None else model.SerializeToString())
    reg.register(manifest(version), {"model.onnx": src})


def test_register_list_promote_rollback(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "registry")
    for v in ("v1", "v2", "v3"):
        register(reg, tmp_path, v)
    assert [m.version for m in reg.list("slot")] == ["v1", "v2", "v3"]
    with pytest.raises(RegistryError, match="promote"):
        reg.current("slot")
    reg.promote("slot", "v1")
    reg.promote("slot", "v3")
    assert reg.current("slot").manifest.version == "v3"
    assert reg.current("slot").manifest.files["model.onnx"]  # sha256 recorded
    assert reg.rollback("slot") == "v1"
    assert reg.current_version("slot") == "v1"
    with pytest.raises(RegistryError, match="no earlier"):
        reg.rollback("slot")


def test_duplicate_version_and_bad_names_refused(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    register(reg, tmp_path, "v1")
    with pytest.raises(RegistryError, match="already registered"):
        register(reg, tmp_path, "v1")
    with pytest.raises(RegistryError, match="letters"):
        reg.register(manifest("v1").model_copy(update={"version": "../evil"}), {"model.onnx": tmp_path / "v1.onnx"})
    with pytest.raises(UnknownProblemError, match="known problems"):
        reg.list("ranking")
    with pytest.raises(RegistryError, match="no version"):
        reg.load("slot", "v9")


def test_one_changed_byte_is_refused(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    register(reg, tmp_path, "v1")
    model = tmp_path / "slot" / "versions" / "v1" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[0] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        reg.load("slot", "v1")
    with pytest.raises(IntegrityError):
        reg.promote("slot", "v1")


def test_tampered_manifest_is_refused(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    register(reg, tmp_path, "v1")
    path = tmp_path / "slot" / "versions" / "v1" / "manifest.json"
    data = json.loads(path.read_text())
    data["files"]["model.onnx"] = "0" * 64
    path.write_text(json.dumps(data))
    with pytest.raises(IntegrityError):
        reg.load("slot", "v1")


def _promoter(root: str, rounds: int) -> None:
    reg = ModelRegistry(root)
    for i in range(rounds):
        reg.promote("slot", "v1" if i % 2 else "v2")


def _reader(root: str, rounds: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    reg = ModelRegistry(root)
    bad = 0
    for _ in range(rounds):
        try:
            if reg.current_version("slot") not in ("v1", "v2"):
                bad += 1
        except (json.JSONDecodeError, RegistryError):
            bad += 1
    out.put(bad)


def test_concurrent_promote_and_read_never_sees_a_partial_pointer(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    register(reg, tmp_path, "v1")
    register(reg, tmp_path, "v2")
    reg.promote("slot", "v1")
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_promoter, args=(str(tmp_path), 300)) for _ in range(2)]
    procs += [ctx.Process(target=_reader, args=(str(tmp_path), 3000, out)) for _ in range(2)]
    for p in procs:
        p.start()
    # Generous join: 600 promotions (each fsyncs a file and its folder) and 6,000 reads, on a shared 2-core host under load
    # (a fresh-clone run beside two training jobs once needed more than 60 s).
    for p in procs:
        p.join(240)
        assert p.exitcode == 0, f"{p.name}: exit code {p.exitcode} (None = still running after 240 s)"
    assert out.get() == 0 and out.get() == 0


@pytest.mark.parametrize("name", ["../x", "../../x", "a/b", "..", "v1/../v2", ".hidden", "v..1", "", "a\\b", "x" * 65])
def test_one_name_validator_refuses_traversal_everywhere(tmp_path: Path, name: str) -> None:
    reg = ModelRegistry(tmp_path / "registry")
    register(reg, tmp_path, "v1")
    with pytest.raises(RegistryError, match="without '..'"):
        validate_name("version", name)
    for call in (lambda: reg.promote("slot", name), lambda: reg.load("slot", name)):
        with pytest.raises(RegistryError, match="without '..'"):
            call()
    assert reg.current_version("slot") is None


def test_a_pointer_naming_a_path_is_refused_when_read(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    register(reg, tmp_path, "v1")
    reg.promote("slot", "v1")
    (tmp_path / "slot" / "CURRENT.json").write_text(json.dumps({"version": "../../outside", "history": []}))
    with pytest.raises(RegistryError, match="CURRENT.json"):
        reg.current_version("slot")
    with pytest.raises(RegistryError, match="CURRENT.json"):
        reg.current("slot")


def test_promote_and_rollback_refuse_a_model_onnxruntime_cannot_run(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    register(reg, tmp_path, "v1")
    register(reg, tmp_path, "v2", payload=b"not an onnx model")  # sha256 matches: only running it shows the fault
    reg.load("slot", "v2")
    reg.promote("slot", "v1")
    with pytest.raises(IntegrityError, match="onnxruntime cannot load or run model.onnx"):
        reg.promote("slot", "v2")
    assert reg.current_version("slot") == "v1", "the pointer did not move"
    # A history entry that became unloadable: rollback refuses and leaves the pointer alone.
    register(reg, tmp_path, "v3")
    reg.promote("slot", "v3")
    (tmp_path / "slot" / "versions" / "v1" / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(IntegrityError):
        reg.rollback("slot")
    assert reg.current_version("slot") == "v3"


def test_serving_refuses_a_version_built_for_another_feature_service(tmp_path: Path) -> None:
    # These versions are the slot layout before the live sequence (slot_v1, 23 inputs): a server that builds
    # slot_v2 observations says so instead of failing on a tensor shape.
    import asyncio

    from serving.backends import OnnxRuntimeBackend
    from serving.lifecycle import ModelManager

    reg = ModelRegistry(tmp_path / "registry")
    register(reg, tmp_path, "v1")
    manager = ModelManager(reg, ["slot"], lambda spec, loaded, agent: OnnxRuntimeBackend(loaded.model_path, ["logits"]))
    with pytest.raises(RegistryError, match="'slot_v1'.*'slot_v2' observations \\(33 values\\)"):
        asyncio.run(manager.ensure_loaded("slot", "v1"))
