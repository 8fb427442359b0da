"""The msgspec rank decoder (serving/api/fast_body.py) never changes an answer: it returns pydantic's RankRequest or None."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import numpy as np
import pytest
from pydantic import ValidationError

from serving.api.fast_body import _Rank, decode_rank
from serving.schemas import CandidateColumns, RankRequest
from tests.support.requests import rank_body

CONSTRAINTS = ("type", "minimum", "maximum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems")


def _agrees(raw: bytes) -> RankRequest | None:
    """Assert decode_rank(raw) is pydantic's model (same values and fields_set) or None; return pydantic's."""
    fast = decode_rank(raw)
    try:
        slow = RankRequest.model_validate_json(raw)
    except ValidationError:
        assert fast is None, f"fast path accepted a body pydantic rejects: {raw[:300]!r}"
        return None
    if fast is not None:
        assert fast == slow
        assert fast.model_fields_set == slow.model_fields_set
    return slow


def _shape(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A JSON schema reduced to its constraints, with $refs resolved and nulls in anyOf kept."""
    if "$ref" in schema:
        return _shape(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    if "anyOf" in schema:
        return sorted(json.dumps(_shape(s, defs), sort_keys=True) for s in schema["anyOf"])
    out: dict[str, Any] = {k: schema[k] for k in CONSTRAINTS if k in schema}
    if "items" in schema:
        out["items"] = _shape(schema["items"], defs)
    if "properties" in schema:
        out["properties"] = {k: _shape(v, defs) for k, v in schema["properties"].items()}
        out["required"] = sorted(schema.get("required", []))
        out["additionalProperties"] = schema.get("additionalProperties", True)
    return out


def test_the_decoder_mirrors_the_schema_constraints() -> None:
    ours = msgspec.json.schema(_Rank)
    theirs = RankRequest.model_json_schema()
    a = _shape(ours, ours["$defs"])
    b = _shape(theirs, theirs["$defs"])
    # user_features and keep are left raw by msgspec and validated by their pydantic models.
    for nested in ("user_features", "keep"):
        assert a["properties"].pop(nested) == {}
        b["properties"].pop(nested)
    assert a == b


@pytest.mark.parametrize("n", [1, 3, 200, 2000])
def test_valid_bodies_decode_to_pydantics_model(n: int) -> None:
    rng = np.random.default_rng(n)
    for seed in range(5):
        body: dict[str, Any] = rank_body(f"user-{seed}", n, seed=seed)
        if rng.uniform() < 0.5:
            body["keep"] = {"pre_rank": 10, "rank": 5}
        if rng.uniform() < 0.5:
            body["user_features"] = {"user_activity_group": "high", "user_recent_rates": [0.1] * 6}
        if rng.uniform() < 0.5:
            body.update(request_id="r-1", session_id=None, hour_of_day=0.0, session_depth=0)
        raw = json.dumps(body).encode()
        assert decode_rank(raw) is not None
        assert _agrees(raw) is not None


def _with(**changes: Any) -> bytes:
    body = rank_body("u", 2)
    body.update(changes)
    return json.dumps(body).encode()


def _signal(name: str, value: Any) -> bytes:
    body = rank_body("u", 2)
    body["candidates"][1]["signals"][name] = value
    return json.dumps(body).encode()


EDGE_CASES: list[bytes] = [
    _with(extra=1),
    _with(keep=None, user_features=None),
    _with(keep={"rank": 0}),
    _with(keep={"rank": 3, "other": 1}),
    _with(user_features={"user_activity_group": "huge"}),
    _with(user_features={"user_recent_rates": [0.1] * 5}),
    _with(hour_of_day=24.0),
    _with(hour_of_day=23.999),
    _with(hour_of_day=-0.0),
    _with(session_depth=3.0),
    _with(session_depth="3"),
    _with(session_depth=100_001),
    _with(session_depth=True),
    _with(user_id=""),
    _with(user_id="x" * 129),
    _with(user_id="é" * 128),
    _with(user_id=7),
    _with(user_id=None),
    _with(request_id=None),
    _with(candidates=[]),
    _with(candidates=rank_body("u", 2001)["candidates"]),
    _with(candidates=[{"id": "a", "signals": {}}]),
    _signal("watch_time", 86_400.0),
    _signal("watch_time", 86_400.01),
    _signal("watch_time", -1e-9),
    _signal("click", 1.0000001),
    _signal("click", "0.5"),
    _signal("click", None),
    _signal("extra", 0.5),
    b'{"user_id": "u", "candidates": [{"id": "a", "signals": {"watch_time": 1e400, "click": 0, "like": 0, '
    b'"follow": 0, "comment": 0, "share": 0}}]}',
    b'{"user_id": "u", "user_id": "v", "candidates": [{"id": "a", "signals": {"watch_time": 1, "click": 0, '
    b'"like": 0, "follow": 0, "comment": 0, "share": 0}}]}',
    b'{"user_id": "\\ud800", "candidates": []}',
    b'{"user_id": "\xff", "candidates": []}',
    b"\xef\xbb\xbf" + _with(),
    _with() + b"x",
    b"[]",
    b"",
    b"null",
    b'{"user_id": NaN}',
]


@pytest.mark.parametrize("raw", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_edge_cases_are_pydantics_answer_or_left_to_pydantic(raw: bytes) -> None:
    _agrees(raw)


def test_bounds_are_checked_by_the_fast_path_itself() -> None:
    # Rejections must come from msgspec's own checks, not only from pydantic's fallback.
    assert decode_rank(_signal("like", 1.5)) is None
    assert decode_rank(_with(hour_of_day=24.0)) is None
    assert decode_rank(_signal("extra", 0.5)) is None


def test_both_paths_give_the_decision_the_same_arrays() -> None:
    raw = json.dumps(rank_body("u", 300, seed=4)).encode()
    fast = decode_rank(raw)
    assert fast is not None and isinstance(fast.candidates, CandidateColumns)
    ids_fast, sig_fast = fast.candidate_arrays()
    ids_slow, sig_slow = RankRequest.model_validate_json(raw).candidate_arrays()
    assert ids_fast == ids_slow
    assert sig_fast.dtype == sig_slow.dtype == np.float32
    assert sig_fast.tobytes() == sig_slow.tobytes()


def test_candidate_columns_read_like_the_list_of_dicts() -> None:
    body = rank_body("u", 5, seed=2)
    fast = decode_rank(json.dumps(body).encode())
    assert fast is not None
    cols = fast.candidates
    assert len(cols) == 5
    assert cols[3] == body["candidates"][3]
    assert cols[-1] == body["candidates"][-1]
    assert cols[1:4] == body["candidates"][1:4]
    assert list(cols) == body["candidates"]
    assert cols == body["candidates"]
    assert cols != body["candidates"][:4]
    with pytest.raises(IndexError):
        cols[5]
    with pytest.raises(ValueError, match="shape"):
        CandidateColumns(["a"], np.zeros((2, 6)))
