"""The project's one Kafka producer: never blocks the caller, never loses an accepted event.

Used by the decision API (serving/decision_log.py), by the simulated traffic of
the demo and by the benchmarks. The caller's hot path does one thing:
`send(topic, value, key)` puts the bytes on a bounded in-memory queue and
returns at once. A background *dispatcher* thread owns everything else:

* **direct mode** — takes batches off the queue, sends them with `acks=all` and
  waits for the broker's acknowledgements (delivery callbacks fire here);
  the client is confluent-kafka (librdkafka): ~3 µs of CPU per record against
  ~250–300 µs for kafka-python's `send()`, which was the largest single cost
  per decision in the API process (benchmarks/serving.py);
* **spooling mode** — entered when a send fails (broker unreachable, frozen,
  timing out): every event goes to an append-only, fsynced disk spool in
  `spool_dir`, in arrival order, including those whose send just failed;
* **replay** — every `retry_interval_s` the dispatcher tries to send the spool
  again, oldest record first, chunk by chunk; each acknowledged chunk's end
  position is fsynced to a small `.ack` file so a crash replays at most one
  chunk twice. When the spool is empty and the queue drained into it, the
  dispatcher goes back to direct mode. One thread does all of this, so the
  order in which events were accepted is the order in which they reach Kafka.

Delivery is at least once: a batch whose acknowledgement was lost in an outage
(the broker took it, then froze) is spooled and replayed, so Kafka may hold it
twice. The ingestion job keeps exactly the topic's messages; the dataset
builder drops repeated request_ids.

Counters: `sent` (acknowledged on first try), `spooled` (written to the spool),
`replayed` (acknowledged from the spool), `dropped` (refused: queue full, spool
full, or the producer closed). `healthy()` and `spool_size()` feed /readyz and
/metrics.

Spool record format (no pickle): ``u32 length | u32 crc32 | payload`` with
payload ``u16 topic length | topic | i32 key length (-1 = none) | key | value``.
A torn last record (crash mid-write) fails its length or crc check and is cut
off when the spool is reopened.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from models.events import DecisionEvent, FeedbackEvent, to_json
from models.logging import log_event
from models.settings import TroupeSettings, bootstrap_servers

log = logging.getLogger("troupe.producer")

_HEADER = struct.Struct(">II")  # length, crc32
_SEGMENT_GLOB = "segment-*.spool"


@dataclass(frozen=True)
class ProducerConfig:
    """Settings of one EventProducer."""

    bootstrap_servers: str
    """Kafka bootstrap address, `host:port[,host:port]`."""
    spool_dir: Path
    """Folder of the disk spool; created when missing. One producer per folder."""
    buffer_size: int = 100_000
    """Events the in-memory queue holds; `send` refuses (and counts `dropped`) beyond it."""
    batch_size: int = 1_000
    """Events taken off the queue and acknowledged together in direct mode."""
    request_timeout_ms: int = 5_000
    """How long one produce request may wait for the broker before it counts as failed."""
    delivery_timeout_ms: int = 10_000
    """How long an event may wait in the client's own buffer (librdkafka `message.timeout.ms`) before it is failed and spooled."""
    linger_ms: int = 5
    """Client batching delay; small, since the dispatcher already batches."""
    retry_interval_s: float = 1.0
    """How often spooling mode tries to replay the spool to the broker."""
    replay_chunk: int = 1_000
    """Spool records sent and acknowledged per replay step (the most a crash can send twice)."""
    max_spool_bytes: int = 1 << 30
    """Disk the spool may use; events beyond it are dropped and counted."""
    client_id: str = "troupe-producer"

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise ValueError("ProducerConfig.bootstrap_servers: expected 'host:port', got an empty string")
        for name in ("buffer_size", "batch_size", "request_timeout_ms", "delivery_timeout_ms", "replay_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"ProducerConfig.{name}: expected a positive integer, got {getattr(self, name)}")
        if self.delivery_timeout_ms < self.request_timeout_ms + self.linger_ms:
            raise ValueError(
                "ProducerConfig.delivery_timeout_ms: must be >= request_timeout_ms + linger_ms "
                f"({self.request_timeout_ms + self.linger_ms}), got {self.delivery_timeout_ms}"
            )
        if self.linger_ms < 0:
            raise ValueError(f"ProducerConfig.linger_ms: expected >= 0, got {self.linger_ms}")
        if self.retry_interval_s <= 0:
            raise ValueError(f"ProducerConfig.retry_interval_s: expected > 0, got {self.retry_interval_s}")
        if self.max_spool_bytes < 1 << 16:
            raise ValueError(f"ProducerConfig.max_spool_bytes: expected >= 65536, got {self.max_spool_bytes}")

    @classmethod
    def from_settings(cls, settings: TroupeSettings, **overrides: Any) -> ProducerConfig:
        """Bootstrap address and spool folder from the service settings; other fields as given."""
        return cls(bootstrap_servers=bootstrap_servers(settings), spool_dir=settings.spool_dir, **overrides)


@dataclass(frozen=True)
class DeliveryReport:
    """Final outcome of one accepted event, passed to `on_delivery`."""

    topic: str
    key: bytes | None
    partition: int | None
    offset: int | None
    replayed: bool
    """True when it reached Kafka from the spool."""
    error: str | None = None
    """None when delivered; otherwise why it was dropped."""


class _Record(NamedTuple):
    # A NamedTuple, not a frozen dataclass: one is built per decision on the request
    # path, and a tuple is ~3x cheaper to construct.
    topic: str
    key: bytes | None
    value: bytes


# ---------------------------------------------------------------------------
# Disk spool
# ---------------------------------------------------------------------------
def encode_record(rec: _Record) -> bytes:
    topic = rec.topic.encode()
    key_len = -1 if rec.key is None else len(rec.key)
    payload = b"".join((struct.pack(">H", len(topic)), topic, struct.pack(">i", key_len), rec.key or b"", rec.value))
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> _Record:
    (tlen,) = struct.unpack_from(">H", payload, 0)
    topic = payload[2 : 2 + tlen].decode()
    (klen,) = struct.unpack_from(">i", payload, 2 + tlen)
    pos = 6 + tlen
    key = None if klen < 0 else payload[pos : pos + klen]
    pos += max(klen, 0)
    return _Record(topic, key, payload[pos:])


def read_segment(path: Path, start: int = 0) -> Iterator[tuple[int, _Record]]:
    """(end position, record) for each whole record from byte `start`; stops at a torn tail."""
    with path.open("rb") as f:
        f.seek(start)
        pos = start
        while True:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size:
                return
            length, crc = _HEADER.unpack(head)
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            pos += _HEADER.size + length
            yield pos, _decode_payload(payload)


class DiskSpool:
    """Append-only segment files `segment-<n>.spool`, each with an `.ack` file holding the replayed position.

    Only the dispatcher thread touches it; `size` is read by other threads (an int read is atomic).
    """

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self.size = 0  # records not yet replayed
        self.bytes = 0
        self._active: Any = None  # open file of the newest segment
        self._active_path: Path | None = None
        for seg in self.segments():
            start = valid = self.acked(seg)
            for pos, _ in read_segment(seg, start):
                self.size += 1
                valid = pos
            if seg.stat().st_size > valid:  # torn tail from a crash: cut it off
                with seg.open("r+b") as f:
                    f.truncate(valid)
                    os.fsync(f.fileno())
            self.bytes += valid - start

    def segments(self) -> list[Path]:
        return sorted(self.folder.glob(_SEGMENT_GLOB), key=lambda p: int(p.stem.split("-")[1]))

    @staticmethod
    def acked(seg: Path) -> int:
        ack = seg.with_suffix(".ack")
        return int(ack.read_text()) if ack.exists() else 0

    def append(self, records: list[_Record]) -> int:
        """Write and fsync; returns how many fitted under max_bytes (the rest are the caller's to drop)."""
        if not records:
            return 0
        if self._active is None:
            segs = self.segments()
            n = int(segs[-1].stem.split("-")[1]) + 1 if segs else 0
            self._active_path = self.folder / f"segment-{n:08d}.spool"
            self._active = self._active_path.open("ab")
            _fsync_dir(self.folder)
        blobs = []
        for rec in records:
            blob = encode_record(rec)
            if self.bytes + len(blob) > self.max_bytes:
                break
            blobs.append(blob)
            self.bytes += len(blob)
        self._active.write(b"".join(blobs))
        self._active.flush()
        os.fsync(self._active.fileno())
        self.size += len(blobs)
        return len(blobs)

    def seal(self) -> None:
        """Close the newest segment so replay can finish it; new records start a new one."""
        if self._active is not None:
            self._active.close()
            self._active = None
            self._active_path = None

    def replay_chunks(self, chunk: int) -> Iterator[tuple[Path, int, list[_Record], bool]]:
        """(segment, end position, records, last of its segment) of sealed segments, oldest first."""
        for seg in self.segments():
            if seg == self._active_path:
                return
            batch: list[_Record] = []
            start = end = end_prev = self.acked(seg)
            for end, rec in read_segment(seg, start):
                if len(batch) >= chunk:
                    yield seg, end_prev, batch, False
                    batch = []
                batch.append(rec)
                end_prev = end
            yield seg, end, batch, True  # possibly empty: the segment is finished

    def ack(self, seg: Path, end: int, n: int, nbytes: int, finished: bool) -> None:
        self.size -= n
        self.bytes -= nbytes
        if finished:
            seg.unlink(missing_ok=True)
            seg.with_suffix(".ack").unlink(missing_ok=True)
            return
        tmp = seg.with_suffix(".ack.tmp")
        with tmp.open("w") as f:
            f.write(str(end))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(seg.with_suffix(".ack"))

    def close(self) -> None:
        self.seal()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# The producer
# ---------------------------------------------------------------------------
_STOP = object()


class EventProducer:
    """Bounded, non-blocking Kafka producer with a disk spool. Start with `start()` or use as a context manager."""

    def __init__(self, config: ProducerConfig, on_delivery: Callable[[DeliveryReport], None] | None = None) -> None:
        self.config = config
        self.on_delivery = on_delivery
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=config.buffer_size)
        self._lock = threading.Lock()
        self._counts = {"sent": 0, "spooled": 0, "replayed": 0, "dropped": 0}
        self._spool: DiskSpool | None = None
        self._kafka: Any = None
        self._spooling = False
        self._closed = False
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_retry = 0.0
        self._stop_seen = False  # the close marker was taken off the queue during a replay

    # -- caller side (any thread) ------------------------------------------
    def start(self) -> EventProducer:
        if self._thread is not None:
            raise RuntimeError("EventProducer.start: already started")
        self._spool = DiskSpool(self.config.spool_dir, self.config.max_spool_bytes)
        # Events left in the spool by an earlier process go first.
        self._spooling = self._spool.size > 0
        self._thread = threading.Thread(target=self._run, name="troupe-producer", daemon=True)
        self._thread.start()
        return self

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> bool:
        """Queue one event; returns False (and counts it dropped) when the buffer is full or the producer closed."""
        if self._closed:
            self._count("dropped")
            return False
        try:
            self._queue.put_nowait(_Record(topic, key, value))
        except queue.Full:
            self._count("dropped")
            return False
        self._idle.clear()
        return True

    def send_event(self, topic: str, event: DecisionEvent | FeedbackEvent) -> bool:
        """Serialise and queue an event keyed by its user id (a user's events stay ordered in one partition)."""
        return self.send(topic, to_json(event), key=event.user_id.encode())

    def healthy(self) -> bool:
        """True while the dispatcher runs and the broker takes events directly (not spooling)."""
        return self._thread is not None and self._thread.is_alive() and not self._spooling and not self._closed

    def spool_size(self) -> int:
        """Events waiting in the disk spool for the broker."""
        return self._spool.size if self._spool is not None else 0

    def queue_size(self) -> int:
        return self._queue.qsize()

    def counters(self) -> dict[str, int]:
        """sent, spooled, replayed, dropped since start."""
        with self._lock:
            return dict(self._counts)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every accepted event reached Kafka (queue and spool empty); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._idle.wait(0.05) and self._queue.empty() and self.spool_size() == 0:
                return True
            if self._thread is None or not self._thread.is_alive():
                return False
        return False

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting; deliver or spool everything queued, then stop the thread. Nothing accepted is lost."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            try:
                self._queue.put(_STOP, timeout=timeout_s)  # may wait for room: close is not on the hot path
            except queue.Full:
                log_event(log, "producer.close_timeout", logging.ERROR, queued=self._queue.qsize())
                return
            self._thread.join(timeout_s)

    def __enter__(self) -> EventProducer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- dispatcher thread ---------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _report(self, rec: _Record, partition: int | None, offset: int | None, replayed: bool, err: str | None) -> None:
        if self.on_delivery is None:
            return
        try:
            self.on_delivery(DeliveryReport(rec.topic, rec.key, partition, offset, replayed, err))
        except Exception as exc:  # noqa: BLE001 — a faulty callback must not stop delivery
            log_event(log, "producer.callback_error", logging.WARNING, error=str(exc))

    def _take(self, wait_s: float) -> tuple[list[_Record], bool]:
        """Up to batch_size records off the queue; (records, stop requested)."""
        out: list[_Record] = []
        try:
            item = self._queue.get(timeout=wait_s)
        except queue.Empty:
            return out, False
        while True:
            if item is _STOP:
                return out, True
            out.append(item)
            if len(out) >= self.config.batch_size:
                return out, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out, False

    def _producer(self) -> Any:
        if self._kafka is None:
            from confluent_kafka import Producer

            c = self.config
            self._kafka = Producer(
                {
                    "bootstrap.servers": c.bootstrap_servers,
                    "client.id": c.client_id,
                    "acks": "all",
                    # Idempotence off, one request in flight: order is kept per partition
                    # without the idempotent producer's epoch state, which stays wedged
                    # after batches expire in an outage (seen against Tansu with
                    # kafka-python). Duplicates are possible (at least once).
                    "enable.idempotence": False,
                    "max.in.flight.requests.per.connection": 1,
                    "linger.ms": c.linger_ms,
                    "request.timeout.ms": c.request_timeout_ms,
                    "message.timeout.ms": c.delivery_timeout_ms,
                    "retry.backoff.ms": 100,
                    "reconnect.backoff.max.ms": 1000,
                    "socket.connection.setup.timeout.ms": max(1000, c.request_timeout_ms),
                    # Java/kafka-python's key hashing, so a user's events land in the same
                    # partition whichever client wrote them (ingest dedups per partition).
                    "partitioner": "murmur2_random",
                    "queue.buffering.max.messages": 2 * max(c.batch_size, c.replay_chunk) + 1000,
                    # librdkafka's log lines go through this process's logging, not stderr.
                    "logger": logging.getLogger("troupe.producer.librdkafka"),
                }
            )
        return self._kafka

    def _deliver(self, records: list[_Record]) -> tuple[list[tuple[int, int]], int]:
        """Send and wait for acks. Returns ((partition, offset) of the acknowledged prefix, index of first failure)."""
        # Filled by librdkafka's delivery callbacks (run inside flush/poll on this thread).
        # A report for a message of an earlier, timed-out call lands in that call's list.
        outcome: list[tuple[int, int] | str | None] = [None] * len(records)

        def done(i: int, err: Any, msg: Any) -> None:
            outcome[i] = str(err) if err is not None else (msg.partition(), msg.offset())

        timeout_s = self.config.delivery_timeout_ms / 1000
        try:
            kafka = self._producer()
            for i, r in enumerate(records):
                while True:
                    try:
                        kafka.produce(r.topic, value=r.value, key=r.key, on_delivery=functools.partial(done, i))
                        break
                    except BufferError:  # librdkafka's own queue is full: let it drain
                        if kafka.poll(0.1) == 0 and kafka.flush(timeout_s) > 0:
                            raise
            # librdkafka checks message timeouts about once a second: allow for that.
            kafka.flush(timeout_s + 2.0)
        except Exception as exc:  # noqa: BLE001 — unusable client or full buffer: the rest goes to the spool
            log_event(log, "producer.send_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
        done_prefix: list[tuple[int, int]] = []
        for res in outcome:
            if not isinstance(res, tuple):
                log_event(log, "producer.delivery_failed", logging.WARNING, error=res or "no acknowledgement")
                break
            done_prefix.append(res)
        return done_prefix, len(done_prefix)

    def _to_spool(self, records: list[_Record]) -> None:
        assert self._spool is not None
        if not self._spooling:
            log_event(log, "producer.spooling", logging.WARNING, spool_dir=str(self.config.spool_dir))
        self._spooling = True
        self._idle.clear()
        fitted = self._spool.append(records)
        self._count("spooled", fitted)
        if fitted < len(records):
            self._count("dropped", len(records) - fitted)
            for rec in records[fitted:]:
                self._report(rec, None, None, False, "spool full")

    def _direct(self, records: list[_Record]) -> None:
        acked, first_fail = self._deliver(records)
        self._count("sent", len(acked))
        for rec, (part, off) in zip(records, acked, strict=False):
            self._report(rec, part, off, False, None)
        if first_fail < len(records):
            # Everything from the first failure on goes to the spool, in order: later
            # events of the same batch may have been accepted too (at least once).
            self._to_spool(records[first_fail:])
            self._next_retry = time.monotonic() + self.config.retry_interval_s

    def _replay(self) -> bool:
        """Send the spool, oldest first; stay in spooling mode at the first failure (returns False)."""
        assert self._spool is not None
        spool = self._spool
        spool.seal()
        for seg, end, chunk, last in spool.replay_chunks(self.config.replay_chunk):
            # Park what arrived meanwhile behind the sealed segments, keeping order.
            pending, stop = self._take(0.0)
            self._stop_seen = self._stop_seen or stop
            if pending:
                self._to_spool(pending)
            if not chunk:
                spool.ack(seg, end, 0, 0, finished=True)
                continue
            acked, first_fail = self._deliver(chunk)
            if first_fail < len(chunk):
                # Partial success: the acknowledged prefix may be re-sent next time (at least once).
                return False
            nbytes = sum(len(encode_record(r)) for r in chunk)
            spool.ack(seg, end, len(chunk), nbytes, finished=last)
            self._count("replayed", len(chunk))
            for rec, (part, off) in zip(chunk, acked, strict=True):
                self._report(rec, part, off, True, None)
        if spool.size == 0 and self._queue.empty():
            spool.seal()
            self._spooling = False
            log_event(log, "producer.replayed", replayed=self.counters()["replayed"])
        # else: events arrived while replaying; the next round replays them.
        return True

    def _run(self) -> None:
        stop = False
        while not stop:
            records, stop = self._take(0.05)
            stop = stop or self._stop_seen
            if self._spooling:
                if records:
                    self._to_spool(records)
                if time.monotonic() >= self._next_retry and not stop:
                    ok = self._replay()
                    # After a clean pass only what arrived meanwhile is left: go again at once.
                    self._next_retry = 0.0 if ok else time.monotonic() + self.config.retry_interval_s
            elif records:
                self._direct(records)
            if self._queue.empty() and not records and not self._spooling:
                self._idle.set()
        # Closing: whatever is left is delivered or spooled; nothing accepted is lost.
        rest, _ = self._take(0.0)
        while rest:
            if self._spooling:
                self._to_spool(rest)
            else:
                self._direct(rest)
            rest, _ = self._take(0.0)
        if self._spooling:
            with contextlib.suppress(Exception):
                self._replay()
        if self._kafka is not None:
            with contextlib.suppress(Exception):
                self._kafka.flush(1.0)  # only reports of earlier timed-out messages can be left
            self._kafka = None
        if self._spool is not None:
            self._spool.close()
        self._idle.set()
