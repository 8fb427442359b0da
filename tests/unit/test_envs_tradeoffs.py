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
    # Greedy wins its own signal per request ...
    assert greedy.per_decision["watch_time"] > balanced.per_decision["watch_time"]
    # ... and loses >= 10 % on at least one interaction rate.
    drops = {s: 1.0 - greedy.per_decision[s] / balanced.per_decision[s] for s in INTERACTIONS}
    assert max(drops.values()) >= 0.10, drops
    assert not greedy.constraints_satisfied
    # Per user-day, returns included, chasing watch time per request loses: next-day return falls.
    assert greedy.signals["watch_time"].mean < balanced.signals["watch_time"].mean


def test_rank_headroom_state_aware_rule_beats_the_best_constant_and_the_watch_optimum_breaks_a_constraint() -> None:
    """Issue 15's check on a small fixed seed, with the rules benchmarks/headroom_rank.py found by search
    on other users. Measured there (5 seeds × 2 000 users): +7.3 % [+6.5, +8.0] for the tilted table (the
    goal is 5 %), +5.2 % [+4.2, +6.2] for its observed-only version; here, seed 7 × 500 users: +6.5 %
    (paired CI ± 2.1 points), observed-only +4.1 % [+2.0, +6.1], the table alone +1.1 %. Every rule met
    every constraint with a 3 % margin on the search users; at 500 users the rates move by a few per cent
    from seed to seed (here constant, reference and observed-only 0.4 %, 2.4 % and 1.9 % short in total,
    comment), so this asserts them within 3 % of their thresholds."""
    from benchmarks.headroom_rank import (
        OBSERVED_TILT,
        REFERENCE_CONSTANT,
        REFERENCE_TABLE,
        REFERENCE_TILT,
        UNCONSTRAINED_CONSTANT,
        compare,
        shortfall,
    )

    rules = (REFERENCE_CONSTANT, REFERENCE_TABLE, REFERENCE_TILT, OBSERVED_TILT, UNCONSTRAINED_CONSTANT)
    out = compare(*rules, users=500, seeds=[7])
    assert out["lift"] >= 0.04, out
    assert out["lift"] > out["table_lift"], out  # the tilt adds to the table
    assert out["observed_lift"] >= 0.02, out  # ... on observed features alone too
    assert shortfall(out["observed_pooled_per_decision"]) <= 0.03, out
    assert shortfall(out["constant_pooled_per_decision"]) <= 0.03, out
    assert shortfall(out["reference_pooled_per_decision"]) <= 0.03, out
    assert out["unconstrained_violations"] >= 1, out
    # The unconstrained optimum really is better on watch time (it is the optimum the constraints bind).
    base, _, unconstrained = out["watch_per_user_day"][0]
    assert unconstrained > base


def test_rank_headroom_reference_reads_the_simulators_fatigue() -> None:
    """The state-aware rule bins φ_g × minutes in session with the world's own φ_g."""
    from benchmarks.headroom_rank import FATIGUE_PER_MINUTE, ROWS, SESSION_MINUTES, state_row
    from training.envs.rank import RankConfig

    assert tuple(RankConfig().fatigue_per_minute) == FATIGUE_PER_MINUTE
    obs = np.zeros((4, RANK.observation_size), np.float32)
    obs[:, 2] = 1.0  # heavy users: φ = 2.5
    obs[:, SESSION_MINUTES] = [0.0, 0.5, 1.2, 2.0]  # minutes / 10: fatigue 0, 12.5, 30, 50
    assert state_row(obs).tolist() == [6, 7, 8, 8]
    assert state_row(obs).max() < ROWS


def test_rank_headroom_tilt_reads_sociability_satisfaction_and_the_last_day() -> None:
    """The reference tilts the table's interaction weights by exp(β·f); with β = 0 it is the table, and
    the last-day feature comes from the simulator it is bound to (hidden state: a planner's knowledge)."""
    from benchmarks.headroom_rank import (
        COMPLETION_FEATURE,
        FEATURE_CENTRE,
        FEATURE_SCALE,
        GROUPS,
        REFERENCE_TABLE,
        SOCIAL_FEATURE,
        TILT_FEATURES,
        TILT_TARGETS,
        TiltedTablePolicy,
        table_policy,
    )
    from training.envs import make_batched

    sim = make_batched("rank", 8, 0, days=3, common_random_numbers=True)
    obs = sim.reset()
    zero = np.zeros((GROUPS, len(TILT_TARGETS), len(TILT_FEATURES)))
    np.testing.assert_allclose(TiltedTablePolicy(REFERENCE_TABLE, zero)(obs), table_policy(REFERENCE_TABLE)(obs))
    last_day_only = zero.copy()
    last_day_only[:, 0, 2] = -1.0  # less comment weight on the last day
    tilted = TiltedTablePolicy(REFERENCE_TABLE, last_day_only)
    tilted.bind_simulator(sim)
    np.testing.assert_allclose(tilted(obs), table_policy(REFERENCE_TABLE)(obs))  # day 0 of 3
    sim.users.day[:] = 2
    comment = tilted(obs)[:, 4]
    np.testing.assert_allclose(comment, table_policy(REFERENCE_TABLE)(obs)[:, 4] * np.exp(-1.0), rtol=1e-5)
    features = tilted.features(obs)
    assert features[:, 2].tolist() == [1.0] * 8
    centre, scale = np.asarray(FEATURE_CENTRE), np.asarray(FEATURE_SCALE)
    observed = np.stack([np.log(obs[:, SOCIAL_FEATURE]), obs[:, COMPLETION_FEATURE]], axis=1)
    np.testing.assert_allclose(features[:, :2], (observed - centre) / scale, rtol=1e-5, atol=1e-5)


def test_rank_common_random_numbers_pair_users_across_policies() -> None:
    """Issue 15 item 4: with max_users, two policies meet the same users with the same luck, so the
    paired CI of a lift is much narrower than the spread of either policy's per-user values."""
    from training.envs.evaluate import compare_policies

    default = constant_policy("rank", RANK.default_action)
    nudged = constant_policy("rank", [0.9, 0.3, 0.3, 0.3, 0.3, 0.3] * 3)
    runs = compare_policies("rank", {"default": default, "nudged": nudged}, "default", 200, 2, seed=3)
    again = compare_policies("rank", {"default": default}, "default", 200, 2, seed=3)
    assert runs["default"].lift == 0.0 and runs["default"].ci_width == 0.0
    assert again["default"].mean == runs["default"].mean  # same users, same draws: reproducible
    alone = evaluate_policy("rank", nudged, 200, 2, seed=3).signals["watch_time"]
    unpaired_width = (alone.ci_high - alone.ci_low) / alone.mean
    assert runs["nudged"].ci_width < 0.5 * unpaired_width, (runs["nudged"], unpaired_width)


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
