"""Start and stop the loop's long-running pieces for the demo and the end-to-end tests: broker and decision API.

Both are real processes (the Tansu broker binary, uvicorn serving
`serving.app:create_app`), each in its own process group so that stopping it
also stops anything it spawned; both are stopped in `finally` blocks by their
context managers, whatever happens in between.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infra.broker import EmbeddedBroker, create_topics, free_port
from models.errors import TroupeError
from models.settings import TroupeSettings


class ServiceError(TroupeError):
    """A service did not start or answer; the message carries its log tail."""


@contextlib.contextmanager
def running_broker(settings: TroupeSettings, log_path: Path) -> Iterator[EmbeddedBroker]:
    """An embedded broker on loopback with the decision and feedback topics, stopped on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_path=log_path).start()
    try:
        create_topics(
            broker.bootstrap_servers,
            {settings.decisions_topic: settings.topic_partitions, settings.feedback_topic: settings.topic_partitions},
        )
        yield broker
    finally:
        broker.stop()


@dataclass
class DecisionApi:
    """The decision API as a uvicorn subprocess (its own process group) on a free loopback port."""

    env: Mapping[str, str]
    log_path: Path
    port: int = 0
    admin_key: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> DecisionApi:
        import httpx

        self.port = self.port or free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "uvicorn", "--factory", "serving.app:create_app",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise ServiceError(f"the decision API exited at start-up; log tail:\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2.0)
                if r.status_code == 200:
                    return self
                last = f"/readyz answered {r.status_code}: {r.text[:300]}"
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.3)
        self.stop()
        raise ServiceError(
            f"the decision API was not ready in {timeout_s:.0f} s ({last}); log tail:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 10 s."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@contextlib.contextmanager
def running_api(env: Mapping[str, str], log_path: Path, admin_key: str) -> Iterator[DecisionApi]:
    """The decision API, started and always stopped.

    An experiments file that does not exist yet is created empty: the API
    reads it at start-up, and the deploy job adds canaries to it later.
    """
    experiments = env.get("TROUPE_EXPERIMENTS_FILE")
    if experiments and not Path(experiments).exists():
        Path(experiments).parent.mkdir(parents=True, exist_ok=True)
        Path(experiments).write_text("experiments: []\n")
    api = DecisionApi(env={**env, "TROUPE_ADMIN_API_KEYS": admin_key}, log_path=log_path, admin_key=admin_key)
    try:
        yield api.start()
    finally:
        api.stop()


def apply_feature_store(settings: TroupeSettings) -> Path:
    """`feast apply` into `<home>/feature_repo` (SQLite online store); returns the repo serving reads."""
    from pipelines.jobs.loop import require

    features = require("pipelines.jobs.features", None, "the data-plane issue (#4)")
    cfg = features.FeaturesConfig.from_settings(settings)
    features.apply(cfg)
    return Path(cfg.repo_dir)
