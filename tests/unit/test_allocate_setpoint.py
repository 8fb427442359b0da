"""The set-point rule and the one-step frontier of benchmarks/allocate_setpoint.py."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.allocate_setpoint import choose, one_step_frontier


def _row(gains: tuple[float, float], set_point: float, seed: int, util: float, over: float) -> dict[str, object]:
    return {
        "seed": seed,
        "set_point": set_point,
        "anchor_gain": gains[0],
        "bias_gain": gains[1],
        "mpc": {"utilisation": util, "over_utilisation": over},
    }


def test_the_rule_takes_the_highest_utilisation_whose_mean_over_stays_within_the_limit() -> None:
    a, b = (0.5, 0.3), (0.1, 0.3)
    rows = [
        # a: 0.97 is over the limit on average (0.008 and 0.014), 0.96 is within it
        _row(a, 0.96, 0, 0.930, 0.006),
        _row(a, 0.96, 1, 0.932, 0.008),
        _row(a, 0.97, 0, 0.940, 0.008),
        _row(a, 0.97, 1, 0.944, 0.014),
        # b: 0.97 within the limit and more utilisation than a at 0.96
        _row(b, 0.96, 0, 0.933, 0.005),
        _row(b, 0.96, 1, 0.935, 0.007),
        _row(b, 0.97, 0, 0.937, 0.009),
        _row(b, 0.97, 1, 0.939, 0.010),
    ]
    assert choose(rows, [a, b], [0.96, 0.97], 0.01) == (b, 0.97)
    assert choose(rows, [a], [0.96, 0.97], 0.01) == (a, 0.96)
    assert choose(rows, [a, b], [0.96, 0.97], 0.005) is None


def test_one_step_frontier_matches_the_gaussian_formula() -> None:
    """For u = m + N(0, σ²): mean max(u − 1, 0) = σ(φ(d) − d(1 − Φ(d))), d = (1 − m)/σ; min(u, 1) = u − that."""
    sigma, limit = 0.05, 0.01
    residuals = sigma * np.random.default_rng(0).standard_normal(200_000)
    m, util, over = one_step_frontier(residuals, limit)
    assert over <= limit
    assert over == pytest.approx(limit, abs=2e-4)  # the best plan spends the whole allowance
    assert util == pytest.approx(m - over, abs=1e-4)
    # d solving φ(d) − d(1 − Φ(d)) = 0.2 (= limit / σ) is 0.4927
    assert m == pytest.approx(1.0 - 0.4927 * sigma, abs=1.5e-3)


def test_one_step_frontier_without_noise_plans_at_the_budget() -> None:
    m, util, over = one_step_frontier(np.zeros(10), 0.01)
    assert util == pytest.approx(1.0, abs=1e-3) and over <= 0.01


def test_the_traffic_part_of_the_surprise_is_the_plans_own_sensitivity_to_traffic() -> None:
    """`surprise_parts` moves the MPC's one-step prediction by (m(ℓ) − m(q̂))·traffic_gain: that gain must be the
    planner's own ∂Ĉ_{t+1}/∂m(q), or the split would misattribute the load model's error to the forecast."""
    from benchmarks.allocate_quality import traffic_gain
    from serving.balancer import CurveLoadModel

    rng = np.random.default_rng(0)
    slots_per_day, n = 24, 24 * 4
    slots = np.arange(n) % slots_per_day
    q = 1.0 + 0.4 * np.sin(2 * np.pi * slots / slots_per_day) + 0.03 * rng.standard_normal(n)
    lam = np.exp(rng.uniform(np.log(0.01), np.log(3.0), n))
    u = np.empty(n)
    u[0] = 0.9
    for t in range(1, n):
        per_request = 0.5 + 1.0 / (1.0 + lam[t]) + 0.1 * np.sin(2 * np.pi * slots[t] / slots_per_day)
        u[t] = 0.1 * u[t - 1] + 0.8 * q[t] * (1 + 0.2 * (q[t] - 1)) * per_request
    model = CurveLoadModel.fit(u, q, lam, slots, slots_per_day)
    lam_next, slot, q0, dq = 0.3, 7, 1.1, 1e-4

    def predicted(traffic: float) -> float:
        offset, gain = model.rollout_affine(0.95, np.array([traffic]), slot)
        return float(offset[0] + gain[0, 0] * model.z(lam_next))

    def m(x: float) -> float:
        return x * (1.0 + model.contention * (x - 1.0))

    numeric = (predicted(q0 + dq) - predicted(q0)) / (m(q0 + dq) - m(q0))
    assert traffic_gain(model, lam_next, slot) == pytest.approx(numeric, rel=1e-6)
