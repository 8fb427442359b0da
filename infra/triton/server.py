"""Launch the real `tritonserver` binary shipped in the `nvidia-pytriton` wheel, on loopback.

Follows "Recipe: a real Triton server on a CPU machine" (ARCHITECTURE.md): the
server runs from its own venv (`.venv-triton`: nvidia-pytriton + onnxruntime,
numpy<2), the python-backend stub is copied next to a working copy of the
backends, and LD_LIBRARY_PATH puts the interpreter's libpython first.
Used by `troupe triton start`, the integration tests and the serving benchmark.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parents[2]


class TritonError(RuntimeError):
    """The Triton server could not be found, started or reached."""


def triton_venv() -> Path:
    """The server venv: $TROUPE_TRITON_VENV, else .venv-triton at the repo root (`make install-triton`)."""
    return Path(os.environ.get("TROUPE_TRITON_VENV", REPO_ROOT / ".venv-triton"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TritonServer:
    """One tritonserver process serving `repository` on free loopback ports."""

    repository: Path
    workdir: Path
    venv: Path | None = None
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "tritonserver.log"

    def _layout(self) -> tuple[Path, Path, dict[str, str]]:
        venv = self.venv or triton_venv()
        python = venv / "bin" / "python"
        site = venv / "lib" / "python3.11" / "site-packages"
        root = site / "pytriton" / "tritonserver"
        binary = root / "bin" / "tritonserver"
        if not python.exists() or not binary.exists():
            raise TritonError(f"no Triton server venv at {venv} (looked for {binary}); run `make install-triton`")
        backends = self.workdir / "backends"
        if not (backends / "python" / "triton_python_backend_stub").exists():
            shutil.copytree(root / "backends", backends, dirs_exist_ok=True)
            stub = root / "python_backend_stubs" / "3.11" / "triton_python_backend_stub"
            shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
        libdir = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, str(site / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH", "")) if p
        )
        # The stub finds its Python through PATH: the server venv's must come first.
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return binary, backends, env

    def start(self, timeout_s: float = 60.0) -> TritonServer:
        if self.process is not None:
            raise TritonError("this Triton server is already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary, backends, env = self._layout()
        self.http_port = self.http_port or _free_port()
        self.grpc_port = self.grpc_port or _free_port()
        self.metrics_port = self.metrics_port or _free_port()
        cmd = [
            str(binary),
            "--model-repository",
            str(self.repository),
            "--backend-directory",
            str(backends),
            "--http-address",
            "127.0.0.1",
            "--grpc-address",
            "127.0.0.1",
            "--metrics-address",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
            "--log-verbose",
            "0",
        ]
        with self.log_path.open("ab") as log:
            # Its own process group: the python backend's stub processes are its children, and a
            # SIGKILL to tritonserver alone left them running (seen after the outage test).
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise TritonError(f"tritonserver exited with code {code}; log tail:\n{self._tail()}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise TritonError(f"tritonserver was not ready within {timeout_s:.0f} s; log tail:\n{self._tail()}")

    def _tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _kill_group(self) -> None:
        """SIGKILL to tritonserver's process group (the server and its backend stubs), if any are left."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL to the server and its backend stubs: an abrupt crash, for outage tests."""
        if self.process is not None:
            self._kill_group()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)
        self._kill_group()  # whatever did not exit with it (a stuck server, orphaned stubs)
        self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
