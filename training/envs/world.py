"""The world shared by the three simulators: users, short videos, live streams.

Read top to bottom: the config (every parameter, with the equation it enters),
the catalog (items drawn once per seed), the response functions (what a user
does with an item), and `UserRows` — the per-row user state that the `rank`
and `slot` simulators step N users at a time.

Equations (docs/simulators.md shows them with plots):

* affinity          x = θ_u · φ_v ∈ [-1, 1]   (unit topic vectors, `topic_dim` topics)
* response j        p_j = σ(b_j + β_j·x + γ_j·(q_v − ½) + δ_j·s_v + ζ_j·log σ_u)
                    for j in (completion, click, like, follow, comment, share, hate),
                    q_v quality, s_v "sociability" of the video,
                    σ_u the user's sociability (interaction signals only)
* watch time        w = ℓ_v · clip(p_completion + noise, 0, 1)
* experience        e = κ_c·(mean completion − c_ref) + κ_i·(interactions) − κ_h·(hates) − live penalty
* satisfaction      S ← S + e − fatigue;  the session ends when S ≤ 0 (or at `max_session_requests`)
* next-day return   P(return) = σ(r_g + κ_r·(ē_day − e_ref)), ē_day the day's mean experience

Long videos are watched longer but are less "social" (s_v falls with length),
so weights that chase watch time alone give up interactions: the trade-off the
`rank` problem's constraints police.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from models.problems import ACTIVITY_GROUPS, PREDICTED_SIGNALS

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Column order of the response tensors: the six predicted signals' underlying
# probabilities, then hate. Column 0 is the completion probability; the expected
# watch time is length × completion.
RESPONSES: tuple[str, ...] = ("completion", "click", "like", "follow", "comment", "share", "hate")
N_RESPONSES = len(RESPONSES)
N_GROUPS = len(ACTIVITY_GROUPS)
SECONDS_PER_DAY = 86_400.0
SESSION_BREAK_S = 1800.0
"""Shortest break between two sessions of a user, seconds."""
ALL_ROWS = slice(None)
"""Row selector meaning "every row" (a slice, so selecting with it makes no copy)."""


def _check_len(name: str, value: tuple[float, ...], n: int) -> None:
    if len(value) != n:
        raise ValueError(f"WorldConfig.{name}: expected {n} entries, got {len(value)}")


@dataclass(frozen=True)
class WorldConfig:
    """Every parameter of the shared world. Defaults are the calibrated world of docs/simulators.md."""

    topic_dim: int = 8
    """Number of latent topics; users' interests and items' topics are unit vectors in this space."""
    n_videos: int = 2000
    """Short videos in the catalog. Small enough that their features stay in the CPU cache."""
    n_live_streams: int = 40
    """Live streams on air (all of them, all day; their audience varies with the hour)."""
    video_length_median_s: float = 25.0
    """Median short-video length in seconds (log-normal)."""
    video_length_sigma: float = 0.8
    """σ of log length."""
    video_length_range_s: tuple[float, float] = (5.0, 180.0)
    """Lengths are clipped to this range, seconds."""
    social_length_correlation: float = -0.6
    """Correlation of a video's sociability s_v with its log length: long videos get fewer interactions."""
    response_intercept: tuple[float, ...] = (0.2, -1.0, -2.6, -4.2, -3.8, -4.4, -3.6)
    """b_j per response (completion, click, like, follow, comment, share, hate)."""
    response_affinity: tuple[float, ...] = (2.5, 2.0, 2.0, 1.5, 1.5, 1.5, -3.0)
    """β_j: slope on user-item affinity x."""
    response_quality: tuple[float, ...] = (1.5, 0.5, 1.0, 1.0, 0.3, 0.5, -1.5)
    """γ_j: slope on (quality − ½)."""
    response_social: tuple[float, ...] = (-0.2, 0.6, 0.9, 0.5, 1.2, 1.1, 0.3)
    """δ_j: slope on the video's sociability s_v."""
    response_user_sociability: tuple[float, ...] = (0.0, 0.3, 1.0, 1.0, 1.0, 1.0, 0.0)
    """ζ_j: slope on the user's log sociability."""
    user_sociability_sigma: float = 0.5
    """σ of the user's log sociability."""
    completion_noise: float = 0.15
    """Std of the noise added to the completion probability before clipping to [0, 1]."""
    prediction_noise: tuple[float, float, float] = (0.6, 0.35, 0.15)
    """σ of the log-normal error of the pre-rank, rank and re-rank models' predictions (falls stage by stage)."""
    activity_group_probs: tuple[float, ...] = (0.4, 0.4, 0.2)
    """P(low), P(medium), P(high) activity group."""
    sessions_per_day: tuple[float, ...] = (1.0, 2.0, 3.0)
    """Sessions a returning user opens per day, per activity group."""
    patience: tuple[float, ...] = (2.5, 3.5, 5.0)
    """Initial satisfaction S of each session, per activity group (× a per-user log-normal factor)."""
    patience_sigma: float = 0.3
    """σ of the per-user log-normal patience factor."""
    return_logit: tuple[float, ...] = (-0.2, 1.0, 2.2)
    """r_g: next-day return logit at the reference experience, per activity group."""
    return_experience_slope: float = 4.0
    """κ_r: how strongly the day's mean experience moves the next-day return logit."""
    experience_reference: float = 0.3
    """e_ref: the day's mean experience at which the return logit equals r_g."""
    experience_completion_weight: float = 2.0
    """κ_c: experience per unit of mean completion above `completion_reference`."""
    completion_reference: float = 0.45
    """c_ref: mean completion that neither pleases nor bores."""
    experience_interaction_weight: float = 0.0
    """κ_i: experience per interaction (click, like, follow, comment, share) on the page.

    0 by default: interactions are goals of the platform (creators, community),
    not what brings a user back, so the `rank` constraints stay binding."""
    experience_hate_weight: float = 1.5
    """κ_h: experience lost per hated video."""
    fatigue_per_request: float = 0.9
    """Satisfaction spent by every request whatever it shows: sessions end."""
    max_session_requests: int = 40
    """Hard cap on requests per session."""
    recent_rate_decay: float = 0.05
    """EMA weight of the newest request in the user's 7-day rates (≈ 1 / requests per week)."""
    session_hour_mean: float = 19.0
    """Mean preferred hour of a user's first session."""
    session_hour_std: float = 4.0
    """Std of the preferred hour."""
    seconds_between_videos: float = 2.0
    """Scrolling overhead per item shown, seconds."""
    live_quality_beta: tuple[float, float] = (2.0, 2.0)
    """Beta(a, b) of live-stream quality."""
    live_audience_median: float = 300.0
    """Median live-stream audience at its peak hour."""
    live_audience_sigma: float = 1.0
    """σ of log audience across streams."""
    live_audience_swing: float = 0.6
    """Relative amplitude of each stream's diurnal audience swing."""
    user_live_taste_beta: tuple[float, float] = (1.2, 3.5)
    """Beta(a, b) of a user's taste for live streams (most users mildly dislike them)."""

    def __post_init__(self) -> None:
        if self.topic_dim < 2:
            raise ValueError(f"WorldConfig.topic_dim: must be >= 2, got {self.topic_dim}")
        if self.n_videos < 100:
            raise ValueError(f"WorldConfig.n_videos: must be >= 100, got {self.n_videos}")
        if self.n_live_streams < 1:
            raise ValueError(f"WorldConfig.n_live_streams: must be >= 1, got {self.n_live_streams}")
        for name in (
            "response_intercept",
            "response_affinity",
            "response_quality",
            "response_social",
            "response_user_sociability",
        ):
            _check_len(name, getattr(self, name), N_RESPONSES)
        for name in ("activity_group_probs", "sessions_per_day", "patience", "return_logit"):
            _check_len(name, getattr(self, name), N_GROUPS)
        if abs(sum(self.activity_group_probs) - 1.0) > 1e-6 or min(self.activity_group_probs) < 0:
            raise ValueError(
                f"WorldConfig.activity_group_probs: must be non-negative and sum to 1, got {self.activity_group_probs}"
            )
        if min(self.sessions_per_day) < 1:
            raise ValueError(f"WorldConfig.sessions_per_day: each must be >= 1, got {self.sessions_per_day}")
        if min(self.patience) <= 0:
            raise ValueError(f"WorldConfig.patience: each must be > 0, got {self.patience}")
        if len(self.prediction_noise) != 3 or min(self.prediction_noise) < 0:
            raise ValueError(
                f"WorldConfig.prediction_noise: 3 non-negative σ (pre-rank, rank, re-rank), got {self.prediction_noise}"
            )
        if not -1.0 < self.social_length_correlation < 1.0:
            raise ValueError(
                f"WorldConfig.social_length_correlation: must be in (-1, 1), got {self.social_length_correlation}"
            )
        low, high = self.video_length_range_s
        if not 0 < low < high:
            raise ValueError(f"WorldConfig.video_length_range_s: need 0 < low < high, got {self.video_length_range_s}")
        if not 0.0 < self.recent_rate_decay <= 1.0:
            raise ValueError(f"WorldConfig.recent_rate_decay: must be in (0, 1], got {self.recent_rate_decay}")
        if self.max_session_requests < 1:
            raise ValueError(f"WorldConfig.max_session_requests: must be >= 1, got {self.max_session_requests}")
        if self.fatigue_per_request <= 0:
            raise ValueError(f"WorldConfig.fatigue_per_request: must be > 0, got {self.fatigue_per_request}")


@dataclass(frozen=True)
class Catalog:
    """Items drawn once per seed. Arrays are float32, indexed by item id."""

    video_topic: FloatArray
    """(M, d) unit topic vectors φ_v."""
    video_length: FloatArray
    """(M,) length ℓ_v in seconds."""
    video_quality: FloatArray
    """(M,) quality q_v in [0, 1]."""
    video_social: FloatArray
    """(M,) sociability s_v (standard normal, correlated with log length)."""
    video_logit_bias: FloatArray
    """(7, M) the item-only part of every response logit: b_j + γ_j(q−½) + δ_j s_v.

    Signal-major (signal, item) layout throughout the simulators: reductions
    over a candidate pool then run along contiguous memory (3-4× faster)."""
    stage_factor: FloatArray
    """(3, 6, M) what turns response probabilities into each stage's predicted signals:
    exp(σ_s·z − σ_s²/2) × (length for watch time, 1 otherwise).

    The log-normal factor is the stage model's error. A ranking model's error is
    a deterministic function of the item's features, so it is drawn once per
    item and stage rather than per request; σ_s falls stage by stage."""
    live_topic: FloatArray
    """(L, d) unit topic vectors of the live streams."""
    live_quality: FloatArray
    """(L,) live-stream quality in [0, 1]."""
    live_audience: FloatArray
    """(24, L) audience of each stream at each hour of the day."""


def _unit_rows(x: FloatArray) -> FloatArray:
    out: FloatArray = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return out


def make_catalog(cfg: WorldConfig, rng: np.random.Generator) -> Catalog:
    """Draw the videos and live streams of one world."""
    m, d = cfg.n_videos, cfg.topic_dim
    topic = _unit_rows(rng.standard_normal((m, d), dtype=np.float32))
    log_len_z = rng.standard_normal(m)
    low, high = cfg.video_length_range_s
    length = np.clip(cfg.video_length_median_s * np.exp(cfg.video_length_sigma * log_len_z), low, high)
    rho = cfg.social_length_correlation
    social = rho * log_len_z + np.sqrt(1.0 - rho * rho) * rng.standard_normal(m)
    quality = rng.beta(2.0, 2.0, m)
    bias = (
        np.asarray(cfg.response_intercept)[None, :]
        + np.asarray(cfg.response_quality)[None, :] * (quality[:, None] - 0.5)
        + np.asarray(cfg.response_social)[None, :] * social[:, None]
    )
    sigma = np.asarray(cfg.prediction_noise)[:, None, None]
    stage_factor = np.exp(sigma * rng.standard_normal((3, len(PREDICTED_SIGNALS), m)) - 0.5 * sigma**2)
    stage_factor[:, 0, :] *= length[None, :]

    n_live = cfg.n_live_streams
    live_topic = _unit_rows(rng.standard_normal((n_live, d), dtype=np.float32))
    live_quality = rng.beta(*cfg.live_quality_beta, n_live)
    peak_audience = cfg.live_audience_median * np.exp(cfg.live_audience_sigma * rng.standard_normal(n_live))
    peak_hour = rng.normal(21.0, 3.0, n_live)
    hours = np.arange(24.0)[:, None]
    swing = np.cos(2.0 * np.pi * (hours - peak_hour[None, :]) / 24.0)
    audience = peak_audience[None, :] * (1.0 - cfg.live_audience_swing * (1.0 - swing) / 2.0)
    f32 = np.float32
    return Catalog(
        video_topic=topic,
        video_length=length.astype(f32),
        video_quality=quality.astype(f32),
        video_social=social.astype(f32),
        video_logit_bias=np.ascontiguousarray(bias.T, dtype=f32),
        stage_factor=stage_factor.astype(f32),
        live_topic=live_topic,
        live_quality=live_quality.astype(f32),
        live_audience=audience.astype(f32),
    )


def response_probabilities(
    cfg: WorldConfig,
    catalog: Catalog,
    video_affinity: FloatArray,
    logit_shift: FloatArray,
    items: IntArray,
    responses: int = N_RESPONSES,
    affinity_offset: FloatArray | None = None,
) -> FloatArray:
    """True response probabilities p_j of the first `responses` responses → (responses, N, R), signal-major.

    video_affinity (N, M): each row's user × every video (`UserRows.video_affinity`);
    logit_shift (N, 7): ζ_j·log σ_u per user; items (N, R): the candidates.
    `responses=6` skips hate, which only the shown page needs. affinity_offset
    (N, R), optional: added to the affinity x of each candidate (the `rank`
    world's within-session satiation and followed creators move it).
    """
    n, m = items.shape[0], catalog.video_topic.shape[0]
    # np.take on flat indices is 3-4× faster than fancy indexing for these shapes.
    affinity = np.take(video_affinity, items + (np.arange(n) * m)[:, None])  # (N, R)
    if affinity_offset is not None:
        affinity += affinity_offset
    logits: FloatArray = np.take(catalog.video_logit_bias[:responses], items, axis=1)  # (responses, N, R)
    slope = np.asarray(cfg.response_affinity[:responses], dtype=np.float32)
    logits += affinity[None, :, :] * slope[:, None, None]
    logits += logit_shift[:, :responses].T[:, :, None]
    # σ(z) in place: fewer temporaries matter at 10⁵ user-steps/s.
    np.negative(logits, out=logits)
    np.exp(logits, out=logits)
    logits += 1.0
    np.reciprocal(logits, out=logits)
    return logits


def gather_positions(values: FloatArray, positions: IntArray) -> FloatArray:
    """values (S, N, R) and pool positions (N, k) → values at those positions (S, N, k)."""
    s, n, r = values.shape
    flat = positions + (np.arange(n) * r)[:, None]
    out: FloatArray = np.take(values.reshape(s, n * r), flat, axis=1)
    return out


@dataclass
class UserRows:
    """Per-row state of N simulated users (the `rank` and `slot` simulators share it).

    A row holds one user for `days` days. Each day a returning user opens
    `sessions_per_day[group]` sessions; each session is a run of requests until
    satisfaction runs out. After the last session of a day the user returns the
    next day with P(return) (see the module docstring); days without a return
    have no requests. When the horizon ends the row is `done`; with autoreset
    a fresh user takes the row until `max_users` users have been drawn, after
    which the row stays inactive (its signals are zero).
    """

    cfg: WorldConfig
    catalog: Catalog
    n: int
    days: int
    max_users: int | None
    autoreset: bool
    user_id: IntArray = field(init=False)
    group: IntArray = field(init=False)
    interest: FloatArray = field(init=False)
    video_affinity: FloatArray = field(init=False)
    """(N, M) affinity x = θ_u·φ_v of each row's user with every video, computed at spawn
    (memory N × n_videos × 4 bytes: 8 MB at N = 1024) so a request only gathers."""
    logit_shift: FloatArray = field(init=False)
    live_taste: FloatArray = field(init=False)
    """(N,) the user's taste for live streams in [0, 1]."""
    live_topic_affinity: FloatArray = field(init=False)
    """(N, L) affinity θ_u·φ_l with every live stream, computed at spawn."""
    patience: FloatArray = field(init=False)
    first_hour: FloatArray = field(init=False)
    satisfaction: FloatArray = field(init=False)
    session_depth: IntArray = field(init=False)
    session_index: IntArray = field(init=False)
    session_id: IntArray = field(init=False)
    day: IntArray = field(init=False)
    clock: FloatArray = field(init=False)
    day_experience: FloatArray = field(init=False)
    day_requests: IntArray = field(init=False)
    recent_rates: FloatArray = field(init=False)
    live_rates: FloatArray = field(init=False)
    active: BoolArray = field(init=False)
    users_drawn: int = field(init=False, default=0)
    sessions_started: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        n, d = self.n, self.cfg.topic_dim
        self.user_id = np.zeros(n, np.int64)
        self.group = np.zeros(n, np.int64)
        self.interest = np.zeros((n, d), np.float32)
        self.video_affinity = np.zeros((n, self.catalog.video_topic.shape[0]), np.float32)
        self.logit_shift = np.zeros((n, N_RESPONSES), np.float32)
        self.live_taste = np.zeros(n, np.float32)
        self.live_topic_affinity = np.zeros((n, self.catalog.live_topic.shape[0]), np.float32)
        self.patience = np.zeros(n, np.float32)
        self.first_hour = np.zeros(n, np.float32)
        self.satisfaction = np.zeros(n, np.float32)
        self.session_depth = np.zeros(n, np.int64)
        self.session_index = np.zeros(n, np.int64)
        self.session_id = np.zeros(n, np.int64)
        self.day = np.zeros(n, np.int64)
        self.clock = np.zeros(n, np.float64)
        self.day_experience = np.zeros(n, np.float32)
        self.day_requests = np.zeros(n, np.int64)
        self.recent_rates = np.zeros((n, 6), np.float32)
        self.live_rates = np.zeros((n, 2), np.float32)
        self.active = np.zeros(n, np.bool_)

    # -- lifecycle ---------------------------------------------------------
    def reset(self, rng: np.random.Generator) -> None:
        self.users_drawn = 0
        self.sessions_started = 0
        self.active[:] = False
        self.spawn(np.arange(self.n), rng)

    def spawn(self, rows: IntArray, rng: np.random.Generator) -> None:
        """Put fresh users in `rows` (as many as `max_users` still allows; the rest go inactive)."""
        if self.max_users is not None:
            rows = rows[: max(0, self.max_users - self.users_drawn)]
        k = rows.shape[0]
        if k == 0:
            return
        cfg = self.cfg
        self.user_id[rows] = np.arange(self.users_drawn, self.users_drawn + k)
        self.users_drawn += k
        group = rng.choice(N_GROUPS, size=k, p=np.asarray(cfg.activity_group_probs))
        self.group[rows] = group
        interest = _unit_rows(rng.standard_normal((k, cfg.topic_dim), dtype=np.float32))
        self.interest[rows] = interest
        self.video_affinity[rows] = interest @ self.catalog.video_topic.T
        log_sociability = np.asarray(rng.standard_normal(k) * cfg.user_sociability_sigma)
        slopes = np.asarray(cfg.response_user_sociability, dtype=np.float64)
        self.logit_shift[rows] = np.outer(log_sociability, slopes).astype(np.float32)
        self.live_taste[rows] = rng.beta(*cfg.user_live_taste_beta, k)
        self.live_topic_affinity[rows] = interest @ self.catalog.live_topic.T
        self.patience[rows] = np.asarray(cfg.patience)[group] * np.exp(cfg.patience_sigma * rng.standard_normal(k))
        self.first_hour[rows] = np.mod(rng.normal(cfg.session_hour_mean, cfg.session_hour_std, k), 24.0)
        # Population means of the rates, so that a new user's observation is typical, not zero.
        self.recent_rates[rows] = np.array([0.5, 0.3, 0.07, 0.015, 0.025, 0.012], np.float32)
        self.live_rates[rows] = np.array([0.1, 0.1], np.float32)
        self.day[rows] = 0
        self.clock[rows] = -np.inf  # a new user's first session starts when scheduled
        self.active[rows] = True
        self._start_day(rows)

    def _start_day(self, rows: IntArray) -> None:
        self.session_index[rows] = 0
        self.day_experience[rows] = 0.0
        self.day_requests[rows] = 0
        self._start_session(rows)

    def _start_session(self, rows: IntArray) -> None:
        self.satisfaction[rows] = self.patience[rows]
        self.session_depth[rows] = 0
        self.session_id[rows] = np.arange(self.sessions_started, self.sessions_started + rows.shape[0])
        self.sessions_started += rows.shape[0]
        # Sessions of a day are spread evenly after the user's preferred first hour,
        # and never start before the previous one ended (plus a break): a user's
        # clock only moves forward, even when a late session runs past midnight.
        n_sessions = np.asarray(self.cfg.sessions_per_day)[self.group[rows]]
        hour = self.first_hour[rows] + self.session_index[rows] * (16.0 / np.maximum(n_sessions, 1.0))
        scheduled = self.day[rows] * SECONDS_PER_DAY + np.minimum(hour, 23.9) * 3600.0
        self.clock[rows] = np.maximum(scheduled, self.clock[rows] + SESSION_BREAK_S)

    # -- observation helpers ------------------------------------------------
    def hour_of_day(self, rows: IntArray | slice = ALL_ROWS) -> FloatArray:
        return (np.mod(self.clock[rows], SECONDS_PER_DAY) / 3600.0).astype(np.float32)

    # -- one request --------------------------------------------------------
    def after_request(
        self,
        experience: FloatArray,
        duration_s: FloatArray,
        rates: FloatArray,
        live: FloatArray,
        rng: np.random.Generator,
    ) -> tuple[BoolArray, BoolArray]:
        """Apply one served request to every active row.

        experience (N,) e of the request; duration_s (N,) seconds it took;
        rates (N, 6) the request's watch_time/60, click, like, follow, comment,
        share; live (N, 2) its live watch time/60 and live exposure.
        Returns (session_end, done), each (N,) bool; inactive rows get False.
        Rows that are done are inactive afterwards: the caller builds their final
        observation, then calls `respawn`.
        """
        cfg = self.cfg
        act = self.active
        self.record_request(duration_s, rates, live)
        self.satisfaction += np.where(act, experience - cfg.fatigue_per_request, 0.0).astype(np.float32)
        self.day_experience += np.where(act, experience, 0.0).astype(np.float32)
        session_end = act & ((self.satisfaction <= 0.0) | (self.session_depth >= cfg.max_session_requests))
        return self.close_sessions(session_end, rng)

    def record_request(self, duration_s: FloatArray, rates: FloatArray, live: FloatArray) -> None:
        """The bookkeeping every served request does: the 7-day rates, session depth, clock and day count."""
        act = self.active
        decay = self.cfg.recent_rate_decay
        self.recent_rates[act] += decay * (rates[act] - self.recent_rates[act])
        self.live_rates[act] += decay * (live[act] - self.live_rates[act])
        self.session_depth += act
        self.clock += np.where(act, duration_s, 0.0)
        self.day_requests += act

    def close_sessions(self, session_end: BoolArray, rng: np.random.Generator) -> tuple[BoolArray, BoolArray]:
        """End the sessions of the rows in `session_end`: the next session of the day, or the next day's
        return draw after the day's last one. Returns (session_end, done) as `after_request`."""
        cfg = self.cfg
        done = np.zeros(self.n, np.bool_)
        if not session_end.any():
            return session_end, done
        ended = np.flatnonzero(session_end)
        self.session_index[ended] += 1
        n_sessions = np.asarray(cfg.sessions_per_day)[self.group[ended]]
        more_today = self.session_index[ended] < n_sessions
        self._start_session(ended[more_today])
        day_over = ended[~more_today]
        if day_over.size:
            done_rows = self._next_day(day_over, rng)
            done[done_rows] = True
        return session_end, done

    def _next_day(self, rows: IntArray, rng: np.random.Generator) -> IntArray:
        """Draw the next day each user in `rows` returns on; returns the rows whose horizon ended."""
        cfg = self.cfg
        p_return = self.return_probability(rows)
        day = self.day[rows] + 1
        returned = np.zeros(rows.shape[0], np.bool_)
        # A user who skipped a day comes back with the group's base rate: the
        # memory of a bad day fades (one loop iteration per day of the horizon).
        p = p_return
        while True:
            pending = ~returned & (day < self.days)
            if not pending.any():
                break
            hit = pending & (rng.random(rows.shape[0]) < p)
            returned |= hit
            day = np.where(pending & ~hit, day + 1, day)
            p = 1.0 / (1.0 + np.exp(-np.asarray(cfg.return_logit)[self.group[rows]]))
        back = rows[returned]
        self.day[back] = day[returned]
        self._start_day(back)
        finished = rows[~returned]
        self.active[finished] = False
        return finished

    def return_probability(self, rows: IntArray) -> npt.NDArray[np.float64]:
        """P(the users in `rows` come back tomorrow), from the day that just ended (module docstring)."""
        cfg = self.cfg
        mean_exp = self.day_experience[rows] / np.maximum(self.day_requests[rows], 1)
        logit = np.asarray(cfg.return_logit)[self.group[rows]] + cfg.return_experience_slope * (
            mean_exp - cfg.experience_reference
        )
        out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-logit))
        return out

    def respawn(self, done: BoolArray, rng: np.random.Generator) -> IntArray:
        """With autoreset, fresh users in the rows that are done (within `max_users`); returns those rows."""
        if not self.autoreset or not done.any():
            return np.zeros(0, np.int64)
        rows = np.flatnonzero(done)
        if self.max_users is not None:
            rows = rows[: max(0, self.max_users - self.users_drawn)]
        self.spawn(rows, rng)
        return rows


class BatchedUserSim:
    """What the per-user batched simulators (`rank`, `slot`) share: N rows of users in one world.

    The catalog comes from the constructor's seed and stays fixed for the
    simulator's lifetime; `reset(seed)` redraws the users and the dynamics and
    calls the subclass's `_draw_requests()` hook for every row's first request.
    `config` must carry `world` (WorldConfig) and `days` (the episode horizon).
    """

    def __init__(self, n: int, config: Any, seed: int, *, autoreset: bool, max_users: int | None) -> None:
        if n < 1:
            raise ValueError(f"{type(self).__name__}: n must be >= 1, got {n}")
        self.n = n
        self.config = config
        self.autoreset = autoreset
        self.max_users = max_users
        self._seed = seed
        self.rng = np.random.default_rng(seed)
        self.catalog: Catalog = make_catalog(config.world, np.random.default_rng([seed, 1]))
        self.users = UserRows(config.world, self.catalog, n, config.days, max_users, autoreset)

    def reset(self, seed: int | None = None) -> npt.NDArray[np.float32]:
        """Draw N fresh users and their first request; `seed` reseeds the users and the dynamics.

        The catalog (the world's items) comes from the constructor's seed and
        stays fixed for the simulator's lifetime, so episodes share one world.
        """
        if seed is not None:
            self._seed = seed
        self.rng = np.random.default_rng(self._seed)
        self.users.reset(self.rng)
        self._draw_requests()
        return self.observe()

    def _draw_requests(self) -> None:
        raise NotImplementedError

    def observe(self) -> npt.NDArray[np.float32]:
        raise NotImplementedError


class EpisodeSeeds:
    """Seeds of a single-user env's episodes: the first is the constructor's seed, each later one the
    next integer (a new user per episode, reproducible); reset(seed=s) restarts the sequence at s."""

    def __init__(self, seed: int) -> None:
        self._next = seed

    def __call__(self, seed: int | None) -> int:
        episode = self._next if seed is None else seed
        self._next = episode + 1
        return episode


def observation_box(size: int) -> gym.spaces.Box:
    """The Gymnasium observation space of every view: every field is >= -1 (sin/cos of the hour are the
    only negative ones); the upper bound is loose, as counts and times have no hard maximum."""
    return gym.spaces.Box(-1.0, 1e6, shape=(size,), dtype=np.float32)


def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """A copy of a problem config with fields overridden by name.

    Names of the config's own fields replace them; names of WorldConfig fields
    replace them in `cfg.world` (when the config has one). Anything else is an
    error that lists the allowed names.
    """
    own = {f.name for f in dataclasses.fields(cfg)}
    world_fields = {f.name for f in dataclasses.fields(WorldConfig)} if "world" in own else set()
    mine = {k: v for k, v in overrides.items() if k in own}
    world = {k: v for k, v in overrides.items() if k in world_fields and k not in own}
    unknown = sorted(set(overrides) - set(mine) - set(world))
    if unknown:
        raise ValueError(f"{type(cfg).__name__}: unknown override(s) {unknown}; allowed: {sorted(own | world_fields)}")
    if world:
        mine["world"] = dataclasses.replace(mine.get("world", cfg.world), **world)
    return dataclasses.replace(cfg, **mine)
