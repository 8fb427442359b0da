"""Simulators for `rank`, `slot` and `allocate`: one seeded recommender world, three decision problems.

Files: `world.py` (users, videos, live streams, response functions, user
state), one file per problem (`rank.py`, `slot.py`, `allocate.py`),
`behaviour.py` (logging policies with exact probabilities), `evaluate.py`
(ground-truth evaluation and log generation). Equations and plots:
docs/simulators.md.

Factories
---------
    make_env(problem, view="single" | "multi", seed=0, **overrides)
        Gymnasium Env (single) or PettingZoo multi-agent env (multi): `rank` a sequential
        AECEnv (each stage sees the pool its upstream stages kept), `allocate` a ParallelEnv.
    make_batched(problem, n, seed=0, *, autoreset=True, max_users=None, **overrides)
        The batched numpy simulator.
`overrides` name fields of the problem's config (RankConfig, SlotConfig,
AllocateConfig: e.g. days=7) or of its WorldConfig (e.g. n_videos=500).

Reward convention (every view)
------------------------------
`step` returns the problem's main signal as the reward and every signal of the
spec in `info["signals"]` (name → float; arrays of shape (N,) when batched).
Main signals: rank watch_time, slot live_watch_time, allocate revenue.

Batched interface (what learners, OPE and benchmarks use)
---------------------------------------------------------
    sim = make_batched("rank", n=1024, seed=0)
    obs = sim.reset()                     # (N, obs_size) float32, built by models/observations.py
    obs, rewards, done, info = sim.step(actions)

* actions: rank (N, 18) float in [0, 1] (3 stages × 6 weights, spec order;
  clipped to the box); slot (N,) int in 0..6; allocate (N, 6) int within nvec
  (2, 2, 2, 4, 4, 3). Bad shapes or values raise ValueError naming what was expected.
* rewards: {signal: (N,) float32} for every signal of the spec (main included);
  `info["signals"]` is the same dict.
* done: (N,) bool — the row's episode ended at this step (rank/slot: the
  user's `days`-day horizon; allocate: the day(s) of intervals, all rows at
  once). It is a time limit: Gymnasium views report it as `truncated`.
* autoreset=True (default): a done row starts a new episode at once (rank/slot:
  a fresh user) and `obs` is its first observation; `info["final_observation"]`
  holds the last observation of the finished episode for the rows that are done.
  rank/slot `max_users` caps how many users a simulator ever draws; once reached,
  done rows go inactive (zero signals, `info["active"]` False), and
  `sim.all_done` turns True when no row is left. With autoreset=False a row is
  inactive after its episode.
* info keys, rank and slot: "active" (N,) bool (the row served a real request
  this step), "user_id", "session_id", "day" (N,) int64, "timestamp" (N,)
  float64 seconds since the simulation's epoch, "session_end" (N,) bool,
  "experience" (N,) the request's contribution to satisfaction; rank also
  "hate" and "page" (the shown item ids). allocate: "interval", "hour",
  "load", "utilisation", "backlog_in" (scalars for the interval; the
  observation shows load and utilisation one interval late), "served" (N,)
  bool (answered in time), "request_value", "user_group", "history_length",
  "entry_point", "user_id" (N,).
* Multi-agent views in batched form: `BatchedRankSim.stage_observation(i, positions)`,
  `run_stage` and `serve_page` step the cascade stage by stage on the real pools;
  `stage_observations(actions)` gives {stage: (N, 27)} on the pools given joint actions produce; `join_stage_actions` / `split_stage_actions` and
  `allocate.join_agent_actions` convert between per-agent and joint actions.

Throughput on one core (benchmarks/sim.py): rank ≥ 10⁵ user-steps/s, slot
≥ 10⁵, allocate ≥ 5·10⁴ requests/s at N ≈ 1-4k. Pools are kept modest for it
(60 retrieved candidates, a 2000-video catalog).
"""

from __future__ import annotations

from typing import Any

from models.problems import get_problem
from training.envs.allocate import AllocateConfig, AllocateEnv, AllocateParallelEnv, BatchedAllocateSim
from training.envs.behaviour import AllocateBehaviour, RankBehaviour, SlotBehaviour, behaviour_policy, constant_policy
from training.envs.rank import BatchedRankSim, RankConfig, RankEnv, RankSequentialEnv, join_stage_actions
from training.envs.slot import BatchedSlotSim, SlotConfig, SlotEnv
from training.envs.world import WorldConfig, apply_overrides

__all__ = [
    "AllocateBehaviour",
    "AllocateConfig",
    "BatchedAllocateSim",
    "BatchedRankSim",
    "BatchedSlotSim",
    "RankBehaviour",
    "RankConfig",
    "SlotBehaviour",
    "SlotConfig",
    "WorldConfig",
    "behaviour_policy",
    "constant_policy",
    "join_stage_actions",
    "make_batched",
    "make_config",
    "make_env",
]

_CONFIGS: dict[str, type[RankConfig] | type[SlotConfig] | type[AllocateConfig]] = {
    "rank": RankConfig,
    "slot": SlotConfig,
    "allocate": AllocateConfig,
}


def make_config(problem: str, **overrides: Any) -> RankConfig | SlotConfig | AllocateConfig:
    """The default config of a problem with `overrides` applied (config or WorldConfig field names)."""
    spec = get_problem(problem)
    return apply_overrides(_CONFIGS[spec.name](), overrides)  # type: ignore[no-any-return]


def make_env(problem: str, view: str = "single", seed: int = 0, **overrides: Any) -> Any:
    """A Gymnasium Env (`view="single"`) or PettingZoo ParallelEnv (`view="multi"`, rank and allocate)."""
    spec = get_problem(problem)
    if view not in ("single", "multi"):
        raise ValueError(f"make_env: view must be 'single' or 'multi', got {view!r}")
    config = make_config(spec.name, **overrides)
    if view == "multi":
        if spec.name == "rank":
            return RankSequentialEnv(config, seed)  # type: ignore[arg-type]
        if spec.name == "allocate":
            return AllocateParallelEnv(config, seed)  # type: ignore[arg-type]
        raise ValueError(f"make_env: problem {spec.name!r} has a single agent; use view='single'")
    if spec.name == "rank":
        return RankEnv(config, seed)  # type: ignore[arg-type]
    if spec.name == "slot":
        return SlotEnv(config, seed)  # type: ignore[arg-type]
    return AllocateEnv(config, seed)  # type: ignore[arg-type]


def make_batched(
    problem: str, n: int, seed: int = 0, *, autoreset: bool = True, max_users: int | None = None, **overrides: Any
) -> BatchedRankSim | BatchedSlotSim | BatchedAllocateSim:
    """The batched simulator of a problem with N rows (users for rank/slot, requests per interval for allocate)."""
    spec = get_problem(problem)
    config = make_config(spec.name, **overrides)
    if spec.name == "rank":
        return BatchedRankSim(n, config, seed, autoreset=autoreset, max_users=max_users)  # type: ignore[arg-type]
    if spec.name == "slot":
        return BatchedSlotSim(n, config, seed, autoreset=autoreset, max_users=max_users)  # type: ignore[arg-type]
    if max_users is not None:
        raise ValueError(
            "make_batched('allocate'): max_users applies to rank and slot only (allocate rows are requests)"
        )
    return BatchedAllocateSim(n, config, seed, autoreset=autoreset)  # type: ignore[arg-type]
