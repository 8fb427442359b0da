"""Model registry: versioned, checksummed policy artifacts on a filesystem.

Layout under the registry root::

    <root>/<problem>/versions/<version>/model.onnx       the policy (more .onnx files allowed)
    <root>/<problem>/versions/<version>/manifest.json    ArtifactManifest, sha256 of every file
    <root>/<problem>/CURRENT.json                        {"version": ..., "history": [...]}

`register` copies files into a temporary folder and renames it into place, so
a version appears whole or not at all. `promote` and `rollback` rewrite
CURRENT.json by write-temp → fsync → rename, under an exclusive lock on
`<problem>/.lock`: a reader either sees the old pointer or the new one, never a
half-written file. `load` re-hashes every file and refuses any mismatch.

The manifest is the only thing serving reads from training. No pickle anywhere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import IntegrityError, RegistryError
from models.problems import get_problem

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""Version, arm and experiment names: letters, digits, '.', '_', '-'; no separator, no leading dot, no '..'."""


class InvalidNameError(RegistryError, ValueError):
    """A name that could escape its folder or is not a plain name (also a ValueError, for pydantic validators)."""


def validate_name(what: str, value: object) -> str:
    """`value` if it is a plain name (NAME_RE, no '..'); the one check every entry point uses.

    Used by the registry (register, load, promote, rollback, CURRENT.json),
    the experiments (arm versions, names) and through them the CLI and the API.
    """
    if not isinstance(value, str) or not NAME_RE.match(value) or ".." in value:
        raise InvalidNameError(
            f"{what} {value!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
            "without '..' or path separators"
        )
    return value


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    dtype: str = "float32"
    shape: list[int | str] = Field(description="dimensions; a string names a dynamic axis such as 'batch'")


class DataRange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    start: dt.datetime
    end: dt.datetime


class ArtifactManifest(BaseModel):
    """What a registered policy is, what it was trained on, and the hash of every file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    version: str
    problem: str
    algorithm: str
    created_at: dt.datetime
    git_commit: str = "unknown"
    data_range: DataRange | None = None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    feature_service: str
    metrics: dict[str, float] = Field(default_factory=dict)
    agents: dict[str, str] = Field(
        default_factory=dict, description="multi-agent policies: agent name → its own ONNX file in this version"
    )
    files: dict[str, str] = Field(default_factory=dict, description="file name → sha256 hex digest")


@dataclass(frozen=True)
class LoadedVersion:
    """A verified version: its manifest and the folder its files live in."""

    manifest: ArtifactManifest
    path: Path

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def file(self, name: str) -> Path:
        if name not in self.manifest.files:
            raise RegistryError(f"{self.manifest.problem}/{self.manifest.version} has no file {name!r}")
        return self.path / name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write temp file in the same folder → fsync → rename over `path` → fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class ModelRegistry:
    """Register, list, promote, roll back and load policy versions under one root folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- paths ------------------------------------------------------------
    def _problem_dir(self, problem: str) -> Path:
        get_problem(problem)  # unknown names raise with the list of known ones
        return self.root / problem

    def _version_dir(self, problem: str, version: str) -> Path:
        return self._problem_dir(problem) / "versions" / validate_name("version", version)

    @contextlib.contextmanager
    def _lock(self, problem: str) -> Iterator[None]:
        d = self._problem_dir(problem)
        d.mkdir(parents=True, exist_ok=True)
        with (d / ".lock").open("a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # -- queries ----------------------------------------------------------
    def list(self, problem: str) -> list[ArtifactManifest]:
        """Every registered version of `problem`, oldest first."""
        vdir = self._problem_dir(problem) / "versions"
        if not vdir.is_dir():
            return []
        out = [self._read_manifest(p) for p in vdir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(out, key=lambda m: (m.created_at, m.version))

    def _read_pointer(self, problem: str) -> tuple[str | None, Sequence[str]]:
        """(current version, rollback history oldest first) from CURRENT.json."""
        path = self._problem_dir(problem) / "CURRENT.json"
        if not path.exists():
            return None, []
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("history", []), list):
            raise RegistryError(f"{path} is not a registry pointer; restore it from a backup or promote again")
        version = data.get("version")
        try:
            # Read through the same validation as every other entry point: a hand-edited
            # pointer cannot lead serving outside the registry.
            history = [validate_name("version", v) for v in data.get("history", [])]
            current = validate_name("version", version) if version is not None else None
        except InvalidNameError as exc:
            raise RegistryError(f"{path}: {exc}; restore it from a backup or promote again") from None
        return current, history

    def current_version(self, problem: str) -> str | None:
        return self._read_pointer(problem)[0]

    def current(self, problem: str) -> LoadedVersion:
        """The promoted version of `problem`, verified."""
        version = self.current_version(problem)
        if version is None:
            raise RegistryError(f"no version of {problem!r} has been promoted; run `troupe registry promote`")
        return self.load(problem, version)

    def _read_manifest(self, path: Path) -> ArtifactManifest:
        try:
            return ArtifactManifest.model_validate_json((path / MANIFEST_FILE).read_bytes())
        except FileNotFoundError:
            raise RegistryError(f"{path} has no {MANIFEST_FILE}; it is not a registered version") from None
        except ValidationError as err:
            raise RegistryError(f"{path / MANIFEST_FILE} is not a valid manifest: {err}") from None

    def load(self, problem: str, version: str) -> LoadedVersion:
        """Load one version after checking the sha256 of every file its manifest lists."""
        path = self._version_dir(problem, version)
        if not path.is_dir():
            known = [m.version for m in self.list(problem)]
            raise RegistryError(f"{problem!r} has no version {version!r}; registered: {known}")
        manifest = self._read_manifest(path)
        if manifest.version != version or manifest.problem != problem:
            raise IntegrityError(
                f"{path / MANIFEST_FILE} describes {manifest.problem}/{manifest.version}, not {problem}/{version}; "
                "the version is refused — re-register it"
            )
        if MODEL_FILE not in manifest.files:
            raise IntegrityError(f"{path}: manifest lists no {MODEL_FILE}")
        for name, expected in manifest.files.items():
            validate_name("file name", name)
            file = path / name
            if not file.is_file():
                raise IntegrityError(f"{file} is missing; the version {problem}/{version} is refused")
            actual = sha256_file(file)
            if actual != expected:
                raise IntegrityError(
                    f"{file} has sha256 {actual[:12]}… but its manifest says {expected[:12]}…; "
                    f"the version {problem}/{version} is refused — re-register it from the training output"
                )
        return LoadedVersion(manifest, path)

    # -- changes ----------------------------------------------------------
    def register(
        self,
        manifest: ArtifactManifest,
        files: Mapping[str, str | os.PathLike[str]],
    ) -> LoadedVersion:
        """Copy `files` (name in the version → source path) in as a new version.

        `files` must include model.onnx; the manifest's `files` field is filled
        with the sha256 of each copied file.
        """
        validate_name("version", manifest.version)
        if MODEL_FILE not in files:
            raise RegistryError(f"register needs a {MODEL_FILE}; got {sorted(files)}")
        for agent, name in manifest.agents.items():
            if name not in files:
                raise RegistryError(f"agent {agent!r} points at {name!r}, which is not among the files")
        final = self._version_dir(manifest.problem, manifest.version)
        with self._lock(manifest.problem):
            if final.exists():
                raise RegistryError(f"{manifest.problem}/{manifest.version} is already registered; pick a new version")
            final.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{manifest.version}."))
            try:
                hashes: dict[str, str] = {}
                for name, src in files.items():
                    if "/" in name or name in (MANIFEST_FILE, "") or name.startswith("."):
                        raise RegistryError(f"file name {name!r} is not allowed in a version folder")
                    shutil.copyfile(src, staging / name)
                    hashes[name] = sha256_file(staging / name)
                full = manifest.model_copy(update={"files": hashes})
                atomic_write_bytes(staging / MANIFEST_FILE, full.model_dump_json(indent=2).encode())
                os.rename(staging, final)
                _fsync_dir(final.parent)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return LoadedVersion(full, final)

    def promote(self, problem: str, version: str) -> None:
        """Make `version` current; the previous one goes on the rollback history.

        Before CURRENT.json moves: every file's sha256 is checked and every model
        file is loaded in onnxruntime and run once (`check_runs`); a version that
        fails either is refused with IntegrityError and nothing changes.
        """
        check_runs(self.load(problem, version))
        with self._lock(problem):
            previous, history = self._read_pointer(problem)
            if previous == version:
                return
            self._write_pointer(problem, version, [*history, previous] if previous is not None else history)

    def rollback_target(self, problem: str) -> str:
        """The version `rollback` would return to (serving loads and warms it before the pointer moves)."""
        _, history = self._read_pointer(problem)
        if not history:
            raise RegistryError(f"{problem!r} has no earlier promoted version to roll back to")
        return history[-1]

    def rollback(self, problem: str) -> str:
        """Return to the previously promoted version; returns the version now current."""
        with self._lock(problem):
            _, history = self._read_pointer(problem)
            if not history:
                raise RegistryError(f"{problem!r} has no earlier promoted version to roll back to")
            target = history[-1]
            check_runs(self.load(problem, target))
            self._write_pointer(problem, target, history[:-1])
            return target

    def _write_pointer(self, problem: str, version: str, history: Sequence[str]) -> None:
        data = {"version": version, "history": [*history], "updated_at": dt.datetime.now(dt.UTC).isoformat()}
        atomic_write_bytes(self._problem_dir(problem) / "CURRENT.json", json.dumps(data, indent=2).encode())


_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}


def check_runs(loaded: LoadedVersion) -> None:
    """Load every ONNX file of a verified version in onnxruntime (CPU) and run it once on zeros.

    Raises IntegrityError naming the file when onnxruntime cannot load it, the
    run fails, or an output is not finite. Dynamic axes are given size 1.
    """
    import numpy as np
    import onnxruntime as ort

    m = loaded.manifest
    names = [MODEL_FILE, *sorted(set(m.agents.values()) - {MODEL_FILE})]
    for name in names:
        file = loaded.path / name
        try:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(str(file), opts, providers=["CPUExecutionProvider"])
            feeds = {
                i.name: np.zeros(
                    [d if isinstance(d, int) and d > 0 else 1 for d in i.shape],
                    dtype=_ORT_DTYPES.get(i.type, "float32"),
                )
                for i in session.get_inputs()
            }
            outputs = session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 — onnxruntime raises its own classes for every kind of failure
            raise IntegrityError(
                f"{m.problem}/{m.version}: onnxruntime cannot load or run {name}: {type(exc).__name__}: "
                f"{str(exc)[:300]}; the version is refused — re-export and re-register it"
            ) from None
        for out, value in zip(session.get_outputs(), outputs, strict=False):
            arr = np.asarray(value)
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise IntegrityError(
                    f"{m.problem}/{m.version}: {name} output {out.name!r} is not finite on a zero input; refused"
                )
