"""Event factories shared by the data-plane tests (ingest, dataset, features)."""

from __future__ import annotations

import datetime as dt

from models.events import DecisionEvent, FeedbackEvent, Signals
from models.problems import get_problem

T0 = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)


def decision(
    i: int, problem: str = "rank", user: str | None = None, ts: dt.datetime | None = None, **kw: object
) -> DecisionEvent:
    spec = get_problem(problem)
    fields: dict[str, object] = {
        "request_id": f"req-{problem}-{i}",
        "timestamp": ts or T0 + dt.timedelta(seconds=i),
        "problem": problem,
        "user_id": user or f"user-{i % 5}",
        "policy_name": "behaviour",
        "policy_version": "1",
        "experiment": "exp-1",
        "arm": "control",
        "observation": [float(i % 7) / 10] * spec.observation_size,
        "action": list(spec.default_action),
        "propensity": 0.5,
    }
    fields.update(kw)
    return DecisionEvent.model_validate(fields)


def feedback(d: DecisionEvent, delay_s: float = 5.0, **signals: float) -> FeedbackEvent:
    return FeedbackEvent(
        request_id=d.request_id,
        timestamp=d.timestamp + dt.timedelta(seconds=delay_s),
        user_id=d.user_id,
        problem=d.problem,
        signals=Signals(**signals),
    )
