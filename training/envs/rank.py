"""`rank` — the multi-stage short-video feed.

Per request: retrieval draws `retrieval_size` candidates at random from the
catalog; pre-rank, rank and re-rank each see the candidates through their own
model (predicted signals = true expected signals × a per-item, per-stage error
that shrinks stage by stage), score them with their fusion weights
(`models.observations.fusion_scores`, the function serving uses) and keep
their top k (`models.observations.top_k`). Re-rank's top k is the page the
user sees; its realised signals are summed into the request's reward vector.

Views:
* single     (`RankEnv`, Gymnasium): one action = 18 weights (3 stages × 6, spec order);
             the observation is built on the retrieved pool as pre-rank's model sees it.
* multi      (`RankSequentialEnv`, PettingZoo AEC): agents pre_rank → rank → re_rank act in
             turn on every request, each a Box(6) on its own local observation of the pool the
             upstream stages actually kept (RecFlow's cascade); shared team reward. (The former
             parallel view showed rank / re-rank a "preview" pool ranked with default upstream
             weights; that departure is gone, in the batched learners' pool too.)
* batched    (`BatchedRankSim`): N users at once, numpy, the interface the learners and
             benchmarks use (see training/envs/__init__.py); `stage_observation` / `run_stage` /
             `serve_page` step it stage by stage.

User model (ours in form, each mechanism after a published simulator; equations and
sources in docs/simulators.md, parameters in `RankConfig`):
* completion falls with length (duration bias: KuaiRand logs, D2Q):
  completion logit −= λ_ℓ·log(ℓ_v / median);
* hidden session satisfaction S (RecSim): S ← μ·S + e, e = κ_c(c̄ − c_ref) + κ_i,g·interactions − κ_h·hates;
  the policy sees only its proxies (last pages' completion and skip rate, minutes in session);
* fatigue per minute watched, and a leave hazard (KuaiSim's leave module):
  P(leave after this request) = σ(h₀ + h_F·φ_g·session minutes − h_S·S);
* within-session topic satiation: affinity −= η·(recently completed videos of the topic);
* follows: affinity += ψ for every later video of a followed creator;
* next-day return (KuaiSim's return module): logit = r_g + κ_S(S̄_day − S_ref)
  + κ_I,g·(mean_j log(1 + rate_j/ref_j) − log 2) − κ_O,g·(W_day/W_g − 1)⁺ — balanced
  interactions are rewarded concavely, over-consumption is penalised;
* groups differ: interactions please and retain low-activity users (κ_i,g, κ_I,g), long
  watch tires heavy users (φ_g) and over-consumption costs them most (κ_O,g).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, cast

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from pettingzoo import AECEnv

from models.observations import fusion_scores, rank_observation, top_k
from models.problems import (
    PREDICTED_SIGNALS,
    RANK,
    RANK_SESSION_SIGNAL_DEFAULTS,
    RANK_STAGES,
    BoxAction,
)
from training.envs.world import (
    ALL_ROWS,
    BatchedUserSim,
    BoolArray,
    Catalog,
    EpisodeSeeds,
    FloatArray,
    IntArray,
    UserRows,
    WorldConfig,
    gather_positions,
    observation_box,
    response_probabilities,
)

N_SIGNALS = len(PREDICTED_SIGNALS)
RANK_BOX = cast(BoxAction, RANK.action)
ACTION_SIZE = RANK.action.flat_size  # 18


@dataclass(frozen=True)
class RankConfig:
    """Parameters of the `rank` simulator (the world's live in `world`).

    Per-group tuples are (low, medium, high) activity. The session and return
    dynamics below replace the shared world's `patience` / `fatigue_per_request`
    / `return_experience_slope` for `rank` (slot keeps those); the equations are
    in the module docstring and docs/simulators.md, with their sources.
    """

    world: WorldConfig = field(default_factory=WorldConfig)
    """The shared world."""
    days: int = 3
    """Days each user is simulated for (one episode)."""
    retrieval_size: int = 60
    """Candidates retrieval hands to pre-rank. Kept modest for throughput (docs/simulators.md)."""
    keep: tuple[int, int, int] = (
        int(RANK.settings["keep_pre_rank"]),
        int(RANK.settings["keep_rank"]),
        int(RANK.settings["keep_re_rank"]),
    )
    """Candidates kept by pre-rank, rank and re-rank; re-rank's are the page shown."""
    completion_length_slope: float = 0.6
    """λ_ℓ: completion logit lost per unit of log(length / median) (duration bias: KuaiRand, D2Q)."""
    satisfaction_memory: float = 0.8
    """μ: S ← μ·S + e per request (RecSim's memory-discounted satisfaction)."""
    satisfaction_start: float = 1.0
    """S at the start of every session."""
    experience_interaction_weight: tuple[float, float, float] = (0.1, 0.04, 0.02)
    """κ_i,g: experience per interaction on the page. Low-activity users are the ones interactions please."""
    fatigue_per_minute: tuple[float, float, float] = (0.3, 1.0, 2.5)
    """φ_g: fatigue per minute watched in the session. Heavy users are the ones long watch tires."""
    leave_bias: float = -3.0
    """h₀: leave logit of a fresh, neutral session."""
    leave_fatigue_slope: float = 0.15
    """h_F: leave logit per unit of fatigue (φ_g × session minutes watched)."""
    leave_satisfaction_slope: float = 1.0
    """h_S: leave logit lost per unit of satisfaction S."""
    satiation_weight: float = 0.05
    """η: affinity lost per recently completed video of the same topic in the session."""
    satiation_decay: float = 0.8
    """How much of the satiation of a topic survives one request."""
    n_creators: int = 200
    """Creators in the catalog (Zipf-sized: a few make many videos)."""
    follow_affinity_boost: float = 0.5
    """ψ: affinity gained for every video of a creator the user follows."""
    return_satisfaction_slope: float = 0.5
    """κ_S: next-day return logit per unit of the day's mean satisfaction above `satisfaction_reference`."""
    satisfaction_reference: float = 1.0
    """S_ref: mean satisfaction at which the satisfaction term is zero."""
    return_interaction_slope: tuple[float, float, float] = (2.5, 0.8, 0.2)
    """κ_I,g: next-day return logit per unit of the concave interaction term (the mean over the five
    interactions of log(1 + rate/ref) − log 2). Low-activity users are the ones interactions retain."""
    interaction_reference: tuple[float, float, float, float, float] = (1.8, 0.6, 0.13, 0.22, 0.13)
    """ref_j: interactions per request (click, like, follow, comment, share) at which the term is zero."""
    overconsumption_minutes: tuple[float, float, float] = (25.0, 45.0, 60.0)
    """W_g: minutes watched per day above which the user is over-consuming."""
    overconsumption_slope: tuple[float, float, float] = (0.5, 0.8, 1.5)
    """κ_O,g: return logit lost per unit of relative excess (W_day / W_g − 1)⁺."""
    skip_completion: float = 0.2
    """A video watched below this completion counts as skipped (observable proxy)."""
    proxy_decay: float = 0.5
    """Weight of the newest page in the observed last-pages completion and skip rates (EMA)."""
    common_random_numbers: bool = False
    """Draw every random number from a counter keyed by (seed, user, day, session, request of the session,
    stream) instead of the simulator's generator: user k of seed s is the same person, with the same
    retrieval pools, completion noise, response, leave and return uniforms at the same point, whatever the
    policy and whichever row serves them. Two policies evaluated on the same seed then differ only
    through what they did (paired evaluation, `training.envs.evaluate.compare_policies`). Combines
    with `max_users`; ~1.5× slower per step, so off for training."""
    paired_rows: bool = False
    """Batched training option (off by default): rows 2k and 2k+1 form a pair whose j-th episodes
    simulate the same user with common random numbers (as `common_random_numbers`, keyed by pair and
    episode index instead of user id), so that two policies played on a pair differ in outcome only
    through what they did (antithetic, common-random-number episode pairs:
    `LearnerConfig.advantage = "episode_pairs"`). Pair members finish episodes at different times;
    the pairing is by episode index within the row, not by step. Needs an even N and no `max_users`."""

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError(f"RankConfig.days: must be >= 1, got {self.days}")
        k0, k1, k2 = self.keep
        if not (self.retrieval_size >= k0 >= k1 >= k2 >= 1):
            raise ValueError(
                f"RankConfig.keep: need retrieval_size ({self.retrieval_size}) >= pre-rank >= rank >= re-rank >= 1, "
                f"got {self.keep}"
            )
        for name in (
            "experience_interaction_weight",
            "fatigue_per_minute",
            "return_interaction_slope",
            "overconsumption_minutes",
            "overconsumption_slope",
        ):
            value = getattr(self, name)
            if len(value) != 3 or min(value) < 0:
                raise ValueError(f"RankConfig.{name}: expected 3 non-negative values (low, medium, high), got {value}")
        if min(self.overconsumption_minutes) <= 0:
            raise ValueError(
                f"RankConfig.overconsumption_minutes: each must be > 0, got {self.overconsumption_minutes}"
            )
        if len(self.interaction_reference) != 5 or min(self.interaction_reference) <= 0:
            raise ValueError(
                f"RankConfig.interaction_reference: expected 5 positive rates (click..share), got {self.interaction_reference}"
            )
        for name in ("satisfaction_memory", "satiation_decay", "proxy_decay"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"RankConfig.{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.n_creators < 1:
            raise ValueError(f"RankConfig.n_creators: must be >= 1, got {self.n_creators}")


def split_stage_actions(actions: FloatArray) -> dict[str, FloatArray]:
    """(N, 18) single-view actions → {stage: (N, 6)}."""
    return {stage: actions[:, i * N_SIGNALS : (i + 1) * N_SIGNALS] for i, stage in enumerate(RANK_STAGES)}


def join_stage_actions(actions: dict[str, Any]) -> FloatArray:
    """{stage: (N, 6)} multi-view actions → (N, 18), stage order of the spec."""
    missing = [s for s in RANK_STAGES if s not in actions]
    if missing:
        raise ValueError(f"rank actions: missing stages {missing}; expected one (N, 6) array per stage {RANK_STAGES}")
    parts = [np.asarray(actions[s], dtype=np.float32).reshape(-1, N_SIGNALS) for s in RANK_STAGES]
    return np.concatenate(parts, axis=1)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_STREAM_POOL, _STREAM_EVENTS, _STREAM_RETURN, _STREAM_LEAVE = 1, 3, 4, 5


def _splitmix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser, elementwise on uint64 (wraps mod 2⁶⁴): a counter → well-mixed bits."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
    out: npt.NDArray[np.uint64] = x ^ (x >> np.uint64(31))
    return out


def _keyed(*parts: Any) -> npt.NDArray[np.uint64]:
    """One 64-bit key per row from integer parts (arrays (N,) or scalars), order-sensitive."""
    h = np.zeros(np.broadcast(*[np.asarray(p) for p in parts]).shape, np.uint64)
    for part in parts:
        h = _splitmix64(h ^ np.asarray(part).astype(np.uint64))
    return h


def _keyed_uniform(keys: npt.NDArray[np.uint64], count: int) -> npt.NDArray[np.float64]:
    """(N, count) uniforms in (0, 1), a deterministic function of each row's key (counter-based)."""
    bits = _splitmix64(keys[:, None] ^ (np.arange(count, dtype=np.uint64) * _GOLDEN)[None, :])
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def _item_uniforms(keys: npt.NDArray[np.uint64], items: IntArray, count: int) -> npt.NDArray[np.float64]:
    """(N, k, count) uniforms in (0, 1) keyed by each row's key and the catalog id of each shown item:
    the same video shown to the same user at the same request draws the same numbers wherever it sits
    on the page, so two policies whose pages share videos share those videos' luck."""
    base = keys[:, None] ^ (items.astype(np.uint64) * _GOLDEN)
    with np.errstate(over="ignore"):
        salt = (np.arange(1, count + 1, dtype=np.uint64) * _MIX1)[None, None, :]
    bits = _splitmix64(_splitmix64(base)[:, :, None] ^ salt)
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


class _KeyedRandomness:
    """Counter-based random numbers for `common_random_numbers` and `paired_rows`.

    Every row holds a user key; a random number is a function of (user key,
    day, session of the day, request of the session, stream) — or (user key,
    day) for the return draw — so the same user sees the same numbers at the
    same point of their life whatever the policy did before and whichever row
    serves them. The user key is the user
    id (common random numbers across policies and runs) or, with paired rows,
    the pair and the row's episode index (both rows of a pair play the same users).
    """

    def __init__(self, n: int, seed: int, paired: bool) -> None:
        if paired and n % 2:
            raise ValueError(f"RankConfig.paired_rows: needs an even number of rows, got {n}")
        self.paired = paired
        self.pair = np.arange(n, dtype=np.int64) // 2
        self.episode = np.zeros(n, np.int64)
        self.user_key = np.zeros(n, np.uint64)
        self.restart(seed)

    def restart(self, seed: int) -> None:
        """A new seed and every row before its first episode (`reset`)."""
        self.seed = seed
        self.episode[:] = -1

    def start_user(self, row: int, user_id: int) -> np.random.Generator:
        """Key row `row` to its next user and return the generator of that user's attributes."""
        self.episode[row] += 1
        by_pair = _keyed(self.seed, self.pair[row], self.episode[row], 0)
        key = by_pair if self.paired else _keyed(self.seed, user_id, 1)
        self.user_key[row] = key
        return np.random.default_rng(int(key))

    def keys(self, stream: int, users: UserRows, rows: IntArray | slice = ALL_ROWS) -> npt.NDArray[np.uint64]:
        """One key per row for the row's current request, named by (day, session of the day, depth): the
        same point of a user's life under two policies draws the same numbers even after their
        sessions have had different lengths."""
        return _keyed(
            self.user_key[rows], users.day[rows], users.session_index[rows], users.session_depth[rows], stream
        )


class _KeyedReturnDraws:
    """Stands in for the generator in `UserRows._next_day` under keyed randomness: the k-th call draws,
    for each row, the uniform of "does the user come back on day (day₀ + 1 + k)" keyed by the row's
    user and that day — the same number for the same user deciding the same day."""

    def __init__(self, keyed: _KeyedRandomness, rows: IntArray, day: IntArray) -> None:
        self.keyed, self.rows, self.day, self.calls = keyed, rows, day, 0

    def random(self, size: int) -> npt.NDArray[np.float64]:
        assert size == self.rows.shape[0], "UserRows._next_day draws one uniform per row and loop step"
        keys = _keyed(self.keyed.user_key[self.rows], self.day + 1 + self.calls, _STREAM_RETURN)
        self.calls += 1
        return _keyed_uniform(keys, 1)[:, 0]


@dataclass(frozen=True)
class RankCatalog:
    """What `rank` adds to the shared catalog: each video's creator and main topic."""

    creator: IntArray
    """(M,) creator of each video; creators are Zipf-sized (p ∝ 1/rank^0.8)."""
    topic: IntArray
    """(M,) main topic of each video: the largest coordinate of its topic vector (satiation is per topic)."""


def make_rank_catalog(cfg: RankConfig, catalog: Catalog, rng: np.random.Generator) -> tuple[Catalog, RankCatalog]:
    """The shared catalog with `rank`'s duration bias on completion, and the creators and main topics."""
    log_rel_length = np.log(catalog.video_length / cfg.world.video_length_median_s)
    bias = catalog.video_logit_bias.copy()
    bias[0] -= (cfg.completion_length_slope * log_rel_length).astype(np.float32)
    popularity = 1.0 / np.arange(1, cfg.n_creators + 1) ** 0.8
    creator = rng.choice(cfg.n_creators, size=bias.shape[1], p=popularity / popularity.sum())
    topic = np.argmax(catalog.video_topic, axis=1)
    return dataclasses.replace(catalog, video_logit_bias=bias), RankCatalog(creator.astype(np.int64), topic)


class RankUserRows(UserRows):
    """`UserRows` with the `rank` session and return dynamics (module docstring).

    Adds per row: fatigue (minutes watched in the session × φ_g), satiation per
    topic, followed creators, the observable last-pages proxies, and the day's
    totals the return model reads. Session ends come from the leave hazard,
    not from satisfaction running out.
    """

    def __init__(
        self,
        rank_cfg: RankConfig,
        catalog: Catalog,
        extra: RankCatalog,
        n: int,
        max_users: int | None,
        autoreset: bool,
        keyed: _KeyedRandomness | None,
    ) -> None:
        self.rank_cfg, self.extra, self.keyed = rank_cfg, extra, keyed
        super().__init__(rank_cfg.world, catalog, n, rank_cfg.days, max_users, autoreset)

    def __post_init__(self) -> None:
        super().__post_init__()
        n, rc = self.n, self.rank_cfg
        self.session_watch_s = np.zeros(n, np.float32)
        self.session_start = np.zeros(n, np.float64)
        self.completion_ema = np.zeros(n, np.float32)
        self.skip_ema = np.zeros(n, np.float32)
        self.satiation = np.zeros((n, self.cfg.topic_dim), np.float32)
        self.followed = np.zeros((n, rc.n_creators), np.float32)
        self.day_watch_s = np.zeros(n, np.float32)
        self.day_interactions = np.zeros((n, 5), np.float32)
        self.day_satisfaction = np.zeros(n, np.float32)
        self._group_param = {
            name: np.asarray(getattr(rc, name), np.float32)
            for name in (
                "experience_interaction_weight",
                "fatigue_per_minute",
                "return_interaction_slope",
                "overconsumption_minutes",
                "overconsumption_slope",
            )
        }

    # -- lifecycle -----------------------------------------------------------
    def spawn(self, rows: IntArray, rng: np.random.Generator) -> None:
        if self.max_users is not None:
            rows = rows[: max(0, self.max_users - self.users_drawn)]
        if self.keyed is None:
            super().spawn(rows, rng)
        else:  # one user at a time, each from its own keyed generator
            for row in rows:
                super().spawn(np.array([row]), self.keyed.start_user(int(row), self.users_drawn))
        self.followed[rows] = 0.0

    def _start_day(self, rows: IntArray) -> None:
        self.day_watch_s[rows] = 0.0
        self.day_interactions[rows] = 0.0
        self.day_satisfaction[rows] = 0.0
        super()._start_day(rows)

    def _start_session(self, rows: IntArray) -> None:
        super()._start_session(rows)
        self.satisfaction[rows] = self.rank_cfg.satisfaction_start
        self.session_watch_s[rows] = 0.0
        self.session_start[rows] = self.clock[rows]
        # A new session has no last pages: the proxies start at the population's typical values.
        self.completion_ema[rows] = RANK_SESSION_SIGNAL_DEFAULTS[0]
        self.skip_ema[rows] = RANK_SESSION_SIGNAL_DEFAULTS[1]
        self.satiation[rows] = 0.0

    # -- what the policy may see ---------------------------------------------
    def session_signals(self, rows: IntArray | slice = ALL_ROWS) -> FloatArray:
        """(N, 3) observable proxies of the hidden satisfaction: last pages' completion and skip rate
        (EMAs), minutes since the session started."""
        minutes = (self.clock[rows] - self.session_start[rows]) / 60.0
        out: FloatArray = np.stack([self.completion_ema[rows], self.skip_ema[rows], minutes.astype(np.float32)], axis=1)
        return out

    def affinity_offset(self, items: IntArray, rows: IntArray | slice = ALL_ROWS) -> FloatArray:
        """(N, R) affinity change of `items` for each row's user: −η·satiation[topic] + ψ·followed[creator]."""
        n = items.shape[0]
        rc, t, c = self.rank_cfg, self.satiation.shape[1], self.followed.shape[1]
        sat = np.take(self.satiation[rows], self.extra.topic[items] + (np.arange(n) * t)[:, None])
        fol = np.take(self.followed[rows], self.extra.creator[items] + (np.arange(n) * c)[:, None])
        out: FloatArray = (rc.follow_affinity_boost * fol - rc.satiation_weight * sat).astype(np.float32)
        return out

    # -- one page --------------------------------------------------------------
    def after_page(
        self,
        items: IntArray,
        completion: FloatArray,
        watch_s: FloatArray,
        counts: FloatArray,
        duration_s: FloatArray,
        rates: FloatArray,
        leave_uniform: npt.NDArray[np.float64],
        rng: Any,
    ) -> tuple[BoolArray, BoolArray, FloatArray]:
        """Apply one served page to every active row; returns (session_end, done, experience e).

        items (N, k) shown, completion (N, k), watch_s (N,), counts (N, 6) click..share, hate;
        leave_uniform (N,) the uniform the leave hazard is compared with.
        """
        rc, act = self.rank_cfg, self.active
        n, k = items.shape
        g = self.group
        interactions = counts[:, :5].sum(axis=1)
        experience = (
            self.cfg.experience_completion_weight * (completion.mean(axis=1) - self.cfg.completion_reference)
            + self._group_param["experience_interaction_weight"][g] * interactions
            - self.cfg.experience_hate_weight * counts[:, 5]
        ).astype(np.float32)
        self.record_request(duration_s, rates, np.zeros((n, 2), np.float32))
        mask = act.astype(np.float32)
        # Hidden satisfaction (RecSim): a memory-discounted sum of the pages' experience.
        self.satisfaction = np.where(act, rc.satisfaction_memory * self.satisfaction + experience, self.satisfaction)
        self.session_watch_s += watch_s * mask
        self.day_watch_s += watch_s * mask
        self.day_interactions += counts[:, :5] * mask[:, None]
        self.day_satisfaction += self.satisfaction * mask
        # Observable proxies of S: what a logging system sees of the last pages.
        w = rc.proxy_decay
        skipped = (completion < rc.skip_completion).mean(axis=1)
        self.completion_ema += mask * w * (completion.mean(axis=1) - self.completion_ema)
        self.skip_ema += mask * w * (skipped - self.skip_ema)
        # Within-session satiation per topic: the completed videos of each topic, decaying per request.
        t = self.satiation.shape[1]
        flat = (self.extra.topic[items] + (np.arange(n) * t)[:, None]).ravel()
        added = np.bincount(flat, weights=(completion * mask[:, None]).ravel(), minlength=n * t)
        self.satiation *= rc.satiation_decay
        self.satiation += added.reshape(n, t).astype(np.float32)
        # Follows raise the affinity with the creator from now on (counts[:, 2] are follows).
        follows = counts[:, 2] > 0
        if follows.any():
            self._record_follows(items, follows & act)
        # KuaiSim's leave module as a hazard: fatigue pushes the user out, satisfaction holds them.
        fatigue = self._group_param["fatigue_per_minute"][g] * self.session_watch_s / 60.0
        logit = rc.leave_bias + rc.leave_fatigue_slope * fatigue - rc.leave_satisfaction_slope * self.satisfaction
        leave = leave_uniform < 1.0 / (1.0 + np.exp(-logit))
        session_end = act & (leave | (self.session_depth >= self.cfg.max_session_requests))
        session_end, done = self.close_sessions(session_end, rng)
        return session_end, done, experience * mask

    def _record_follows(self, items: IntArray, rows_with_follow: BoolArray) -> None:
        """Mark the creators of the followed videos (the page's follow events are counted, not located:
        ours: the page's most-followable video's creator is the one followed)."""
        rows = np.flatnonzero(rows_with_follow)
        self.followed[rows, self.extra.creator[items[rows, 0]]] = 1.0

    def _next_day(self, rows: IntArray, rng: np.random.Generator) -> IntArray:
        if self.keyed is not None:
            rng = _KeyedReturnDraws(self.keyed, rows, self.day[rows].copy())  # type: ignore[assignment]
        return super()._next_day(rows, rng)

    def return_probability(self, rows: IntArray) -> npt.NDArray[np.float64]:
        """KuaiSim's return module, ours in form: the day's mean satisfaction, a concave reward for balanced
        interactions (mean over the five of log(1 + rate/ref) − log 2) and a penalty for over-consumption."""
        rc, g = self.rank_cfg, self.group[rows]
        requests = np.maximum(self.day_requests[rows], 1)[:, None]
        rates = self.day_interactions[rows] / requests
        concave = np.log1p(rates / np.asarray(rc.interaction_reference)).mean(axis=1) - np.log(2.0)
        mean_s = self.day_satisfaction[rows] / requests[:, 0]
        excess = np.maximum(self.day_watch_s[rows] / 60.0 / self._group_param["overconsumption_minutes"][g] - 1.0, 0.0)
        logit = (
            np.asarray(self.cfg.return_logit)[g]
            + rc.return_satisfaction_slope * (mean_s - rc.satisfaction_reference)
            + self._group_param["return_interaction_slope"][g] * concave
            - self._group_param["overconsumption_slope"][g] * excess
        )
        out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
        return out


def _take_rows(values: IntArray, positions: IntArray) -> IntArray:
    """Row-wise gather values[n, positions[n, i]] (np.take on flat indices: faster than take_along_axis)."""
    n, r = values.shape
    out: IntArray = np.take(values, positions + (np.arange(n) * r)[:, None])
    return out


class BatchedRankSim(BatchedUserSim):
    """N users of the `rank` problem stepped at once.

    reset(seed) → obs (N, 27); step(actions (N, 18)) → (obs, rewards, done, info)
    with rewards = {signal: (N,) float32} for every spec signal (main:
    "watch_time"). See training/envs/__init__.py for the info keys.
    """

    spec = RANK
    config: RankConfig
    users: RankUserRows

    def __init__(
        self,
        n: int,
        config: RankConfig | None = None,
        seed: int = 0,
        *,
        autoreset: bool = True,
        max_users: int | None = None,
    ) -> None:
        super().__init__(n, config or RankConfig(), seed, autoreset=autoreset, max_users=max_users)
        cfg = self.config
        if cfg.paired_rows and max_users is not None:
            raise ValueError("RankConfig.paired_rows: a training option; it does not combine with max_users")
        self._keyed: _KeyedRandomness | None = None
        if cfg.paired_rows or cfg.common_random_numbers:
            self._keyed = _KeyedRandomness(n, seed, paired=cfg.paired_rows)
        self.catalog, self.rank_catalog = make_rank_catalog(cfg, self.catalog, np.random.default_rng([seed, 3]))
        self.users = RankUserRows(cfg, self.catalog, self.rank_catalog, n, max_users, autoreset, self._keyed)
        self._rows = np.arange(n)
        r = cfg.retrieval_size
        self._pool: IntArray = np.zeros((n, r), np.int64)
        # True probabilities of the six predicted signals' responses, signal-major (see world.Catalog).
        self._probs: FloatArray = np.zeros((N_SIGNALS, n, r), np.float32)
        self._predicted0: FloatArray = np.zeros((6, n, r), np.float32)

    # -- episode -----------------------------------------------------------
    def reset(self, seed: int | None = None) -> FloatArray:
        if seed is not None:
            self._seed = seed
        if self._keyed is not None:
            self._keyed.restart(self._seed)
        return super().reset(seed)

    def _draw_requests(self) -> None:
        self._retrieve()

    def _retrieve(self, rows: IntArray | None = None) -> None:
        """Draw the retrieval pool of every row (or of `rows`), its true responses and pre-rank's predictions."""
        cfg, u = self.config, self.users
        size = self.n if rows is None else rows.shape[0]
        sel = ALL_ROWS if rows is None else rows
        if self._keyed is None:
            pool = self.rng.integers(0, cfg.world.n_videos, size=(size, cfg.retrieval_size))
        else:
            draws = _keyed_uniform(self._keyed.keys(_STREAM_POOL, u, sel), cfg.retrieval_size)
            pool = np.minimum((draws * cfg.world.n_videos).astype(np.int64), cfg.world.n_videos - 1)
        probs = response_probabilities(
            cfg.world,
            self.catalog,
            u.video_affinity[sel],
            u.logit_shift[sel],
            pool,
            responses=N_SIGNALS,
            affinity_offset=u.affinity_offset(pool, sel),
        )
        predicted0 = probs[:N_SIGNALS] * np.take(self.catalog.stage_factor[0], pool, axis=1)
        if rows is None:
            self._pool, self._probs, self._predicted0 = pool, probs, predicted0
        else:
            self._pool[rows], self._probs[:, rows], self._predicted0[:, rows] = pool, probs, predicted0

    def _predicted(self, stage: int, positions: IntArray | None) -> FloatArray:
        """Stage `stage`'s predicted signals (6, N, k) at pool positions (N, k); the whole pool when None."""
        if positions is None:
            if stage == 0:
                return self._predicted0
            whole: FloatArray = self._probs * np.take(self.catalog.stage_factor[stage], self._pool, axis=1)
            return whole
        items = _take_rows(self._pool, positions)
        kept: FloatArray = gather_positions(self._probs, positions) * np.take(
            self.catalog.stage_factor[stage], items, axis=1
        )
        return kept

    @property
    def retrieved_items(self) -> IntArray:
        """(N, R) catalog ids of the current request's retrieved candidates (what a ranking stack would send)."""
        return self._pool

    @property
    def retrieved_predictions(self) -> FloatArray:
        """(6, N, R) pre-rank's predicted signals for them, raw units (watch time in seconds), signal-major."""
        return self._predicted0

    # -- observations --------------------------------------------------------
    def _observation(self, predicted: FloatArray, rows: IntArray | slice = ALL_ROWS) -> FloatArray:
        u = self.users
        # (6, N, k) → an (N, k, 6) view: the shared builder reduces over contiguous memory.
        return rank_observation(
            u.group[rows],
            u.recent_rates[rows],
            u.session_depth[rows],
            u.hour_of_day(rows),
            predicted.transpose(1, 2, 0),
            u.session_signals(rows),
        )

    def observe(self, rows: IntArray | slice = ALL_ROWS) -> FloatArray:
        """Single-view observation (N, 27) (or of `rows`): the retrieved pool as pre-rank's model sees it."""
        return self._observation(self._predicted0[:, rows], rows)

    def stage_observations(self, actions: Any) -> dict[str, FloatArray]:
        """Every stage's local observation {stage: (N, 27)} on the pool the upstream stages produce with
        `actions` (N, 18) — what `stage_observation` / `run_stage` show each stage when it acts, for
        joint actions already chosen (e.g. logged ones). A learner that acts stage by stage uses the
        sequential calls (`training.rl.sim.BatchedSimPool.act_in_turn`)."""
        weights = split_stage_actions(self.check_actions(actions, self.n))
        out: dict[str, FloatArray] = {}
        positions: IntArray | None = None
        for stage_index, stage in enumerate(RANK_STAGES):
            out[stage] = self.stage_observation(stage_index, positions)
            positions = self.run_stage(stage_index, weights[stage], positions)
        return out

    def stage_observation(self, stage_index: int, positions: IntArray | None) -> FloatArray:
        """Stage `stage_index`'s local observation (N, 27) on the pool it actually receives: the pool
        positions (N, k) the upstream stages kept (None for pre-rank: the whole retrieved pool)."""
        return self._observation(self._predicted(stage_index, positions))

    # -- one request ---------------------------------------------------------
    def run_stage(self, stage_index: int, weights: FloatArray, positions: IntArray | None) -> IntArray:
        """One cascade stage: score its pool (`positions`, None = retrieved pool) with `weights` (N, 6) and
        keep its top k; returns the kept pool positions (N, k), best first."""
        predicted = self._predicted(stage_index, positions)
        keep = top_k(fusion_scores(weights, predicted.transpose(1, 2, 0)), self.config.keep[stage_index])
        return keep if positions is None else _take_rows(positions, keep)

    def cascade(self, actions: FloatArray) -> IntArray:
        """Run pre-rank → rank → re-rank with `actions` (N, 18); returns the page's pool positions (N, k), best first."""
        positions: IntArray | None = None
        for stage_index in range(len(RANK_STAGES)):
            weights = actions[:, stage_index * N_SIGNALS : (stage_index + 1) * N_SIGNALS]
            positions = self.run_stage(stage_index, weights, positions)
        assert positions is not None
        return positions

    @staticmethod
    def check_actions(actions: Any, n: int) -> FloatArray:
        """(N, 18) weights as float32, clipped to the spec's Box [0, 1] as serving does; a clear error otherwise."""
        a = np.asarray(actions, dtype=np.float32)
        if a.shape != (n, ACTION_SIZE):
            raise ValueError(f"rank actions: expected shape ({n}, {ACTION_SIZE}) (3 stages × 6 weights), got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("rank actions: every weight must be finite")
        return np.clip(a, RANK_BOX.low, RANK_BOX.high)

    def step(self, actions: Any) -> tuple[FloatArray, dict[str, FloatArray], BoolArray, dict[str, Any]]:
        return self.serve_page(self.cascade(self.check_actions(actions, self.n)))

    def serve_page(self, page: IntArray) -> tuple[FloatArray, dict[str, FloatArray], BoolArray, dict[str, Any]]:
        """Show each row the page at pool positions `page` (N, k) (re-rank's kept candidates) and move on."""
        world = self.config.world
        u = self.users
        active = u.active.copy()
        user_id, session_id, day = u.user_id.copy(), u.session_id.copy(), u.day.copy()
        timestamp = u.clock.copy()

        items = _take_rows(self._pool, page)
        # All seven responses of the shown page (hate included, which the pool never needed).
        probs = response_probabilities(
            world, self.catalog, u.video_affinity, u.logit_shift, items, affinity_offset=u.affinity_offset(items)
        )  # (7, N, k)
        lengths = self.catalog.video_length[items]
        k = page.shape[1]
        keyed = self._keyed
        if keyed is None:
            noise = self.rng.standard_normal((self.n, k), dtype=np.float32)
            uniforms = self.rng.random((6, self.n, k), dtype=np.float32)
            leave_uniform = self.rng.random(self.n)
        else:
            draws = _item_uniforms(keyed.keys(_STREAM_EVENTS, u), items, 8)  # (N, k, 8)
            # Box–Muller on two of them for the completion noise; six for click..share, hate.
            noise = np.sqrt(-2.0 * np.log(draws[:, :, 0])) * np.cos(2.0 * np.pi * draws[:, :, 1])
            noise = noise.astype(np.float32)
            uniforms = draws[:, :, 2:].transpose(2, 0, 1).astype(np.float32)
            leave_uniform = _keyed_uniform(keyed.keys(_STREAM_LEAVE, u), 1)[:, 0]
        completion = np.clip(probs[0] + world.completion_noise * noise, 0.0, 1.0)
        events = uniforms < probs[1:]  # click..share, hate
        watch = (lengths * completion).sum(axis=1)
        counts = events.sum(axis=2, dtype=np.float32).T  # (N, 6): click, like, follow, comment, share, hate
        mask = active.astype(np.float32)
        rewards: dict[str, FloatArray] = {"watch_time": watch * mask}
        for j, name in enumerate(PREDICTED_SIGNALS[1:]):
            rewards[name] = counts[:, j] * mask
        hate = counts[:, 5] * mask
        rates = np.stack([rewards[s] for s in PREDICTED_SIGNALS], axis=1)
        rates[:, 0] /= 60.0
        duration = watch + k * world.seconds_between_videos
        session_end, done, experience = u.after_page(
            items, completion, watch, counts, duration, rates, leave_uniform, self.rng
        )
        self._retrieve()
        obs = self.observe()
        final_obs = obs.copy() if done.any() else None
        respawned = u.respawn(done, self.rng)
        if respawned.size:
            self._retrieve(respawned)
            obs[respawned] = self.observe(respawned)
        info: dict[str, Any] = {
            "signals": rewards,
            "hate": hate,
            "experience": experience,
            "session_end": session_end,
            "active": active,
            "user_id": user_id,
            "session_id": session_id,
            "day": day,
            "timestamp": timestamp,
            "page": items,
        }
        if final_obs is not None:
            # Rows that just finished were re-spawned: their terminal observation is kept here.
            info["final_observation"] = final_obs
        return obs, rewards, done, info

    @property
    def all_done(self) -> bool:
        """True once every row is inactive (only with `max_users` or autoreset=False)."""
        return not bool(self.users.active.any())


# ---------------------------------------------------------------------------
# Gymnasium and PettingZoo views (one user: the batched simulator with N = 1)
# ---------------------------------------------------------------------------
def _obs_space() -> gym.spaces.Box:
    return observation_box(RANK.observation_size)


class RankEnv(gym.Env[np.ndarray, np.ndarray]):
    """Single-agent `rank`: one user for `config.days` days; action = 18 fusion weights."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, config: RankConfig | None = None, seed: int = 0) -> None:
        self.config = config or RankConfig()
        self.observation_space = _obs_space()
        self.action_space = gym.spaces.Box(RANK_BOX.low, RANK_BOX.high, shape=(ACTION_SIZE,), dtype=np.float32)
        self._episode_seed = EpisodeSeeds(seed)
        self.sim = BatchedRankSim(1, self.config, seed, autoreset=False)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs = self.sim.reset(self._episode_seed(seed))
        return obs[0], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, rewards, done, info = self.sim.step(np.asarray(action, dtype=np.float32).reshape(1, ACTION_SIZE))
        signals = {k: float(v[0]) for k, v in rewards.items()}
        out_info = {"signals": signals, "hate": float(info["hate"][0]), "session_end": bool(info["session_end"][0])}
        # The horizon is a time limit, not a terminal state of the user: truncated.
        return obs[0], signals[RANK.main_signal], False, bool(done[0]), out_info


class RankSequentialEnv(AECEnv[str, np.ndarray, np.ndarray]):  # type: ignore[misc]
    """Sequential multi-agent `rank` (PettingZoo AEC): pre_rank, then rank, then re_rank act on each request.

    Each stage observes the pool the upstream stages actually produced with
    their real actions (RecFlow's multi-stage cascade: a stage sees only what
    the stage before it kept), then keeps its top k; after re_rank the page is
    shown and every agent receives the team reward (the page's watch time).
    The user's horizon ending truncates all three agents.
    """

    metadata: dict[str, Any] = {"render_modes": [], "name": "troupe_rank_sequential_v1", "is_parallelizable": False}

    def __init__(self, config: RankConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        self.config = config or RankConfig()
        self.possible_agents = list(RANK_STAGES)
        self.agents: list[str] = []
        self._obs_space = _obs_space()
        self._act_space = {
            a.name: gym.spaces.Box(a.action.low, a.action.high, shape=(a.action.size,), dtype=np.float32)  # type: ignore[union-attr]
            for a in RANK.agents
        }
        self._episode_seed = EpisodeSeeds(seed)
        self.sim = BatchedRankSim(1, self.config, seed, autoreset=False)
        self._stage = 0
        self._positions: IntArray | None = None
        self._seen: dict[str, np.ndarray] = {}

    def observation_space(self, agent: str) -> gym.spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> gym.spaces.Box:
        return self._act_space[agent]

    def observe(self, agent: str) -> np.ndarray:
        """The acting stage's observation of its real pool; any other agent's last observation."""
        if agent == self.possible_agents[self._stage] and self.agents:
            self._seen[agent] = self.sim.stage_observation(self._stage, self._positions)[0]
        return self._seen.get(agent, np.zeros(RANK.observation_size, np.float32))

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        self.sim.reset(self._episode_seed(seed))
        self.agents = list(self.possible_agents)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos: dict[str, dict[str, Any]] = {a: {} for a in self.agents}
        self._stage, self._positions, self._seen = 0, None, {}
        self.agent_selection = self.agents[0]

    def step(self, action: np.ndarray | None) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        weights = np.asarray(action, dtype=np.float32).reshape(1, N_SIGNALS)
        if not np.isfinite(weights).all():
            raise ValueError(f"rank {agent}: every weight must be finite")
        weights = np.clip(weights, RANK_BOX.low, RANK_BOX.high)
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        self._positions = self.sim.run_stage(self._stage, weights, self._positions)
        if self._stage < len(RANK_STAGES) - 1:
            self._stage += 1
        else:
            _, rewards, done, info = self.sim.serve_page(self._positions)
            signals = {k: float(v[0]) for k, v in rewards.items()}
            for a in self.agents:
                self.rewards[a] = signals[RANK.main_signal]
                self.infos[a] = {"signals": signals, "session_end": bool(info["session_end"][0])}
                self.truncations[a] = bool(done[0])
            self._stage, self._positions = 0, None
        self.agent_selection = self.possible_agents[self._stage]
        self._accumulate_rewards()
