"""Ingestion: Kafka topics → Parquet lake, exactly once, with a dead-letter dataset.

Layout under `<data_dir>/lake/`::

    _manifest.json                                       the commit record (see below)
    topic=<topic>/problem=<p>/date=YYYY-MM-DD/hour=HH/part-<seq>.parquet   valid events
    dead_letter/topic=<topic>/date=YYYY-MM-DD/part-<seq>.parquet           refused messages

Exactly once. Consumption uses explicit partition assignment (Tansu takes ~20 s
to hand a fresh consumer group its first assignment; `assign()` reads at once).
Each commit writes its files as `.tmp-*`, fsyncs them, renames them into place,
fsyncs the folders, then replaces `_manifest.json` atomically (write temp →
fsync → rename → fsync folder). The manifest lists every committed file and, per
partition, the next offset to read and a fingerprint of the last message read.
A file that is not in the manifest was written by a commit that never finished:
a restart deletes it and reads its messages again from the manifest's offsets.
So a `kill -9` at any instant loses and duplicates nothing; readers list files
through the manifest (`committed_files`), never by globbing.

Offsets moving backwards (a recreated or truncated topic) are detected, never
skipped or re-read silently: on start each partition is read again from its
last ingested offset and that message must still be there with the same
fingerprint; a high watermark below the manifest's offset or an out-of-range
fetch is the same incident. The job then stops with `OffsetsMovedBackwardsError`
naming topic, partition and offsets, unless `on_offset_reset="restart"`, which
records the incident in the manifest and ingests the partition again from its
new beginning.

One writer per lake. A run holds an exclusive `flock` on `<lake>/.ingest.lock`
for its whole life (its pid and start time written inside for the message):
a second run waits up to `lock_wait_s` and then exits with `LakeLockedError`
naming the holder. A lock held by a process that died is released by the
kernel, so a `kill -9` never leaves the lake locked. Under the lock, part files
are still named uniquely per run (`part-<seq>-<run id>.parquet`) and the
manifest's temp file is per run (`.tmp-<run id>-_manifest.json`), so even a
writer that ignored the lock could not overwrite another's files.

Refused messages: anything that fails to parse *for any reason* — schema,
size, JSON nested too deep (RecursionError), invalid UTF-8, an exception no
one foresaw — is dead-lettered with the reason (`<ExceptionType>: message`
when it is not a validation error) and ingestion goes on.

Offsets are also committed to the consumer group (`group_id`) after each
manifest commit, for lag monitoring; the manifest stays the source of truth.
Tansu answers ListOffsets(latest) with a stale value, so lag and "drained" use
the high watermark of fetch responses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import json
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import ValidationError

from models.errors import EventValidationError, TroupeError
from models.events import MAX_EVENT_BYTES, DecisionEvent, FeedbackEvent, arrow_schema, from_json
from models.logging import log_event
from models.problems import PROBLEMS
from models.settings import TroupeSettings, bootstrap_servers
from pipelines.jobs.ingest_fast import validate_batch

log = logging.getLogger("troupe.ingest")

MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = 1
NO_PROBLEM = "none"  # partition value for feedback events that do not name their problem

CONSUMER_SETTINGS: dict[str, int] = {
    "max_poll_records": 5_000,  # IngestConfig.poll_max_records overrides it
    # Short: the broker holds a fetch of partitions without new data this long, and kafka-python
    # sends no other fetch to that broker meanwhile. While a busy partition's records were still
    # buffered, its idle neighbour (an empty feedback partition in benchmarks/ingest.py) was
    # fetched alone, and the busy one then waited out that fetch: 200 ms cost ingestion 40 % of
    # its rate (44k → 76k events/s at 20 ms, runs back to back). An idle consumer polls 50 times a second.
    "fetch_max_wait_ms": 20,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
}
"""kafka-python fetch settings of the ingestion consumer; benchmarks/ingest.py's bare consumer uses the same."""

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("raw", pa.binary(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


class IngestError(TroupeError):
    """Ingestion cannot go on safely; the message says what to do."""


class LakeLockedError(IngestError):
    """Another ingestion run holds the lake's writer lock."""


LOCK_NAME = ".ingest.lock"


@contextlib.contextmanager
def lake_lock(lake: Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lake's one-writer lock; wait up to `wait_s` for it, then raise LakeLockedError naming the holder."""
    lake.mkdir(parents=True, exist_ok=True)
    path = lake / LOCK_NAME
    f = path.open("a+")
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "unknown"
                    raise LakeLockedError(
                        f"{lake}: another ingestion run holds the lake ({holder}); one writer per lake. "
                        "Wait for it to finish, or pass a lock wait (IngestConfig.lock_wait_s, CLI --lock-wait) "
                        "to queue behind it"
                    ) from None
                time.sleep(0.1)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")
        f.flush()
        yield
    finally:
        f.close()  # releases the flock


class OffsetsMovedBackwardsError(IngestError):
    """A partition's offsets went backwards (recreated or truncated topic)."""

    def __init__(self, topic: str, partition: int, expected: int, found: str) -> None:
        self.topic, self.partition, self.expected = topic, partition, expected
        super().__init__(
            f"{topic}[{partition}]: the manifest says offsets up to {expected - 1} were ingested, but {found}. "
            "The topic was recreated or truncated; nothing was skipped or re-read. Inspect the topic, then run "
            "again with on_offset_reset='restart' (CLI: --on-offset-reset restart) to ingest it from its new start."
        )


@dataclass(frozen=True)
class IngestConfig:
    """What to ingest, where, and how often to commit."""

    bootstrap_servers: str
    """Kafka bootstrap address."""
    data_dir: Path
    """Root of the project's data; the lake lives in `<data_dir>/lake`."""
    decisions_topic: str = "troupe.decisions.v1"
    feedback_topic: str = "troupe.feedback.v1"
    mode: Literal["once", "continuous"] = "once"
    """once: read up to each partition's high watermark, commit, stop. continuous: run until stopped."""
    commit_rows: int = 50_000
    """Commit after this many consumed messages (valid + refused) …"""
    commit_interval_s: float = 5.0
    """… or after this many seconds with anything pending, whichever comes first."""
    row_group_size: int = 128 * 1024
    """Rows per Parquet row group (large groups read fast; commits rarely exceed one)."""
    poll_max_records: int = CONSUMER_SETTINGS["max_poll_records"]
    group_id: str = "troupe-ingest"
    """Consumer group the offsets are committed to for lag monitoring (not used for assignment)."""
    on_offset_reset: Literal["fail", "restart"] = "fail"
    """What to do when a partition's offsets went backwards: stop with an error, or record it and re-ingest."""
    idle_stop_s: float = 10.0
    """once mode: give up waiting for a partition's high watermark after this long without any message."""
    max_seconds: float | None = None
    """Stop (after a commit) when this much time has passed; None = no limit."""
    progress_every_s: float = 5.0
    """How often a progress line (rows/s, lag) is logged."""
    lock_wait_s: float = 0.0
    """How long to wait for another run's lake lock before exiting with LakeLockedError (0 = do not wait)."""

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise ValueError("IngestConfig.bootstrap_servers: expected 'host:port', got an empty string")
        if self.decisions_topic == self.feedback_topic:
            raise ValueError("IngestConfig: decisions_topic and feedback_topic must differ")
        if self.mode not in ("once", "continuous"):
            raise ValueError(f"IngestConfig.mode: expected 'once' or 'continuous', got {self.mode!r}")
        if self.on_offset_reset not in ("fail", "restart"):
            raise ValueError(
                f"IngestConfig.on_offset_reset: expected 'fail' or 'restart', got {self.on_offset_reset!r}"
            )
        for name in ("commit_rows", "row_group_size", "poll_max_records"):
            if getattr(self, name) < 1:
                raise ValueError(f"IngestConfig.{name}: expected a positive integer, got {getattr(self, name)}")
        if self.commit_interval_s <= 0 or self.idle_stop_s <= 0:
            raise ValueError("IngestConfig.commit_interval_s and idle_stop_s: expected > 0 seconds")

    @classmethod
    def from_settings(cls, settings: TroupeSettings, **overrides: Any) -> IngestConfig:
        return cls(
            bootstrap_servers=bootstrap_servers(settings),
            data_dir=settings.data_dir,
            decisions_topic=settings.decisions_topic,
            feedback_topic=settings.feedback_topic,
            **overrides,
        )

    @property
    def lake_dir(self) -> Path:
        return lake_dir(self.data_dir)


@dataclass
class IngestReport:
    """What one run did."""

    rows: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    commits: int = 0
    seconds: float = 0.0
    lag: int = 0
    garbage_collected: int = 0
    resets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return (sum(self.rows.values()) + self.dead_letters) / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------
# Lake layout and manifest (also used by readers)
# ---------------------------------------------------------------------------
def lake_dir(data_dir: Path) -> Path:
    return data_dir / "lake"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def empty_manifest() -> dict[str, Any]:
    return {"format": MANIFEST_FORMAT, "seq": 0, "partitions": {}, "files": {}, "resets": []}


def load_manifest(lake: Path) -> dict[str, Any]:
    """The last committed manifest, or an empty one."""
    path = lake / MANIFEST_NAME
    if not path.exists():
        return empty_manifest()
    doc: dict[str, Any] = json.loads(path.read_text())
    if doc.get("format") != MANIFEST_FORMAT:
        raise IngestError(f"{path}: manifest format {doc.get('format')!r}; this build reads {MANIFEST_FORMAT}")
    return doc


def _write_manifest(lake: Path, doc: dict[str, Any], run_id: str | None = None) -> None:
    tmp = lake / f".tmp-{run_id or uuid.uuid4().hex[:12]}-{MANIFEST_NAME}"  # per run: never shared
    with tmp.open("w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(lake / MANIFEST_NAME)  # the commit point
    _fsync_path(lake)


def committed_files(data_dir: Path, topic: str | None = None, kind: str = "events") -> list[Path]:
    """Committed Parquet files of `kind` ('events' or 'dead_letter'), optionally for one topic, in commit order."""
    lake = lake_dir(data_dir)
    files = load_manifest(lake)["files"]
    chosen = [
        (meta["seq"], rel)
        for rel, meta in files.items()
        if meta["kind"] == kind and (topic is None or meta["topic"] == topic)
    ]
    return [lake / rel for _, rel in sorted(chosen)]


def read_committed(
    data_dir: Path,
    topic: str,
    event: type[DecisionEvent] | type[FeedbackEvent] | None = None,
    kind: str = "events",
    columns: list[str] | None = None,
) -> pa.Table:
    """All committed rows of one topic as one table.

    `event` gives the schema (DecisionEvent or FeedbackEvent; ignored for
    kind='dead_letter'); with no files the table is empty but typed.
    """
    paths = committed_files(data_dir, topic, kind)
    if kind == "dead_letter":
        schema = DEAD_LETTER_SCHEMA
    elif event is not None:
        schema = arrow_schema(event)
    elif paths:
        schema = pq.read_schema(paths[0])
    else:
        raise ValueError(f"read_committed({topic!r}): no committed files; pass event= to get a typed empty table")
    if columns:
        schema = pa.schema([schema.field(c) for c in columns])
    if not paths:
        return schema.empty_table()
    return pa.concat_tables([pq.read_table(p, columns=columns, schema=schema) for p in paths])


def _garbage_collect(lake: Path, manifest: dict[str, Any]) -> int:
    """Delete files no manifest committed (a run killed between write and commit). Returns how many."""
    if not lake.exists():
        return 0
    keep = set(manifest["files"])
    removed = 0
    for path in lake.rglob("*"):
        if not path.is_file() or path.name == MANIFEST_NAME:
            continue
        rel = path.relative_to(lake).as_posix()
        if path.name.startswith(".tmp-") or (path.suffix == ".parquet" and rel not in keep):
            path.unlink()
            removed += 1
    if removed:
        log_event(log, "ingest.garbage_collected", files=removed)
    return removed


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------
def validate_message(
    cls: type[DecisionEvent] | type[FeedbackEvent], raw: bytes | None
) -> DecisionEvent | FeedbackEvent:
    """Parse one message; raises EventValidationError naming the field.

    Fast path: pydantic's JSON validator on the bytes (about twice as fast as
    `models.events.from_json`, same model and same rules). Only when it refuses
    does `from_json` run, to produce the contract's error (field + reason).
    """
    if raw is None:
        raise EventValidationError("<event>", "empty message (null value); expected a JSON object")
    if len(raw) > MAX_EVENT_BYTES:
        raise EventValidationError("<event>", f"{len(raw)} bytes is over the {MAX_EVENT_BYTES}-byte limit")
    try:
        event: DecisionEvent | FeedbackEvent = cls.model_validate_json(raw)
    except (ValidationError, ValueError):
        # Raises the contract's error; returns only if the two ever disagree.
        try:
            event = from_json(DecisionEvent, raw) if cls is DecisionEvent else from_json(FeedbackEvent, raw)
        except RecursionError:  # json.loads recurses per nesting level
            raise EventValidationError("<event>", "JSON nested too deep to parse (RecursionError)") from None
    problem = event.problem
    if problem is not None and problem not in PROBLEMS:
        raise EventValidationError("problem", f"unknown problem {problem!r}; expected one of {sorted(PROBLEMS)}")
    return event


# ---------------------------------------------------------------------------
# Buffers of one commit
# ---------------------------------------------------------------------------
@dataclass
class _Pending:
    """Messages consumed since the last commit."""

    # validated models (per-message path) and Arrow tables (bulk path), in message order
    events: dict[tuple[Any, ...], list[Any]] = field(default_factory=lambda: defaultdict(list))
    dead: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    # next offset, value of the last message (hashed into its fingerprint at commit time only)
    offsets: dict[tuple[str, int], tuple[int, bytes | None]] = field(default_factory=dict)
    count: int = 0
    dead_count: int = 0
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    since: float = field(default_factory=time.monotonic)


def fingerprint(value: bytes | None) -> str:
    return hashlib.sha256(value or b"").hexdigest()[:16]


def _hive_key(event: DecisionEvent | FeedbackEvent) -> tuple[str, int, int, int, int]:
    """(problem, year, month, day, hour); formatted into folder names only at commit (strftime per event is slow)."""
    ts = event.timestamp
    return (event.problem or NO_PROBLEM, ts.year, ts.month, ts.day, ts.hour)


def events_to_arrow(events: list[Any], schema: pa.Schema) -> pa.Table:
    """Validated events → Arrow, column by column.

    Reading the attributes of the validated models into one list per column is
    several times faster than `Table.from_pylist(model_dump())` and than
    re-serialising to JSON for Arrow's reader; nested models become struct columns.
    """
    return pa.Table.from_arrays([_column(events, f.name, f.type) for f in schema], schema=schema)


def _column(objects: list[Any], name: str, typ: pa.DataType) -> pa.Array:
    values = [getattr(o, name) for o in objects]
    if pa.types.is_struct(typ):
        children = [_column(values, typ.field(i).name, typ.field(i).type) for i in range(typ.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(typ))
    return pa.array(values, type=typ)


def _pending_to_arrow(items: list[Any], schema: pa.Schema) -> pa.Table:
    """One hive key's buffered items (validated models and bulk-validated tables, in order) → one table."""
    parts: list[pa.Table] = []
    run: list[Any] = []
    for item in items:
        if isinstance(item, pa.Table):
            if run:
                parts.append(events_to_arrow(run, schema))
                run = []
            parts.append(item)
        else:
            run.append(item)
    if run:
        parts.append(events_to_arrow(run, schema))
    # No combine_chunks(): the Parquet writer takes chunked columns as they are; the copy cost ~0.4 µs/row.
    return pa.concat_tables(parts)


def _hive_groups(topic: str, table: pa.Table) -> list[tuple[tuple[Any, ...], pa.Table]]:
    """Split a bulk-validated batch by hive key, the same key `_hive_key` gives each event."""
    ts = table.column("timestamp")
    problem = pc.fill_null(table.column("problem"), NO_PROBLEM)
    # The common case, one problem and one UTC hour, from two min/max reductions.
    span, names = pc.min_max(ts), pc.min_max(problem)
    lo, hi = span["min"].as_py(), span["max"].as_py()
    if (lo.date(), lo.hour) == (hi.date(), hi.hour) and names["min"] == names["max"]:
        return [((topic, names["min"].as_py(), lo.year, lo.month, lo.day, lo.hour), table)]
    # Several keys: row numbers per (problem, hour), in message order (single-threaded group_by keeps it).
    keyed = pa.table({"p": problem, "h": pc.floor_temporal(ts, unit="hour"), "i": pa.array(range(len(table)))})
    groups = keyed.group_by(["p", "h"], use_threads=False).aggregate([("i", "list")])
    out = []
    for p, h, idx in zip(*(groups.column(c).to_pylist() for c in ("p", "h", "i_list")), strict=True):
        out.append(((topic, p, h.year, h.month, h.day, h.hour), table.take(pa.array(idx, pa.int64()))))
    return out


@functools.cache
def _encoded_columns(schema: pa.Schema) -> list[str]:
    """Parquet column paths that get dictionary encoding and statistics: all but float vectors.

    Float vectors (observation, action) are continuous values: a dictionary never
    pays off there (the writer builds one, then falls back to plain), and min/max of
    vector elements prunes nothing. Skipping both cuts the write time of a
    decision file by a quarter to a third (measured, 24+18 floats per row);
    strings, scalars and candidate ids keep both.
    """

    def paths(name: str, typ: pa.DataType) -> list[str]:
        if pa.types.is_struct(typ):
            return [p for child in typ for p in paths(f"{name}.{child.name}", child.type)]
        if pa.types.is_list(typ):
            return [] if pa.types.is_floating(typ.value_type) else paths(f"{name}.list.element", typ.value_type)
        return [name]

    return [p for f in schema for p in paths(f.name, f.type)]


def _write_parquet(table: pa.Table, path: Path, row_group_size: int) -> None:
    """temp → fsync → rename; the caller fsyncs folders before committing the manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    encoded = _encoded_columns(table.schema)
    with tmp.open("wb") as f:
        pq.write_table(
            table,
            f,
            row_group_size=row_group_size,
            compression="zstd",
            use_dictionary=encoded,
            write_statistics=encoded,
        )
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


class Ingestor:
    """One ingestion run. Use `run()`; `ingest(config)` is the plain-function form."""

    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        self.lake = config.lake_dir
        self.topic_class: dict[str, type[DecisionEvent] | type[FeedbackEvent]] = {
            config.decisions_topic: DecisionEvent,
            config.feedback_topic: FeedbackEvent,
        }
        self.schemas = {t: arrow_schema(c) for t, c in self.topic_class.items()}
        self.report = IngestReport()
        self.manifest: dict[str, Any] = empty_manifest()
        self._stop = False
        self.run_id = uuid.uuid4().hex[:12]
        """Names this run's part files and temp manifest."""

    def stop(self) -> None:
        """Ask a continuous run to commit and return (thread-safe)."""
        self._stop = True

    # -- manifest helpers -------------------------------------------------
    def _part_state(self, topic: str, partition: int) -> dict[str, Any]:
        parts: dict[str, Any] = self.manifest["partitions"].setdefault(topic, {})
        state: dict[str, Any] = parts.setdefault(str(partition), {"next_offset": 0, "fingerprint": None, "epoch": 0})
        return state

    def _commit(self, consumer: Any, pending: _Pending, lags: dict[tuple[str, int], int]) -> None:
        if pending.count == 0:
            return
        seq = int(self.manifest["seq"]) + 1
        new_files: dict[str, dict[str, Any]] = {}
        folders: set[Path] = set()
        now = dt.datetime.now(dt.UTC)
        for (topic, problem, year, month, day, hour), events in pending.events.items():
            date = f"{year:04d}-{month:02d}-{day:02d}"
            rel = f"topic={topic}/problem={problem}/date={date}/hour={hour:02d}/part-{seq:08d}-{self.run_id}.parquet"
            table = _pending_to_arrow(events, self.schemas[topic])
            _write_parquet(table, self.lake / rel, self.config.row_group_size)
            folders.add((self.lake / rel).parent)
            new_files[rel] = {"kind": "events", "topic": topic, "rows": table.num_rows, "seq": seq}
        for (topic, date), rows in pending.dead.items():
            rel = f"dead_letter/topic={topic}/date={date}/part-{seq:08d}-{self.run_id}.parquet"
            for r in rows:
                r["ingested_at"] = now
            table = pa.Table.from_pylist(rows, schema=DEAD_LETTER_SCHEMA)
            _write_parquet(table, self.lake / rel, self.config.row_group_size)
            folders.add((self.lake / rel).parent)
            new_files[rel] = {"kind": "dead_letter", "topic": topic, "rows": len(rows), "seq": seq}
        for folder in folders:
            _fsync_path(folder)
            _fsync_path(folder.parent)  # a new hour/date folder's entry must be durable too
        doc = dict(self.manifest)
        doc["seq"] = seq
        doc["files"] = {**self.manifest["files"], **new_files}
        doc["committed_at"] = now.isoformat()
        for (topic, partition), (next_offset, last_value) in pending.offsets.items():
            state = self._part_state(topic, partition)
            state["next_offset"], state["fingerprint"] = next_offset, fingerprint(last_value)
        doc["partitions"] = self.manifest["partitions"]
        _write_manifest(self.lake, doc, self.run_id)
        self.manifest = doc
        self.report.commits += 1
        for topic, n in pending.rows.items():
            self.report.rows[topic] = self.report.rows.get(topic, 0) + n
        self.report.dead_letters += pending.dead_count
        if consumer is not None:
            self._commit_group(consumer, pending)
        self.report.lag = sum(lags.values())
        log_event(
            log,
            "ingest.commit",
            logging.DEBUG,
            seq=seq,
            files=len(new_files),
            rows=pending.count - pending.dead_count,
            dead_letters=pending.dead_count,
        )

    def _commit_group(self, consumer: Any, pending: _Pending) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        offsets = {
            TopicPartition(t, p): OffsetAndMetadata(off, "", -1) for (t, p), (off, _fp) in pending.offsets.items()
        }
        try:
            consumer.commit(offsets)  # one round trip per manifest commit: cheap next to the fsyncs
        except Exception as exc:  # noqa: BLE001 — lag monitoring only; the manifest is the truth
            log_event(log, "ingest.group_commit_failed", logging.WARNING, error=str(exc))

    # -- the run ------------------------------------------------------------
    def run(self) -> IngestReport:
        """One run under the lake's writer lock (LakeLockedError when another run holds it)."""
        with lake_lock(self.lake, self.config.lock_wait_s):
            return self._run_locked()

    def _run_locked(self) -> IngestReport:
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import OffsetOutOfRangeError

        cfg = self.config
        self.lake.mkdir(parents=True, exist_ok=True)
        self.manifest = load_manifest(self.lake)
        self.report.garbage_collected = _garbage_collect(self.lake, self.manifest)
        consumer = KafkaConsumer(
            bootstrap_servers=cfg.bootstrap_servers,
            group_id=cfg.group_id,
            client_id="troupe-ingest",
            enable_auto_commit=False,
            auto_offset_reset="none",  # an out-of-range offset raises: we decide, not the client
            **{**CONSUMER_SETTINGS, "max_poll_records": cfg.poll_max_records},
        )
        start = time.monotonic()
        try:
            tps = []
            for topic in self.topic_class:
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    raise IngestError(f"topic {topic!r} does not exist on {cfg.bootstrap_servers}; create it first")
                tps += [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            verify: dict[Any, tuple[int, str]] = {}
            for tp in tps:
                state = self._part_state(tp.topic, tp.partition)
                nxt = int(state["next_offset"])
                if nxt > 0 and state["fingerprint"]:
                    # Re-read the last ingested message to prove the partition is the same one.
                    consumer.seek(tp, nxt - 1)
                    verify[tp] = (nxt - 1, state["fingerprint"])
                else:
                    consumer.seek(tp, nxt)
            self._loop(consumer, tps, verify, start, OffsetOutOfRangeError)
        finally:
            consumer.close(autocommit=False)
        self.report.seconds = time.monotonic() - start
        log_event(
            log,
            "ingest.done",
            rows=sum(self.report.rows.values()),
            dead_letters=self.report.dead_letters,
            commits=self.report.commits,
            rows_per_s=round(self.report.rows_per_s, 1),
            lag=self.report.lag,
        )
        return self.report

    def _backwards(self, consumer: Any, tp: Any, expected: int, found: str) -> None:
        incident = {
            "topic": tp.topic,
            "partition": tp.partition,
            "expected_next_offset": expected,
            "found": found,
            "at": dt.datetime.now(dt.UTC).isoformat(),
        }
        log_event(log, "ingest.offsets_moved_backwards", logging.ERROR, **incident)
        if self.config.on_offset_reset == "fail":
            raise OffsetsMovedBackwardsError(tp.topic, tp.partition, expected, found)
        # restart: record the incident durably first, then read the partition from its new start.
        state = self._part_state(tp.topic, tp.partition)
        state.update(next_offset=0, fingerprint=None, epoch=int(state.get("epoch", 0)) + 1)
        self.manifest["resets"].append(incident)
        self.report.resets.append(incident)
        _write_manifest(self.lake, self.manifest, self.run_id)
        consumer.seek(tp, 0)

    def _loop(self, consumer: Any, tps: list[Any], verify: dict[Any, tuple[int, str]], start: float, oor: Any) -> None:
        cfg = self.config
        pending = _Pending()
        position = {tp: int(self._part_state(tp.topic, tp.partition)["next_offset"]) for tp in tps}
        last_message = time.monotonic()
        last_progress = time.monotonic()
        rows_at_progress = 0
        while True:
            try:
                batch = consumer.poll(timeout_ms=200, max_records=cfg.poll_max_records)
            except oor as exc:
                # kafka-python raises OffsetOutOfRangeError({tp: offset}).
                out_of_range: dict[Any, int] = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
                if not out_of_range:
                    raise
                for tp, off in out_of_range.items():
                    expected = verify.pop(tp)[0] + 1 if tp in verify else position[tp]
                    self._backwards(consumer, tp, expected, f"offset {off} is out of range now")
                    position[tp] = 0
                continue
            for tp, messages in batch.items():
                last_message = time.monotonic()
                if tp not in verify and self._accept_batch(tp, messages, pending):
                    position[tp] = messages[-1].offset + 1
                    continue
                for msg in messages:
                    if tp in verify:
                        off, fp = verify.pop(tp)
                        if msg.offset != off or fingerprint(msg.value) != fp:
                            found = (
                                f"offset {msg.offset} came back instead"
                                if msg.offset != off
                                else f"the message at offset {off} differs from the one ingested"
                            )
                            self._backwards(consumer, tp, off + 1, found)
                            position[tp] = 0
                            break
                        continue  # the verification message was ingested before
                    self._accept(tp, msg, pending)
                    position[tp] = msg.offset + 1
            # High watermarks come with every fetch response (Tansu's ListOffsets is stale).
            lags: dict[tuple[str, int], int] = {}
            drained = True
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is None:
                    drained = False
                    continue
                if hw < position[tp] and tp not in verify:
                    self._backwards(consumer, tp, position[tp], f"the partition's high watermark is {hw}")
                    position[tp] = 0
                    drained = False
                    continue
                if tp in verify and hw <= verify[tp][0]:
                    off = verify.pop(tp)[0]
                    self._backwards(consumer, tp, off + 1, f"the partition's high watermark is {hw}")
                    position[tp] = 0
                    drained = False
                    continue
                lags[(tp.topic, tp.partition)] = hw - position[tp]
                drained = drained and hw <= position[tp] and tp not in verify
            now = time.monotonic()
            due = pending.count >= cfg.commit_rows or (
                pending.count > 0 and now - pending.since >= cfg.commit_interval_s
            )
            once_done = cfg.mode == "once" and (drained or now - last_message > cfg.idle_stop_s)
            timed_out = cfg.max_seconds is not None and now - start > cfg.max_seconds
            if due or once_done or timed_out or self._stop:
                self._commit(consumer, pending, lags)
                pending = _Pending()
            if now - last_progress >= cfg.progress_every_s:
                done_rows = sum(self.report.rows.values()) + self.report.dead_letters
                log_event(
                    log,
                    "ingest.progress",
                    rows=done_rows,
                    rows_per_s=round((done_rows - rows_at_progress) / (now - last_progress), 1),
                    lag=sum(lags.values()),
                )
                last_progress, rows_at_progress = now, done_rows
            if once_done or timed_out or self._stop:
                if cfg.mode == "once" and not drained:
                    log_event(log, "ingest.idle_stop", logging.WARNING, lag_known=bool(lags))
                return

    def _accept_batch(self, tp: Any, messages: list[Any], pending: _Pending) -> bool:
        """Validate a whole poll batch at once; False (nothing buffered) when any message needs `_accept`."""
        if len(messages) < 2:
            return False
        try:
            table = validate_batch(self.topic_class[tp.topic], [m.value for m in messages], self.schemas[tp.topic])
        except Exception:  # noqa: BLE001 — e.g. RecursionError on a deeply nested message: the per-message path decides
            table = None
        if table is None:
            return False
        for key, part in _hive_groups(tp.topic, table):
            pending.events[key].append(part)
        n = len(messages)
        pending.count += n
        pending.rows[tp.topic] += n
        pending.offsets[(tp.topic, tp.partition)] = (messages[-1].offset + 1, messages[-1].value)
        return True

    def _accept(self, tp: Any, msg: Any, pending: _Pending) -> None:
        cls = self.topic_class[tp.topic]
        pending.count += 1
        pending.offsets[(tp.topic, tp.partition)] = (msg.offset + 1, msg.value)
        try:
            event = validate_message(cls, msg.value)
        except Exception as exc:  # noqa: BLE001 — any message that cannot be parsed is dead-lettered, never fatal
            if isinstance(exc, EventValidationError):
                field_name, reason = exc.field, exc.reason
            else:  # RecursionError (deep nesting), bad UTF-8, anything unforeseen: keep the reason, go on
                field_name, reason = "<event>", f"{type(exc).__name__}: {str(exc)[:500]}"
            ts = (
                dt.datetime.fromtimestamp(msg.timestamp / 1000, dt.UTC) if msg.timestamp and msg.timestamp > 0 else None
            )
            date = (ts or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d")
            pending.dead[(tp.topic, date)].append(
                {
                    "raw": msg.value or b"",
                    "reason": reason,
                    "field": field_name,
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "offset": msg.offset,
                    "kafka_timestamp": ts,
                }
            )
            pending.dead_count += 1
            return
        pending.events[(tp.topic, *_hive_key(event))].append(event)
        pending.rows[tp.topic] += 1


def commit_events(config: IngestConfig, events: list[DecisionEvent | FeedbackEvent]) -> None:
    """Write already-validated events into the lake as one commit, without Kafka.

    For tests, benchmarks and backfills: the files and manifest are exactly what
    ingestion writes; no partition offsets move.
    """
    ing = Ingestor(config)
    with lake_lock(ing.lake, config.lock_wait_s):
        ing.manifest = load_manifest(ing.lake)
        pending = _Pending()
        for event in events:
            topic = config.decisions_topic if isinstance(event, DecisionEvent) else config.feedback_topic
            pending.events[(topic, *_hive_key(event))].append(event)
            pending.rows[topic] += 1
            pending.count += 1
        ing._commit(None, pending, {})


def ingest(config: IngestConfig) -> IngestReport:
    """Run one ingestion (once: drain and stop; continuous: until stopped). Idempotent and restartable."""
    return Ingestor(config).run()


def iter_lake_events(data_dir: Path, topic: str) -> Iterator[pa.RecordBatch]:
    """Committed rows of one topic, batch by batch (for readers that stream)."""
    for path in committed_files(data_dir, topic):
        yield from pq.ParquetFile(path).iter_batches()


def main(argv: list[str] | None = None) -> None:
    """`python -m pipelines.jobs.ingest` — the same as `troupe ingest` (used by the crash tests)."""
    import argparse

    from models.logging import configure_logging
    from models.settings import get_settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--mode", choices=["once", "continuous"], default="once")
    parser.add_argument("--commit-rows", type=int, default=50_000)
    parser.add_argument("--commit-interval-s", type=float, default=5.0)
    parser.add_argument("--poll-max-records", type=int, default=5_000)
    parser.add_argument("--on-offset-reset", choices=["fail", "restart"], default="fail")
    parser.add_argument("--lock-wait", type=float, default=0.0, help="seconds to wait for another run's lake lock")
    args = parser.parse_args(argv)
    s = get_settings()
    configure_logging(s.log_level, s.log_json)
    cfg = IngestConfig.from_settings(
        s,
        mode=args.mode,
        commit_rows=args.commit_rows,
        commit_interval_s=args.commit_interval_s,
        on_offset_reset=args.on_offset_reset,
        poll_max_records=args.poll_max_records,
        lock_wait_s=args.lock_wait,
    )
    with contextlib.suppress(KeyboardInterrupt):
        try:
            ingest(cfg)
        except LakeLockedError as exc:
            raise SystemExit(f"troupe ingest: {exc}") from None


if __name__ == "__main__":
    main()
