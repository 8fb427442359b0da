"""Decision and feedback logging through the project's one Kafka producer (serving/producer.py).

With the project's producer (`writes_through`), every event is written to its
write-ahead spool by `send` itself — one write(2) into the page cache, before
the answer is sent — so a `kill -9` at any moment loses no answered decision.
The producer's writer thread makes each group of writes stable with one
fdatasync (group commit: everything written during the previous fdatasync,
about 5 ms on this project's disks) and then hands it to Kafka. Nothing here
waits for the disk or the network, and a refused event is counted, never raised.

Why not answer after the fdatasync (the earlier default): with N requests in
flight, Little's law caps throughput at N / latency, and an fdatasync takes
~5 ms — 16 connections could not pass ~2,300 decisions per second however
little CPU a decision took. Writing before the answer keeps everything a
process crash can lose safe; only a power loss or kernel crash within the
group-commit window (one or two fdatasyncs) can lose answered events.
`wait_fsync=True` (TROUPE_DECISION_LOG_WAIT_FSYNC=true) closes that window:
the events of one event-loop iteration share one `when_durable` marker and the
writer's callback wakes every request of the group through one `asyncio.Event`
(a safety timer, `durable_timeout_s`, answers anyway if the disk hangs).

Producers that do not write through (tests' NullProducer, other protocols)
get the events in bursts every `batch_interval_s` (default 5 ms): the burst cut
the per-event hand-over cost when the producer queued events in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from models.events import DecisionEvent, FeedbackEvent, to_json
from models.logging import log_event

log = logging.getLogger("troupe.serving.decision_log")


class EventProducer(Protocol):
    """What serving needs from serving/producer.py."""

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> bool: ...

    def healthy(self) -> bool: ...

    def spool_size(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class DecisionLogger:
    producer: EventProducer
    decisions_topic: str
    feedback_topic: str
    on_error: Callable[[str], None] | None = None
    batch_interval_s: float = 0.005
    max_batch: int = 1000
    wait_fsync: bool = False
    """Answer only once the event's group is fdatasynced (needs a producer with `when_durable`)."""
    durable_timeout_s: float = 1.0
    _batch: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _written: asyncio.Event | None = None  # set when the pending group is fdatasynced
    _loop: asyncio.AbstractEventLoop | None = None
    _through: bool = False  # the producer writes each event to its spool in `send`

    def __post_init__(self) -> None:
        if self.batch_interval_s < 0:
            raise ValueError(f"DecisionLogger.batch_interval_s must be >= 0, got {self.batch_interval_s}")
        if self.max_batch < 1:
            raise ValueError(f"DecisionLogger.max_batch must be >= 1, got {self.max_batch}")

    def start(self) -> None:
        """Start the periodic hand-over on the running loop; without it every event is handed over at once."""
        self._through = bool(getattr(self.producer, "writes_through", False))
        if self.wait_fsync and callable(getattr(self.producer, "when_durable", None)):
            self._loop = asyncio.get_running_loop()
        else:
            self.wait_fsync = False
        if self._through or self.wait_fsync or self.batch_interval_s == 0 or self._task is not None:
            return  # written in `send`: holding events back would let an answer overtake its event

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.batch_interval_s)
                self.flush()

        self._task = asyncio.get_running_loop().create_task(loop(), name="troupe-decision-log")

    def flush(self) -> None:
        """Hand the pending batch to the producer (never blocks)."""
        batch, self._batch = self._batch, []
        for topic, key, value in batch:
            self._send_now(topic, key, value)

    def _mark_group(self) -> None:
        """Ask the producer to set the pending group's event once everything written so far is fdatasynced."""
        written, self._written = self._written, None
        if written is None:
            return
        loop = self._loop
        assert loop is not None

        def from_writer(ok: bool) -> None:
            if not ok and self.on_error is not None:
                loop.call_soon_threadsafe(self.on_error, "spool")
            loop.call_soon_threadsafe(written.set)

        if not self.producer.when_durable(from_writer):  # type: ignore[attr-defined]
            written.set()  # closed: the events were refused and counted
            return
        loop.call_later(self.durable_timeout_s, written.set)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush()

    def _send_now(self, topic: str, key: bytes, value: bytes) -> None:
        try:
            accepted = self.producer.send(topic, value, key=key)
        except Exception as exc:  # noqa: BLE001 — logging must never fail a decision
            log_event(log, "decision_log.send_error", logging.ERROR, topic=topic, error=str(exc))
            accepted = False
        # Refused (spool full, closed): the producer counts it as dropped; we count it per topic.
        if not accepted and self.on_error is not None:
            self.on_error(topic)

    def _send(self, topic: str, key: str, value: bytes) -> Awaitable[object] | None:
        if self._through or self._task is None:
            self._send_now(topic, key.encode(), value)
            if not self.wait_fsync:
                return None
            written = self._written
            if written is None:  # the first event of this loop iteration opens the group
                written = self._written = asyncio.Event()
                self._loop.call_soon(self._mark_group)  # type: ignore[union-attr]
            return written.wait()
        self._batch.append((topic, key.encode(), value))
        if len(self._batch) >= self.max_batch:
            self.flush()
        return None

    def decision(self, event: DecisionEvent) -> Awaitable[object] | None:
        """Log a decision; with `wait_fsync`, await the result before answering (it completes once fdatasynced)."""
        # Keyed by user: one user's decisions stay ordered within a partition.
        return self._send(self.decisions_topic, event.user_id, to_json(event))

    def feedback(self, event: FeedbackEvent) -> Awaitable[object] | None:
        return self._send(self.feedback_topic, event.user_id, to_json(event))
