"""Bulk, C-level validation of one poll batch of event messages (issue 4).

`validate_batch` parses a whole batch with Arrow's JSON reader against the
event's Arrow schema and checks, with vectorised `pyarrow.compute` kernels,
every rule the pydantic models in `models.events` enforce. It is deliberately
conservative: it returns the batch as an Arrow table only when it can prove
that the per-message path (`ingest.validate_message`) would accept every
message and produce the same values; otherwise it returns None and the caller
validates the batch message by message, so dead letters keep their exact
per-message reasons. Anything it is unsure about (a null where pydantic would
use a default, a number given as a string, a timestamp not in the canonical
ISO form, pretty-printed JSON, ...) makes it return None, never a different
answer. `tests/unit/test_ingest_fast_path.py` checks this against pydantic.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
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


def _read_schema(schema: pa.Schema) -> pa.Schema:
    """The event schema with timestamps read as strings (checked and cast afterwards)."""
    return pa.schema([pa.field(f.name, pa.string()) if f.type == _TS_TYPE else f for f in schema])


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


def _check_column(arr: pa.ChunkedArray, typ: pa.DataType, rules: list[tuple[str, float]], nullable: bool) -> bool:
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


def validate_batch(
    cls: type[DecisionEvent] | type[FeedbackEvent], values: Sequence[bytes | None], schema: pa.Schema | None = None
) -> pa.Table | None:
    """The batch as a table in `arrow_schema(cls)`, or None when any message needs the per-message path."""
    if not values:
        return None
    for v in values:
        # Null/oversized messages, and newlines (Arrow reads one JSON object per line), go per message;
        # so does anything not starting with "{": Arrow 26 crashes on a top-level `null` line.
        if not v or len(v) > MAX_EVENT_BYTES or v[0] != 0x7B or b"\n" in v or b"\r" in v:
            return None
    buf = b"\n".join(values)  # type: ignore[arg-type]
    try:
        buf.decode("utf-8")  # pydantic refuses invalid UTF-8; Arrow may not look inside every string
    except UnicodeDecodeError:
        return None
    schema = schema if schema is not None else arrow_schema(cls)
    try:
        table = pj.read_json(
            io.BytesIO(buf),
            read_options=pj.ReadOptions(use_threads=False, block_size=max(1 << 20, len(buf) + 1)),
            parse_options=pj.ParseOptions(explicit_schema=_read_schema(schema), unexpected_field_behavior="error"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if table.num_rows != len(values) or table.schema.names != schema.names:
        return None
    bounds = _bounds(cls)
    columns: list[pa.ChunkedArray] = []
    for f in schema:
        arr = table.column(f.name)
        if f.name == "schema_version":
            if arr.null_count or not _all(pc.equal(arr, SCHEMA_VERSION)):
                return None
        elif f.type == _TS_TYPE:
            if arr.null_count or not _all(pc.match_substring_regex(arr, _TS_PATTERN)):
                return None
            try:
                arr = arr.cast(_TS_TYPE)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None  # e.g. 2026-02-30: pydantic decides and names it
            years = pc.year(arr)
            if not (_all(pc.greater_equal(years, 1001)) and _all(pc.less_equal(years, 9998))):
                return None
        elif pa.types.is_struct(f.type):
            if arr.null_count:
                return None
            flat = arr.combine_chunks()
            sub_model = cls.model_fields[f.name].annotation  # the nested model, e.g. Signals
            assert isinstance(sub_model, type) and issubclass(sub_model, BaseModel)
            sub_bounds = _bounds(sub_model)
            for i, child in enumerate(f.type):
                sub = pa.chunked_array([flat.field(i)])
                if not _check_column(sub, child.type, sub_bounds.get(child.name, []), child.nullable):
                    return None
        elif not _check_column(arr, f.type, bounds.get(f.name, []), f.nullable):
            return None
        if f.name == "problem":
            known = pc.is_in(arr.drop_null(), value_set=pa.array(sorted(PROBLEMS), pa.string()))
            if len(known) and not _all(known):
                return None
        columns.append(arr)
    if cls is DecisionEvent:
        has_prob = pc.or_(pc.is_valid(table.column("propensity")), pc.is_valid(table.column("log_density")))
        if not _all(has_prob):
            return None
    try:
        return pa.Table.from_arrays(columns, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
