from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
from pathlib import Path

import pytest

from models.errors import IntegrityError, RegistryError, UnknownProblemError
from models.registry import ArtifactManifest, ModelRegistry, TensorSpec


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


def register(reg: ModelRegistry, tmp: Path, version: str, payload: bytes = b"onnx-bytes") -> None:
    src = tmp / f"{version}.onnx"
    src.write_bytes(payload + version.encode())
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
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert out.get() == 0 and out.get() == 0
