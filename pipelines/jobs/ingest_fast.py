"""Bulk validation of one poll batch of event messages (issue 4).

`validate_batch` decodes every message with a msgspec decoder generated from
the pydantic model (same field names, types, defaults, unknown fields
forbidden; strict: no number-as-string or similar coercions), builds the Arrow
columns with one conversion per column, and checks every rule the pydantic
models in `models.events` enforce with vectorised `pyarrow.compute` kernels.

The float vectors (`observation`, `action`) are the bulk of each message and
the slow part of every JSON parser measured (~80-130 ns per number in msgspec,
Arrow's JSON reader, orjson and polars on the project machine), so msgspec only checks
them as JSON (`msgspec.Raw`) and `_float_lists` parses the numbers of the whole
batch at once: Arrow splits them at the commas and its string → float64 cast
(fast_float, correctly rounded like pydantic's parser) converts the numbers.

It is deliberately conservative: it returns the batch as an Arrow table only
when it can prove that the per-message path (`ingest.validate_message`) would
accept every message and produce the same values; otherwise it returns None
and the caller validates the batch message by message, so dead letters keep
their exact per-message reasons. Anything it is unsure about (a number given
as a string, a timestamp not in the canonical ISO form, a JSON `-0` in a float
vector, ...) makes it return None, never a different answer.
`tests/unit/test_ingest_fast_path.py` checks this against pydantic.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, Union, get_args, get_origin

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from models.events import MAX_EVENT_BYTES, SCHEMA_VERSION, DecisionEvent, FeedbackEvent, arrow_schema
from models.problems import PROBLEMS

# Canonical RFC 3339 timestamps with an explicit offset: what pydantic and
# Arrow's ISO 8601 cast read alike. Years 1000-9998 keep `astimezone(UTC)`
# in range; other forms (naive, space separator, >6 fraction digits, ...) go
# to the per-message path, which decides them.
_TS_PATTERN = (
    r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_TS_TYPE = pa.timestamp("us", tz="UTC")
_FLOAT_LIST = pa.list_(pa.float64())

_OPEN, _CLOSE = ord("["), ord("]")
# The characters of JSON numbers and the commas between them.
_NUMBER_BYTES = b"0123456789+-.eE,"
_JSON_WHITESPACE = b" \t\n\r"


# ---------------------------------------------------------------------------
# The wire decoder, generated from the pydantic model
# ---------------------------------------------------------------------------
def _wire_type(annotation: Any) -> Any:
    """The msgspec type that accepts (a subset of) what pydantic accepts for one annotation."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return Union[tuple(_wire_type(a) for a in get_args(annotation))]  # noqa: UP007 — built at run time
    if origin is Literal or annotation in (str, float, bool, int, type(None)):
        return annotation
    if annotation is dt.datetime:
        return str  # checked against _TS_PATTERN and cast in bulk
    if origin is list:
        (inner,) = get_args(annotation)
        return list[_wire_type(inner)]  # type: ignore[misc]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _wire_struct(annotation)
    raise TypeError(f"no wire type for annotation {annotation!r}")


@functools.cache
def _wire_struct(model: type[BaseModel]) -> type[msgspec.Struct]:
    """A msgspec Struct mirroring `model`: same names, defaults and strictness.

    A required `list[float]` becomes `msgspec.Raw` (checked as JSON, parsed in bulk by `_float_lists`).
    """
    hints = typing.get_type_hints(model)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, info in model.model_fields.items():
        annotation = hints[name]
        typ = msgspec.Raw if annotation == list[float] else _wire_type(annotation)
        fields.append((name, typ) if info.is_required() else (name, typ, info.default))
    return msgspec.defstruct(f"{model.__name__}Wire", fields, kw_only=True, forbid_unknown_fields=True, gc=False)


@functools.cache
def _decoder(model: type[BaseModel]) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(_wire_struct(model))


# ---------------------------------------------------------------------------
# Columns
# ---------------------------------------------------------------------------
def _float_lists(raws: Sequence[Any]) -> pa.Array | None:
    """The JSON arrays of numbers in `raws` (msgspec.Raw, each already valid JSON) as one list<float64> array.

    None when any is not an array of plain numbers. Valid JSON made only of
    digits, signs, '.', 'e', ',' and one pair of brackets is an array of
    numbers, so the pieces between commas are JSON numbers: Arrow splits them
    and casts them (fast_float, correctly rounded like pydantic's parser).
    """
    n = len(raws)
    joined = b"".join(raws)
    # What is left once the number characters are gone must be one "[]" per vector, in order:
    # no nesting, no scalars, no strings, null or objects; whitespace (valid JSON: between numbers) is dropped.
    pairs = b"[]" * n
    rest = joined.translate(None, _NUMBER_BYTES)
    if rest != pairs:
        if rest.translate(None, _JSON_WHITESPACE) != pairs:
            return None
        raws = [bytes(r).translate(None, _JSON_WHITESPACE) for r in raws]  # rare, so per vector
        joined = b"".join(raws)
    lengths = np.fromiter(map(len, raws), np.int32, n)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    text = np.frombuffer(joined, np.uint8)
    if not ((text[offsets[:-1]] == _OPEN).all() and (text[offsets[1:] - 1] == _CLOSE).all()):
        return None  # each vector is "[" + numbers and commas + "]"
    vectors = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(joined))
    filled = lengths > 2  # "[]" would split into one empty piece
    if not filled.all():
        vectors = vectors.filter(pa.array(filled))
    pieces = pc.split_pattern(pc.utf8_slice_codeunits(vectors, 1, -1), ",")
    try:
        values = pieces.values.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    numbers = values.to_numpy()
    zero = numbers == 0
    if zero.any() and np.signbit(numbers[zero]).any():
        return None  # JSON "-0" is an integer, 0.0 to pydantic but -0.0 to the cast; "-0.0" also lands here
    if filled.all():
        return pa.ListArray.from_arrays(pieces.offsets, values)
    counts = np.zeros(n, np.int32)
    counts[filled] = pc.list_value_length(pieces).to_numpy()
    row_offsets = np.zeros(n + 1, np.int32)
    np.cumsum(counts, out=row_offsets[1:])
    return pa.ListArray.from_arrays(pa.array(row_offsets), values)


def _fields_of(structs: Sequence[Any], names: Sequence[str]) -> list[list[Any]]:
    """The decoded messages' values, one list per field.

    One `attrgetter` pass per field rather than a tuple per message: the structs
    are untracked by the cyclic GC (gc=False), and 5,000 row tuples per batch
    roughly doubled its collections during ingestion.
    """
    return [list(map(operator.attrgetter(name), structs)) for name in names]


def _to_arrow(typ: pa.DataType, values: Sequence[Any]) -> pa.Array | None:
    """One wire column → Arrow (timestamps stay strings: checked and cast by the caller)."""
    if typ == _TS_TYPE:
        return pa.array(values, pa.string())
    if pa.types.is_struct(typ):
        children = _fields_of(values, [child.name for child in typ])
        arrays = [_to_arrow(typ.field(i).type, c) for i, c in enumerate(children)]
        if any(a is None for a in arrays):
            return None
        return pa.StructArray.from_arrays(arrays, fields=list(typ))
    if typ == _FLOAT_LIST and values and isinstance(values[0], msgspec.Raw):
        return _float_lists(values)
    return pa.array(values, typ)


# ---------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------
def _bounds(model: type[BaseModel]) -> dict[str, list[tuple[str, float]]]:
    """name -> list of (op, bound) from the model's Field constraints (ge/gt/le/lt, min/max_length)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for name, info in model.model_fields.items():
        for meta in info.metadata:
            for attr in ("ge", "gt", "le", "lt", "min_length", "max_length"):
                value = getattr(meta, attr, None)
                if value is not None:
                    out.setdefault(name, []).append((attr, value))
    return out


_OPS = {
    "ge": pc.greater_equal,
    "gt": pc.greater,
    "le": pc.less_equal,
    "lt": pc.less,
}


def _all(mask: pa.Array | pa.ChunkedArray) -> bool:
    """True when every entry is true (nulls count as false)."""
    return mask.null_count == 0 and bool(pc.all(mask).as_py())


def _check_column(arr: pa.Array, typ: pa.DataType, rules: list[tuple[str, float]], nullable: bool) -> bool:
    if not nullable and arr.null_count:
        return False
    if pa.types.is_floating(typ) and arr.null_count < len(arr) and not _all(pc.is_finite(arr.drop_null())):
        return False
    if pa.types.is_list(typ):
        values = pc.list_flatten(arr)
        if values.null_count:
            return False
        if pa.types.is_floating(typ.value_type) and len(values) and not _all(pc.is_finite(values)):
            return False
    present = arr.drop_null() if arr.null_count else arr
    if not len(present):
        return True
    for op, bound in rules:
        if op in _OPS:
            ok = _OPS[op](present, bound)
        else:
            length = pc.utf8_length(present)
            ok = pc.greater_equal(length, bound) if op == "min_length" else pc.less_equal(length, bound)
        if not _all(ok):
            return False
    return True


def _check_timestamps(arr: pa.Array) -> pa.Array | None:
    """Canonical RFC 3339 strings → timestamp[us, UTC], or None."""
    if arr.null_count or not _all(pc.match_substring_regex(arr, _TS_PATTERN)):
        return None
    try:
        out = arr.cast(_TS_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # e.g. 2026-02-30: pydantic decides and names it
    years = pc.year(out)
    if not (_all(pc.greater_equal(years, 1001)) and _all(pc.less_equal(years, 9998))):
        return None
    return out


def validate_batch(
    cls: type[DecisionEvent] | type[FeedbackEvent], values: Sequence[bytes | None], schema: pa.Schema | None = None
) -> pa.Table | None:
    """The batch as a table in `arrow_schema(cls)`, or None when any message needs the per-message path."""
    if not values:
        return None
    schema = schema if schema is not None else arrow_schema(cls)
    wire = _wire_struct(cls)
    if list(wire.__struct_fields__) != schema.names:
        return None
    try:
        if max(map(len, values)) > MAX_EVENT_BYTES:  # type: ignore[arg-type]  # None raises TypeError
            return None
        decoded = list(map(_decoder(cls).decode, values))  # type: ignore[arg-type]
        columns = [_to_arrow(f.type, c) for f, c in zip(schema, _fields_of(decoded, schema.names), strict=True)]
    # ValueError covers bad UTF-8; RecursionError deep nesting: the per-message path dead-letters them.
    except (
        msgspec.DecodeError,
        TypeError,
        ValueError,
        pa.ArrowInvalid,
        pa.ArrowTypeError,
        OverflowError,
        RecursionError,
    ):
        return None
    bounds = _bounds(cls)
    out: list[pa.Array] = []
    for f, arr in zip(schema, columns, strict=True):
        if arr is None:
            return None
        if f.name == "schema_version":
            if arr.null_count or not _all(pc.equal(arr, SCHEMA_VERSION)):
                return None
        elif f.type == _TS_TYPE:
            arr = _check_timestamps(arr)
            if arr is None:
                return None
        elif pa.types.is_struct(f.type):
            if arr.null_count:
                return None
            sub_model = cls.model_fields[f.name].annotation  # the nested model, e.g. Signals
            assert isinstance(sub_model, type) and issubclass(sub_model, BaseModel)
            sub_bounds = _bounds(sub_model)
            for i, child in enumerate(f.type):
                if not _check_column(arr.field(i), child.type, sub_bounds.get(child.name, []), child.nullable):
                    return None
        elif not _check_column(arr, f.type, bounds.get(f.name, []), f.nullable):
            return None
        if f.name == "problem":
            known = pc.is_in(arr.drop_null(), value_set=pa.array(sorted(PROBLEMS), pa.string()))
            if len(known) and not _all(known):
                return None
        out.append(arr)
    if cls is DecisionEvent:
        has_prob = pc.or_(
            pc.is_valid(columns[schema.get_field_index("propensity")]),
            pc.is_valid(columns[schema.get_field_index("log_density")]),
        )
        if not _all(has_prob):
            return None
    try:
        return pa.Table.from_arrays(out, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
