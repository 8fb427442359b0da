"""The trade-offs the papers fight over exist in the simulators (fixed seeds), and the constraints are calibrated.

Calibration (docs/simulators.md): each problem's behaviour policy satisfies
every constraint of the spec, and a greedy main-signal-only policy violates at
least one.
"""

from __future__ import annotations

import numpy as np

from models.problems import ALLOCATE, RANK
from training.envs import behaviour_policy, constant_policy
from training.envs.evaluate import evaluate_policy

INTERACTIONS = ("click", "like", "follow", "comment", "share")


def test_rank_watch_time_only_weights_give_up_interactions() -> None:
    balanced = evaluate_policy("rank", constant_policy("rank", RANK.default_action), 400, 1, seed=0)
    greedy = evaluate_policy("rank", constant_policy("rank", [1, 0, 0, 0, 0, 0] * 3), 400, 1, seed=0)
    behaviour = evaluate_policy("rank", behaviour_policy("rank", seed=0), 400, 1, seed=0)
    # Greedy wins its own signal per request ...
    assert greedy.per_decision["watch_time"] > balanced.per_decision["watch_time"]
    # ... and loses >= 10 % on at least one interaction rate.
    drops = {s: 1.0 - greedy.per_decision[s] / balanced.per_decision[s] for s in INTERACTIONS}
    assert max(drops.values()) >= 0.10, drops
    assert behaviour.constraints_satisfied, behaviour.constraints
    assert not greedy.constraints_satisfied


def test_slot_greedy_insertion_wins_day_one_and_loses_the_week() -> None:
    behaviour = evaluate_policy("slot", behaviour_policy("slot", seed=0), 500, 7, seed=0)
    always_first = evaluate_policy("slot", constant_policy("slot", [1]), 500, 7, seed=0)
    assert always_first.per_day["live_watch_time"][0] > behaviour.per_day["live_watch_time"][0]

    def week_total(r: object) -> float:
        return r.signals["watch_time"].mean + r.signals["live_watch_time"].mean  # type: ignore[attr-defined]

    assert week_total(always_first) <= 0.95 * week_total(behaviour)
    assert always_first.return_rate is not None and behaviour.return_rate is not None
    assert always_first.return_rate < behaviour.return_rate
    assert behaviour.constraints_satisfied, behaviour.constraints
    assert not always_first.constraints_satisfied


def test_allocate_most_expensive_earns_more_but_breaks_the_budget_at_peak() -> None:
    nvec = np.asarray(ALLOCATE.action.nvec)  # type: ignore[union-attr]
    most = evaluate_policy("allocate", constant_policy("allocate", nvec - 1), 200, 1, seed=0)
    least = evaluate_policy("allocate", constant_policy("allocate", np.zeros_like(nvec)), 200, 1, seed=0)
    behaviour = evaluate_policy("allocate", behaviour_policy("allocate", seed=0), 200, 1, seed=0)
    assert most.allocate is not None and least.allocate is not None and behaviour.allocate is not None
    assert most.allocate.revenue_per_request.ci_low > least.allocate.revenue_per_request.ci_high
    assert most.allocate.peak_utilisation > 1.0
    assert least.allocate.peak_utilisation < 1.0
    assert most.allocate.over_utilisation > 0.0 and least.allocate.over_utilisation == 0.0
    assert behaviour.constraints_satisfied and behaviour.allocate.peak_utilisation < 1.0
    assert not most.constraints_satisfied
