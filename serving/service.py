"""The decision path: features → A/B arm → policy (with deadline and breaker) → action → log.

One `DecisionService` per app instance, built in the lifespan. Nothing on
this path waits on Kafka, and an inference that fails, is late or meets an
open breaker is answered by the problem's default policy (fallback=true).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.events import DecisionEvent, FeedbackEvent
from models.logging import log_event
from models.problems import ALLOCATE_ENTRY_POINTS, RANK, SLOT_LIVE_SEQUENCE_LENGTH, get_problem
from serving.allocate_marca import MarcaCostTable, decide_allocate_marca
from serving.decision_log import DecisionLogger
from serving.errors import BadRequestError, InferenceError, ModelNotLoadedError
from serving.experiments import CURRENT, ExperimentStore, HookSet
from serving.exploration import ExplorationConfig
from serving.fallback import CircuitBreaker
from serving.features import OnlineFeatures, UserFeatures
from serving.lifecycle import LoadedPolicy, ModelManager
from serving.metrics import ServingMetrics
from serving.policies import (
    AllocateInputs,
    Decision,
    RankInputs,
    Scorer,
    SlotInputs,
    decide_allocate,
    decide_rank,
    decide_slot,
)
from serving.rank_messages import FloatArray, SessionMessages, chained_scorer
from serving.schemas import AllocateRequest, RankRequest, SlotRequest
from serving.settings import ServingSettings

log = logging.getLogger("troupe.serving.decide")
DEFAULT_POLICY_NAME = "default"
DEFAULT_POLICY_VERSION = "default"
NO_ARM = "none"
# Candidates each cascade stage keeps when the request does not say (the rank spec's settings).
_DEFAULT_KEEP: dict[str, int] = {
    stage: int(RANK.settings[f"keep_{stage}"]) for stage in ("pre_rank", "rank", "re_rank")
}


@dataclass(frozen=True)
class Outcome:
    """A decision with everything the response and the event need."""

    request_id: str
    problem: str
    decision: Decision
    policy_name: str
    policy_version: str
    experiment: str | None
    arm: str | None
    fallback: bool
    fallback_reason: str | None
    latency_ms: float

    def response_fields(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "problem": self.problem,
            "action": self.decision.action,
            "propensity": self.decision.propensity,
            "log_density": self.decision.log_density,
            "policy_name": self.policy_name,
            "policy_version": self.policy_version,
            "experiment": self.experiment,
            "arm": self.arm,
            "fallback": self.fallback,
            "fallback_reason": self.fallback_reason,
            "latency_ms": self.latency_ms,
            **self.decision.details,
        }


@dataclass
class DecisionService:
    settings: ServingSettings
    models: ModelManager
    features: OnlineFeatures
    experiments: ExperimentStore
    hooks: HookSet
    logger: DecisionLogger
    metrics: ServingMetrics
    rng: np.random.Generator
    default_exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    messages: SessionMessages = field(default_factory=lambda: SessionMessages(None))
    """Rank's per-session MA-RDPG message (serving/rank_messages.py); no store = a zero message per request."""
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    allocate_lambda: Callable[[], float] = field(default=lambda: 1.0)
    """λ of allocate's MaRCA rule, read per decision (serving/allocate_balancer.py `AllocateLambda.current`)."""
    wall_clock: Callable[[], float] = time.time
    """Unix seconds now: the live sequence's exposure times are turned into seconds since with it."""
    _ids: random.Random = field(default_factory=random.Random)

    def breaker(self, problem: str) -> CircuitBreaker:
        b = self.breakers.get(problem)
        if b is None:
            b = self.breakers[problem] = CircuitBreaker(self.settings.breaker_failures, self.settings.breaker_reset_s)
        return b

    # -- per-problem inputs -------------------------------------------------
    def _rank_inputs(self, req: RankRequest, user: UserFeatures) -> RankInputs:
        if len(req.candidates) > self.settings.max_candidates:
            raise BadRequestError(
                "body.candidates",
                f"{len(req.candidates)} candidates; this server accepts at most {self.settings.max_candidates}",
            )
        candidate_ids, signals = req.candidate_arrays()
        keep = req.keep.model_dump() if req.keep is not None else _DEFAULT_KEEP
        return RankInputs(
            user_activity_group=user.activity_group,
            user_recent_rates=user.vector("user_recent_rates"),
            session_depth=float(req.session_depth),
            hour_of_day=req.hour_of_day,
            candidate_ids=candidate_ids,
            candidate_signals=signals,
            keep=keep,
            session_signals=req.session_signals(),
        )

    def _slot_inputs(self, req: SlotRequest, user: UserFeatures) -> SlotInputs:
        # Stored as (watch s, Unix time s) pairs; the observation wants seconds since (padding's time 0 is
        # decades ago, past the sequence's horizon). In float64 before the observation's float32.
        stored = user.values["user_live_sequence"]
        now = self.wall_clock()
        sequence = [v if i % 2 == 0 else now - v for i, v in enumerate(stored)]
        return SlotInputs(
            user_activity_group=user.activity_group,
            user_recent_rates=user.vector("user_recent_rates"),
            user_live_affinity=user.vector("user_live_affinity"),
            session_depth=float(req.session_depth),
            hour_of_day=req.hour_of_day,
            page_video_watch_time=np.array([v.predicted_watch_time for v in req.page], dtype=np.float32),
            live_candidates=[
                (c.id, np.array([c.predicted_watch_time, c.quality, c.audience], dtype=np.float32))
                for c in req.live_candidates
            ],
            user_live_sequence=np.array(sequence, dtype=np.float32),
        )

    @staticmethod
    def _allocate_inputs(req: AllocateRequest, user: UserFeatures) -> AllocateInputs:
        return AllocateInputs(
            request_value=req.request_value,
            system_load=req.system_load,
            budget_utilisation=req.budget_utilisation,
            hour_of_day=req.hour_of_day,
            user_activity_group=user.activity_group,
            user_history_length=req.user_history_length,
            entry_point=ALLOCATE_ENTRY_POINTS.index(req.entry_point),
        )

    # -- the decision -------------------------------------------------------
    async def decide(self, problem: str, req: RankRequest | SlotRequest | AllocateRequest) -> Outcome:
        t0 = time.perf_counter()
        get_problem(problem)  # an unknown name raises with the known ones
        # Ids need to be unique, not secret: a seeded PRNG avoids an os.urandom call per request.
        request_id = req.request_id or f"{self._ids.getrandbits(128):032x}"
        overrides = req.user_features.model_dump(exclude_none=True) if req.user_features else None
        user = await self.features.get(problem, req.user_id, overrides)

        run: Callable[[Scorer | None, ExplorationConfig], Awaitable[Decision]]
        cost_table: list[MarcaCostTable | None] = [None]
        if isinstance(req, RankRequest):
            rank_inputs = self._rank_inputs(req, user)
            per_agent_flag = [False]

            def run(scorer: Scorer | None, cfg: ExplorationConfig) -> Awaitable[Decision]:
                return decide_rank(rank_inputs, scorer, cfg, self.rng, per_agent=per_agent_flag[0])
        elif isinstance(req, SlotRequest):
            slot_inputs = self._slot_inputs(req, user)

            def run(scorer: Scorer | None, cfg: ExplorationConfig) -> Awaitable[Decision]:
                return decide_slot(slot_inputs, scorer, cfg, self.rng)
        else:
            alloc_inputs = self._allocate_inputs(req, user)

            def run(scorer: Scorer | None, cfg: ExplorationConfig) -> Awaitable[Decision]:
                table = cost_table[0]
                if scorer is not None and table is not None:  # a MaRCA version: argmax S_k − λ·C_k
                    return decide_allocate_marca(alloc_inputs, scorer, table, self.allocate_lambda(), cfg, self.rng)
                return decide_allocate(alloc_inputs, scorer, cfg, self.rng)

        experiment = self.experiments.running_for(problem)
        version, cfg, exp_name, arm_name = CURRENT, self.default_exploration, None, None
        if experiment is not None:
            arm = experiment.assign(req.user_id)
            version, cfg, exp_name, arm_name = arm.version, arm.exploration, experiment.name, arm.name
            self.hooks.on_assign(experiment, arm, req.user_id)

        decision: Decision | None = None
        reason: str | None = None
        message: list[FloatArray] | None = None  # the rank message after re-rank (MA-RDPG policies)
        policy: LoadedPolicy | None = None
        try:
            policy = self.models.get(problem, version)
        except ModelNotLoadedError:
            reason = "no_model"
        breaker = self.breaker(problem)
        if policy is not None:
            if not breaker.allow():
                reason = "circuit_open"
            else:
                if isinstance(req, RankRequest):
                    per_agent_flag[0] = policy.per_agent
                cost_table[0] = policy.extras.get("cost_table")
                scorer: Scorer = policy.score
                if isinstance(req, RankRequest) and policy.message_size:
                    # MA-RDPG: the stages pass a message along, carried across the session's requests. Read
                    # before the deadline's clock starts: the store's round trip is not inference.
                    carried, _ = await self.messages.load(req.session_id, policy.version, policy.message_size)
                    scorer, message = chained_scorer(policy.score, carried)
                deadline_s = self.settings.inference_deadline_ms / 1000.0
                start = time.perf_counter()
                try:
                    if policy.in_process:
                        # Inline inference never suspends, so asyncio.timeout could not fire:
                        # skip its timer (a measurable share per request); the check below
                        # still turns a late answer into a deadline miss.
                        decision = await run(scorer, cfg)
                    else:
                        async with asyncio.timeout(deadline_s):
                            decision = await run(scorer, cfg)
                    # In-process inference cannot be interrupted; a late answer still
                    # counts as a miss so the breaker sees a slow model.
                    if time.perf_counter() - start > deadline_s:
                        decision, reason = None, "deadline"
                except TimeoutError:
                    reason = "deadline"
                except InferenceError as exc:
                    reason = "error"
                    log_event(log, "decide.inference_error", logging.WARNING, problem=problem, error=str(exc))
                if decision is None:
                    breaker.record_failure()
                else:
                    breaker.record_success()
        if decision is not None and message is not None and policy is not None:
            self.messages.save(req.session_id, policy.version, message[0])
        fallback = decision is None
        if decision is None:
            decision = await run(None, cfg)
            self.metrics.count(self.metrics.fallbacks, problem, reason or "unknown")
        if not all(map(math.isfinite, decision.observation)):  # a list: no array round trip
            # Only reachable with extreme inputs that overflow float32 once scaled.
            raise BadRequestError(
                "body", "the request's values overflow float32 in the observation; send realistic magnitudes"
            )
        latency_ms = (time.perf_counter() - t0) * 1000.0
        outcome = Outcome(
            request_id=request_id,
            problem=problem,
            decision=decision,
            policy_name=DEFAULT_POLICY_NAME if fallback or policy is None else policy.name,
            policy_version=DEFAULT_POLICY_VERSION if fallback or policy is None else policy.version,
            experiment=exp_name,
            arm=arm_name,
            fallback=fallback,
            fallback_reason=reason if fallback else None,
            latency_ms=round(latency_ms, 3),
        )
        written = self._log(outcome, req.user_id, req.session_id)
        if written is not None:
            await written  # wait_fsync: answer only once the decision's group is fdatasynced
        self.metrics.observe_decision(problem, arm_name or NO_ARM, fallback, latency_ms / 1000.0)
        return outcome

    async def warm_up(self) -> None:
        """One synthetic decision per served problem through policy and fallback, unlogged.

        Pays first-call costs (lazy imports, allocator growth) before traffic arrives,
        so the first real request does not miss its deadline.
        """
        rng = np.random.default_rng(0)
        zeros6 = np.zeros(6, dtype=np.float32)
        # (scorer or None, per_agent) for the plain problems; (scorer, cost table) for allocate_marca.
        inputs: dict[str, Callable[[Any, Any], Awaitable[Decision]]] = {
            "rank": lambda sc, per_agent: decide_rank(
                RankInputs(
                    1,
                    zeros6,
                    0.0,
                    12.0,
                    [f"w{i}" for i in range(8)],
                    rng.uniform(0, 1, (8, 6)).astype(np.float32),
                    {"pre_rank": 4, "rank": 2, "re_rank": 1},
                ),
                sc,
                self.default_exploration,
                rng,
                per_agent=per_agent,
            ),
            "slot": lambda sc, _: decide_slot(
                SlotInputs(
                    1,
                    zeros6,
                    np.zeros(2, dtype=np.float32),
                    0.0,
                    12.0,
                    np.ones(6, dtype=np.float32),
                    [("w", np.ones(3, dtype=np.float32))],
                    np.zeros(2 * SLOT_LIVE_SEQUENCE_LENGTH, dtype=np.float32),
                ),
                sc,
                self.default_exploration,
                rng,
            ),
            "allocate": lambda sc, _: decide_allocate(
                AllocateInputs(10.0, 0.5, 0.5, 12.0, 1), sc, self.default_exploration, rng
            ),
            "allocate_marca": lambda sc, table: decide_allocate_marca(
                AllocateInputs(10.0, 0.5, 0.5, 12.0, 1),
                sc,  # never None: called only with the policy's scorer
                table,
                self.allocate_lambda(),
                self.default_exploration,
                rng,
            ),
        }
        for problem in self.settings.problems:
            try:
                policy: LoadedPolicy | None = self.models.get(problem)
            except ModelNotLoadedError:
                policy = None
            scorers: list[Scorer | None] = [None] if policy is None else [policy.score, None]
            table = policy.extras.get("cost_table") if policy is not None else None
            if policy is not None and policy.message_size:  # MA-RDPG: from a session's zero message
                zero = np.zeros((1, policy.message_size), dtype=np.float32)
                scorers[0] = chained_scorer(policy.score, zero)[0]
            for scorer in scorers:
                try:
                    if scorer is not None and table is not None:
                        await inputs["allocate_marca"](scorer, table)
                        continue
                    await inputs[problem](scorer, policy.per_agent if policy is not None else False)
                except InferenceError as exc:
                    log_event(log, "decide.warm_up_error", logging.WARNING, problem=problem, error=str(exc))

    def _log(self, o: Outcome, user_id: str, session_id: str | None) -> Awaitable[object] | None:
        event = DecisionEvent(
            request_id=o.request_id,
            timestamp=dt.datetime.now(dt.UTC),
            problem=o.problem,
            user_id=user_id,
            session_id=session_id,
            policy_name=o.policy_name,
            policy_version=o.policy_version,
            experiment=o.experiment,
            arm=o.arm,
            # Exposed = the unit actually got its arm's policy; a fallback is not an exposure.
            exposed=not o.fallback,
            observation=o.decision.observation,
            action=o.decision.action,
            propensity=o.decision.propensity,
            log_density=o.decision.log_density,
            candidate_ids=o.decision.candidate_ids,
            fallback=o.fallback,
        )
        written = self.logger.decision(event)
        self.hooks.on_decision(event)
        return written

    async def feedback(self, event: FeedbackEvent) -> None:
        """Log feedback (in the write-ahead spool on return; fdatasynced first with wait_fsync)."""
        written = self.logger.feedback(event)
        self.hooks.on_feedback(event)
        self.metrics.count(self.metrics.feedback)
        if written is not None:
            await written
