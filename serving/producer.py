"""The project's one Kafka producer: a write-ahead spool in front of Kafka, so nothing accepted is lost.

Used by the decision API (serving/decision_log.py), by the simulated traffic of
the demo and by the benchmarks. The caller's hot path does one thing:
`send(topic, value, key)` encodes the record (crc32) and appends it to the
write-ahead spool with one `write(2)` — into the page cache, so from then on a
`kill -9` loses nothing — and returns; it never waits for the disk's flush or
the network. Two background threads own everything else:

* the **writer** makes the spool stable by group commit: one `fdatasync` for
  everything written since the previous one (under load it loops, so a group is
  what arrived during the previous fdatasync, ~5 ms here), then runs the
  *durability callbacks* registered meanwhile (`when_durable`) and hands the
  group to the dispatcher. Why the caller writes and the writer only syncs: an
  answer that awaited the fdatasync caps throughput at requests in flight /
  fdatasync latency (16 / ~5 ms here), and a hand-over to a thread per event
  costs more CPU than the write(2) itself (~1-2 µs for a ~600-byte record);
* the **dispatcher** sends what the writer committed to Kafka with `acks=all`
  and, per acknowledged record, moves the spool's acknowledged position; a
  fully acknowledged segment is deleted (*deleted on delivery*). The client is
  confluent-kafka (librdkafka): ~3 µs of CPU per record.
* **spooling mode** — entered when a send fails (broker unreachable, frozen,
  timing out): the dispatcher stops sending from memory (the records are on
  disk already) and every `retry_interval_s` *replays* the spool from its
  acknowledged positions, oldest first, chunk by chunk; when it has caught up
  with the writer it goes back to direct mode. One dispatcher thread sends, so
  the order in which events were accepted is the order in which they reach Kafka.

Delivery is at least once: a record acknowledged by the broker whose
acknowledgement was lost (the broker took it, then froze), or whose `.ack`
position was not yet written when the process died, is sent again. The
ingestion job keeps exactly the topic's messages; the dataset builder drops
repeated request_ids.

One spool folder per process (ours): `spool_dir/worker-<pid>/`, locked
(`flock` on its `.lock`) for the process's lifetime. Several uvicorn workers
therefore never share a segment. A folder whose lock nobody holds belongs to a
process that died: at start and every `adopt_interval_s` a producer takes the
root's `.adopt.lock`, locks such an orphan, moves its segments (with their
acknowledged positions) into its own folder and replays them. Segments lying
directly in `spool_dir` (the layout before per-process folders) are adopted
the same way.

Segment record format (no pickle)::

    magic 0xF7 'T' 'W' 0x01 | u32 payload length | u32 crc32(length bytes + payload) | payload

with payload ``u16 topic length | topic | i32 key length (-1 = none) | key | value``.
The magic starts with 0xF7, a byte that never occurs in UTF-8, so after a
record that fails its checksum the reader finds the next record by searching
for the magic: one corrupt record is skipped and counted (`corrupt`), never the
rest of the segment. Bytes after the last whole record (a write torn by a
crash) are cut off when the spool is reopened.

Durability: a record is in the page cache before `send` returns (survives a
process crash) and on the device after its group's fdatasync (survives a power
loss or kernel crash), a few milliseconds later. The small `.ack` files
(acknowledged positions) are rewritten in place, one fixed-width `pwrite`,
without fsync: a process crash re-sends nothing; a power loss may re-send what
was acknowledged since the last write-back (at least once). `fsync=False`
drops the fdatasync (for benchmarks only).

Counters: `sent` (acknowledged on first try), `spooled` (left to the replay
because the direct send failed or spooling was on), `replayed` (acknowledged
from the spool), `dropped` (refused: too many awaiting fdatasync, spool full,
a failed write, or the producer closed), `corrupt` (spool records skipped for
a bad checksum). `healthy()` and `spool_size()` (records written and not yet
acknowledged) feed /readyz and /metrics.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import fcntl
import functools
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from models.events import DecisionEvent, FeedbackEvent, to_json
from models.logging import log_event
from models.settings import TroupeSettings, bootstrap_servers

log = logging.getLogger("troupe.producer")

MAGIC = b"\xf7TW\x01"
_HEADER = struct.Struct(">4sII")  # magic, payload length, crc32(length bytes + payload)
_LENGTH = struct.Struct(">I")
_SEGMENT_GLOB = "segment-*.spool"
WORKER_PREFIX = "worker-"


@dataclass(frozen=True)
class ProducerConfig:
    """Settings of one EventProducer."""

    bootstrap_servers: str
    """Kafka bootstrap address, `host:port[,host:port]`."""
    spool_dir: Path
    """Root of the write-ahead spool; this process writes into `spool_dir/worker-<pid>/`. Created when missing."""
    buffer_size: int = 100_000
    """Events written and awaiting their fdatasync (a hung disk) that `send` allows; it refuses (`dropped`) beyond."""
    batch_size: int = 1_000
    """Most records one direct delivery sends and waits for together."""
    request_timeout_ms: int = 5_000
    """How long one produce request may wait for the broker before it counts as failed."""
    delivery_timeout_ms: int = 10_000
    """How long an event may wait in the client's own buffer (librdkafka `message.timeout.ms`) before it is failed."""
    linger_ms: int = 20
    """Client batching delay; the dispatcher also waits this long between direct deliveries to batch them.
    Fewer, larger produce requests wake fewer threads on the API's core: 5 -> 20 ms cut the slot API's CPU per
    decision from ~0.30 to ~0.26 ms and Tansu's from 0.030 to 0.011 ms (benchmarks/serving.py host, loaded)."""
    retry_interval_s: float = 1.0
    """How often spooling mode tries to replay the spool to the broker."""
    replay_chunk: int = 1_000
    """Spool records sent and acknowledged per replay step."""
    max_spool_bytes: int = 1 << 30
    """Disk the unacknowledged spool may use; events beyond it are dropped and counted."""
    segment_bytes: int = 16 << 20
    """A segment is closed and a new one started past this size."""
    fsync: bool = True
    """fdatasync each group commit before its durability callbacks run (off: survives kill -9, not power loss)."""
    group_commit_s: float = 0.002
    """Shortest time between two group commits: with a fast disk (or fsync off) groups would shrink to one event
    each and every event would pay a whole fdatasync's CPU (~180 µs here); an event is stable within about this
    plus two fdatasyncs."""
    close_timeout_s: float = 1.0
    """How long `close()` lets a healthy dispatcher deliver what is left; the rest stays in the spool."""
    adopt_interval_s: float = 10.0
    """How often the dispatcher looks for spool folders of dead processes; 0 = only at start."""
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
        if self.segment_bytes < 1 << 12:
            raise ValueError(f"ProducerConfig.segment_bytes: expected >= 4096, got {self.segment_bytes}")
        if self.close_timeout_s < 0 or self.adopt_interval_s < 0 or not 0 <= self.group_commit_s <= 1:
            raise ValueError(
                "ProducerConfig.close_timeout_s, adopt_interval_s: expected >= 0; group_commit_s: expected in [0, 1]"
            )

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
# Segment format
# ---------------------------------------------------------------------------
def encode_record(rec: _Record) -> bytes:
    topic = rec.topic.encode()
    key_len = -1 if rec.key is None else len(rec.key)
    payload = b"".join((struct.pack(">H", len(topic)), topic, struct.pack(">i", key_len), rec.key or b"", rec.value))
    n = len(payload)
    return _HEADER.pack(MAGIC, n, zlib.crc32(payload, zlib.crc32(_LENGTH.pack(n)))) + payload


def _decode_payload(payload: bytes) -> _Record:
    (tlen,) = struct.unpack_from(">H", payload, 0)
    topic = payload[2 : 2 + tlen].decode()
    (klen,) = struct.unpack_from(">i", payload, 2 + tlen)
    pos = 6 + tlen
    key = None if klen < 0 else payload[pos : pos + klen]
    pos += max(klen, 0)
    return _Record(topic, key, payload[pos:])


@dataclass
class SegmentScan:
    """What one read of a segment found."""

    records: list[tuple[int, _Record]] = field(default_factory=list)
    """(end position, record) of every whole, checksum-valid record, in order."""
    corrupt: int = 0
    """Stretches skipped because a record failed its header or checksum (each followed by a valid record)."""
    valid_end: int = 0
    """End of the last valid record; bytes after it are a torn tail."""


def scan_segment(path: Path, start: int = 0, stop: int | None = None) -> SegmentScan:
    """Every valid record of `path` between byte `start` and `stop`; corrupt records are skipped, not fatal."""
    with path.open("rb") as f:
        f.seek(start)
        data = f.read() if stop is None else f.read(max(0, stop - start))
    out = SegmentScan(valid_end=start)
    pos, size = 0, len(data)
    while pos < size:
        if data.startswith(MAGIC, pos) and pos + _HEADER.size <= size:
            _, n, crc = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + n
            if end <= size:
                payload = data[pos + _HEADER.size : end]
                if zlib.crc32(payload, zlib.crc32(_LENGTH.pack(n))) == crc:
                    try:
                        record = _decode_payload(payload)
                    except (struct.error, UnicodeDecodeError):
                        record = None
                    if record is not None:
                        out.records.append((start + end, record))
                        out.valid_end = start + end
                        pos = end
                        continue
        # Not a valid record here: resynchronise on the next magic (never inside UTF-8 JSON).
        nxt = data.find(MAGIC, pos + 1)
        if nxt < 0:
            break  # the rest is a torn tail
        out.corrupt += 1
        pos = nxt
    return out


def read_segment(path: Path, start: int = 0) -> Iterator[tuple[int, _Record]]:
    """(end position, record) for each valid record from byte `start` (corrupt ones skipped)."""
    yield from scan_segment(path, start).records


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_number(path: Path) -> int:
    return int(path.stem.split("-")[1])


@dataclass
class _Segment:
    number: int
    path: Path
    end: int  # bytes written (whole records)
    acked: int  # bytes acknowledged by Kafka
    pending: int  # records written and not acknowledged
    ack_fd: int | None = None  # its open `.ack` file, rewritten in place


# ---------------------------------------------------------------------------
# The write-ahead spool of one process
# ---------------------------------------------------------------------------
class DiskSpool:
    """Segment files `segment-<n>.spool` in one folder, each with an `.ack` file holding the acknowledged position.

    The caller's thread writes (`write`: one record, one `write(2)` into the
    page cache, under the lock); the producer's writer thread makes what was
    written stable (`sync`: one `fdatasync` per group) and hands it on; the
    dispatcher reads and acknowledges. One lock guards the segment table and
    the written-not-synced list. `size` (records not acknowledged) may be read
    from any thread.
    """

    def __init__(self, folder: Path, max_bytes: int, segment_bytes: int = 16 << 20, fsync: bool = True) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.corrupt_found = 0  # records skipped while counting the segments found at open
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}
        self._active_fd: int | None = None  # O_APPEND descriptor of the newest segment
        self._active: _Segment | None = None
        self._next_number = 0
        self._used = 0  # bytes written and not acknowledged (the max_bytes check, without a sum per write)
        # Written since the last `sync`: (record, segment, end position), in write order; sealed
        # segments' descriptors still to fdatasync and close; callbacks to run after the next sync.
        self._unsynced: list[tuple[_Record, int, int]] = []
        self._unsynced_fds: list[int] = []
        self._unsynced_dir = False
        self._markers: list[Callable[[bool], None]] = []
        self.add_existing(sorted(folder.glob(_SEGMENT_GLOB), key=_segment_number))

    # -- opening --------------------------------------------------------------
    @staticmethod
    def acked(seg: Path) -> int:
        ack = seg.with_suffix(".ack")
        try:
            return int(ack.read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def add_existing(self, paths: list[Path]) -> int:
        """Count the unacknowledged records of segments already in this folder (torn tails cut); returns them."""
        added = 0
        for path in paths:
            acked = self.acked(path)
            scan = scan_segment(path, acked)
            if path.stat().st_size > scan.valid_end:  # torn tail from a crash: cut it off
                with path.open("r+b") as f:
                    f.truncate(scan.valid_end)
                    os.fsync(f.fileno())
            self.corrupt_found += scan.corrupt
            n = _segment_number(path)
            with self._lock:
                self._segments[n] = _Segment(n, path, scan.valid_end, acked, len(scan.records))
                self._next_number = max(self._next_number, n + 1)
                self._used += max(0, scan.valid_end - acked)
            added += len(scan.records)
        return added

    def reserve_numbers(self, count: int) -> int:
        """First of `count` fresh segment numbers (for adopted segments)."""
        with self._lock:
            first = self._next_number
            self._next_number += count
            return first

    # -- queries ----------------------------------------------------------------
    @property
    def size(self) -> int:
        return sum(s.pending for s in list(self._segments.values()))

    @property
    def bytes(self) -> int:
        return sum(s.end - s.acked for s in list(self._segments.values()))

    def segments(self) -> list[Path]:
        return [s.path for s in sorted(self._segments.values(), key=lambda s: s.number)]

    def unacknowledged(self) -> list[tuple[int, int, int]]:
        """(segment number, acknowledged position, end) of every segment with records left, oldest first."""
        with self._lock:
            return [(s.number, s.acked, s.end) for s in sorted(self._segments.values(), key=lambda s: s.number)]

    def acked_position(self, number: int) -> int | None:
        """Acknowledged position of a segment; None once it was deleted (everything in it acknowledged)."""
        seg = self._segments.get(number)
        return None if seg is None else seg.acked

    def caught_up(self) -> bool:
        """Everything written is acknowledged."""
        with self._lock:
            return all(s.acked >= s.end for s in self._segments.values())

    def unsynced(self) -> int:
        """Records written and not yet made stable by `sync`."""
        return len(self._unsynced)

    def read(self, number: int, start: int, stop: int) -> SegmentScan:
        seg = self._segments.get(number)
        if seg is None:
            return SegmentScan(valid_end=stop)
        return scan_segment(seg.path, start, stop)

    # -- writing ------------------------------------------------------------------
    def write(self, rec: _Record, blob: builtins.bytes | None = None) -> bool:
        """Append one record (`blob` = its `encode_record`) with one write(2); False when the spool is full.

        In the page cache on return, so a `kill -9` from here on loses nothing;
        stable (fdatasync) after the next `sync`. Raises OSError when the disk refuses.
        """
        if blob is None:
            blob = encode_record(rec)
        with self._lock:
            if self._used + len(blob) > self.max_bytes:
                return False
            seg = self._writable_locked()
            self._write_locked(blob)
            seg.end += len(blob)
            seg.pending += 1
            self._used += len(blob)
            self._unsynced.append((rec, seg.number, seg.end))
        return True

    def append(self, records: list[_Record]) -> tuple[int, list[int]]:
        """Write and fdatasync the records that fit under max_bytes, in one write; returns (segment, end positions).

        For tools and tests that use the spool without a producer (nothing goes to the `sync` list).
        """
        blobs: list[bytes] = []
        with self._lock:
            room = self.max_bytes - self._used
            for rec in records:
                blob = encode_record(rec)
                if len(blob) > room:
                    break
                room -= len(blob)
                blobs.append(blob)
            if not blobs:
                return -1, []
            seg = self._writable_locked()
            self._write_locked(b"".join(blobs))
            ends: list[int] = []
            for blob in blobs:
                seg.end += len(blob)
                ends.append(seg.end)
            seg.pending += len(blobs)
            self._used += sum(map(len, blobs))
            fd = self._active_fd
        if self.fsync and fd is not None:
            os.fdatasync(fd)
        return seg.number, ends

    def when_synced(self, callback: Callable[[bool], None]) -> None:
        """Run `callback(ok)` after the next `sync` (which covers everything written before this call)."""
        with self._lock:
            self._markers.append(callback)

    def pending_sync(self) -> bool:
        """Something was written (or a callback registered) since the last `sync`."""
        return bool(self._unsynced or self._markers or self._unsynced_fds)

    def sync(self) -> tuple[list[tuple[_Record, int, int]], list[Callable[[bool], None]], bool]:
        """Make everything written so far stable, one fdatasync per segment written to.

        Returns (records written since the last sync, callbacks registered, ok); ok is
        False when the disk refused the fdatasync (the records are in the file all the
        same, so they are still delivered). Called by one thread (the producer's writer);
        writes go on meanwhile.
        """
        with self._lock:
            records, self._unsynced = self._unsynced, []
            markers, self._markers = self._markers, []
            sealed, self._unsynced_fds = self._unsynced_fds, []
            new_dir, self._unsynced_dir = self._unsynced_dir, False
            active = self._active_fd if records else None
        ok = True
        try:
            if self.fsync:
                for fd in sealed:
                    os.fdatasync(fd)
                if active is not None:
                    # Safe outside the lock: a roll moves the descriptor to _unsynced_fds, never closes it.
                    os.fdatasync(active)
                if new_dir:
                    _fsync_dir(self.folder)
        except OSError as exc:
            log_event(log, "producer.spool_sync_failed", logging.ERROR, error=str(exc))
            ok = False
        finally:
            for fd in sealed:
                os.close(fd)
        return records, markers, ok

    def _writable_locked(self) -> _Segment:
        active = self._active
        # Roll when full, or when fully delivered and over 1 MiB (then the old one is deleted at once).
        if active is not None and (
            active.end >= self.segment_bytes
            or (active.acked >= active.end and active.end >= min(self.segment_bytes, 1 << 20))
        ):
            self._seal_locked()
            active = None
        if active is None:
            n = self._next_number
            self._next_number += 1
            path = self.folder / f"segment-{n:08d}.spool"
            self._active_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            active = self._active = self._segments[n] = _Segment(n, path, 0, 0, 0)
            self._unsynced_dir = True  # its directory entry is made stable by the next sync
        return active

    def _write_locked(self, data: builtins.bytes) -> None:
        assert self._active_fd is not None and self._active is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._active_fd, view) :]
        except OSError:
            # Part of a record may be on disk: start a new segment for the next write; this one's
            # end stays at its last whole record (the torn bytes are past it, cut at reopen).
            self._seal_locked()
            raise

    def _seal_locked(self) -> None:
        if self._active_fd is not None:
            self._unsynced_fds.append(self._active_fd)  # fdatasynced and closed by the next sync
            self._active_fd = None
        seg, self._active = self._active, None
        if seg is not None and seg.acked >= seg.end:
            self._delete_locked(seg)

    def _delete_locked(self, seg: _Segment) -> None:
        self._used -= max(0, seg.end - seg.acked)
        if seg.ack_fd is not None:
            os.close(seg.ack_fd)
            seg.ack_fd = None
        seg.path.unlink(missing_ok=True)
        seg.path.with_suffix(".ack").unlink(missing_ok=True)
        self._segments.pop(seg.number, None)

    def ack(self, number: int, end: int, count: int) -> None:
        """Kafka acknowledged `count` more records of segment `number`, up to byte `end`."""
        with self._lock:
            seg = self._segments.get(number)
            if seg is None or end <= seg.acked:
                return
            self._used -= min(end, seg.end) - min(seg.acked, seg.end)
            seg.acked = end
            seg.pending = max(0, seg.pending - count)
            if seg.acked >= seg.end and seg is not self._active:
                self._delete_locked(seg)  # deleted on delivery
                return
            # (A fully delivered active segment is rolled and deleted by the next write.)
            # One pwrite in place, fixed width: a process crash cannot tear it (the page cache
            # survives), and one syscall instead of a temp file + rename per delivery.
            if seg.ack_fd is None:
                seg.ack_fd = os.open(seg.path.with_suffix(".ack"), os.O_WRONLY | os.O_CREAT, 0o644)
            os.pwrite(seg.ack_fd, b"%020d\n" % end, 0)

    def skip(self, number: int, end: int) -> None:
        """Mark bytes up to `end` done without records (corrupt stretches at the end of a replayed range)."""
        self.ack(number, end, 0)

    def seal(self) -> None:
        """Close the newest segment; new records start a new one."""
        with self._lock:
            self._seal_locked()

    def close(self) -> None:
        """Seal the newest segment and make everything written stable (records then stay for the next start)."""
        self.seal()
        self.sync()
        with self._lock:
            for seg in self._segments.values():
                if seg.ack_fd is not None:
                    os.close(seg.ack_fd)
                    seg.ack_fd = None


# ---------------------------------------------------------------------------
# Spool folders: one per process, orphans adopted
# ---------------------------------------------------------------------------
def _try_lock(path: Path) -> Any:
    """An open file holding an exclusive flock on `path`, or None when another process holds it."""
    f = path.open("a")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def claim_folder(root: Path) -> tuple[Path, Any]:
    """This process's spool folder `root/worker-<pid>` and the file holding its lock."""
    folder = root / f"{WORKER_PREFIX}{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    lock = _try_lock(folder / ".lock")
    if lock is None:  # another live producer in this process: a folder per producer
        for i in range(1, 1000):
            folder = root / f"{WORKER_PREFIX}{os.getpid()}-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            lock = _try_lock(folder / ".lock")
            if lock is not None:
                break
        else:
            raise RuntimeError(f"cannot lock a spool folder under {root}")
    return folder, lock


def adopt_orphans(root: Path, spool: DiskSpool) -> int:
    """Move segments of dead processes' folders (and loose ones in `root`) into `spool`; returns records adopted."""
    guard = (root / ".adopt.lock").open("a")
    adopted = 0
    try:
        fcntl.flock(guard.fileno(), fcntl.LOCK_EX)
        sources: list[tuple[Path, Any]] = []
        if any(root.glob(_SEGMENT_GLOB)):
            sources.append((root, None))
        for folder in sorted(root.glob(f"{WORKER_PREFIX}*")):
            if folder == spool.folder or not folder.is_dir():
                continue
            lock = _try_lock(folder / ".lock")
            if lock is not None:  # nobody holds it: its process is gone
                sources.append((folder, lock))
        for folder, lock in sources:
            try:
                segments = sorted(folder.glob(_SEGMENT_GLOB), key=_segment_number)
                first = spool.reserve_numbers(len(segments))
                moved: list[Path] = []
                for i, seg in enumerate(segments):
                    target = spool.folder / f"segment-{first + i:08d}.spool"
                    ack = seg.with_suffix(".ack")
                    if ack.exists():
                        os.replace(ack, target.with_suffix(".ack"))
                    os.replace(seg, target)
                    moved.append(target)
                _fsync_dir(spool.folder)
                adopted += spool.add_existing(moved)
                if folder != root:
                    for leftover in folder.iterdir():
                        leftover.unlink(missing_ok=True)
                    folder.rmdir()
                if moved:
                    log_event(log, "producer.adopted", folder=str(folder), segments=len(moved))
            finally:
                if lock is not None:
                    lock.close()
    finally:
        fcntl.flock(guard.fileno(), fcntl.LOCK_UN)
        guard.close()
    return adopted


# ---------------------------------------------------------------------------
# The producer
# ---------------------------------------------------------------------------
class EventProducer:
    """Non-blocking Kafka producer with a write-ahead spool. Start with `start()` or use as a context manager."""

    def __init__(self, config: ProducerConfig, on_delivery: Callable[[DeliveryReport], None] | None = None) -> None:
        self.config = config
        self.on_delivery = on_delivery
        self._lock = threading.Lock()
        self._counts = {"sent": 0, "spooled": 0, "replayed": 0, "dropped": 0, "corrupt": 0}
        self._spool: DiskSpool | None = None
        self._folder_lock: Any = None
        self._kafka: Any = None
        self._spooling = False
        self._closed = False
        self._stopping = False  # the dispatcher's stop
        self._writer: threading.Thread | None = None
        self._thread: threading.Thread | None = None  # the dispatcher
        # The writer sleeps on _sync_wake when nothing is left to sync; `send` notifies only then
        # (a flag read without the lock: under load the writer never sleeps and nobody notifies).
        self._sync_wake = threading.Condition()
        self._writer_idle = False
        self._writer_stop = False
        # Synced groups of (record, segment, end position) for the dispatcher.
        self._committed: collections.deque[list[tuple[_Record, int, int]]] = collections.deque()
        self._wake = threading.Condition()
        self._next_retry = 0.0
        self._next_adopt = 0.0

    @property
    def spool_folder(self) -> Path | None:
        """This process's own spool folder (set by `start`)."""
        return self._spool.folder if self._spool is not None else None

    # -- caller side (any thread) ------------------------------------------
    def start(self) -> EventProducer:
        if self._thread is not None:
            raise RuntimeError("EventProducer.start: already started")
        c = self.config
        c.spool_dir.mkdir(parents=True, exist_ok=True)
        folder, self._folder_lock = claim_folder(c.spool_dir)
        self._spool = DiskSpool(folder, c.max_spool_bytes, c.segment_bytes, c.fsync)
        adopt_orphans(c.spool_dir, self._spool)
        self._count("corrupt", self._spool.corrupt_found)
        self._next_adopt = time.monotonic() + c.adopt_interval_s
        # Events left in the spool by an earlier process go first.
        self._spooling = self._spool.size > 0
        self._writer = threading.Thread(target=self._write_loop, name="troupe-producer-wal", daemon=True)
        self._thread = threading.Thread(target=self._dispatch_loop, name="troupe-producer", daemon=True)
        self._writer.start()
        self._thread.start()
        return self

    writes_through = True
    """`send` has the event in the spool file when it returns (serving/decision_log.py sends at once)."""

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> bool:
        """Write one event to the spool (one write(2), in the page cache on return: `kill -9` safe).

        fdatasync follows within one group commit on the writer thread. Returns False
        (and counts it dropped) when the producer is closed or not started, the spool is
        full, `buffer_size` events wait for their fdatasync, or the disk refuses the write.
        """
        spool = self._spool
        if self._closed or spool is None or spool.unsynced() >= self.config.buffer_size:
            return self._drop(topic, key, value, "closed" if self._closed or spool is None else "buffer full")
        rec = _Record(topic, key, value)
        try:
            if not spool.write(rec, encode_record(rec)):
                return self._drop(topic, key, value, "spool full")
        except OSError as exc:  # disk full or gone: this event is lost, say so loudly
            log_event(log, "producer.spool_write_failed", logging.ERROR, error=str(exc))
            return self._drop(topic, key, value, f"spool write failed: {exc}")
        if self._writer_idle:
            with self._sync_wake:
                self._sync_wake.notify()
        return True

    def _drop(self, topic: str, key: bytes | None, value: bytes, why: str) -> bool:
        self._count("dropped")
        self._report(_Record(topic, key, value), None, None, False, why)
        return False

    def when_durable(self, callback: Callable[[bool], None]) -> bool:
        """Call `callback(ok)` from the writer thread once every event sent so far is fdatasynced (ok: no disk error).

        Returns False (and never calls back) when the producer is closed or not started.
        """
        if self._closed or self._writer is None or self._spool is None:
            return False
        self._spool.when_synced(callback)
        if self._writer_idle:
            with self._sync_wake:
                self._sync_wake.notify()
        return True

    def send_event(self, topic: str, event: DecisionEvent | FeedbackEvent) -> bool:
        """Serialise and write an event keyed by its user id (a user's events stay ordered in one partition)."""
        return self.send(topic, to_json(event), key=event.user_id.encode())

    def healthy(self) -> bool:
        """True while both threads run and the broker takes events directly (not spooling)."""
        return (
            self._thread is not None
            and self._thread.is_alive()
            and self._writer is not None
            and self._writer.is_alive()
            and not self._spooling
            and not self._closed
        )

    def spool_size(self) -> int:
        """Events written to the spool and not yet acknowledged by Kafka."""
        return self._spool.size if self._spool is not None else 0

    def queue_size(self) -> int:
        """Events written and waiting for their group's fdatasync."""
        return self._spool.unsynced() if self._spool is not None else 0

    def counters(self) -> dict[str, int]:
        """sent, spooled, replayed, dropped, corrupt since start."""
        with self._lock:
            return dict(self._counts)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every accepted event reached Kafka (the spool fully acknowledged); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._spool is not None and self._spool.caught_up():
                return True
            time.sleep(0.02)
            if self._thread is None or not self._thread.is_alive():
                return False
        return False

    def close(self, timeout_s: float | None = None) -> None:
        """Stop accepting; fdatasync what was written; give a healthy broker `close_timeout_s` for it.

        Nothing accepted is lost: what Kafka did not acknowledge stays in the
        spool for the next start (or another process's adoption). During an
        outage this returns within about a second.
        """
        if self._closed:
            return
        self._closed = True
        wait = self.config.close_timeout_s if timeout_s is None else timeout_s
        if self._writer is not None:
            with self._sync_wake:
                self._writer_stop = True
                self._sync_wake.notify()
            self._writer.join(30.0)  # one last fdatasync: fast
        if self._thread is not None:
            deadline = time.monotonic() + wait
            while not self._spooling and time.monotonic() < deadline and self._thread.is_alive():
                if self._spool is not None and self._spool.caught_up():
                    break
                time.sleep(0.01)
            self._stopping = True
            with self._wake:
                self._wake.notify_all()
            self._thread.join(0.5)
            if self._thread.is_alive():
                # Blocked in a send to a frozen broker: everything is in the spool already.
                log_event(log, "producer.close_abandoned_send", logging.WARNING, spool=self.spool_size())
        if self._spool is not None and (self._thread is None or not self._thread.is_alive()):
            self._spool.close()
        if self._folder_lock is not None and (self._thread is None or not self._thread.is_alive()):
            self._folder_lock.close()
            self._folder_lock = None

    def __enter__(self) -> EventProducer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writer thread -------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self._counts[name] += n

    def _report(self, rec: _Record, partition: int | None, offset: int | None, replayed: bool, err: str | None) -> None:
        if self.on_delivery is None:
            return
        try:
            self.on_delivery(DeliveryReport(rec.topic, rec.key, partition, offset, replayed, err))
        except Exception as exc:  # noqa: BLE001 — a faulty callback must not stop delivery
            log_event(log, "producer.callback_error", logging.WARNING, error=str(exc))

    def _write_loop(self) -> None:
        """Group commit: fdatasync everything written since the last one, then hand it to the dispatcher.

        Under load there is always something written by the time an fdatasync
        returns, so this loops and each group is what arrived during the previous
        fdatasync (at least `group_commit_s`): an event is stable within about two.
        """
        spool = self._spool
        assert spool is not None
        last = 0.0
        while True:
            gap = self.config.group_commit_s - (time.monotonic() - last)
            if gap > 0 and not self._writer_stop:
                time.sleep(gap)  # let the group gather

            with self._sync_wake:
                self._writer_idle = True  # before the check: a send after it sees the flag and notifies
                while not spool.pending_sync() and not self._writer_stop:
                    self._sync_wake.wait(0.2)
                self._writer_idle = False
                stop = self._writer_stop
            last = time.monotonic()
            records, markers, ok = spool.sync()
            if records:
                with self._wake:
                    self._committed.append(records)
                    self._wake.notify()
            for callback in markers:
                try:
                    callback(ok)
                except Exception as exc:  # noqa: BLE001
                    log_event(log, "producer.callback_error", logging.WARNING, error=str(exc))
            if stop and not spool.pending_sync():
                return

    # -- dispatcher thread ---------------------------------------------------
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
                    # Failures only unless someone asked for every report (see _deliver).
                    "delivery.report.only.error": self.on_delivery is None,
                    "queue.buffering.max.messages": 2 * max(c.batch_size, c.replay_chunk) + 1000,
                    # librdkafka's log lines go through this process's logging, not stderr.
                    "logger": logging.getLogger("troupe.producer.librdkafka"),
                }
            )
        return self._kafka

    def _deliver(self, records: list[_Record]) -> tuple[list[tuple[int, int]], int]:
        """Send and wait for acks. Returns ((partition, offset) of the acknowledged prefix, index of first failure).

        Without an `on_delivery` hook the client reports failures only
        (`delivery.report.only.error`): each delivery callback takes the GIL
        from the event loop's thread, and one per event cost the decision API
        more CPU than the spool. Then a message with no failure report once
        `flush` has nothing left is delivered (partition and offset -1: unknown).
        """
        # Filled by librdkafka's delivery callbacks (run inside flush/poll on this thread).
        # A report for a message of an earlier, timed-out call lands in that call's list.
        outcome: list[tuple[int, int] | str | None] = [None] * len(records)

        def done(i: int, err: Any, msg: Any) -> None:
            outcome[i] = str(err) if err is not None else (msg.partition(), msg.offset())

        timeout_s = self.config.delivery_timeout_ms / 1000
        produced, left = 0, -1
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
                produced = i + 1
            # librdkafka checks message timeouts about once a second: allow for that.
            left = kafka.flush(timeout_s + 2.0)
        except Exception as exc:  # noqa: BLE001 — unusable client or full buffer: the rest is replayed
            log_event(log, "producer.send_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
        if self.on_delivery is None and left == 0:
            for i in range(produced):
                if outcome[i] is None:
                    outcome[i] = (-1, -1)
        done_prefix: list[tuple[int, int]] = []
        for res in outcome:
            if not isinstance(res, tuple):
                log_event(log, "producer.delivery_failed", logging.WARNING, error=res or "no acknowledgement")
                break
            done_prefix.append(res)
        return done_prefix, len(done_prefix)

    def _take_committed(self, wait_s: float) -> list[tuple[_Record, int, int]]:
        with self._wake:
            if not self._committed and not self._stopping:
                self._wake.wait(wait_s)
            out: list[tuple[_Record, int, int]] = []
            while self._committed and len(out) < self.config.batch_size:
                out += self._committed.popleft()
            return out

    def _enter_spooling(self) -> None:
        if not self._spooling:
            log_event(log, "producer.spooling", logging.WARNING, spool_dir=str(self.config.spool_dir))
        self._spooling = True
        self._next_retry = time.monotonic() + self.config.retry_interval_s

    def _direct(self, items: list[tuple[_Record, int, int]]) -> None:
        """Deliver committed groups from memory; acknowledge each record's spool position as Kafka takes it."""
        assert self._spool is not None
        spool = self._spool
        # Skip what a replay already delivered (positions at or before the acknowledged one; None: deleted).
        acked = {number: spool.acked_position(number) for number in {number for _, number, _ in items}}
        fresh = [item for item in items if (a := acked[item[1]]) is not None and item[2] > a]
        if not fresh:
            return
        acks, first_fail = self._deliver([r for r, _, _ in fresh])
        self._count("sent", first_fail)
        per_segment: dict[int, tuple[int, int]] = {}
        for (rec, number, end), (part, off) in zip(fresh, acks, strict=False):
            _, count = per_segment.get(number, (0, 0))
            per_segment[number] = (end, count + 1)
            self._report(rec, part, off, False, None)
        for number, (end, count) in per_segment.items():
            spool.ack(number, end, count)
        if first_fail < len(fresh):
            self._count("spooled", len(fresh) - first_fail)
            self._enter_spooling()

    def _replay(self) -> bool:
        """Send the spool from its acknowledged positions, oldest first; False at the first failure."""
        assert self._spool is not None
        spool = self._spool
        for number, acked, end in spool.unacknowledged():
            if acked >= end:
                continue
            scan = spool.read(number, acked, end)
            self._count("corrupt", scan.corrupt)
            if scan.corrupt:
                log_event(log, "producer.spool_corrupt", logging.ERROR, segment=number, skipped=scan.corrupt)
            chunk_size = self.config.replay_chunk
            for i in range(0, len(scan.records), chunk_size):
                if self._stopping:
                    return False
                chunk = scan.records[i : i + chunk_size]
                acks, first_fail = self._deliver([r for _, r in chunk])
                if first_fail:
                    spool.ack(number, chunk[first_fail - 1][0], first_fail)
                    self._count("replayed", first_fail)
                    for (_, rec), (part, off) in zip(chunk, acks, strict=False):
                        self._report(rec, part, off, True, None)
                if first_fail < len(chunk):
                    return False
            spool.skip(number, end)  # a corrupt stretch at the very end counts as done
        return True

    def _dispatch_loop(self) -> None:
        assert self._spool is not None
        linger_s = self.config.linger_ms / 1000.0
        while not self._stopping:
            now = time.monotonic()
            if self.config.adopt_interval_s > 0 and now >= self._next_adopt:
                self._next_adopt = now + self.config.adopt_interval_s
                try:
                    if adopt_orphans(self.config.spool_dir, self._spool):
                        self._spooling = True
                        self._next_retry = 0.0
                except OSError as exc:
                    log_event(log, "producer.adopt_failed", logging.WARNING, error=str(exc))
            if self._spooling:
                with self._wake:
                    spooled = sum(map(len, self._committed))
                    self._committed.clear()  # on disk already; the replay sends them
                self._count("spooled", spooled)
                if time.monotonic() >= self._next_retry:
                    if self._replay() and self._spool.caught_up():
                        self._spooling = False
                        log_event(log, "producer.replayed", replayed=self.counters()["replayed"])
                    else:
                        self._next_retry = time.monotonic() + self.config.retry_interval_s
                else:
                    with self._wake:
                        self._wake.wait(0.05)
                continue
            items = self._take_committed(0.05)
            if items:
                self._direct(items)
                if linger_s and not self._stopping:
                    time.sleep(linger_s)  # let the next groups gather: fewer, larger produce requests
        if self._kafka is not None:
            with contextlib.suppress(Exception):
                self._kafka.flush(0.5)  # only reports of earlier timed-out messages can be left
            self._kafka = None
