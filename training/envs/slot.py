"""`slot` — whether to put one live stream into a page of short videos, and where.

Per request the feed has already chosen its page: the re-rank model's top
`page_size` videos among `page_candidates` retrieved ones. The best-matching
live stream on air for the user is the candidate. The action is 0 (no live
stream) or a position 1..K; the live stream takes that position, the videos
below it move down one place and the last one drops off the page.

Equations (docs/simulators.md, with sources and plots):

* attention        item at position j is looked at with weight a_j = decay^(j−1)
* short video      watch = Σ_j a_j' · ℓ_j · clip(p_completion,j + noise, 0, 1), a_j' after the shift:
                   the displacement cost Σ_{j ≥ p} (a_j − a_{j+1})·w_j depends on the page below p
* live supply      stream l broadcasts in a daily window [s_l, s_l + d_l) (hours); only streams on air
                   are candidates, so the number and the best quality of candidates vary by hour
* live entry       P(enter) = a_p · σ(b + c_g + β_τ·τ_u + β_x·x_ul + β_q·(q_l − ½) + β_A·log(A_l(h)/A_med) − β_F·F_u)
                   τ_u the user's live taste, x_ul topic affinity, A_l(h) the audience at this hour,
                   c_g the activity group's conversion offset, F_u the user's hidden live fatigue
* live watch time  = enter · Exp(mean = D·(½ + q_l)·(½ + τ_u))
* live fatigue     F_u ← F_u + 1 per exposure; F_u ← ρ^Δdays · F_u when the user comes back Δdays later
* experience       e = κ_c·(mean completion − c_ref) − κ_h·hates
                        − exposed·ζ·ζ_g·(1 − τ_u)·(1 + κ_F·F_u)·(first-position factor if p = 1)
                        + entered·ψ·τ_u

The live model's prediction in the observation, E[watch | shown on top] =
D·(½ + q_l)·(½ + τ_u)·σ(logit without −β_F·F_u), knows the user's taste and
group but not the hidden fatigue (ours: a model trained on long-run logs misses
the short-run wear). What the prediction leaves out — the group's tolerance
ζ_g, the fatigue F_u (observed only through the 7-day exposure ratio), the page
the stream displaces — is what a state-aware policy can learn and a threshold
on the prediction cannot. The observation also carries the user's live
behaviour sequence (`user_live_sequence`: the last 5 exposures, most recent
first, each with the live watch time it brought — 0 when the user did not
enter — and how long ago it was). It adds nothing to the dynamics; it is the
observable trace of two hidden quantities that drive them: the watch time of
an entry grows with τ_u, and F_u is a count of recent exposures that fades
with the days away.

Inserting raises today's live watch time, but each exposure costs the
(mostly live-averse) user experience, so sessions shorten and fewer users come
back: greedy allocation looks good on day 1 and bad over 7 days. Group
parameters, the fatigue and the broadcast windows are ours (PAPERS.md: SL-MGAC
publishes neither its reward nor its user model); their qualitative shape
follows KuaiSim (leave and return depend on the user's activity and recent
experience), RecSim (a hidden state that consumption wears and time restores)
and KuaiRand (activity groups differ in behaviour rates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from models.observations import slot_observation, top_k
from models.problems import SLOT, SLOT_LIVE_SEQUENCE_LENGTH
from training.envs.world import (
    ALL_ROWS,
    N_GROUPS,
    BatchedUserSim,
    BoolArray,
    EpisodeSeeds,
    FloatArray,
    IntArray,
    UserRows,
    WorldConfig,
    gather_positions,
    observation_box,
    response_probabilities,
)

PAGE_SIZE = int(SLOT.settings["page_size"])


@dataclass(frozen=True)
class SlotConfig:
    """Parameters of the `slot` simulator (the world's live in `world`)."""

    world: WorldConfig = field(default_factory=WorldConfig)
    """The shared world."""
    days: int = 7
    """Days each user is simulated for (one episode); 7 so that retention effects show."""
    page_candidates: int = 24
    """Videos retrieved per request; the page is re-rank's top `page_size` of them by predicted watch time."""
    position_decay: float = 0.92
    """Attention decay per position down the page (videos and live stream alike)."""
    live_entry_intercept: float = -2.0
    """b: live-entry logit for a user with no taste for live, an average stream."""
    live_entry_taste: float = 4.0
    """β_τ: slope on the user's live taste τ_u."""
    live_entry_affinity: float = 1.5
    """β_x: slope on user-stream topic affinity."""
    live_entry_quality: float = 1.0
    """β_q: slope on (stream quality − ½)."""
    live_entry_audience: float = 0.2
    """β_A: slope on log(audience / median audience): crowds attract."""
    live_duration_mean_s: float = 300.0
    """D: mean live watch time of an entry, before the quality and taste factors."""
    live_exposure_penalty: float = 0.2
    """ζ: experience lost when a live stream is shown to a user with no taste for it."""
    group_live_tolerance: tuple[float, float, float] = (3.0, 1.0, 0.3)
    """ζ_g: the exposure penalty's multiplier per activity group (low, medium, high): occasional users
    tolerate an interruption least, heavy users most (ours; KuaiSim's leave model depends on activity)."""
    group_live_conversion: tuple[float, float, float] = (-0.3, 0.0, 0.3)
    """c_g: live-entry logit offset per activity group (low, medium, high): heavy users enter more (ours)."""
    live_fatigue_wear: float = 0.25
    """κ_F: how much the exposure penalty grows per unit of hidden live fatigue F_u."""
    live_fatigue_conversion: float = 0.15
    """β_F: how much the live-entry logit falls per unit of live fatigue (the prediction misses it)."""
    live_fatigue_recovery: float = 0.5
    """ρ: fraction of the live fatigue left after each day away (tolerance recovers over days)."""
    first_position_factor: float = 1.5
    """The penalty is multiplied by this when the live stream opens the page (position 1)."""
    live_entry_gain: float = 1.0
    """ψ: experience gained by a user of taste τ who enters the stream (ψ·τ)."""
    broadcast_start_hour: tuple[float, float] = (20.0, 4.0)
    """Mean and std of the hour a stream's daily broadcast starts (live supply peaks in the evening)."""
    broadcast_hours: tuple[float, float] = (2.0, 8.0)
    """Range (uniform) of a stream's daily broadcast length, hours."""
    paired_users: bool = False
    """Draw each user from its own random stream keyed by (seed, user number): user k is the same person
    under every policy, whatever order rows finish in (common random numbers on users, for paired
    evaluation with autoreset and `max_users`). Off by default: per-user draws make respawns slower."""

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError(f"SlotConfig.days: must be >= 1, got {self.days}")
        if self.page_candidates < PAGE_SIZE:
            raise ValueError(
                f"SlotConfig.page_candidates: must be >= page size {PAGE_SIZE}, got {self.page_candidates}"
            )
        if not 0.0 < self.position_decay <= 1.0:
            raise ValueError(f"SlotConfig.position_decay: must be in (0, 1], got {self.position_decay}")
        if self.live_duration_mean_s <= 0:
            raise ValueError(f"SlotConfig.live_duration_mean_s: must be > 0, got {self.live_duration_mean_s}")
        if self.live_exposure_penalty < 0 or self.live_fatigue_wear < 0 or self.first_position_factor < 1:
            raise ValueError(
                "SlotConfig: live_exposure_penalty and live_fatigue_wear must be >= 0, first_position_factor >= 1"
            )
        for name in ("group_live_tolerance", "group_live_conversion"):
            if len(getattr(self, name)) != N_GROUPS:
                raise ValueError(f"SlotConfig.{name}: expected {N_GROUPS} entries, got {len(getattr(self, name))}")
        if min(self.group_live_tolerance) < 0:
            raise ValueError(f"SlotConfig.group_live_tolerance: each must be >= 0, got {self.group_live_tolerance}")
        if not 0.0 <= self.live_fatigue_recovery <= 1.0:
            raise ValueError(f"SlotConfig.live_fatigue_recovery: must be in [0, 1], got {self.live_fatigue_recovery}")
        low, high = self.broadcast_hours
        if not 0.0 < low <= high <= 24.0:
            raise ValueError(f"SlotConfig.broadcast_hours: need 0 < low <= high <= 24, got {self.broadcast_hours}")


def broadcast_schedule(cfg: SlotConfig, n_streams: int, rng: np.random.Generator) -> BoolArray:
    """(24, L) bool: each stream broadcasts daily for `broadcast_hours` from its start hour (wrapping midnight).

    Live supply varies by hour: most streams are on in the evening, few or none
    at dawn (then there is no candidate: its observed prediction, quality and
    audience are 0, and a slot shown anyway is empty). Ours: the diurnal shape
    follows the streams' audience peak (world.py) and MaRCA's evening traffic peak.
    """
    mean, std = cfg.broadcast_start_hour
    start = np.mod(rng.normal(mean, std, n_streams), 24.0)
    low, high = cfg.broadcast_hours
    length = rng.uniform(low, high, n_streams)
    since_start = np.mod(np.arange(24.0)[:, None] + 0.5 - start[None, :], 24.0)
    on_air: BoolArray = since_start < length[None, :]
    return on_air


class _KeyedSpawn:
    """`UserRows.spawn` for `SlotConfig.paired_users`: user number k is drawn from the stream (seed, 7, k),
    not from the simulator's shared generator, so it does not depend on what happened before."""

    def __init__(self, sim: BatchedSlotSim) -> None:
        self._sim = sim
        self._spawn = UserRows.spawn.__get__(sim.users)

    def __call__(self, rows: IntArray, rng: np.random.Generator) -> None:
        users = self._sim.users
        if users.max_users is not None:
            rows = rows[: max(0, users.max_users - users.users_drawn)]
        for row in rows:
            self._spawn(np.array([row]), np.random.default_rng([self._sim.seed, 7, users.users_drawn]))


class BatchedSlotSim(BatchedUserSim):
    """N users of the `slot` problem stepped at once.

    reset(seed) → obs (N, 33); step(actions (N,) ints in 0..K) → (obs, rewards, done, info)
    with rewards = {signal: (N,) float32} for every spec signal (main:
    "live_watch_time"). See training/envs/__init__.py for the info keys.
    """

    spec = SLOT
    config: SlotConfig

    def __init__(
        self,
        n: int,
        config: SlotConfig | None = None,
        seed: int = 0,
        *,
        autoreset: bool = True,
        max_users: int | None = None,
    ) -> None:
        super().__init__(n, config or SlotConfig(), seed, autoreset=autoreset, max_users=max_users)
        self._attention = (self.config.position_decay ** np.arange(PAGE_SIZE + 1)).astype(np.float32)
        self._page_items: IntArray = np.zeros((n, PAGE_SIZE), np.int64)
        self._page_probs: FloatArray = np.zeros((7, n, PAGE_SIZE), np.float32)
        self._page_predicted: FloatArray = np.zeros((n, PAGE_SIZE), np.float32)
        self._live: IntArray = np.zeros(n, np.int64)
        self._live_entry_logit: FloatArray = np.zeros(n, np.float32)
        self._live_duration: FloatArray = np.zeros(n, np.float32)
        self._live_candidate: FloatArray = np.zeros((n, 3), np.float32)
        self.on_air = broadcast_schedule(
            self.config, self.catalog.live_quality.shape[0], np.random.default_rng([seed, 3])
        )
        """(24, L) bool: stream l is on air at hour h (fixed with the catalog)."""
        self.live_fatigue: FloatArray = np.zeros(n, np.float32)
        """(N,) hidden F_u: recent live exposures, recovering by ρ per day away."""
        self.live_sequence_watch: FloatArray = np.zeros((n, SLOT_LIVE_SEQUENCE_LENGTH), np.float32)
        """(N, 5) live watch time (s) of each user's last live exposures, most recent first (observed)."""
        self.live_sequence_time: npt.NDArray[np.float64] = np.full((n, SLOT_LIVE_SEQUENCE_LENGTH), -np.inf)
        """(N, 5) the user's clock (s) at those exposures; −inf where there was none."""
        if self.config.paired_users:
            self.users.spawn = _KeyedSpawn(self)  # type: ignore[method-assign]
        self._group_tolerance = np.asarray(self.config.group_live_tolerance, np.float32)
        self._group_conversion = np.asarray(self.config.group_live_conversion, np.float32)

    def reset(self, seed: int | None = None) -> FloatArray:
        self.live_fatigue[:] = 0.0
        self._forget_live_sequence(ALL_ROWS)
        return super().reset(seed)

    def _forget_live_sequence(self, rows: IntArray | slice) -> None:
        self.live_sequence_watch[rows] = 0.0
        self.live_sequence_time[rows] = -np.inf

    def _record_live_exposures(self, shown: BoolArray, live_watch: FloatArray, at: npt.NDArray[np.float64]) -> None:
        """Push the exposures of the rows in `shown` (their live watch s, the clock `at`) onto their sequences."""
        rows = np.flatnonzero(shown)
        if rows.size == 0:
            return
        for seq, value in ((self.live_sequence_watch, live_watch), (self.live_sequence_time, at)):
            seq[rows, 1:] = seq[rows, :-1]
            seq[rows, 0] = value[rows]

    @property
    def seed(self) -> int:
        """The seed of the users and the dynamics (the constructor's, or the last `reset(seed)`'s)."""
        return int(self._seed)

    def _draw_requests(self) -> None:
        self._next_page()

    def _next_page(self, rows: IntArray | None = None) -> None:
        """Each row's page (re-rank's top K by predicted watch time) and its best live stream; or only `rows`'."""
        cfg, world, cat, u = self.config, self.config.world, self.catalog, self.users
        sel = ALL_ROWS if rows is None else rows
        n = self.n if rows is None else rows.shape[0]
        pool = self.rng.integers(0, world.n_videos, size=(n, cfg.page_candidates))
        probs = response_probabilities(world, cat, u.video_affinity[sel], u.logit_shift[sel], pool)
        predicted_watch = probs[0] * np.take(cat.stage_factor[2, 0], pool)
        page = top_k(predicted_watch, PAGE_SIZE)
        flat = page + (np.arange(n) * cfg.page_candidates)[:, None]
        self._page_items[sel] = np.take(pool, flat)
        self._page_probs[:, sel] = gather_positions(probs, page)
        self._page_predicted[sel] = np.take(predicted_watch, flat)

        hour = np.minimum(u.hour_of_day(sel).astype(np.int64), 23)
        on_air = self.on_air[hour]  # (n, L)
        audience = cat.live_audience[hour]  # (n, L)
        log_audience = np.log(audience / world.live_audience_median)
        taste = u.live_taste[sel][:, None]
        # The live model's logit: everything but the hidden fatigue (added at step time).
        entry_logit = (
            cfg.live_entry_intercept
            + self._group_conversion[u.group[sel]][:, None]
            + cfg.live_entry_taste * taste
            + cfg.live_entry_affinity * u.live_topic_affinity[sel]
            + cfg.live_entry_quality * (cat.live_quality[None, :] - 0.5)
            + cfg.live_entry_audience * log_audience
        )
        duration = cfg.live_duration_mean_s * (0.5 + cat.live_quality[None, :]) * (0.5 + taste)
        # The live recommender picks the stream on air with the highest expected watch time at the top of the page.
        expected = np.where(on_air, duration / (1.0 + np.exp(-entry_logit)), -1.0)
        best = expected.argmax(axis=1)
        r = np.arange(n)
        any_on_air = on_air[r, best]
        self._live[sel] = best
        # No stream on air: a shown slot is empty (nobody enters) but still costs the exposure.
        self._live_entry_logit[sel] = np.where(any_on_air, entry_logit[r, best], -30.0)
        self._live_duration[sel] = duration[r, best]
        self._live_candidate[sel] = np.stack(
            [np.maximum(expected[r, best], 0.0), cat.live_quality[best] * any_on_air, audience[r, best] * any_on_air],
            axis=1,
        )

    def observe(self, rows: IntArray | slice = ALL_ROWS) -> FloatArray:
        """The observation (N, 33) of every row (or of `rows`)."""
        u = self.users
        since = u.clock[rows][:, None] - self.live_sequence_time[rows]  # seconds; inf where none
        sequence = np.stack([self.live_sequence_watch[rows], since.astype(np.float32)], axis=2)
        return slot_observation(
            u.group[rows],
            u.recent_rates[rows],
            u.session_depth[rows],
            u.hour_of_day(rows),
            u.live_rates[rows],
            self._page_predicted[rows],
            self._live_candidate[rows],
            sequence.reshape(sequence.shape[0], -1),
        )

    def step(self, actions: Any) -> tuple[FloatArray, dict[str, FloatArray], BoolArray, dict[str, Any]]:
        a = np.asarray(actions)
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if a.shape != (self.n,):
            raise ValueError(f"slot actions: expected shape ({self.n},) of integers 0..{PAGE_SIZE}, got {a.shape}")
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)) or a.min() < 0 or a.max() > PAGE_SIZE:
            raise ValueError(f"slot actions: expected integers 0 (no live stream) .. {PAGE_SIZE} (position), got {a}")
        position = a.astype(np.int64)
        cfg, world, u = self.config, self.config.world, self.users
        n = self.n
        active = u.active.copy()
        user_id, session_id, day = u.user_id.copy(), u.session_id.copy(), u.day.copy()
        timestamp = u.clock.copy()
        exposed = position > 0

        # Where each video of the page ends up: shifted down by one at and after the live slot.
        j = np.arange(PAGE_SIZE)[None, :]
        shown_at = np.where(exposed[:, None] & (j + 1 >= position[:, None]), j + 1, j)  # 0-based
        on_page = shown_at < PAGE_SIZE
        attention = self._attention[shown_at] * on_page
        lengths = self.catalog.video_length[self._page_items]
        completion = np.clip(
            self._page_probs[0] + world.completion_noise * self.rng.standard_normal((n, PAGE_SIZE), dtype=np.float32),
            0.0,
            1.0,
        )
        watch = (attention * lengths * completion).sum(axis=1)
        hate = (self.rng.random((n, PAGE_SIZE), dtype=np.float32) < self._page_probs[6]) & on_page
        interactions = (self._page_probs[1:6] * attention[None]).sum(axis=2).T  # expected, (N, 5)
        mean_completion = (completion * on_page).sum(axis=1) / on_page.sum(axis=1)

        fatigue = self.live_fatigue
        live_attention = self._attention[np.maximum(position - 1, 0)]
        entry_logit = self._live_entry_logit - cfg.live_fatigue_conversion * fatigue
        p_enter = live_attention / (1.0 + np.exp(-entry_logit))
        entered = exposed & (self.rng.random(n, dtype=np.float32) < p_enter)
        live_watch = entered * self.rng.exponential(1.0, n).astype(np.float32) * self._live_duration

        tolerance = self._group_tolerance[u.group] * (1.0 + cfg.live_fatigue_wear * fatigue)
        first = np.where(position == 1, cfg.first_position_factor, 1.0)
        experience = (
            world.experience_completion_weight * (mean_completion - world.completion_reference)
            + world.experience_interaction_weight * interactions.sum(axis=1)
            - world.experience_hate_weight * hate.sum(axis=1)
            - exposed * cfg.live_exposure_penalty * (1.0 - u.live_taste) * tolerance * first
            + entered * cfg.live_entry_gain * u.live_taste
        ).astype(np.float32)

        mask = active.astype(np.float32)
        rates = np.concatenate([(watch / 60.0)[:, None], interactions], axis=1).astype(np.float32)
        live = np.stack([live_watch / 60.0, exposed.astype(np.float32)], axis=1).astype(np.float32)
        duration = watch + live_watch + PAGE_SIZE * world.seconds_between_videos
        day_before = u.day.copy()
        self.live_fatigue += exposed & active
        self._record_live_exposures(exposed & active, live_watch, timestamp)
        session_end, done = u.after_request(experience, duration, rates, live, self.rng)
        # Tolerance recovers over days: the fatigue of a user who came back Δ days later shrinks by ρ^Δ.
        days_away = u.day - day_before
        if days_away.any():
            self.live_fatigue *= np.power(cfg.live_fatigue_recovery, days_away).astype(np.float32)
        rewards: dict[str, FloatArray] = {
            "live_watch_time": (live_watch * mask).astype(np.float32),
            "watch_time": (watch * mask).astype(np.float32),
            "session_end": session_end.astype(np.float32),
            "live_exposure": (exposed * mask).astype(np.float32),
        }
        self._next_page()
        obs = self.observe()
        final_obs = obs.copy() if done.any() else None
        respawned = u.respawn(done, self.rng)
        if respawned.size:
            self.live_fatigue[respawned] = 0.0
            self._forget_live_sequence(respawned)
            self._next_page(respawned)
            obs[respawned] = self.observe(respawned)
        info: dict[str, Any] = {
            "signals": rewards,
            "experience": experience * mask,
            "session_end": session_end,
            "active": active,
            "user_id": user_id,
            "session_id": session_id,
            "day": day,
            "timestamp": timestamp,
        }
        if final_obs is not None:
            info["final_observation"] = final_obs
        return obs, rewards, done, info

    @property
    def all_done(self) -> bool:
        """True once every row is inactive (only with `max_users` or autoreset=False)."""
        return not bool(self.users.active.any())


class SlotEnv(gym.Env[np.ndarray, np.int64]):
    """Single-agent `slot`: one user for `config.days` days; action 0 = none, 1..K = position."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, config: SlotConfig | None = None, seed: int = 0) -> None:
        self.config = config or SlotConfig()
        self.observation_space = observation_box(SLOT.observation_size)
        self.action_space = gym.spaces.Discrete(PAGE_SIZE + 1)
        self._episode_seed = EpisodeSeeds(seed)
        self.sim = BatchedSlotSim(1, self.config, seed, autoreset=False)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs = self.sim.reset(self._episode_seed(seed))
        return obs[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, rewards, done, info = self.sim.step(np.asarray([int(action)]))
        signals = {k: float(v[0]) for k, v in rewards.items()}
        out_info = {"signals": signals, "session_end": bool(info["session_end"][0])}
        return obs[0], signals[SLOT.main_signal], False, bool(done[0]), out_info
