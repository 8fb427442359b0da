"""A/B statistics on synthetic logs where the truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.ab.stats import (
    ABInputError,
    cuped_lift,
    lift,
    mean_ci,
    msprt_p_values,
    ratio_ci,
    sequential_test,
    srm_test,
)


def test_known_lift_is_found_with_a_covering_ci() -> None:
    rng = np.random.default_rng(0)
    control = rng.normal(1.0, 1.0, 40_000)
    treatment = rng.normal(1.05, 1.0, 40_000)
    result = lift(mean_ci(treatment), mean_ci(control))
    assert result.relative.ci_low < 0.05 < result.relative.ci_high
    assert result.relative.ci_low > 0 and result.p_value < 1e-3
    assert result.absolute.value == pytest.approx(treatment.mean() - control.mean())


def test_relative_lift_ci_covers_the_truth_about_95_percent() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(200):
        t = rng.exponential(1.1, 2000)
        c = rng.exponential(1.0, 2000)
        rel = lift(mean_ci(t), mean_ci(c)).relative
        covered += rel.ci_low <= 0.1 <= rel.ci_high
    assert 0.90 <= covered / 200 <= 0.99


def test_ratio_metric_delta_method_covers_per_decision_truth() -> None:
    # Users make Poisson(5)+1 decisions; each decision is a click with a user-specific rate.
    rng = np.random.default_rng(2)
    covered = 0
    naive_covered = 0
    for _ in range(200):
        decisions = rng.poisson(5, 1000) + 1
        rate = rng.beta(2, 8, 1000)  # mean 0.2, varies by user → clustered
        clicks = rng.binomial(decisions, rate)
        truth = 0.2 * 6 / 6  # E[clicks]/E[decisions] = E[rate]·E[d]/E[d] (rate ⟂ d)
        ci = ratio_ci(clicks, decisions)
        covered += ci.ci_low <= truth <= ci.ci_high
        # Treating decisions as independent Bernoulli ignores the clustering and is too narrow.
        p = clicks.sum() / decisions.sum()
        se = np.sqrt(p * (1 - p) / decisions.sum())
        naive_covered += abs(p - truth) <= 1.96 * se
    assert covered / 200 >= 0.9
    assert naive_covered < covered


def test_srm_alerts_on_52_48_split_of_100k_units() -> None:
    bad = srm_test({"control": 52_000, "treatment": 48_000}, {"control": 0.5, "treatment": 0.5})
    assert bad.alert and bad.p_value < 1e-3
    ok = srm_test({"control": 50_100, "treatment": 49_900}, {"control": 0.5, "treatment": 0.5})
    assert not ok.alert
    with pytest.raises(ABInputError, match="counts"):
        srm_test({"ghost": 10}, {"control": 1.0})


def test_aa_sequential_test_false_positive_rate_at_most_5_percent() -> None:
    rng = np.random.default_rng(3)
    rejections = 0
    looks = np.linspace(500, 10_000, 20).astype(int)  # a look each "day"
    for _ in range(200):
        t = rng.normal(0.0, 1.0, looks[-1])
        c = rng.normal(0.0, 1.0, looks[-1])
        res = sequential_test([t[:n] for n in looks], [c[:n] for n in looks], alpha=0.05)
        rejections += res.rejected
    assert rejections / 200 <= 0.05


def test_sequential_test_detects_a_real_effect_and_p_values_never_rise() -> None:
    rng = np.random.default_rng(4)
    looks = np.linspace(500, 20_000, 10).astype(int)
    t = rng.normal(0.1, 1.0, looks[-1])
    c = rng.normal(0.0, 1.0, looks[-1])
    res = sequential_test([t[:n] for n in looks], [c[:n] for n in looks])
    assert res.rejected and res.first_rejection_look is not None
    assert all(b <= a for a, b in zip(res.p_values, res.p_values[1:], strict=False))
    # Λ = 1 at Δ = 0 with v ≫ τ² (no information yet) → p = 1
    assert msprt_p_values([0.0], [1e6], tau=0.1)[0] == pytest.approx(1.0, abs=1e-6)


def test_cuped_narrows_the_ci_when_the_covariate_is_correlated() -> None:
    rng = np.random.default_rng(5)
    n = 5000
    pre_t, pre_c = rng.normal(10, 3, n), rng.normal(10, 3, n)
    y_t = 0.8 * pre_t + rng.normal(0.5, 1.5, n)  # true absolute lift 0.5
    y_c = 0.8 * pre_c + rng.normal(0.0, 1.5, n)
    plain = lift(mean_ci(y_t), mean_ci(y_c))
    adjusted, theta = cuped_lift(y_t, pre_t, y_c, pre_c)
    width = lambda i: i.ci_high - i.ci_low  # noqa: E731
    assert theta == pytest.approx(0.8, abs=0.05)
    assert width(adjusted.absolute) < 0.6 * width(plain.absolute)
    assert adjusted.absolute.ci_low <= 0.5 <= adjusted.absolute.ci_high


def test_inputs_are_validated() -> None:
    with pytest.raises(ABInputError, match="values"):
        mean_ci([1.0])
    with pytest.raises(ABInputError, match="denominator"):
        ratio_ci([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ABInputError, match="tau"):
        msprt_p_values([0.0], [1.0], tau=0.0)
