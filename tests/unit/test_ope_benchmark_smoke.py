"""The OPE accuracy benchmark still runs end to end on the simulators (tiny sizes; numbers live in benchmarks/results)."""

from __future__ import annotations

import numpy as np

from benchmarks.ope_accuracy import (
    BenchConfig,
    RankBenchConfig,
    behaviour,
    metrics,
    mixed_policy,
    rank_metrics,
    run,
    run_rank,
    simulate,
)


def test_slot_benchmark_runs_and_names_its_metrics() -> None:
    cfg = BenchConfig(repetitions=2, n_users=200, horizon=2, truth_users=1000, policies={"near": 0.25})
    names = {m.name for m in metrics(run(cfg), cfg)}
    assert {"ope.dr.near.relative_error", "ope.fqe.near.relative_error", "ope.dr.ci_coverage"} <= names


def test_logs_of_the_behaviour_carry_its_propensities() -> None:
    ep = simulate(behaviour, 300, 1, sim_seed=0, user_seed=1)
    probs = behaviour(ep.obs[:, 0])
    np.testing.assert_allclose(ep.propensity[:, 0], probs[np.arange(300), ep.actions[:, 0]])
    # the mixture at α = 0 is the behaviour itself
    np.testing.assert_allclose(mixed_policy(0.0)(ep.obs[:, 0]), probs)


def test_rank_benchmark_runs() -> None:
    cfg = RankBenchConfig(repetitions=2, n_users=200, truth_users=1000, policies={"rank_near": 0.02})
    names = {m.name for m in rank_metrics(run_rank(cfg), cfg)}
    assert "ope.ncis.rank_near.relative_error" in names and "ope.ncis.rank.ci_coverage" in names
