"""Simulated users calling the decision API over HTTP for one simulated day, and sending their feedback.

The users come from a problem's batched simulator (training/envs/): N rows are
stepped together; on each step every active row's request goes to
`POST /v1/decide/<problem>` concurrently, like N clients of the ranking stack.
The API answers with the action it chose (per its A/B arm, with exploration);
the simulator plays that action and draws the outcome, which goes to
`POST /v1/feedback`. The day ends when every user's day is over (or after
`max_requests`).

* `rank` (BatchedRankSim): the retrieved candidates with their predicted
  signals → fusion weights per stage.
* `slot` (BatchedSlotSim): the page of K videos and the live stream the live
  recommender picked → the position of the live stream, or none.
* `allocate` (BatchedAllocateSim, one day of intervals): each request's value,
  history length and entry point, last interval's traffic and budget
  utilisation → per-stage choices.

Departures, marked: for `rank` the API ranks with the single set of predicted
signals it is sent, while the simulator's stages each see their own (noisier
upstream) predictions; the user responds to the simulator's page for the API's
weights. For every problem the API builds its observation with the user
features Feast holds (computed from the logs), not the simulator's hidden user
state. The logged decision is exactly what the API saw and did, which is what
off-policy evaluation and the A/B report need.

The simulator also keeps the ground truth per arm (mean signals per decision),
which the demo prints next to the A/B report's estimates.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.errors import TroupeError
from models.problems import ALLOCATE_ENTRY_POINTS, PREDICTED_SIGNALS
from pipelines.jobs.loop import require

SIM_OWNER = "the simulators issue (#3): training/envs/ (BatchedRankSim, BatchedSlotSim, BatchedAllocateSim)"
PROBLEMS = ("rank", "slot", "allocate")


class TrafficError(TroupeError):
    """The decision API failed too often, or the simulator could not run."""


@dataclass(frozen=True)
class TrafficConfig:
    """One simulated day of traffic for one problem."""

    base_url: str
    """The decision API, e.g. http://127.0.0.1:8080."""
    problem: str = "rank"
    """Which decide endpoint the users call: rank, slot or allocate."""
    users: int = 100
    """Distinct simulated users over the day."""
    concurrency: int = 32
    """Users stepped together, i.e. requests in flight at once (allocate: requests per interval)."""
    seed: int = 0
    """Seeds the simulated world and users; the same seed replays the same day."""
    user_prefix: str = "user"
    """User ids are `<prefix>-<n>`; the A/B assignment hashes them."""
    max_requests: int | None = None
    """Stop the day early after this many decisions (None = until every user's day ends)."""
    retrieval_size: int = 60
    """Candidates per `rank` request."""
    api_key: str | None = field(default=None, repr=False)
    """X-API-Key for decide and feedback, when the API requires one (kept out of the repr and logs)."""
    timeout_s: float = 10.0
    """Per-request HTTP timeout."""
    max_error_share: float = 0.01
    """Fail the day when more than this share of requests fail (after at least 100)."""
    progress_every_s: float = 5.0

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise ValueError(f"TrafficConfig.problem: expected one of {list(PROBLEMS)}, got {self.problem!r}")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"TrafficConfig.base_url: expected http(s)://host:port, got {self.base_url!r}")
        for name in ("users", "concurrency", "retrieval_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrafficConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.retrieval_size < 6:
            raise ValueError(
                f"TrafficConfig.retrieval_size: re-rank keeps 6 videos, need >= 6, got {self.retrieval_size}"
            )
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError(f"TrafficConfig.max_requests: must be >= 1 or None, got {self.max_requests}")
        if not 0.0 <= self.max_error_share < 1.0:
            raise ValueError(f"TrafficConfig.max_error_share: expected [0, 1), got {self.max_error_share}")


@dataclass
class ArmTruth:
    """Ground truth of one arm from the simulator: sums of every signal over its decisions."""

    decisions: int = 0
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def means(self) -> dict[str, float]:
        return {k: v / self.decisions for k, v in self.sums.items()} if self.decisions else {}


@dataclass
class TrafficReport:
    """What one simulated day did."""

    requests: int = 0
    feedback: int = 0
    errors: int = 0
    fallbacks: int = 0
    seconds: float = 0.0
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    arms: dict[str, ArmTruth] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_error: str | None = None

    def interval(self) -> dict[str, str]:
        """The day's wall-clock window as DAG run parameters (a second of slack before, two after)."""
        if self.started_at is None or self.ended_at is None:
            raise TrafficError("the day has not run: it has no interval")
        return {
            "interval_start": (self.started_at - dt.timedelta(seconds=1)).replace(microsecond=0).isoformat(),
            "interval_end": (self.ended_at + dt.timedelta(seconds=2)).replace(microsecond=0).isoformat(),
        }

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "feedback": self.feedback,
            "errors": self.errors,
            "fallbacks": self.fallbacks,
            "seconds": round(self.seconds, 2),
            "requests_per_s": round(self.requests_per_s, 1),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "versions": dict(self.versions),
            "truth_per_arm": {arm: {"decisions": t.decisions, **t.means()} for arm, t in self.arms.items()},
            "first_error": self.first_error,
        }


def _checked(sim: Any, attrs: tuple[str, ...]) -> Any:
    for attr in attrs:
        if not hasattr(sim, attr):
            raise TrafficError(
                f"{type(sim).__name__} has no {attr!r}: traffic.py reads the requests through it ({SIM_OWNER})"
            )
    return sim


def _hour(value: float) -> float:
    return float(value) % 24.0 if np.isfinite(value) else 12.0


def significant_digits(values: np.ndarray, digits: int) -> np.ndarray:
    """`values` rounded to `digits` significant digits, elementwise (0, inf and nan kept as they are).

    The same numbers as `float(f"{v:.{digits}g}")` up to ties in the last digit, without a Python call per value.
    """
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x) & (x != 0)
    safe = np.where(finite, np.abs(x), 1.0)
    exponent = np.floor(np.log10(safe)).astype(np.int64) - (digits - 1)
    # Multiply or divide by an exact power of ten (an integer), so 0.12345 comes back as the double nearest 0.12345.
    up = np.power(10.0, np.maximum(-exponent, 0))
    down = np.power(10.0, np.maximum(exponent, 0))
    rounded = np.round(x * up / down) * down / up
    return np.where(finite, rounded, x)


class _UsersDay:
    """`rank` and `slot`: a BatchedUserSim's users, one request per active user per step, until every day ends."""

    sim: Any
    cfg: TrafficConfig

    @property
    def all_done(self) -> bool:
        return bool(self.sim.all_done)

    def _user_bodies(self, step: int) -> list[tuple[int, dict[str, Any]]]:
        """(row, the request fields every user request carries) for every active user."""
        u, cfg = self.sim.users, self.cfg
        hours = np.asarray(u.hour_of_day(), dtype=np.float64)
        out: list[tuple[int, dict[str, Any]]] = []
        for row in np.flatnonzero(u.active):
            uid = f"{cfg.user_prefix}-{int(u.user_id[row])}"
            body = {
                "request_id": f"{uid}-s{cfg.seed}-{step}",
                "user_id": uid,
                "session_id": f"{uid}-s{int(u.session_id[row])}",
                "hour_of_day": _hour(hours[row]),
                "session_depth": int(u.session_depth[row]),
            }
            out.append((int(row), body))
        return out

    def progress(self) -> str:
        return f"users {int(getattr(self.sim.users, 'users_drawn', 0))}/{self.cfg.users}"


class RankDay(_UsersDay):
    """`rank` users: the retrieved pool with its predicted signals → fusion weights."""

    problem = "rank"

    def __init__(self, cfg: TrafficConfig) -> None:
        rank = require("training.envs.rank", None, SIM_OWNER)
        world = require("training.envs.world", "WorldConfig", SIM_OWNER)
        sim_cfg = rank.RankConfig(world=world(), days=1, retrieval_size=cfg.retrieval_size)
        self.sim = rank.BatchedRankSim(cfg.concurrency, sim_cfg, cfg.seed, autoreset=True, max_users=cfg.users)
        self.sim.reset(cfg.seed)
        _checked(self.sim, ("_pool", "_predicted0", "users", "all_done", "step"))
        self.cfg = cfg
        self.default = np.asarray(require("models.problems", "RANK", "models/").default_action, dtype=np.float32)

    def requests(self, step: int) -> list[tuple[int, dict[str, Any]]]:
        """(row, body of POST /v1/decide/rank) for every active user of this step."""
        # The retrieved pool as pre-rank's model sees it, raw units (watch time in seconds), (6, N, R), clipped
        # (watch time to a day, the rates to [0, 1]) and rounded to 5 significant digits: the JSON body is half
        # the size, the ranking unchanged. Done on the whole array at once: per value in Python it was a third
        # of the traffic generator's CPU (py-spy, 2026-12-04).
        upper = np.where(np.arange(len(PREDICTED_SIGNALS)) == 0, 86_400.0, 1.0)[:, None, None]
        predicted = significant_digits(np.clip(np.asarray(self.sim._predicted0, dtype=np.float64), 0.0, upper), 5)
        per_row = np.moveaxis(predicted, 0, -1).tolist()  # (N, R, 6)
        pool = np.asarray(self.sim._pool).tolist()
        session = np.asarray(self.sim.users.session_signals(), dtype=np.float64)  # (N, 3)
        out = self._user_bodies(step)
        for row, body in out:
            completion, skip_rate, minutes = session[row].tolist()
            body["last_pages_completion"] = float(f"{min(max(completion, 0.0), 1.0):.6g}")
            body["last_pages_skip_rate"] = float(f"{min(max(skip_rate, 0.0), 1.0):.6g}")
            body["session_minutes"] = float(f"{max(minutes, 0.0):.6g}")
            body["candidates"] = [
                {"id": f"v{int(item)}", "signals": dict(zip(PREDICTED_SIGNALS, values, strict=True))}
                for item, values in zip(pool[row], per_row[row], strict=True)
            ]
        return out

    def default_actions(self) -> np.ndarray:
        return np.tile(self.default, (self.sim.n, 1))

    def action(self, answer: dict[str, Any]) -> np.ndarray:
        return np.asarray(answer["action"], dtype=np.float32)

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Play the actions; every row's observed signals, by name."""
        _, rewards, _, info = self.sim.step(actions)
        signals = {name: np.asarray(rewards[name]) for name in PREDICTED_SIGNALS}
        signals["hate"] = np.asarray(info["hate"])
        signals["session_end"] = np.asarray(info["session_end"], dtype=np.float64)
        return signals


class SlotDay(_UsersDay):
    """`slot` users: a page of K videos and the live recommender's stream → position of the stream or none."""

    problem = "slot"

    def __init__(self, cfg: TrafficConfig) -> None:
        slot = require("training.envs.slot", None, SIM_OWNER)
        world = require("training.envs.world", "WorldConfig", SIM_OWNER)
        self.sim = slot.BatchedSlotSim(
            cfg.concurrency, slot.SlotConfig(world=world(), days=1), cfg.seed, autoreset=True, max_users=cfg.users
        )
        self.sim.reset(cfg.seed)
        _checked(self.sim, ("_page_items", "_page_predicted", "_live", "_live_candidate", "users", "all_done"))
        self.cfg = cfg

    def requests(self, step: int) -> list[tuple[int, dict[str, Any]]]:
        """(row, body of POST /v1/decide/slot) for every active user of this step."""
        sim = self.sim
        out = self._user_bodies(step)
        for row, body in out:
            live = sim._live_candidate[row]  # (predicted live watch s, quality, audience)
            body["page"] = [
                {"id": f"v{int(item)}", "predicted_watch_time": float(f"{max(float(w), 0.0):.5g}")}
                for item, w in zip(sim._page_items[row], sim._page_predicted[row], strict=True)
            ]
            body["live_candidates"] = [
                {
                    "id": f"live{int(sim._live[row])}",
                    "predicted_watch_time": float(f"{max(float(live[0]), 0.0):.5g}"),
                    "quality": float(min(max(float(live[1]), 0.0), 1.0)),
                    "audience": float(f"{max(float(live[2]), 0.0):.5g}"),
                }
            ]
        return out

    def default_actions(self) -> np.ndarray:
        return np.zeros(self.sim.n, np.int64)  # no live stream

    def action(self, answer: dict[str, Any]) -> np.ndarray:
        return np.asarray(int(round(answer["action"][0])))

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        _, rewards, _, _ = self.sim.step(actions)
        return {name: np.asarray(v) for name, v in rewards.items()}


class AllocateDay:
    """`allocate` requests, `concurrency` per interval over one day: value, load, utilisation → per-stage choices."""

    problem = "allocate"

    def __init__(self, cfg: TrafficConfig) -> None:
        allocate = require("training.envs.allocate", None, SIM_OWNER)
        self.sim = allocate.BatchedAllocateSim(
            cfg.concurrency, allocate.AllocateConfig(days=1), cfg.seed, autoreset=False
        )
        self.sim.reset(cfg.seed)
        _checked(
            self.sim,
            (
                "request_value",
                "observed_load",
                "user_id",
                "history_length",
                "entry_point",
                "hour",
                "previous_utilisation",
                "episode_over",
            ),
        )
        self.cfg = cfg
        self.default = np.asarray(require("models.problems", "ALLOCATE", "models/").default_action, dtype=np.int64)

    @property
    def all_done(self) -> bool:
        return bool(self.sim.episode_over)

    def requests(self, step: int) -> list[tuple[int, dict[str, Any]]]:
        sim, cfg = self.sim, self.cfg
        out: list[tuple[int, dict[str, Any]]] = []
        for row in range(sim.n):
            uid = f"{cfg.user_prefix}-{int(sim.user_id[row])}"
            body = {
                "request_id": f"{uid}-s{cfg.seed}-{step}-{row}",  # a user may send two requests in one interval
                "user_id": uid,
                "hour_of_day": _hour(sim.hour),
                "request_value": float(f"{max(float(sim.request_value[row]), 0.0):.6g}"),
                # The lagged readings the simulator's own observation shows (last interval's traffic and spend).
                "system_load": float(f"{min(max(float(sim.observed_load), 0.0), 100.0):.6g}"),
                "budget_utilisation": float(f"{min(max(float(sim.previous_utilisation), 0.0), 100.0):.6g}"),
                "user_history_length": float(sim.history_length[row]),
                "entry_point": ALLOCATE_ENTRY_POINTS[int(sim.entry_point[row])],
            }
            out.append((row, body))
        return out

    def default_actions(self) -> np.ndarray:
        return np.tile(self.default, (self.sim.n, 1))

    def action(self, answer: dict[str, Any]) -> np.ndarray:
        return np.rint(np.asarray(answer["action"], dtype=np.float64)).astype(np.int64)

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        _, rewards, _, _ = self.sim.step(actions)
        return {name: np.asarray(v) for name, v in rewards.items()}

    def progress(self) -> str:
        return f"interval {self.sim.t}/{self.sim.config.intervals_per_day}"


SimulatedDay = RankDay | SlotDay | AllocateDay


def make_day(cfg: TrafficConfig) -> SimulatedDay:
    """The simulated day of `cfg.problem`."""
    if cfg.problem == "slot":
        return SlotDay(cfg)
    if cfg.problem == "allocate":
        return AllocateDay(cfg)
    return RankDay(cfg)


async def run_day_async(cfg: TrafficConfig, on_progress: Callable[[str], None] | None = None) -> TrafficReport:
    """Run one simulated day against the API; returns counts and the simulator's ground truth per arm."""
    import aiohttp

    day = make_day(cfg)
    report = TrafficReport(started_at=dt.datetime.now(dt.UTC))
    headers = {"X-API-Key": cfg.api_key} if cfg.api_key else {}
    # aiohttp, not httpx: measured in the demo (py-spy, 2026-12-04), httpx's connection pool spent about 3 ms of
    # client CPU per request checking every pooled connection (getpeername, is_socket_readable) — the traffic
    # generator, not the API, was what limited a simulated day (about 130 req/s on 2 cores).
    connector = aiohttp.TCPConnector(limit=cfg.concurrency)
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
    t0 = time.perf_counter()
    last = t0
    step = 0
    base = cfg.base_url.rstrip("/")
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as client:

        async def decide(body: dict[str, Any]) -> dict[str, Any] | str:
            try:
                async with client.post(f"{base}/v1/decide/{cfg.problem}", json=body) as r:
                    raw = await r.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                return f"{type(exc).__name__}: {exc}"
            if r.status != 200:
                return f"HTTP {r.status}: {raw[:300].decode(errors='replace')}"
            return dict(json.loads(raw))

        async def feedback(body: dict[str, Any]) -> bool:
            try:
                async with client.post(f"{base}/v1/feedback", json=body) as r:
                    await r.read()
                    return r.status == 202
            except (aiohttp.ClientError, TimeoutError):
                return False

        while not day.all_done:
            if cfg.max_requests is not None and report.requests >= cfg.max_requests:
                break
            batch = day.requests(step)
            answers = await asyncio.gather(*(decide(body) for _, body in batch))
            actions = day.default_actions()
            served: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
            for (row, body), answer in zip(batch, answers, strict=True):
                report.requests += 1
                if isinstance(answer, str):
                    report.errors += 1
                    report.first_error = report.first_error or answer
                    continue
                actions[row] = day.action(answer)
                served[row] = (body, answer)
            observed = day.step(actions)
            now = dt.datetime.now(dt.UTC).isoformat()
            feedbacks = []
            for row, (body, answer) in served.items():
                signals = {name: float(values[row]) for name, values in observed.items()}
                feedbacks.append(
                    {
                        "request_id": answer["request_id"],
                        "timestamp": now,
                        "user_id": body["user_id"],
                        "problem": cfg.problem,
                        "signals": signals,
                    }
                )
                arm = answer.get("arm") or "none"
                truth = report.arms.setdefault(arm, ArmTruth())
                truth.decisions += 1
                for k, v in signals.items():
                    truth.sums[k] += v
                report.versions[str(answer.get("policy_version"))] += 1
                report.fallbacks += int(bool(answer.get("fallback")))
            sent = await asyncio.gather(*(feedback(fb) for fb in feedbacks))
            report.feedback += sum(sent)
            step += 1
            if report.requests >= 100 and report.errors > cfg.max_error_share * report.requests:
                raise TrafficError(
                    f"{report.errors} of {report.requests} decide calls failed (first: {report.first_error}); "
                    f"is the decision API at {cfg.base_url} healthy?"
                )
            now_t = time.perf_counter()
            if on_progress is not None and now_t - last >= cfg.progress_every_s:
                last = now_t
                on_progress(
                    f"  traffic: {report.requests} decisions, {report.feedback} feedback, "
                    f"{report.requests / (now_t - t0):.0f} req/s, {day.progress()}, "
                    f"fallbacks {report.fallbacks}, errors {report.errors}"
                )
    report.seconds = time.perf_counter() - t0
    report.ended_at = dt.datetime.now(dt.UTC)
    if report.requests == 0:
        raise TrafficError("the simulated day produced no requests; check TrafficConfig.users and the simulator")
    return report


def run_day(cfg: TrafficConfig, on_progress: Callable[[str], None] | None = None) -> TrafficReport:
    """Synchronous wrapper of `run_day_async`."""
    return asyncio.run(run_day_async(cfg, on_progress))
