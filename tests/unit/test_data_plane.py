"""Pure logic of the data plane: spool format, producer limits, validation, column contract, sessions."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from models.errors import EventValidationError
from models.events import DecisionEvent, FeedbackEvent, to_json
from pipelines.jobs.dataset import TRANSITION_COLUMNS, _sessions, transition_columns, transition_schema
from pipelines.jobs.ingest import IngestConfig, validate_message
from serving.producer import DiskSpool, EventProducer, ProducerConfig, _Record, encode_record, read_segment


def test_spool_round_trip_and_torn_tail(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20)
    recs = [_Record("t", None, b"v0"), _Record("topic.x", b"key", b"\x00" * 10), _Record("t", b"", b"")]
    assert len(spool.append(recs)[1]) == 3 and spool.size == 3
    spool.close()
    seg = next(tmp_path.glob("segment-*.spool"))
    with seg.open("ab") as f:
        f.write(encode_record(_Record("t", b"k", b"half"))[:-2])  # crash mid-write
    assert [r for _, r in read_segment(seg)] == recs
    reopened = DiskSpool(tmp_path, 1 << 20)
    assert reopened.size == 3
    assert seg.stat().st_size == len(b"".join(encode_record(r) for r in recs)), "the torn tail is cut off"


def test_spool_respects_its_byte_limit(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 16)
    fitted = len(spool.append([_Record("t", None, b"x" * 1000) for _ in range(100)])[1])
    assert 0 < fitted < 100 and spool.bytes <= 1 << 16


def test_a_full_buffer_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    idle = EventProducer(ProducerConfig("127.0.0.1:1", tmp_path / "idle"))  # not started: no spool to write to
    assert not idle.send("t", b"v") and idle.counters()["dropped"] == 1
    producer = EventProducer(ProducerConfig("127.0.0.1:1", tmp_path / "busy", buffer_size=5)).start()
    try:
        with producer._sync_wake:  # the writer cannot take a group: written events wait for their fdatasync
            results = [producer.send("t", b"v") for _ in range(8)]
        assert results == [True] * 5 + [False] * 3
        assert producer.counters()["dropped"] == 3 and producer.spool_size() == 5
    finally:
        producer.close()


@pytest.mark.parametrize(
    ("field", "kwargs", "match"),
    [
        ("bootstrap_servers", {"bootstrap_servers": ""}, "host:port"),
        ("buffer_size", {"buffer_size": 0}, "positive"),
        ("delivery_timeout_ms", {"delivery_timeout_ms": 100, "request_timeout_ms": 500}, "request_timeout_ms"),
    ],
)
def test_producer_config_names_the_bad_field(tmp_path: Path, field: str, kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"bootstrap_servers": "h:1", "spool_dir": tmp_path, **kwargs}
    with pytest.raises(ValueError, match=f"{field}.*{match}|{match}.*{field}"):
        ProducerConfig(**args)  # type: ignore[arg-type]


def _decision(**kw: object) -> dict[str, object]:
    base = {
        "request_id": "r1",
        "timestamp": "2026-11-20T10:00:00Z",
        "problem": "slot",
        "user_id": "u",
        "policy_name": "p",
        "policy_version": "1",
        "observation": [0.0] * 23,
        "action": [1.0],
        "propensity": 0.5,
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{nope", "<event>"),
        (json.dumps(_decision(schema_version=2)).encode(), "schema_version"),
        (json.dumps({k: v for k, v in _decision().items() if k != "policy_name"}).encode(), "policy_name"),
        (json.dumps(_decision(action="one")).encode(), "action"),
        (json.dumps(_decision(timestamp="2026-11-20T10:00:00")).encode(), "timestamp"),
        (json.dumps(_decision(propensity=None)).encode(), "<event>"),
        (json.dumps(_decision(extra=1)).encode(), "extra"),
        (json.dumps(_decision(problem="nope")).encode(), "problem"),
        (json.dumps(_decision()).replace('"propensity": 0.5', '"propensity": NaN').encode(), "<event>"),
        (json.dumps(_decision(observation=[1e999] * 23)).encode(), "<event>"),
        (None, "<event>"),
    ],
)
def test_validation_fast_path_refuses_what_the_contract_refuses(raw: bytes | None, field: str) -> None:
    with pytest.raises(EventValidationError) as info:
        validate_message(DecisionEvent, raw)
    assert info.value.field == field


def test_validation_accepts_and_normalises_a_good_event() -> None:
    raw = json.dumps(_decision(timestamp="2026-11-20T12:00:00+02:00")).encode()
    event = validate_message(DecisionEvent, raw)
    assert event.timestamp == dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)
    fb = FeedbackEvent(request_id="r", timestamp=event.timestamp, user_id="u", signals={"click": 1.0})  # type: ignore[arg-type]
    assert validate_message(FeedbackEvent, to_json(fb)) == fb


def test_ingest_config_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        IngestConfig("h:1", tmp_path, mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must differ"):
        IngestConfig("h:1", tmp_path, decisions_topic="x", feedback_topic="x")


def test_transition_columns_follow_the_spec_signals_in_order() -> None:
    cols = transition_columns("slot")
    i = TRANSITION_COLUMNS.index("action") + 1
    assert cols[:i] == TRANSITION_COLUMNS[:i]
    assert cols[i : i + 4] == (
        "reward_live_watch_time",
        "reward_watch_time",
        "reward_session_end",
        "reward_live_exposure",
    )
    assert cols[i + 4 :] == TRANSITION_COLUMNS[i + 1 :]
    assert transition_schema("rank").names == list(transition_columns("rank"))


def test_sessions_split_on_gap_and_session_end_and_group_interleaved_ids() -> None:
    t = pd.Timestamp("2026-11-20T00:00:00Z")
    keys = pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "d", "e", "f"],
            "user_id": ["u", "u", "u", "v", "v", "v"],
            "session_id": [None, None, None, "s1", "s2", "s1"],  # v's sessions interleave in time
            "timestamp": [
                t,
                t + pd.Timedelta(seconds=10),
                t + pd.Timedelta(hours=2),
                t,
                t + pd.Timedelta(seconds=1),
                t + pd.Timedelta(seconds=2),
            ],
        }
    )
    session_end = [False, False, False, False, False, False]
    order, sessions, done = _sessions(keys, pd.Series(session_end).to_numpy(), gap_s=1800)
    ordered = keys["request_id"].to_numpy()[order].tolist()
    assert ordered == ["a", "b", "c", "d", "f", "e"]
    assert done.tolist() == [False, True, True, False, True, True]
    assert sessions[0] == sessions[1] != sessions[2] and list(sessions[3:]) == ["s1", "s1", "s2"]
    _, sessions_end, done_end = _sessions(keys, pd.Series([True, False, False, False, False, False]).to_numpy(), 1800)
    assert done_end.tolist()[:3] == [True, True, True] and sessions_end[0] != sessions_end[1]
