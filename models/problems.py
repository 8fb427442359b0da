"""Problem specs: what each decision problem observes, decides and is rewarded for.

A spec is the contract shared by the simulators (training/envs), the learners
(training/algorithms), the exported ONNX policies and the decision API
(serving). A policy trained against a spec serves unchanged because all of
them build the observation vector with the same functions in
`models/observations.py`, in the field order given here.

Three problems:

* ``rank``     — fuse six predicted signals into a score at each cascade stage
                 (pre-rank, rank, re-rank). Continuous action: one weight
                 vector per stage. Main signal watch time; the five
                 interaction signals are constrained from below (TSCAC).
* ``slot``     — insert at most one live stream into a page of K short videos
                 and choose its position. Discrete action: 0 = none,
                 1..K = position. Main signal live watch time; the live
                 exposure ratio is capped (SL-MGAC's platform constraint).
* ``allocate`` — choose retrieval channels, pre-rank / rank queue lengths and
                 a model tier for one request. Multi-discrete action. Main
                 signal revenue; compute cost per request is capped (MaRCA).

Thresholds are calibrated against the simulators' behaviour policies (see
docs/simulators.md): the behaviour policy satisfies each constraint, a greedy
main-signal-only policy violates at least one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from models.errors import UnknownProblemError

# The six predicted signals a ranking stack attaches to every candidate video,
# in the order the fusion weights use.
PREDICTED_SIGNALS: tuple[str, ...] = ("watch_time", "click", "like", "follow", "comment", "share")

# Every signal a FeedbackEvent may carry (see models/events.py).
FEEDBACK_SIGNALS: tuple[str, ...] = (
    "watch_time",
    "click",
    "like",
    "follow",
    "comment",
    "share",
    "hate",
    "live_watch_time",
    "live_exposure",
    "revenue",
    "compute_cost",
    "session_end",
)

ACTIVITY_GROUPS: tuple[str, ...] = ("low", "medium", "high")
RANK_STAGES: tuple[str, ...] = ("pre_rank", "rank", "re_rank")
ALLOCATE_AGENTS: tuple[str, ...] = ("retrieval", "pre_rank", "rank")


@dataclass(frozen=True)
class ObservationField:
    """One named slice of the flat float32 observation vector."""

    name: str
    size: int
    description: str
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"ObservationField {self.name!r}: size must be >= 1, got {self.size}")
        if self.dtype != "float32":
            raise ValueError(f"ObservationField {self.name!r}: dtype must be 'float32', got {self.dtype!r}")

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size,)


@dataclass(frozen=True)
class BoxAction:
    """Continuous action: a float vector of `size` entries, each in [low, high]."""

    size: int
    low: float
    high: float
    names: tuple[str, ...] = ()
    kind: Literal["box"] = "box"

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"BoxAction: low ({self.low}) must be < high ({self.high})")
        if self.names and len(self.names) != self.size:
            raise ValueError(f"BoxAction: {len(self.names)} names for {self.size} entries")

    @property
    def flat_size(self) -> int:
        return self.size


@dataclass(frozen=True)
class DiscreteAction:
    """Discrete action: one integer in [0, n)."""

    n: int
    labels: tuple[str, ...] = ()
    kind: Literal["discrete"] = "discrete"

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"DiscreteAction: n must be >= 2, got {self.n}")
        if self.labels and len(self.labels) != self.n:
            raise ValueError(f"DiscreteAction: {len(self.labels)} labels for n={self.n}")

    @property
    def flat_size(self) -> int:
        return 1


@dataclass(frozen=True)
class MultiDiscreteAction:
    """Several independent discrete choices; component i is an integer in [0, nvec[i])."""

    nvec: tuple[int, ...]
    names: tuple[str, ...] = ()
    kind: Literal["multi_discrete"] = "multi_discrete"

    def __post_init__(self) -> None:
        if not self.nvec or any(n < 2 for n in self.nvec):
            raise ValueError(f"MultiDiscreteAction: every entry of nvec must be >= 2, got {self.nvec}")
        if self.names and len(self.names) != len(self.nvec):
            raise ValueError(f"MultiDiscreteAction: {len(self.names)} names for {len(self.nvec)} components")

    @property
    def flat_size(self) -> int:
        return len(self.nvec)


ActionSpace = BoxAction | DiscreteAction | MultiDiscreteAction


@dataclass(frozen=True)
class RewardSignal:
    """One entry of the reward vector, with its own discount γ."""

    name: str
    discount: float
    main: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"RewardSignal {self.name!r}: discount must be in [0, 1), got {self.discount}")
        if self.name not in FEEDBACK_SIGNALS:
            raise ValueError(f"RewardSignal {self.name!r}: must be one of {FEEDBACK_SIGNALS}")


@dataclass(frozen=True)
class Constraint:
    """E[per-decision signal] must stay on one side of a threshold.

    `threshold` is a per-decision mean (e.g. 0.05 likes per request), so it
    compares directly with logged data and with the simulator's ground truth.
    """

    signal: str
    direction: Literal[">=", "<="]
    threshold: float
    description: str = ""

    def __post_init__(self) -> None:
        if self.direction not in (">=", "<="):
            raise ValueError(f"Constraint on {self.signal!r}: direction must be '>=' or '<=', got {self.direction!r}")

    def satisfied(self, value: float) -> bool:
        return value >= self.threshold if self.direction == ">=" else value <= self.threshold


@dataclass(frozen=True)
class AgentSpec:
    """One agent of a problem's multi-agent view: its local observation and action."""

    name: str
    observation: tuple[ObservationField, ...]
    action: ActionSpace

    @property
    def observation_size(self) -> int:
        return sum(f.size for f in self.observation)


@dataclass(frozen=True)
class ProblemSpec:
    """Everything a policy for one problem must agree on."""

    name: str
    description: str
    observation: tuple[ObservationField, ...]
    action: ActionSpace
    signals: tuple[RewardSignal, ...]
    constraints: tuple[Constraint, ...]
    default_action: tuple[float, ...]
    default_policy: str
    onnx_outputs: tuple[str, ...]
    feature_service: str
    agents: tuple[AgentSpec, ...] = ()
    settings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mains = [s.name for s in self.signals if s.main]
        if len(mains) != 1:
            raise ValueError(f"problem {self.name!r}: exactly one main signal expected, got {mains}")
        names = {s.name for s in self.signals}
        for c in self.constraints:
            if c.signal not in names:
                raise ValueError(f"problem {self.name!r}: constraint on unknown signal {c.signal!r}")
        if len(self.default_action) != self.action.flat_size:
            raise ValueError(
                f"problem {self.name!r}: default_action has {len(self.default_action)} entries, "
                f"action space needs {self.action.flat_size}"
            )

    @property
    def observation_size(self) -> int:
        return sum(f.size for f in self.observation)

    @property
    def observation_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.observation)

    @property
    def main_signal(self) -> str:
        return next(s.name for s in self.signals if s.main)

    @property
    def signal_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signals)

    def observation_slices(self) -> dict[str, slice]:
        """Field name → slice of the flat observation vector."""
        out: dict[str, slice] = {}
        start = 0
        for f in self.observation:
            out[f.name] = slice(start, start + f.size)
            start += f.size
        return out

    def agent(self, name: str) -> AgentSpec:
        for a in self.agents:
            if a.name == name:
                return a
        raise KeyError(f"problem {self.name!r} has no agent {name!r}; agents: {[a.name for a in self.agents]}")


# ---------------------------------------------------------------------------
# Shared observation fields
# ---------------------------------------------------------------------------
_USER_FIELDS: tuple[ObservationField, ...] = (
    ObservationField("user_activity_group", 3, "one-hot of the user's activity group: low, medium, high"),
    ObservationField(
        "user_recent_rates",
        6,
        "user's 7-day mean per request of watch_time/60 s, click, like, follow, comment, share",
    ),
)
_CONTEXT_FIELDS: tuple[ObservationField, ...] = (
    ObservationField("session_depth", 1, "requests already served in this session / 10"),
    ObservationField("hour_of_day", 2, "sin and cos of 2π·hour/24"),
)

# ---------------------------------------------------------------------------
# rank
# ---------------------------------------------------------------------------
RANK_OBSERVATION: tuple[ObservationField, ...] = (
    *_USER_FIELDS,
    *_CONTEXT_FIELDS,
    ObservationField("candidate_signal_mean", 6, "mean of each predicted signal over the stage's candidate pool"),
    ObservationField("candidate_signal_std", 6, "std of each predicted signal over the stage's candidate pool"),
    ObservationField(
        "session_signals",
        3,
        "observable proxies of the user's session satisfaction: mean completion and share of skipped videos"
        " on the last pages (EMAs, weight ½ on the newest), minutes since the session started / 10",
    ),
)
RANK_SESSION_SIGNAL_DEFAULTS: tuple[float, float, float] = (0.5, 0.2, 0.0)
"""`session_signals` (completion, skip rate, minutes) of a session with no page served yet; also what
serving uses when a request does not send them."""
RANK_STAGE_ACTION = BoxAction(size=6, low=0.0, high=1.0, names=PREDICTED_SIGNALS)
RANK_DEFAULT_STAGE_WEIGHTS: tuple[float, ...] = (1.0, 0.3, 0.3, 0.3, 0.3, 0.3)

RANK = ProblemSpec(
    name="rank",
    description="fusion weights for the six predicted signals at the pre-rank, rank and re-rank stages",
    observation=RANK_OBSERVATION,
    action=BoxAction(
        size=18,
        low=0.0,
        high=1.0,
        names=tuple(f"{stage}.{sig}" for stage in RANK_STAGES for sig in PREDICTED_SIGNALS),
    ),
    signals=(
        RewardSignal("watch_time", 0.95, main=True, description="seconds of video watched per request"),
        RewardSignal("click", 0.9),
        RewardSignal("like", 0.9),
        RewardSignal("follow", 0.9),
        RewardSignal("comment", 0.9),
        RewardSignal("share", 0.9),
    ),
    constraints=(
        # Recalibrated (issue 15) against the long-run optimum: the constant weights that maximise
        # watch time per user-day, returns included, give up comments (benchmarks/headroom_rank.py).
        Constraint("click", ">=", 3.0, "clicks per request"),
        Constraint("like", ">=", 1.6, "likes per request"),
        Constraint("follow", ">=", 0.30, "follows per request"),
        Constraint("comment", ">=", 1.1, "comments per request"),
        Constraint("share", ">=", 0.45, "shares per request"),
    ),
    default_action=RANK_DEFAULT_STAGE_WEIGHTS * 3,
    default_policy="fixed fusion weights: watch_time 1.0, each interaction 0.3, at every stage",
    onnx_outputs=("action_mean", "action_log_std"),
    feature_service="rank_v1",
    agents=tuple(AgentSpec(stage, RANK_OBSERVATION, RANK_STAGE_ACTION) for stage in RANK_STAGES),
    # Candidates kept by each stage when the request does not say otherwise;
    # retrieval hands pre-rank the whole candidate list.
    settings={"keep_pre_rank": 30.0, "keep_rank": 12.0, "keep_re_rank": 6.0},
)

# ---------------------------------------------------------------------------
# slot
# ---------------------------------------------------------------------------
SLOT_PAGE_SIZE = 6
# The user's live behaviour sequence (SL-MGAC's target attention reads it): the last K live-stream
# exposures in the feed, most recent first. K = 5: under a 20 % insertion rate the simulated users'
# median is 2 exposures per day (90th percentile 6), so 5 covers one to three days of a typical user.
SLOT_LIVE_SEQUENCE_LENGTH = 5
# Exposures older than this are dropped from the sequence (the user stats view's 7-day window and TTL).
SLOT_LIVE_SEQUENCE_HORIZON_H = 168.0
SLOT = ProblemSpec(
    name="slot",
    description="insert at most one live stream into a page of short videos, and where",
    observation=(
        *_USER_FIELDS,
        *_CONTEXT_FIELDS,
        ObservationField(
            "user_live_affinity",
            2,
            "user's 7-day live watch time per request / 60 s, and live exposure ratio over the same window",
        ),
        ObservationField("page_video_watch_time", SLOT_PAGE_SIZE, "predicted watch time / 60 s of the page's videos"),
        ObservationField(
            "live_candidate",
            3,
            "best live stream: predicted live watch time / 60 s, quality in [0, 1], audience / 1000",
        ),
        ObservationField(
            "user_live_sequence",
            2 * SLOT_LIVE_SEQUENCE_LENGTH,
            f"the user's last {SLOT_LIVE_SEQUENCE_LENGTH} live-stream exposures in the feed, most recent first, "
            "each (live watch time / 60 s, 0 when the user did not enter; freshness 1 − log1p(hours since) / "
            f"log1p({SLOT_LIVE_SEQUENCE_HORIZON_H:g})); (0, 0) for no exposure in the last 7 days",
        ),
    ),
    action=DiscreteAction(
        n=SLOT_PAGE_SIZE + 1, labels=("none", *(f"position_{i}" for i in range(1, SLOT_PAGE_SIZE + 1)))
    ),
    signals=(
        RewardSignal("live_watch_time", 0.9, main=True, description="seconds of live stream watched"),
        RewardSignal("watch_time", 0.95, description="seconds of short video watched (displaced by live)"),
        RewardSignal("session_end", 0.9, description="1 when the session ended after this page"),
        RewardSignal("live_exposure", 0.0, description="1 when a live stream was shown"),
    ),
    constraints=(Constraint("live_exposure", "<=", 0.25, "platform cap on the live exposure ratio"),),
    default_action=(0.0,),
    default_policy="no live stream",
    onnx_outputs=("logits",),
    feature_service="slot_v2",
    settings={"page_size": float(SLOT_PAGE_SIZE)},
)

# ---------------------------------------------------------------------------
# allocate
# ---------------------------------------------------------------------------
ALLOCATE_CHANNELS: tuple[str, ...] = ("channel_collaborative", "channel_content", "channel_trending")
ALLOCATE_QUEUE_LENGTHS_PRE_RANK: tuple[int, ...] = (100, 200, 400, 800)
ALLOCATE_QUEUE_LENGTHS_RANK: tuple[int, ...] = (20, 50, 100, 200)
ALLOCATE_MODEL_TIERS: tuple[str, ...] = ("small", "medium", "large")
# Where the request comes from (RecFlow logs the request's page): the home feed,
# a related-items page opened from a video, or a push notification's landing page.
ALLOCATE_ENTRY_POINTS: tuple[str, ...] = ("home_feed", "related", "push")
# Defaults for callers that do not send the request features (backward compatible):
# the median history length of a medium-activity user, the home feed.
ALLOCATE_DEFAULT_HISTORY_LENGTH = 80.0
ALLOCATE_DEFAULT_ENTRY_POINT = "home_feed"

_ALLOCATE_OBSERVATION: tuple[ObservationField, ...] = (
    ObservationField("request_value", 1, "log1p(expected request value in cents) / 5"),
    ObservationField("system_load", 1, "last interval's traffic / the day's mean traffic (a lagged reading)"),
    ObservationField("budget_utilisation", 1, "last interval's compute spent / interval budget (a lagged reading)"),
    ObservationField("hour_of_day", 2, "sin and cos of 2π·hour/24"),
    ObservationField("user_activity_group", 3, "one-hot of the user's activity group: low, medium, high"),
    ObservationField("user_history_length", 1, "log1p(the user's past interactions) / 8"),
    ObservationField("entry_point", 3, "one-hot of the request's entry point: home_feed, related, push"),
)
ALLOCATE = ProblemSpec(
    name="allocate",
    description="computation per request: retrieval channels, pre-rank and rank queue lengths, model tier",
    observation=_ALLOCATE_OBSERVATION,
    action=MultiDiscreteAction(
        nvec=(
            2,
            2,
            2,
            len(ALLOCATE_QUEUE_LENGTHS_PRE_RANK),
            len(ALLOCATE_QUEUE_LENGTHS_RANK),
            len(ALLOCATE_MODEL_TIERS),
        ),
        names=(*ALLOCATE_CHANNELS, "pre_rank_queue", "rank_queue", "rank_model_tier"),
    ),
    signals=(
        RewardSignal("revenue", 0.0, main=True, description="revenue of the final slate, cents"),
        RewardSignal("compute_cost", 0.0, description="compute units spent on the request"),
    ),
    constraints=(Constraint("compute_cost", "<=", 1.0, "mean compute units per request (the budget)"),),
    default_action=(1.0, 1.0, 0.0, 1.0, 1.0, 1.0),
    default_policy="static allocation: collaborative+content channels, pre-rank 200, rank 50, medium tier",
    onnx_outputs=("action_scores",),
    feature_service="allocate_v1",
    agents=(
        AgentSpec("retrieval", _ALLOCATE_OBSERVATION, MultiDiscreteAction(nvec=(2, 2, 2), names=ALLOCATE_CHANNELS)),
        AgentSpec("pre_rank", _ALLOCATE_OBSERVATION, DiscreteAction(n=len(ALLOCATE_QUEUE_LENGTHS_PRE_RANK))),
        AgentSpec(
            "rank",
            _ALLOCATE_OBSERVATION,
            MultiDiscreteAction(
                nvec=(len(ALLOCATE_QUEUE_LENGTHS_RANK), len(ALLOCATE_MODEL_TIERS)),
                names=("rank_queue", "rank_model_tier"),
            ),
        ),
    ),
)

PROBLEMS: dict[str, ProblemSpec] = {p.name: p for p in (RANK, SLOT, ALLOCATE)}


def get_problem(name: str) -> ProblemSpec:
    """The spec of a problem by name; an unknown name raises an error listing the known ones."""
    try:
        return PROBLEMS[name]
    except KeyError:
        raise UnknownProblemError(name, sorted(PROBLEMS)) from None


def problem_names() -> list[str]:
    return sorted(PROBLEMS)
