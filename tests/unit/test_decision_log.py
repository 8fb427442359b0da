"""The decision log on the real producer's write-ahead spool (no broker: Kafka's side is tests/integration)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

from models.events import DecisionEvent
from serving.decision_log import DecisionLogger
from serving.producer import EventProducer, ProducerConfig, read_segment

# Nothing listens on port 1: the dispatcher fails and spools, the spool itself works as in production.
NO_BROKER = "127.0.0.1:1"


def _event(i: int) -> DecisionEvent:
    return DecisionEvent(
        request_id=f"r{i}",
        timestamp=dt.datetime.now(dt.UTC),
        problem="slot",
        user_id=f"u{i}",
        policy_name="p",
        policy_version="1",
        observation=[0.0] * 4,
        action=[1.0],
        propensity=0.5,
    )


def test_an_event_is_in_the_spool_file_before_decision_returns(tmp_path: Path) -> None:
    async def run() -> None:
        producer = EventProducer(ProducerConfig(NO_BROKER, tmp_path)).start()
        try:
            logger = DecisionLogger(producer, "d", "f")
            logger.start()
            assert logger.decision(_event(1)) is None, "the default answers without waiting for the disk"
            folder = producer.spool_folder
            assert folder is not None
            # Read the segment straight from the file: no sync has to have happened.
            assert producer.spool_size() == 1
            assert len(_records(folder)) == 1
        finally:
            producer.close()

    asyncio.run(run())


def _records(folder: Path) -> list[bytes]:
    return [r.value for seg in sorted(folder.glob("segment-*.spool")) for _, r in read_segment(seg)]


def test_wait_fsync_answers_once_the_group_is_fdatasynced(tmp_path: Path) -> None:
    async def run() -> None:
        producer = EventProducer(ProducerConfig(NO_BROKER, tmp_path)).start()
        try:
            # A safety timer far beyond the wait below: only the writer's callback can complete it.
            logger = DecisionLogger(producer, "d", "f", wait_fsync=True, durable_timeout_s=120.0)
            logger.start()
            waits = [logger.decision(_event(i)) for i in range(5)]
            assert all(w is not None for w in waits)
            await asyncio.wait_for(asyncio.gather(*waits), 60.0)  # type: ignore[arg-type]
            assert producer.queue_size() == 0, "nothing written is still waiting for its fdatasync"
        finally:
            producer.close()

    asyncio.run(run())


def test_kill_9_right_after_send_loses_nothing(tmp_path: Path) -> None:
    # The process kills itself the instant the last send returns: no writer thread had a chance to run.
    code = (
        "import os, signal, sys; from pathlib import Path; from serving.producer import EventProducer, ProducerConfig;"
        "p = EventProducer(ProducerConfig('127.0.0.1:1', Path(sys.argv[1]))).start();"
        "ok = [p.send('t', b'e%d' % i, key=b'u') for i in range(200)];"
        "assert all(ok); os.kill(os.getpid(), signal.SIGKILL)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env={**os.environ}, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    [folder] = tmp_path.glob("worker-*")
    assert _records(folder) == [b"e%d" % i for i in range(200)]
