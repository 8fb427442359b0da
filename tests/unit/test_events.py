from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from models.errors import EventValidationError
from models.events import (
    DecisionEvent,
    FeedbackEvent,
    Signals,
    arrow_schema,
    from_arrow,
    from_json,
    to_arrow,
    to_json,
)

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


def decision(**over: object) -> DecisionEvent:
    base: dict[str, object] = dict(
        request_id="r-1",
        timestamp=NOW,
        problem="slot",
        user_id="u-1",
        session_id="s-1",
        policy_name="slot-bc",
        policy_version="v1",
        experiment="exp",
        arm="control",
        observation=[0.1] * 23,
        action=[3.0],
        propensity=0.25,
        candidate_ids=["live-9"],
    )
    base.update(over)
    return DecisionEvent.model_validate(base)


def feedback(**over: object) -> FeedbackEvent:
    base: dict[str, object] = dict(
        request_id="r-1", timestamp=NOW, user_id="u-1", signals=Signals(watch_time=12.5, like=1, session_end=0)
    )
    base.update(over)
    return FeedbackEvent.model_validate(base)


@pytest.mark.parametrize("event", [decision(), decision(propensity=None, log_density=-3.2), feedback()])
def test_json_round_trip(event: DecisionEvent | FeedbackEvent) -> None:
    assert from_json(type(event), to_json(event)) == event


def test_arrow_round_trip_and_schema() -> None:
    events = [decision(request_id=f"r-{i}") for i in range(3)]
    table = to_arrow(events)
    assert table.schema == arrow_schema(DecisionEvent)
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("propensity").nullable
    assert not table.schema.field("request_id").nullable
    assert from_arrow(DecisionEvent, table) == events
    fb = to_arrow([feedback()])
    assert pa.types.is_struct(fb.schema.field("signals").type)
    assert from_arrow(FeedbackEvent, fb) == [feedback()]


def _raw(event: DecisionEvent | FeedbackEvent, **changes: object) -> bytes:
    data = json.loads(to_json(event))
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"schema_version": 7}, "schema_version"),
        ({"request_id": ...}, "request_id"),
        ({"propensity": "high"}, "propensity"),
        ({"propensity": 1.5}, "propensity"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"observation": [1.0, "x"]}, "observation.1"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_decision_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(EventValidationError) as err:
        from_json(DecisionEvent, _raw(decision(), **changes))
    assert err.value.field == field
    assert field in str(err.value)


def test_nan_and_infinity_are_rejected() -> None:
    raw = to_json(decision()).replace(b'"propensity":0.25', b'"propensity":NaN')
    with pytest.raises(EventValidationError, match="NaN"):
        from_json(DecisionEvent, raw)
    # 1e400 parses to +inf: rejected, and the error names the nested field.
    with pytest.raises(EventValidationError) as err:
        from_json(FeedbackEvent, _raw(feedback(), signals={"watch_time": 7.0}).replace(b"7.0", b"1e400"))
    assert err.value.field == "signals.watch_time"


def test_unknown_signal_and_naive_timestamp_rejected() -> None:
    with pytest.raises(EventValidationError) as err:
        from_json(FeedbackEvent, _raw(feedback(), signals={"dwell": 3}))
    assert err.value.field == "signals.dwell"
    with pytest.raises(EventValidationError) as err:
        from_json(FeedbackEvent, _raw(feedback(), timestamp="2026-11-21T12:00:00"))
    assert err.value.field == "timestamp"


def test_timestamp_out_of_range_in_utc_is_a_validation_error() -> None:
    """An OverflowError here would crash ingestion instead of dead-lettering the message."""
    for cls, event in ((DecisionEvent, decision()), (FeedbackEvent, feedback())):
        with pytest.raises(EventValidationError) as err:
            from_json(cls, _raw(event, timestamp="0001-01-01T00:00:00+01:00"))
        assert err.value.field == "timestamp"


def test_decision_needs_a_propensity_or_density() -> None:
    with pytest.raises(EventValidationError, match="propensity"):
        from_json(DecisionEvent, _raw(decision(), propensity=None))


def test_oversized_and_non_json_rejected() -> None:
    with pytest.raises(EventValidationError, match="limit"):
        from_json(DecisionEvent, b"{" + b" " * (300 * 1024) + b"}")
    with pytest.raises(EventValidationError, match="JSON"):
        from_json(DecisionEvent, b"{not json")
