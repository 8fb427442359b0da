"""`rank` — the multi-stage short-video feed.

Per request: retrieval draws `retrieval_size` candidates at random from the
catalog; pre-rank, rank and re-rank each see the candidates through their own
model (predicted signals = true expected signals × a per-item, per-stage error
that shrinks stage by stage), score them with their fusion weights
(`models.observations.fusion_scores`, the function serving uses) and keep
their top k (`models.observations.top_k`). Re-rank's top k is the page the
user sees; its realised signals are summed into the request's reward vector.

Views:
* single  (`RankEnv`, Gymnasium): one action = 18 weights (3 stages × 6, spec order);
          the observation is built on the retrieved pool as pre-rank's model sees it.
* multi   (`RankParallelEnv`, PettingZoo): agents pre_rank / rank / re_rank, each a
          Box(6) acting on its own local observation; shared team reward.
          Departure, marked: a ParallelEnv needs every observation before any
          agent acts, but a stage's pool depends on the upstream stages' actions
          of the same request. The local observation of rank / re-rank is built
          on the pool that would reach the stage if the upstream stages played the
          spec's default weights (a "preview"); the page itself is ranked with the
          agents' real actions. With default upstream weights the observation is
          exactly what serving computes from the stage's real pool.
* batched (`BatchedRankSim`): N users at once, numpy, the interface the
          learners and benchmarks use (see training/envs/__init__.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from pettingzoo import ParallelEnv

from models.observations import fusion_scores, rank_observation, top_k
from models.problems import PREDICTED_SIGNALS, RANK, RANK_DEFAULT_STAGE_WEIGHTS, RANK_STAGES, BoxAction
from training.envs.world import (
    ALL_ROWS,
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

N_SIGNALS = len(PREDICTED_SIGNALS)
RANK_BOX = cast(BoxAction, RANK.action)
ACTION_SIZE = RANK.action.flat_size  # 18


@dataclass(frozen=True)
class RankConfig:
    """Parameters of the `rank` simulator (the world's live in `world`)."""

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
    paired_rows: bool = False
    """Batched training option (off by default): rows 2k and 2k+1 form a pair whose j-th episodes
    simulate the same user with common random numbers — the same user draw, the same retrieval
    pools, completion noise and response uniforms at the same request index of the episode, and the
    same next-day return uniform for the same day — so that two policies played on a pair differ in
    outcome only through what they did (antithetic, common-random-number episode pairs:
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
_STREAM_POOL, _STREAM_COMPLETION, _STREAM_EVENTS, _STREAM_RETURN = 1, 2, 3, 4


def _splitmix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser, elementwise on uint64 (wraps mod 2⁶⁴): a counter → well-mixed bits."""
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


def _keyed_normal(keys: npt.NDArray[np.uint64], count: int) -> npt.NDArray[np.float64]:
    """(N, count) standard normals (Box–Muller on two keyed uniforms per value)."""
    u = _keyed_uniform(keys, 2 * count)
    out: npt.NDArray[np.float64] = np.sqrt(-2.0 * np.log(u[:, :count])) * np.cos(2.0 * np.pi * u[:, count:])
    return out


class _PairedRows:
    """The per-row counters of `RankConfig.paired_rows`: pair id, episode index within the row, request
    index within the episode. Random numbers are keyed by (seed, pair, episode, request or day, stream),
    so both rows of a pair see the same ones for the same episode and request whatever their timing."""

    def __init__(self, n: int, seed: int) -> None:
        if n % 2:
            raise ValueError(f"RankConfig.paired_rows: needs an even number of rows, got {n}")
        self.pair = np.arange(n, dtype=np.int64) // 2
        self.episode = np.zeros(n, np.int64)
        self.request = np.zeros(n, np.int64)
        self.restart(seed)

    def restart(self, seed: int) -> None:
        """A new seed and every row back at episode 0, request 0 (`reset`)."""
        self.seed = seed
        self.episode[:] = 0
        self.request[:] = 0

    def keys(self, stream: int, rows: IntArray | slice = ALL_ROWS) -> npt.NDArray[np.uint64]:
        return _keyed(self.seed, self.pair[rows], self.episode[rows], self.request[rows], stream)

    def user_rng(self, row: int) -> np.random.Generator:
        """The generator of the row's current episode's user (same for both rows of a pair)."""
        return np.random.default_rng([self.seed, int(self.pair[row]), int(self.episode[row]), 0])


class _KeyedReturnDraws:
    """Stands in for the generator in `UserRows._next_day` under `paired_rows`: the k-th call draws,
    for each row, the uniform of "does the user come back on day (day₀ + 1 + k)" keyed by the row's
    pair, episode and that day — the same number for both rows of a pair deciding the same day."""

    def __init__(self, paired: _PairedRows, rows: IntArray, day: IntArray) -> None:
        self.paired, self.rows, self.day, self.calls = paired, rows, day, 0

    def random(self, size: int) -> npt.NDArray[np.float64]:
        assert size == self.rows.shape[0], "UserRows._next_day draws one uniform per row and loop step"
        p = self.paired
        keys = _keyed(p.seed, p.pair[self.rows], p.episode[self.rows], self.day + 1 + self.calls, _STREAM_RETURN)
        self.calls += 1
        return _keyed_uniform(keys, 1)[:, 0]


class _PairedUserRows(UserRows):
    """`UserRows` whose next-day return draws are keyed per pair (`RankConfig.paired_rows`)."""

    paired: _PairedRows | None = None

    def _next_day(self, rows: IntArray, rng: np.random.Generator) -> IntArray:
        assert self.paired is not None
        draws = _KeyedReturnDraws(self.paired, rows, self.day[rows].copy())
        return super()._next_day(rows, draws)  # type: ignore[arg-type]


def _take_rows(values: IntArray, positions: IntArray) -> IntArray:
    """Row-wise gather values[n, positions[n, i]] (np.take on flat indices: faster than take_along_axis)."""
    n, r = values.shape
    out: IntArray = np.take(values, positions + (np.arange(n) * r)[:, None])
    return out


class BatchedRankSim(BatchedUserSim):
    """N users of the `rank` problem stepped at once.

    reset(seed) → obs (N, 24); step(actions (N, 18)) → (obs, rewards, done, info)
    with rewards = {signal: (N,) float32} for every spec signal (main:
    "watch_time"). See training/envs/__init__.py for the info keys.
    """

    spec = RANK
    config: RankConfig

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
        self._paired: _PairedRows | None = None
        if self.config.paired_rows:
            if max_users is not None:
                raise ValueError("RankConfig.paired_rows: a training option; it does not combine with max_users")
            self._paired = _PairedRows(n, seed)
            self.users = _PairedUserRows(self.config.world, self.catalog, n, self.config.days, max_users, autoreset)
            self.users.paired = self._paired
        self._rows = np.arange(n)
        self._default_stage_weights = np.broadcast_to(
            np.asarray(RANK_DEFAULT_STAGE_WEIGHTS, dtype=np.float32), (n, N_SIGNALS)
        )
        r = self.config.retrieval_size
        self._pool: IntArray = np.zeros((n, r), np.int64)
        # True probabilities of the six predicted signals' responses, signal-major (see world.Catalog).
        self._probs: FloatArray = np.zeros((N_SIGNALS, n, r), np.float32)
        self._predicted0: FloatArray = np.zeros((6, n, r), np.float32)

    # -- episode -----------------------------------------------------------
    def reset(self, seed: int | None = None) -> FloatArray:
        if self._paired is None:
            return super().reset(seed)
        if seed is not None:
            self._seed = seed
        self.rng = np.random.default_rng(self._seed)
        paired = self._paired
        paired.restart(self._seed)
        self.users.reset(self.rng)
        for row in range(self.n):  # each pair's first user, drawn from the pair's own generator
            self.users.spawn(np.array([row]), paired.user_rng(row))
        self._draw_requests()
        return self.observe()

    def _draw_requests(self) -> None:
        self._retrieve()

    def _retrieve(self, rows: IntArray | None = None) -> None:
        """Draw the retrieval pool of every row (or of `rows`), its true responses and pre-rank's predictions."""
        cfg, u = self.config, self.users
        size = self.n if rows is None else rows.shape[0]
        sel = ALL_ROWS if rows is None else rows
        if self._paired is None:
            pool = self.rng.integers(0, cfg.world.n_videos, size=(size, cfg.retrieval_size))
        else:
            draws = _keyed_uniform(self._paired.keys(_STREAM_POOL, sel), cfg.retrieval_size)
            pool = np.minimum((draws * cfg.world.n_videos).astype(np.int64), cfg.world.n_videos - 1)
        probs = response_probabilities(
            cfg.world, self.catalog, u.video_affinity[sel], u.logit_shift[sel], pool, responses=N_SIGNALS
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
        )

    def observe(self, rows: IntArray | slice = ALL_ROWS) -> FloatArray:
        """Single-view observation (N, 24) (or of `rows`): the retrieved pool as pre-rank's model sees it."""
        return self._observation(self._predicted0[:, rows], rows)

    def stage_observations(self) -> dict[str, FloatArray]:
        """Multi-view local observations {stage: (N, 24)}, each on its stage's preview pool (module docstring)."""
        out: dict[str, FloatArray] = {}
        positions: IntArray | None = None
        for stage_index, stage in enumerate(RANK_STAGES):
            predicted = self._predicted(stage_index, positions)
            out[stage] = self._observation(predicted)
            scores = fusion_scores(self._default_stage_weights, predicted.transpose(1, 2, 0))
            keep = top_k(scores, self.config.keep[stage_index])
            positions = keep if positions is None else _take_rows(positions, keep)
        return out

    # -- one request ---------------------------------------------------------
    def cascade(self, actions: FloatArray) -> IntArray:
        """Run pre-rank → rank → re-rank with `actions` (N, 18); returns the page's pool positions (N, k), best first."""
        positions: IntArray | None = None
        for stage_index in range(len(RANK_STAGES)):
            weights = actions[:, stage_index * N_SIGNALS : (stage_index + 1) * N_SIGNALS]
            predicted = self._predicted(stage_index, positions)
            keep = top_k(fusion_scores(weights, predicted.transpose(1, 2, 0)), self.config.keep[stage_index])
            positions = keep if positions is None else _take_rows(positions, keep)
        assert positions is not None
        return positions

    def step(self, actions: Any) -> tuple[FloatArray, dict[str, FloatArray], BoolArray, dict[str, Any]]:
        a = np.asarray(actions, dtype=np.float32)
        if a.shape != (self.n, ACTION_SIZE):
            raise ValueError(
                f"rank actions: expected shape ({self.n}, {ACTION_SIZE}) (3 stages × 6 weights), got {a.shape}"
            )
        if not np.isfinite(a).all():
            raise ValueError("rank actions: every weight must be finite")
        # Out-of-bounds weights are clipped to the spec's Box [0, 1], as serving does.
        a = np.clip(a, RANK_BOX.low, RANK_BOX.high)
        world = self.config.world
        u = self.users
        active = u.active.copy()
        user_id, session_id, day = u.user_id.copy(), u.session_id.copy(), u.day.copy()
        timestamp = u.clock.copy()

        page = self.cascade(a)  # (N, k)
        items = _take_rows(self._pool, page)
        # All seven responses of the shown page (hate included, which the pool never needed).
        probs = response_probabilities(world, self.catalog, u.video_affinity, u.logit_shift, items)  # (7, N, k)
        lengths = self.catalog.video_length[items]
        k = page.shape[1]
        paired = self._paired
        if paired is None:
            noise = self.rng.standard_normal((self.n, k), dtype=np.float32)
            uniforms = self.rng.random((6, self.n, k), dtype=np.float32)
        else:
            noise = _keyed_normal(paired.keys(_STREAM_COMPLETION), k).astype(np.float32)
            uniforms = _keyed_uniform(paired.keys(_STREAM_EVENTS), 6 * k).astype(np.float32)
            uniforms = uniforms.reshape(self.n, 6, k).transpose(1, 0, 2)
        completion = np.clip(probs[0] + world.completion_noise * noise, 0.0, 1.0)
        events = uniforms < probs[1:]  # click..share, hate
        watch = (lengths * completion).sum(axis=1)
        counts = events.sum(axis=2, dtype=np.float32).T  # (N, 6): click, like, follow, comment, share, hate
        interactions = counts[:, :5].sum(axis=1)
        experience = (
            world.experience_completion_weight * (completion.mean(axis=1) - world.completion_reference)
            + world.experience_interaction_weight * interactions
            - world.experience_hate_weight * counts[:, 5]
        ).astype(np.float32)
        mask = active.astype(np.float32)
        rewards: dict[str, FloatArray] = {"watch_time": watch * mask}
        for j, name in enumerate(PREDICTED_SIGNALS[1:]):
            rewards[name] = counts[:, j] * mask
        hate = counts[:, 5] * mask
        rates = np.stack([rewards[s] for s in PREDICTED_SIGNALS], axis=1)
        rates[:, 0] /= 60.0
        duration = watch + k * world.seconds_between_videos
        session_end, done = u.after_request(experience, duration, rates, np.zeros((self.n, 2), np.float32), self.rng)
        if paired is not None:
            paired.request += 1
        self._retrieve()
        obs = self.observe()
        final_obs = obs.copy() if done.any() else None
        if paired is None:
            respawned = u.respawn(done, self.rng)
        else:
            respawned = np.flatnonzero(done) if self.autoreset else np.zeros(0, np.int64)
            paired.episode[respawned] += 1
            paired.request[respawned] = 0
            for row in respawned:  # the pair's next user: the partner draws the same one for this episode index
                u.spawn(np.array([row]), paired.user_rng(int(row)))
        if respawned.size:
            self._retrieve(respawned)
            obs[respawned] = self.observe(respawned)
        info: dict[str, Any] = {
            "signals": rewards,
            "hate": hate,
            "experience": experience * mask,
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


class RankParallelEnv(ParallelEnv[str, np.ndarray, np.ndarray]):  # type: ignore[misc]
    """Multi-agent `rank`: agents pre_rank, rank, re_rank; shared team reward (watch time)."""

    metadata: dict[str, Any] = {"render_modes": [], "name": "troupe_rank_v1"}

    def __init__(self, config: RankConfig | None = None, seed: int = 0) -> None:
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

    def observation_space(self, agent: str) -> gym.spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> gym.spaces.Box:
        return self._act_space[agent]

    def _local(self) -> dict[str, np.ndarray]:
        return {stage: o[0] for stage, o in self.sim.stage_observations().items()}

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        self.sim.reset(self._episode_seed(seed))
        self.agents = list(self.possible_agents)
        return self._local(), {a: {} for a in self.agents}

    def step(
        self, actions: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, bool], dict[str, bool], dict[str, dict[str, Any]]]:
        joint = join_stage_actions(actions)
        _, rewards, done, info = self.sim.step(joint)
        signals = {k: float(v[0]) for k, v in rewards.items()}
        team = signals[RANK.main_signal]
        agents = self.agents
        obs = self._local()
        truncated = bool(done[0])
        infos = {a: {"signals": signals, "session_end": bool(info["session_end"][0])} for a in agents}
        out = (
            obs,
            dict.fromkeys(agents, team),
            dict.fromkeys(agents, False),
            dict.fromkeys(agents, truncated),
            infos,
        )
        if truncated:
            self.agents = []
        return out
