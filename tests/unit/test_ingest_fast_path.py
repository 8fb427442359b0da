"""Differential test: the bulk Arrow validator (`ingest_fast.validate_batch`) against pydantic.

For every generated message, valid or not, the fast path may only accept what
`validate_message` accepts, and must then give the very rows `events_to_arrow`
builds from the pydantic models. It must also actually take the common case
(canonical valid messages), or it would be a no-op.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from models.errors import EventValidationError
from models.events import MAX_EVENT_BYTES, DecisionEvent, FeedbackEvent, arrow_schema, to_json
from pipelines.jobs.ingest import (
    IngestConfig,
    Ingestor,
    _hive_groups,
    _hive_key,
    _Pending,
    _write_parquet,
    events_to_arrow,
    load_manifest,
    validate_message,
)
from pipelines.jobs.ingest_fast import _float_lists, validate_batch
from tests.integration._events import decision, feedback
from tests.integration.test_ingest import malformed_cases

Cls = type[DecisionEvent] | type[FeedbackEvent]

TIMESTAMPS = [
    "2026-11-21T10:00:00Z",
    "2026-11-21T10:00:00.5+05:30",
    "2026-11-21T23:59:59.999999-08:00",
    "2026-11-21T10:00:00.123+00:00",
    "2026-11-21T10:00:00",  # naive: refused
    "2026-11-21 10:00:00Z",
    "2026-11-21T10:00:00.1234567Z",
    "2026-02-30T10:00:00Z",
    "2026-11-21T10:00:00z",
    "2026-11-21T10:00:00+0530",
    "2026-11-21T10:00:00+24:00",
    "2026-11-21",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    1763719200,
    "1763719200",
    None,
]
ODD_VALUES: list[Any] = [
    None, 0, 1, -1, 0.0, -0.0, 0.5, 1.0, 1.5, 1e-300, 1e300, -3.25, True, False, "0.5", "x", "", [], [1.0], {},
    2**70, "true",
]  # fmt: skip
STRING_FIELDS = ["request_id", "problem", "user_id", "session_id", "policy_name", "policy_version", "experiment", "arm"]


def _base(rng: random.Random, cls: Cls, i: int) -> dict[str, Any]:
    d = decision(i, problem=rng.choice(["rank", "rank", "slot", "allocate"])) if rng.random() < 0.9 else decision(i)
    if cls is DecisionEvent:
        doc: dict[str, Any] = json.loads(to_json(d))
        doc["observation"] = [rng.uniform(-5, 5) for _ in range(rng.randint(0, 6))]
        if rng.random() < 0.3:
            doc["candidate_ids"] = [f"c{rng.randint(0, 99)}" for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.3:
            doc["propensity"], doc["log_density"] = None, -rng.random() * 10
        return doc
    fb = feedback(d, watch_time=rng.random() * 30, live_exposure=rng.choice([0.0, 1.0]), revenue=-rng.random())
    doc = json.loads(to_json(fb))
    if rng.random() < 0.3:
        doc["problem"] = None
    return doc


def _mutate(rng: random.Random, doc: dict[str, Any]) -> bytes:
    kind = rng.randrange(12)
    keys = list(doc)
    if kind == 0:
        doc[rng.choice(keys)] = rng.choice(ODD_VALUES)
    elif kind == 1:
        del doc[rng.choice(keys)]
    elif kind == 2:
        doc["extra_field"] = 1
    elif kind == 3:
        doc["timestamp"] = rng.choice(TIMESTAMPS)
    elif kind == 4 and "signals" in doc:
        name = rng.choice(list(doc["signals"]))
        if rng.random() < 0.2:
            del doc["signals"][name]
        elif rng.random() < 0.2:
            doc["signals"]["bogus"] = 0.0
        else:
            doc["signals"][name] = rng.choice(ODD_VALUES)
    elif kind == 5 and "observation" in doc:
        doc["observation"] = doc["observation"] + [rng.choice(ODD_VALUES)]
    elif kind == 6:
        field = rng.choice([f for f in STRING_FIELDS if f in doc])
        doc[field] = "é" * rng.choice([0, 1, 32, 33, 64, 65, 128, 129]) if rng.random() < 0.8 else 7
    elif kind == 7 and "candidate_ids" in doc:
        doc["candidate_ids"] = ["a", rng.choice(ODD_VALUES)]
    elif kind == 8:
        raw = json.dumps(doc, indent=rng.choice([None, 1]))
        token = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "1e-999"])
        field = "propensity" if "propensity" in doc else "request_id"
        return raw.replace(f'"{field}": ', f'"{field}": {token}, "{field}_": ', 1).encode()
    elif kind == 9:
        raw = json.dumps(doc)
        return raw.replace('"user_id": ', '"user_id": "dup", "user_id": ', 1).encode()
    elif kind == 10:
        return rng.choice([b"", b"null", b"[1]", b"\xef\xbb\xbf" + json.dumps(doc).encode(), b" " + to_bytes(doc)])
    elif kind == 11 and "propensity" in doc:
        doc["propensity"], doc["log_density"] = rng.choice([(None, None), (0.0, None), (1.0, None), (-0.1, 2.0)])
    return to_bytes(doc)


def to_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _pydantic(cls: Cls, raw: bytes | None) -> pa.Table | None:
    try:
        event = validate_message(cls, raw)
    except EventValidationError:
        return None
    except OverflowError:
        # Known gap in the per-message path (reported, not changed here): year 1 with a positive
        # offset overflows `astimezone(UTC)` in models.events. The fast path must not accept it either.
        return None
    return events_to_arrow([event], arrow_schema(cls))


@pytest.mark.parametrize("cls", [DecisionEvent, FeedbackEvent])
def test_fast_path_accepts_exactly_what_pydantic_accepts_with_identical_rows(cls: Cls) -> None:
    rng = random.Random(4)
    schema = arrow_schema(cls)
    messages: list[bytes | None] = [raw for raw, _ in malformed_cases().values()]
    messages += [_mutate(rng, _base(rng, cls, i)) for i in range(500)]
    valid_taken = 0
    for raw in messages:
        expected = _pydantic(cls, raw)
        got = validate_batch(cls, [raw], schema)
        if got is None:
            continue  # the per-message path decides; always exact
        assert expected is not None, f"fast path accepted what pydantic refuses: {raw!r}"
        assert got.schema == expected.schema
        assert got.to_pylist() == expected.to_pylist(), raw
        valid_taken += 1
    assert valid_taken > 60  # some mutations keep the message valid, and those must take the fast path


@pytest.mark.parametrize("cls", [DecisionEvent, FeedbackEvent])
def test_a_batch_of_valid_messages_is_taken_whole_and_one_bad_message_sends_it_per_message(cls: Cls) -> None:
    rng = random.Random(7)
    raws = [to_bytes(_base(rng, cls, i)) for i in range(300)]
    expected = pa.concat_tables([_pydantic(cls, r) for r in raws])
    got = validate_batch(cls, raws, arrow_schema(cls))
    assert got is not None
    assert got.equals(expected.combine_chunks())
    assert validate_batch(cls, [*raws, b'{"request_id": "r1", '], arrow_schema(cls)) is None
    big = b" " * (MAX_EVENT_BYTES + 1)
    assert validate_batch(cls, [*raws, big], arrow_schema(cls)) is None


def test_a_commit_mixing_bulk_tables_and_models_writes_what_the_per_message_path_writes(tmp_path: Path) -> None:
    rng = random.Random(11)
    raws = [to_bytes(_base(rng, DecisionEvent, i)) for i in range(120)]
    events = [validate_message(DecisionEvent, r) for r in raws]
    lakes = []
    for mode in ("models", "mixed"):
        cfg = IngestConfig("localhost:1", tmp_path / mode, decisions_topic="dec", feedback_topic="fb")
        ing = Ingestor(cfg)
        ing.run_id = "same-run"  # part names carry the run id: the same one, so the two lakes compare
        pending = _Pending()
        bulk = validate_batch(DecisionEvent, raws[:80], arrow_schema(DecisionEvent))
        assert bulk is not None
        if mode == "mixed":  # a bulk batch, then a batch that fell back to models
            for key, part in _hive_groups("dec", bulk):
                pending.events[key].append(part)
        for e in events if mode == "models" else events[80:]:
            pending.events[("dec", *_hive_key(e))].append(e)
        pending.count = pending.rows["dec"] = len(events)
        ing._commit(None, pending, {})
        lakes.append(ing.lake)
    manifests = [load_manifest(lake) for lake in lakes]
    assert manifests[0]["files"] == manifests[1]["files"]  # incl. the row count of every file
    assert sum(f["rows"] for f in manifests[1]["files"].values()) == len(events)
    for rel in manifests[0]["files"]:
        a, b = (pq.read_table(lake / rel) for lake in lakes)
        assert a.schema.equals(b.schema, check_metadata=True) and a.equals(b), rel


def _raws(*arrays: bytes) -> list[Any]:
    """Float-vector texts as msgspec hands them to `_float_lists` (Raw, already checked as JSON)."""
    return list(msgspec.json.decode(b"[" + b",".join(arrays) + b"]", type=list[msgspec.Raw]))


def test_float_lists_keep_rows_apart_and_refuse_what_is_not_a_plain_number_array() -> None:
    got = _float_lists(_raws(b"[1,2.5]", b"[]", b"[ -3e2 , 4E-1 ]", b"[]", b"[1180591620717411303424]"))
    assert got is not None
    assert got.to_pylist() == [[1.0, 2.5], [], [-300.0, 0.4], [], [float(2**70)]]
    assert _float_lists(_raws(b"[]", b"[]")).to_pylist() == [[], []]  # type: ignore[union-attr]
    # Each goes per message: pydantic decides (nested, null, strings, and "-0", an integer that is +0.0 to it).
    for odd in (b"[[1]]", b"[1,null]", b'["1"]', b"[-0]", b"[-0.0]", b"[1e999]"):
        result = _float_lists(_raws(b"[1]", odd))
        assert result is None or not pc.all(pc.is_finite(pc.list_flatten(result))).as_py(), odd


def test_hive_groups_split_a_batch_by_problem_and_hour_like_the_per_message_key() -> None:
    rng = random.Random(5)
    raws = []
    for i in range(60):
        doc = _base(rng, DecisionEvent, i)
        hour, minute, offset = rng.choice([0, 9, 10, 23]), rng.randint(0, 59), rng.choice(["+00:00", "+01:00", "Z"])
        doc["timestamp"] = f"2026-11-21T{hour:02d}:{minute:02d}:00{offset}"  # some fall on 2026-11-20 in UTC
        raws.append(to_bytes(doc))
    table = validate_batch(DecisionEvent, raws, arrow_schema(DecisionEvent))
    assert table is not None
    events = [validate_message(DecisionEvent, r) for r in raws]
    expected: dict[tuple[Any, ...], list[str]] = {}
    for e in events:
        expected.setdefault(("dec", *_hive_key(e)), []).append(e.request_id)
    groups = _hive_groups("dec", table)
    assert len(groups) > 3
    assert {key: part["request_id"].to_pylist() for key, part in groups} == expected  # same rows, same order


def test_float_vectors_are_written_without_dictionary_or_statistics(tmp_path: Path) -> None:
    raws = [to_bytes(_base(random.Random(i), DecisionEvent, i)) for i in range(50)]
    table = validate_batch(DecisionEvent, raws, arrow_schema(DecisionEvent))
    assert table is not None
    _write_parquet(table, tmp_path / "part.parquet", 1024)
    group = pq.ParquetFile(tmp_path / "part.parquet").metadata.row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    assert not columns["observation.list.element"].is_stats_set
    assert not columns["observation.list.element"].has_dictionary_page
    assert columns["user_id"].has_dictionary_page and columns["user_id"].is_stats_set
    assert pq.read_table(tmp_path / "part.parquet").equals(table)
