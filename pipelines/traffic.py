"""Simulated users calling the decision API over HTTP for one simulated day, and sending their feedback.

The users come from the `rank` simulator (training/envs/rank.py): N users are
stepped together; on each step every active user's request goes to
`POST /v1/decide/rank` with its retrieved candidates and their predicted
signals, concurrently, like N clients of the ranking stack. The API answers
with the fusion weights it chose (per its A/B arm, with exploration); the
simulator then plays those weights through its own cascade and draws the
user's response, which goes to `POST /v1/feedback`. The day ends when every
user's day is over.

Departure, marked: the API ranks with the single set of predicted signals it
is sent, while the simulator's stages each see their own (noisier upstream)
predictions; the user responds to the simulator's page for the API's weights.
The logged decision is exactly what the API saw and did, which is what
off-policy evaluation and the A/B report need.

The simulator also keeps the ground truth per arm (mean signals per decision),
which the demo prints next to the A/B report's estimates.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.errors import TroupeError
from models.problems import PREDICTED_SIGNALS
from pipelines.jobs.loop import require

SIM_OWNER = "the simulators issue (#3): training/envs/rank.py BatchedRankSim"


class TrafficError(TroupeError):
    """The decision API failed too often, or the simulator could not run."""


@dataclass(frozen=True)
class TrafficConfig:
    """One simulated day of `rank` traffic."""

    base_url: str
    """The decision API, e.g. http://127.0.0.1:8080."""
    users: int = 100
    """Distinct simulated users over the day."""
    concurrency: int = 32
    """Users stepped together, i.e. requests in flight at once."""
    seed: int = 0
    """Seeds the simulated world and users; the same seed replays the same day."""
    user_prefix: str = "user"
    """User ids are `<prefix>-<n>`; the A/B assignment hashes them."""
    max_requests: int | None = None
    """Stop the day early after this many decisions (None = until every user's day ends)."""
    retrieval_size: int = 60
    """Candidates per request."""
    api_key: str | None = None
    """X-API-Key for decide and feedback, when the API requires one."""
    timeout_s: float = 10.0
    """Per-request HTTP timeout."""
    max_error_share: float = 0.01
    """Fail the day when more than this share of requests fail (after at least 100)."""
    progress_every_s: float = 5.0

    def __post_init__(self) -> None:
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


def _make_sim(cfg: TrafficConfig) -> Any:
    rank = require("training.envs.rank", None, SIM_OWNER)
    world = require("training.envs.world", "WorldConfig", SIM_OWNER)
    sim_cfg = rank.RankConfig(world=world(), days=1, retrieval_size=cfg.retrieval_size)
    sim = rank.BatchedRankSim(cfg.concurrency, sim_cfg, cfg.seed, autoreset=True, max_users=cfg.users)
    sim.reset(cfg.seed)
    for attr in ("_pool", "_predicted0", "users", "all_done", "step"):
        if not hasattr(sim, attr):
            raise TrafficError(
                f"BatchedRankSim has no {attr!r}: traffic.py reads the retrieved pool through it ({SIM_OWNER})"
            )
    return sim


def _requests(sim: Any, cfg: TrafficConfig, step: int) -> list[tuple[int, dict[str, Any]]]:
    """(row, body of POST /v1/decide/rank) for every active user of this step."""
    u = sim.users
    # The retrieved pool as pre-rank's model sees it, raw units (watch time in seconds), (6, N, R).
    predicted = np.asarray(sim._predicted0)
    pool = np.asarray(sim._pool)
    hours = np.asarray(u.hour_of_day(), dtype=np.float64) % 24.0
    out: list[tuple[int, dict[str, Any]]] = []
    for row in np.flatnonzero(u.active):
        uid = f"{cfg.user_prefix}-{int(u.user_id[row])}"
        candidates = [
            {
                "id": f"v{int(item)}",
                "signals": {
                    # 5 significant digits: the JSON body is half the size, the ranking unchanged.
                    name: float(f"{min(max(predicted[j, row, c], 0.0), 1.0 if j else 86_400.0):.5g}")
                    for j, name in enumerate(PREDICTED_SIGNALS)
                },
            }
            for c, item in enumerate(pool[row])
        ]
        out.append(
            (
                int(row),
                {
                    "request_id": f"{uid}-s{cfg.seed}-{step}",
                    "user_id": uid,
                    "session_id": f"{uid}-s{int(u.session_id[row])}",
                    "hour_of_day": float(hours[row]) if np.isfinite(hours[row]) else 12.0,
                    "session_depth": int(u.session_depth[row]),
                    "candidates": candidates,
                },
            )
        )
    return out


async def run_day_async(cfg: TrafficConfig, on_progress: Callable[[str], None] | None = None) -> TrafficReport:
    """Run one simulated day against the API; returns counts and the simulator's ground truth per arm."""
    import httpx

    sim = _make_sim(cfg)
    report = TrafficReport(started_at=dt.datetime.now(dt.UTC))
    headers = {"X-API-Key": cfg.api_key} if cfg.api_key else {}
    limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
    t0 = time.perf_counter()
    last = t0
    step = 0
    n_rows = sim.n
    default = np.asarray(require("models.problems", "RANK", "models/").default_action, dtype=np.float32)
    async with httpx.AsyncClient(
        base_url=cfg.base_url, headers=headers, timeout=cfg.timeout_s, limits=limits
    ) as client:

        async def decide(body: dict[str, Any]) -> dict[str, Any] | str:
            try:
                r = await client.post("/v1/decide/rank", json=body)
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}"
            if r.status_code != 200:
                return f"HTTP {r.status_code}: {r.text[:300]}"
            return dict(r.json())

        async def feedback(body: dict[str, Any]) -> bool:
            try:
                r = await client.post("/v1/feedback", json=body)
            except httpx.HTTPError:
                return False
            return r.status_code == 202

        while not sim.all_done:
            if cfg.max_requests is not None and report.requests >= cfg.max_requests:
                break
            batch = _requests(sim, cfg, step)
            answers = await asyncio.gather(*(decide(body) for _, body in batch))
            actions = np.tile(default, (n_rows, 1))
            served: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
            for (row, body), answer in zip(batch, answers, strict=True):
                report.requests += 1
                if isinstance(answer, str):
                    report.errors += 1
                    report.first_error = report.first_error or answer
                    continue
                actions[row] = np.asarray(answer["action"], dtype=np.float32)
                served[row] = (body, answer)
            _, rewards, _, info = sim.step(actions)
            now = dt.datetime.now(dt.UTC).isoformat()
            feedbacks = []
            for row, (body, answer) in served.items():
                signals = {name: float(rewards[name][row]) for name in PREDICTED_SIGNALS}
                signals["hate"] = float(np.asarray(info["hate"])[row])
                signals["session_end"] = float(bool(np.asarray(info["session_end"])[row]))
                feedbacks.append(
                    {
                        "request_id": answer["request_id"],
                        "timestamp": now,
                        "user_id": body["user_id"],
                        "problem": "rank",
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
                drawn = int(getattr(sim.users, "users_drawn", 0))
                on_progress(
                    f"  traffic: {report.requests} decisions, {report.feedback} feedback, "
                    f"{report.requests / (now_t - t0):.0f} req/s, users {drawn}/{cfg.users}, "
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
