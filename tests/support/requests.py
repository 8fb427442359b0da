"""Valid decide request bodies for each problem (tests and the serving benchmark)."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.problems import SLOT_PAGE_SIZE


def rank_body(user_id: str, n_candidates: int = 200, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "user_id": user_id,
        "session_depth": 3,
        "hour_of_day": 20.5,
        "candidates": [
            {
                "id": f"v{i}",
                "signals": {
                    "watch_time": round(float(rng.uniform(0, 120)), 3),
                    "click": round(float(rng.uniform(0, 1)), 4),
                    "like": round(float(rng.uniform(0, 0.3)), 4),
                    "follow": round(float(rng.uniform(0, 0.05)), 4),
                    "comment": round(float(rng.uniform(0, 0.1)), 4),
                    "share": round(float(rng.uniform(0, 0.05)), 4),
                },
            }
            for i in range(n_candidates)
        ],
    }


def slot_body(user_id: str, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "user_id": user_id,
        "session_depth": 2,
        "hour_of_day": 21.0,
        "page": [
            {"id": f"p{i}", "predicted_watch_time": round(float(rng.uniform(5, 60)), 3)} for i in range(SLOT_PAGE_SIZE)
        ],
        "live_candidates": [
            {
                "id": f"live{i}",
                "predicted_watch_time": round(float(rng.uniform(10, 300)), 3),
                "quality": round(float(rng.uniform(0, 1)), 3),
                "audience": float(rng.integers(1, 5000)),
            }
            for i in range(3)
        ],
    }


def allocate_body(user_id: str, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "user_id": user_id,
        "hour_of_day": 9.0,
        "request_value": round(float(rng.uniform(0, 200)), 3),
        "system_load": round(float(rng.uniform(0.2, 1.2)), 3),
        "budget_utilisation": round(float(rng.uniform(0, 1)), 3),
    }


BODIES = {"rank": rank_body, "slot": slot_body, "allocate": allocate_body}
