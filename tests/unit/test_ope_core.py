"""Per-row terms: ratio values, delta-method standard errors, paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from training.ope.core import Terms, paired_difference
from training.ope.one_step import CIOptions, ips, snips


def test_ratio_influence_matches_the_delta_method_formula() -> None:
    rng = np.random.default_rng(0)
    w = rng.exponential(size=500)
    r = rng.normal(size=500)
    t = Terms((w * r)[:, None, None], w[:, None])
    v = float((w * r).sum() / w.sum())
    assert t.value()[0] == pytest.approx(v)
    # delta method: Var ≈ mean(w² (r − v)²) / (mean(w)² n)
    se = np.sqrt(np.var(w * (r - v), ddof=1) / w.mean() ** 2 / 500)
    psi = t.influence()[:, 0]
    assert psi.std(ddof=1) / np.sqrt(500) == pytest.approx(se, rel=1e-9)


def test_snips_closed_form_and_bootstrap_intervals_agree() -> None:
    rng = np.random.default_rng(1)
    b = rng.uniform(0.2, 0.8, 800)
    t = np.clip(b + rng.normal(0, 0.1, 800), 0.05, 1.0)
    r = rng.binomial(1, 0.3, 800).astype(float)
    normal = snips(r, t, b)
    boot = snips(r, t, b, ci=CIOptions("bootstrap", n_bootstrap=400, seed=0))
    assert boot.stderr[0] == pytest.approx(normal.stderr[0], rel=0.15)


def test_paired_difference_is_tighter_than_independent_intervals() -> None:
    rng = np.random.default_rng(2)
    n = 2000
    b = np.full(n, 0.5)
    a = rng.integers(0, 2, n)
    r = rng.normal(1.0 + 0.1 * a, 1.0)
    pa = np.where(a == 1, 0.6, 0.4)
    pb = np.where(a == 1, 0.55, 0.45)
    ea, eb = ips(r, pa, b), ips(r, pb, b)
    diff = paired_difference(ea, eb)
    assert diff.value[0] == pytest.approx(ea.value[0] - eb.value[0])
    assert diff.stderr[0] < 0.5 * np.hypot(ea.stderr[0], eb.stderr[0])
    boot = paired_difference(ea, eb, ci="bootstrap", n_bootstrap=200)
    assert boot.stderr[0] == pytest.approx(diff.stderr[0], rel=0.25)
