"""Request and response bodies of the decision API (they make the OpenAPI schema).

Every model forbids unknown fields and NaN/infinity, so a bad request gets a
422 whose `loc` names the field (e.g. `body.candidates.3.signals.click`).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from typing import Annotated, Literal, overload

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, with_config
from typing_extensions import TypedDict

from models.problems import (
    ALLOCATE_CHANNELS,
    ALLOCATE_DEFAULT_HISTORY_LENGTH,
    ALLOCATE_ENTRY_POINTS,
    PREDICTED_SIGNALS,
    RANK_SESSION_SIGNAL_DEFAULTS,
    SLOT_LIVE_SEQUENCE_LENGTH,
    SLOT_PAGE_SIZE,
)
from models.registry import NAME_RE, validate_name

MAX_CANDIDATES = 2000
MAX_LIVE_CANDIDATES = 100
# Candidate signals → a tuple in the spec's order (the request's key order is the caller's).
_SIGNALS_OF = operator.itemgetter(*PREDICTED_SIGNALS)
Id = Annotated[str, Field(min_length=1, max_length=128)]
# Numbers in request bodies are JSON Schema's: pydantic's lax mode takes `false` for 0, `true` for 1 and
# "3" for 3, which the OpenAPI schema (and msgspec's rank decoder) refuse. Floats are strict (an integer
# is still a number); integers refuse booleans and strings but take 3.0, an integer to JSON Schema.


def _json_integer(v: object) -> object:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError("Input should be a valid integer")
    return v


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, strict=True)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class UserFeatureOverrides(_Body):
    """User features sent with the request; each one set here replaces the stored value."""

    user_activity_group: Literal["low", "medium", "high"] | None = None
    user_recent_rates: list[Annotated[float, Field(ge=0.0, le=1e6, strict=True)]] | None = Field(
        None,
        min_length=6,
        max_length=6,
        description="7-day mean per request: watch_time/60 s, click, like, follow, comment, share",
    )
    user_live_affinity: list[Annotated[float, Field(ge=0.0, le=1e6, strict=True)]] | None = Field(
        None, min_length=2, max_length=2, description="live watch time per request / 60 s, live exposure ratio"
    )
    user_live_sequence: list[Annotated[float, Field(ge=0.0, le=1e11, strict=True)]] | None = Field(
        None,
        min_length=2 * SLOT_LIVE_SEQUENCE_LENGTH,
        max_length=2 * SLOT_LIVE_SEQUENCE_LENGTH,
        description=(
            f"the user's last {SLOT_LIVE_SEQUENCE_LENGTH} live-stream exposures in the feed, most recent first, "
            "as flat pairs (live watch time in seconds, Unix time of the exposure in seconds); (0, 0) pads a "
            "shorter history (the stored feature's layout)"
        ),
    )


class _DecideBody(_Body):
    request_id: Id | None = Field(None, description="the caller's id for this decision; generated when absent")
    user_id: Id = Field(description="the unit of A/B assignment and the Feast entity")
    session_id: Id | None = None
    hour_of_day: float = Field(12.0, ge=0.0, lt=24.0, description="local hour of the request, [0, 24)", strict=True)
    user_features: UserFeatureOverrides | None = None


# Candidates are TypedDicts, not models: a rank request carries up to 2,000 of
# them, and validating into dicts skips building 2 model instances each (about
# 40% of the parse time with 200 candidates). Same constraints, same error locations.
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


@with_config(_STRICT)
class PredictedSignals(TypedDict):
    """A candidate's predicted signals from the ranking stack (models/problems.py PREDICTED_SIGNALS order)."""

    watch_time: Annotated[float, Field(ge=0.0, le=86_400.0, description="predicted seconds watched", strict=True)]
    click: Probability
    like: Probability
    follow: Probability
    comment: Probability
    share: Probability


@with_config(_STRICT)
class Candidate(TypedDict):
    id: Id
    signals: PredictedSignals


class StageKeep(_Body):
    """Candidates kept by each cascade stage; defaults come from the rank spec (50, 20, 6)."""

    pre_rank: JsonInt = Field(50, ge=1, le=MAX_CANDIDATES)
    rank: JsonInt = Field(20, ge=1, le=MAX_CANDIDATES)
    re_rank: JsonInt = Field(6, ge=1, le=MAX_CANDIDATES)


class CandidateColumns(Sequence[Candidate]):
    """Validated candidates held as columns: ids, and signals (N, 6) in PREDICTED_SIGNALS order.

    What serving/api/fast_body.py builds instead of 2 dicts per candidate (that
    alone cost more than decoding the JSON). Reads like, and compares equal to,
    the list of Candidate dicts pydantic builds from the same body.
    """

    __slots__ = ("ids", "values")

    def __init__(self, ids: list[str], values: npt.NDArray[np.float64]) -> None:
        if values.shape != (len(ids), len(PREDICTED_SIGNALS)):
            raise ValueError(f"CandidateColumns: values of shape {values.shape} for {len(ids)} ids")
        self.ids = ids
        self.values = values  # float64: the JSON numbers exactly, as pydantic keeps them

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> Candidate: ...

    @overload
    def __getitem__(self, index: slice) -> list[Candidate]: ...

    def __getitem__(self, index: int | slice) -> Candidate | list[Candidate]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        w, c, li, f, co, sh = self.values[index].tolist()
        signals = PredictedSignals(watch_time=w, click=c, like=li, follow=f, comment=co, share=sh)
        return Candidate(id=self.ids[index], signals=signals)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CandidateColumns):
            return self.ids == other.ids and bool(np.array_equal(self.values, other.values))
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like the list it stands for


class RankRequest(_DecideBody):
    session_depth: JsonInt = Field(0, ge=0, le=100_000, description="requests already served in this session")
    # Observable proxies of the session's satisfaction (optional: callers written before they existed
    # get models.problems.RANK_SESSION_SIGNAL_DEFAULTS, the values of a session with no page served yet).
    last_pages_completion: float | None = Field(
        None, ge=0.0, le=1.0, description="mean completion of the videos on the last pages (EMA)", strict=True
    )
    last_pages_skip_rate: float | None = Field(
        None, ge=0.0, le=1.0, description="share of skipped videos on the last pages (EMA)", strict=True
    )
    session_minutes: float | None = Field(
        None, ge=0.0, le=1e6, description="minutes since the session started", strict=True
    )

    def session_signals(self) -> tuple[float, float, float]:
        """(completion, skip rate, minutes), defaults where the request did not send them."""
        sent = (self.last_pages_completion, self.last_pages_skip_rate, self.session_minutes)
        return tuple(d if v is None else v for v, d in zip(sent, RANK_SESSION_SIGNAL_DEFAULTS, strict=True))  # type: ignore[return-value]

    # A list of Candidate dicts when pydantic validated the body, CandidateColumns when the fast decoder did.
    candidates: list[Candidate] = Field(min_length=1, max_length=MAX_CANDIDATES)
    keep: StageKeep | None = None

    def candidate_arrays(self) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Candidate ids, and their signals (N, 6) as float32 in PREDICTED_SIGNALS order."""
        cands: Sequence[Candidate] = self.candidates
        if isinstance(cands, CandidateColumns):
            return cands.ids, cands.values.astype(np.float32)
        # One flat float iterator into a preallocated array: ~1.5x faster than
        # np.array(list of tuples) at 200 candidates (same float32 values).
        signals = np.fromiter(
            itertools.chain.from_iterable([_SIGNALS_OF(c["signals"]) for c in cands]),
            dtype=np.float32,
            count=len(cands) * len(PREDICTED_SIGNALS),
        ).reshape(len(cands), len(PREDICTED_SIGNALS))
        return [c["id"] for c in cands], signals


class PageVideo(_Body):
    id: Id
    predicted_watch_time: float = Field(ge=0.0, le=86_400.0, description="seconds", strict=True)


class LiveCandidate(_Body):
    id: Id
    predicted_watch_time: float = Field(ge=0.0, le=86_400.0, description="predicted live seconds watched", strict=True)
    quality: Probability
    audience: float = Field(ge=0.0, le=1e9, description="current viewers", strict=True)


class SlotRequest(_DecideBody):
    session_depth: JsonInt = Field(0, ge=0, le=100_000)
    page: list[PageVideo] = Field(min_length=SLOT_PAGE_SIZE, max_length=SLOT_PAGE_SIZE)
    live_candidates: list[LiveCandidate] = Field(min_length=1, max_length=MAX_LIVE_CANDIDATES)


# models/problems.py ALLOCATE_ENTRY_POINTS as a type (tests/unit/test_envs_allocate.py checks they agree,
# and that AllocateRequest.entry_point defaults to ALLOCATE_DEFAULT_ENTRY_POINT).
EntryPoint = Literal["home_feed", "related", "push"]


class AllocateRequest(_DecideBody):
    request_value: float = Field(ge=0.0, le=1e9, description="expected value of the request, cents", strict=True)
    system_load: float = Field(
        ge=0.0, le=100.0, description="last interval's traffic / the day's mean traffic", strict=True
    )
    budget_utilisation: float = Field(
        ge=0.0, le=100.0, description="last interval's compute spent / the interval budget", strict=True
    )
    # Request features (optional: callers written before they existed get the defaults).
    user_history_length: float = Field(
        ALLOCATE_DEFAULT_HISTORY_LENGTH, ge=0.0, le=1e9, description="the user's past interactions", strict=True
    )
    entry_point: EntryPoint = Field(
        "home_feed", description=f"where the request comes from, one of {list(ALLOCATE_ENTRY_POINTS)}"
    )


class DecisionResponse(BaseModel):
    request_id: str
    problem: str
    action: list[float] = Field(description="the flat action, spec order (discrete choices as whole numbers)")
    propensity: float | None = Field(None, description="probability of the action (slot, allocate)")
    log_density: float | None = Field(None, description="log-density of the action (rank); see serving/exploration.py")
    policy_name: str
    policy_version: str
    experiment: str | None = None
    arm: str | None = None
    fallback: bool = Field(description="true when the problem's default policy answered")
    fallback_reason: str | None = None
    latency_ms: float = Field(description="server-side time spent on the decision")


class RankResponse(DecisionResponse):
    ordering: list[str] = Field(description="candidate ids kept by re-rank, best first")
    stage_weights: dict[str, list[float]] = Field(description="fusion weights per stage, signal order")


class SlotResponse(DecisionResponse):
    position: int | None = Field(description="1-based position of the live stream in the page, or null for none")
    live_id: str | None


class AllocateResponse(DecisionResponse):
    channels: list[str] = Field(description=f"retrieval channels switched on, among {list(ALLOCATE_CHANNELS)}")
    pre_rank_queue: int
    rank_queue: int
    rank_model_tier: str
    estimated_cost: float = Field(description="compute units (serving-side estimate)")
    # "lambda" is a Python keyword: the field is documented under its JSON name.
    lambda_: float | None = Field(
        None, alias="lambda", description="MaRCA versions: the revenue/cost multiplier λ this decision used"
    )


class FeedbackAccepted(BaseModel):
    request_id: str
    accepted: bool = True


class PromoteRequest(_Body):
    # The registry's one name check (models.registry.validate_name): no separators, no '..'.
    version: str = Field(pattern=NAME_RE.pattern, description="a registered version", examples=["v2"])

    @field_validator("version")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return validate_name("version", v)


class ModelStatus(BaseModel):
    problem: str
    version: str | None
    policy_name: str | None = None


class WeightsUpdate(_Body):
    weights: dict[str, Annotated[float, Field(ge=0.0, strict=True)]] = Field(
        min_length=1, description="arm name → new weight"
    )
