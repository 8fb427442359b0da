"""Event schemas: DecisionEvent and FeedbackEvent.

One definition per event — the pydantic model — gives both the JSON form used on
Kafka and the Arrow schema used in Parquet (`arrow_schema(...)` walks the
model's fields). Events are strict: unknown fields, NaN/inf and unknown schema
versions are rejected with an error that names the field.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.errors import EventValidationError

SCHEMA_VERSION: Literal[1] = 1
SUPPORTED_SCHEMA_VERSIONS = (SCHEMA_VERSION,)
MAX_EVENT_BYTES = 256 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Signals(_Strict):
    """Observed outcomes of one decision. Missing signals are 0."""

    watch_time: float = Field(0.0, ge=0, description="seconds of short video watched")
    click: float = Field(0.0, ge=0)
    like: float = Field(0.0, ge=0)
    follow: float = Field(0.0, ge=0)
    comment: float = Field(0.0, ge=0)
    share: float = Field(0.0, ge=0)
    hate: float = Field(0.0, ge=0)
    live_watch_time: float = Field(0.0, ge=0, description="seconds of live stream watched")
    live_exposure: float = Field(0.0, ge=0, le=1, description="1 when a live stream was shown")
    revenue: float = Field(0.0, description="cents")
    compute_cost: float = Field(0.0, ge=0, description="compute units")
    session_end: float = Field(0.0, ge=0, le=1, description="1 when the session ended after this decision")

    @model_validator(mode="before")
    @classmethod
    def _no_booleans(cls, data: object) -> object:
        # pydantic's lax mode reads `true` as 1.0; the event schema says number (schemathesis ST201).
        if isinstance(data, dict):
            for name, value in data.items():
                if isinstance(value, bool):
                    raise ValueError(f"{name}: expected a number, got {str(value).lower()}")
        return data


class DecisionEvent(_Strict):
    """What the decision service decided for one request, with everything OPE needs."""

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: str = Field(min_length=1, max_length=128)
    timestamp: dt.datetime
    problem: str = Field(min_length=1, max_length=32)
    user_id: str = Field(min_length=1, max_length=128, description="the unit of randomisation")
    session_id: str | None = Field(None, max_length=128)
    policy_name: str = Field(min_length=1, max_length=128)
    policy_version: str = Field(min_length=1, max_length=64)
    experiment: str | None = Field(None, max_length=128)
    arm: str | None = Field(None, max_length=64)
    exposed: bool = Field(True, description="the unit was exposed to the arm's policy for this decision")
    observation: list[float] = Field(description="the flat observation vector the policy saw, spec order")
    action: list[float] = Field(description="the flat action taken (discrete choices as whole numbers)")
    propensity: float | None = Field(None, gt=0, le=1, description="probability of the action (discrete)")
    log_density: float | None = Field(None, description="log-density of the action (continuous)")
    candidate_ids: list[str] | None = Field(None, description="final ordering / chosen items where relevant")
    fallback: bool = False

    @field_validator("timestamp", mode="before")
    @classmethod
    def _text(cls, v: object) -> object:
        # pydantic's lax mode reads a number as Unix seconds; the schema says an ISO 8601 string.
        if isinstance(v, int | float):
            raise ValueError("timestamp must be an ISO 8601 string with a timezone, not a number")
        return v

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None:
            raise ValueError("timestamp must carry a timezone (UTC expected)")
        try:
            return v.astimezone(dt.UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 falls before year 1 in UTC
            raise ValueError("timestamp is out of range once converted to UTC") from None

    @model_validator(mode="after")
    def _probability_present(self) -> DecisionEvent:
        if self.propensity is None and self.log_density is None:
            raise ValueError("one of propensity (discrete) or log_density (continuous) is required")
        return self


class FeedbackEvent(_Strict):
    """What the user did after a decision; joined to it on request_id."""

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: str = Field(min_length=1, max_length=128)
    timestamp: dt.datetime
    user_id: str = Field(min_length=1, max_length=128)
    problem: str | None = Field(None, max_length=32)
    signals: Signals

    @field_validator("timestamp", mode="before")
    @classmethod
    def _text(cls, v: object) -> object:
        # pydantic's lax mode reads a number as Unix seconds; the schema says an ISO 8601 string.
        if isinstance(v, int | float):
            raise ValueError("timestamp must be an ISO 8601 string with a timezone, not a number")
        return v

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None:
            raise ValueError("timestamp must carry a timezone (UTC expected)")
        try:
            return v.astimezone(dt.UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 falls before year 1 in UTC
            raise ValueError("timestamp is out of range once converted to UTC") from None


Event = DecisionEvent | FeedbackEvent
E = TypeVar("E", DecisionEvent, FeedbackEvent)


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------
def to_json(event: BaseModel) -> bytes:
    # model_dump_json() without its decode to str and our encode back: the same bytes.
    return event.__pydantic_serializer__.to_json(event)


def _first_error(err: ValidationError) -> EventValidationError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<event>"
    return EventValidationError(loc, first["msg"])


def from_json(cls: type[E], raw: bytes | str) -> E:
    """Parse and validate one event; raises EventValidationError naming the first bad field."""
    if isinstance(raw, bytes | bytearray) and len(raw) > MAX_EVENT_BYTES:
        raise EventValidationError("<event>", f"{len(raw)} bytes is over the {MAX_EVENT_BYTES}-byte limit")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:
        raise EventValidationError("<event>", f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventValidationError("<event>", f"expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise EventValidationError(
            "schema_version", f"unknown version {version!r}; this build reads {list(SUPPORTED_SCHEMA_VERSIONS)}"
        )
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise _first_error(err) from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed (NaN and infinities are rejected)")


# ---------------------------------------------------------------------------
# Arrow
# ---------------------------------------------------------------------------
def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) for one pydantic field annotation."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        inner, _ = _arrow_type(args[0])
        return inner, True
    if origin is Literal:
        return _arrow_type(type(get_args(annotation)[0]))
    if origin is list:
        inner, _ = _arrow_type(get_args(annotation)[0])
        return pa.list_(inner), False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct([_arrow_field(n, f.annotation) for n, f in annotation.model_fields.items()]), False
    simple: dict[Any, pa.DataType] = {
        str: pa.string(),
        int: pa.int64(),
        float: pa.float64(),
        bool: pa.bool_(),
        dt.datetime: pa.timestamp("us", tz="UTC"),
    }
    if annotation in simple:
        return simple[annotation], False
    raise TypeError(f"no Arrow type for annotation {annotation!r}")


def _arrow_field(name: str, annotation: Any) -> pa.Field:
    typ, nullable = _arrow_type(annotation)
    return pa.field(name, typ, nullable=nullable)


def arrow_schema(cls: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of an event model, derived from its pydantic fields."""
    hints = typing.get_type_hints(cls)
    return pa.schema([_arrow_field(name, hints[name]) for name in cls.model_fields])


def to_arrow(events: list[E]) -> pa.Table:
    """Events of one class → an Arrow table with that class's schema."""
    if not events:
        raise ValueError("to_arrow needs at least one event (the schema comes from its class)")
    cls = type(events[0])
    rows = [e.model_dump() for e in events]
    return pa.Table.from_pylist(rows, schema=arrow_schema(cls))


def from_arrow(cls: type[E], table: pa.Table) -> list[E]:
    return [cls.model_validate(row) for row in table.to_pylist()]


def is_finite_list(values: list[float]) -> bool:
    return all(math.isfinite(v) for v in values)
