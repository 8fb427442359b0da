"""Issue 15's checks for `slot`, on small fixed seeds (benchmarks/headroom_slot.py runs them at benchmark size).

* headroom: the state-aware reference (the parameters the benchmark's search found) beats the best constant
  or threshold rule found by search on separate users by >= 5 % of 7-day total watch time per user-day,
  both within the exposure cap, on the same (paired) users;
* the long-run unconstrained main-signal optimum (the rule with the most 7-day live watch time) breaks the cap.
"""

from __future__ import annotations

from benchmarks.headroom_slot import (
    CAP,
    RECORDED_RULES,
    SEARCH_OFFSET,
    paired_lift,
    run_users,
    search_threshold_rules,
)

SEED = 1002
SEARCH_USERS = 250
EVAL_USERS = 600


def test_slot_state_aware_reference_beats_the_best_rule_and_the_live_optimum_breaks_the_cap() -> None:
    best_rule, live_optimum, evaluated = search_threshold_rules(SEARCH_USERS, SEED, SEED + SEARCH_OFFSET, quantiles=4)
    assert len(evaluated) == 1 + 6 + 6 * 4  # never, always at p, thresholds at p
    base = run_users(best_rule, EVAL_USERS, SEED, SEED)
    reference = run_users(RECORDED_RULES[SEED][1], EVAL_USERS, SEED, SEED)
    lift, low, _ = paired_lift([reference], [base])
    assert lift >= 0.05, (best_rule.describe(), lift)
    assert low > 0.0
    assert reference.exposure_ratio <= CAP and base.exposure_ratio <= CAP
    greedy = run_users(live_optimum, EVAL_USERS, SEED, SEED)
    assert greedy.exposure_ratio > CAP, live_optimum.describe()
    assert greedy.live_watch.mean() > reference.live_watch.mean()
