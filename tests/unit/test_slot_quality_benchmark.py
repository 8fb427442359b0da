"""benchmarks/slot_quality.py's pieces on tiny worlds: the training world, OPE, the stability measure, rows and reuse."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import slot_quality as sq
from benchmarks.headroom_slot import RECORDED_RULES, ThresholdRule
from models.problems import SLOT
from training.envs import make_batched
from training.rl.sim import BatchedSimPool
from training.rl.task import TaskSpec

WORLD = 1000


def test_a_pool_with_a_world_seed_keeps_that_world_and_draws_users_from_the_reset_seed() -> None:
    task = TaskSpec.from_problem(SLOT)
    world = make_batched("slot", 8, WORLD).catalog.live_quality
    pool = BatchedSimPool("slot", 8, task, world_seed=WORLD, days=2)
    first = pool.reset(21_000)
    np.testing.assert_array_equal(pool.sim.catalog.live_quality, world)  # the evaluation world, not world 21000
    again = pool.reset(21_000)
    other = pool.reset(21_001)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)  # other users
    # Without a world seed the reset seed is the world too (every other caller's behaviour).
    legacy = BatchedSimPool("slot", 8, task, days=2)
    legacy.reset(21_000)
    np.testing.assert_array_equal(legacy.sim.catalog.live_quality, make_batched("slot", 8, 21_000).catalog.live_quality)


def test_the_total_watch_signal_is_short_video_plus_live_in_minutes() -> None:
    sim = make_batched("slot", 16, WORLD, days=1)
    wrapped = sq._TotalWatchSim(make_batched("slot", 16, WORLD, days=1))
    sim.reset(seed=3)
    wrapped.reset(seed=3)
    action = np.full(16, 2)
    _, rewards, _, _ = sim.step(action)
    _, wrapped_rewards, _, _ = wrapped.step(action)
    expected = (rewards["watch_time"] + rewards["live_watch_time"]) / 60.0
    np.testing.assert_allclose(wrapped_rewards["total_watch"], expected)
    assert sq.total_watch_task(True).constraints == SLOT.constraints and not sq.total_watch_task(False).constraints


def test_exploration_propensities_are_the_rule_plus_epsilon_uniform_and_match_the_samples() -> None:
    rule = RECORDED_RULES[WORLD][0]
    obs = make_batched("slot", 4000, WORLD, autoreset=False).reset(seed=5)
    sample, probs = sq.explored(rule, 0.3, np.random.default_rng(0))
    p = probs(obs)
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(p[np.arange(4000), rule(obs)], 0.7 + 0.3 / 7)
    actions = sample(obs)
    agree = float(np.mean(actions == rule(obs)))
    assert abs(agree - (0.7 + 0.3 / 7)) < 0.03


def test_ncis_and_dr_recover_the_simulators_one_step_truth() -> None:
    """A target far from the rule (always position 3): both CIs cover the truth, errors a few per cent."""
    rule = RECORDED_RULES[WORLD][0]
    target = ThresholdRule(3)
    truth = sq.first_requests(target, 20_000, WORLD, 77)["total"].mean()
    sample, probs = sq.explored(rule, 0.3, np.random.default_rng(1))
    logs = sq.first_requests(sample, 6000, WORLD, 78)
    est = sq.ope_estimates(logs, probs, target)
    for name in sq.OPE_ESTIMATORS:
        value, lo, hi = est[name]
        assert lo <= truth <= hi, (name, est[name], truth)
        assert abs(value - truth) / truth < 0.1
    # The logs' own mean is the behaviour's value, not the target's: the estimators must correct it.
    assert 0.0 < est["ess_share"] < 0.2


def test_the_student_ope_block_reports_truth_and_coverage_per_draw() -> None:
    rule = RECORDED_RULES[WORLD][0]
    out = sq.ope_of_student(ThresholdRule(0), rule, WORLD, n_users=500, repetitions=2, truth_users=3000)
    assert len(out["draws"]) == 2 and out["truth"] > 0 and out["truth_exposure"] == 0.0
    for draw in out["draws"]:
        for name in sq.OPE_ESTIMATORS:
            value, lo, hi = draw[name]
            assert lo <= value <= hi and draw[f"{name}_covers"] == (lo <= out["truth"] <= hi)


def _world(seed: int, lifts: dict[str, float], users: int = 50) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    base = 1000.0 + rng.random(users)
    evals = {"rule": {"total": base, "return_rate": np.full(users, 0.5), "exposure": 0.1}}
    for row, lift in lifts.items():
        evals[row] = {"total": base * (1.0 + lift), "return_rate": np.full(users, 0.5), "exposure": 0.1}
    return {"seed": seed, "evals": evals}


def test_seed_std_pools_the_variance_across_training_seeds_within_each_world() -> None:
    # World 1: lifts 0.01, 0.03 (variance 2e-4); world 2: 0.10, 0.10, 0.16 (variance 1.2e-3).
    runs = [
        _world(1, {"sl_mgac": 0.01, "sl_mgac@1": 0.03}),
        _world(2, {"sl_mgac": 0.10, "sl_mgac@1": 0.10, "sl_mgac@2": 0.16}),
    ]
    std, n = sq.seed_std(runs, "sl_mgac")
    assert std == pytest.approx(np.sqrt((2e-4 + 1.2e-3) / 2), rel=1e-6)
    assert n == 3
    # A world-to-world difference alone does not count as instability.
    same = [_world(1, {"x": 0.0, "x@1": 0.0}), _world(2, {"x": 0.2, "x@1": 0.2})]
    assert sq.seed_std(same, "x")[0] == pytest.approx(0.0, abs=1e-12)


def test_rows_round_trip_and_reuse_trains_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = _world(WORLD, {"greedy": -0.4, "sl_mgac": 0.05, "teacher": 0.04, "dqn": -0.1})
    world |= {"users": 50, "iterations": 3, "rule": "r", "commits": {k: "abc1234" for k in world["evals"]}}
    world |= {"train_s": {"sl_mgac": 1.0}, "q_max": 3.0, "q_support": 150.0, "p99_ms": 0.1, "ope": {"truth": 1.0}}
    path = sq.rows_path(tmp_path, WORLD)
    sq.save_world(path, world)
    loaded = sq.load_world(path)
    for row, v in world["evals"].items():
        np.testing.assert_array_equal(loaded["evals"][row]["total"], v["total"])
        assert loaded["evals"][row]["exposure"] == v["exposure"]
    assert loaded["commits"] == world["commits"] and loaded["ope"] == {"truth": 1.0}

    def no_training(*_: Any, **__: Any) -> Any:
        raise AssertionError("a reused row was trained again")

    monkeypatch.setattr(sq, "train_policy", no_training)
    monkeypatch.setattr(sq, "run_users", no_training)
    args = argparse.Namespace(
        rows_dir=str(tmp_path), users=50, iterations=3, search_rules=False, variant_list=("sl_mgac", "dqn"),
        train_seeds=1, commit="new0000", stability_users=0,
    )  # fmt: skip
    again = sq.one_seed(WORLD, args, tmp_path, {"sl_mgac", "dqn", "rule"})
    assert again["commits"]["sl_mgac"] == "abc1234"  # the row keeps the commit that produced it
    np.testing.assert_array_equal(again["evals"]["dqn"]["total"], world["evals"]["dqn"]["total"])
    args.users = 60
    with pytest.raises(SystemExit, match="--users 50"):
        sq.one_seed(WORLD, args, tmp_path, {"sl_mgac"})


@pytest.mark.parametrize("name", ["dqn", "tscac"])
def test_the_baselines_train_in_the_world_and_act_with_valid_slot_actions(name: str, tmp_path: Path) -> None:
    learner, act, _, _ = sq.train_policy(name, WORLD, 0, 1, tmp_path / name)
    obs = make_batched("slot", 64, WORLD, autoreset=False).reset(seed=9)
    actions = np.asarray(act(obs))
    assert actions.shape == (64,) and actions.min() >= 0 and actions.max() < SLOT.action.n  # type: ignore[union-attr]
    if name == "dqn":  # a Q-network with a target network, no actor
        assert hasattr(learner, "target_network") and not hasattr(learner, "actor")


def test_seed_eval_noise_is_what_noise_alone_gives_to_the_seeds_lift_spread() -> None:
    rng = np.random.default_rng(0)
    users = 20_000
    rule = np.full(users, 1000.0)
    world = {"evals": {"rule": {"total": rule}, "x": {"total": rule + 10.0 * rng.standard_normal(users)}}}
    world["evals"]["x@1"] = {"total": rule + 10.0 * rng.standard_normal(users)}
    # d = (a − b) / 1000 has variance 2 · 0.01²; half of its mean's variance: 1e-4 / users.
    assert sq.seed_eval_noise([world], "x") == pytest.approx(np.sqrt(1e-4 / users), rel=0.05)
    world["evals"]["x@1"] = world["evals"]["x"]
    assert sq.seed_eval_noise([world], "x") == 0.0


def test_ope_only_redoes_the_ope_keeps_the_rows_and_checks_the_student(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(WORLD, {"sl_mgac": 0.05})
    world |= {"users": 50, "iterations": 3, "rule": "r", "commits": {"rule": "abc1234", "sl_mgac": "abc1234"}}
    world |= {"train_s": {}, "ope": {"truth": 1.0}}
    sq.save_world(sq.rows_path(tmp_path, WORLD), world)
    stored = world["evals"]["sl_mgac"]["total"]
    monkeypatch.setattr(sq, "train_policy", lambda *_: (None, "student", 0.0, 1.0))
    draw = {name: (2.0, 1.0, 3.0) for name in sq.OPE_ESTIMATORS} | {f"{n}_covers": True for n in sq.OPE_ESTIMATORS}
    ope = {"truth": 2.0, "truth_stderr": 0.1, "draws": [draw | {"ess_share": 0.1}]}
    monkeypatch.setattr(sq, "ope_of_student", lambda *_: {**ope})
    monkeypatch.setattr(sq, "run_users", lambda *_: {"total": stored.copy()})
    args = argparse.Namespace(
        rows_dir=str(tmp_path), users=50, iterations=3, search_rules=False, ope_users=10, ope_repetitions=1,
        ope_truth_users=10, commit="new0000",
    )  # fmt: skip
    sq.ope_only_seed(WORLD, args, tmp_path)
    again = sq.load_world(sq.rows_path(tmp_path, WORLD))
    assert again["ope"]["truth"] == 2.0 and again["ope"]["commit"] == "new0000"
    assert again["ope"]["student_reproduced"] is True
    assert again["commits"] == world["commits"]  # the 7-day rows are untouched
    np.testing.assert_array_equal(again["evals"]["sl_mgac"]["total"], stored)
    monkeypatch.setattr(sq, "run_users", lambda *_: {"total": stored + 1.0})
    assert sq.ope_only_seed(WORLD, args, tmp_path)["ope"]["student_reproduced"] is False
    # A world without a rows file gets one holding the OPE alone.
    args.rows_dir = str(tmp_path / "other")
    sq.ope_only_seed(WORLD, args, tmp_path)
    fresh = sq.load_world(sq.rows_path(tmp_path / "other", WORLD))
    assert fresh["evals"] == {} and fresh["ope"]["truth"] == 2.0 and "student_reproduced" not in fresh["ope"]
    assert sq.ope_metrics([fresh])[0].name == f"slot.sl_mgac.ope.ncis.covers_truth.{WORLD}"


def test_stability_is_measured_on_the_wide_rows_with_its_noise_floor_and_the_main_users_ratio() -> None:
    # Main users: both arms spread alike (ratio 1); wide rows: SL-MGAC's seeds agree, no-anchor's spread.
    main = {"sl_mgac": 0.01, "sl_mgac@1": 0.03, "no_anchor": 0.01, "no_anchor@1": 0.03}
    runs = [_world(1, main), _world(2, main)]
    wide = _world(1, {"x": 0.02, "x@1": 0.02, "y": 0.0, "y@1": 0.04}, users=200)
    for run in runs:
        rows = {"rule": "rule", "x": "sl_mgac", "x@1": "sl_mgac@1", "y": "no_anchor", "y@1": "no_anchor@1"}
        for source, row in rows.items():
            run["evals"][sq.WIDE + row] = wide["evals"][source]
    metrics = {m.name: m for m in sq.stability_metrics(runs)}
    assert metrics["slot.sl_mgac.seed_std_ratio_vs_no_anchor"].value == pytest.approx(0.0, abs=1e-9)
    assert metrics["slot.sl_mgac.seed_std_ratio_vs_no_anchor"].goal == ("<=", 0.5)
    assert "200 evaluation users" in metrics["slot.sl_mgac.seed_std_ratio_vs_no_anchor"].note
    assert metrics["slot.sl_mgac.seed_std_ratio_vs_no_anchor_main_users"].value == pytest.approx(1.0)
    assert metrics["slot.no_anchor.seed_std"].value == pytest.approx(np.std([0.0, 0.04], ddof=1))
    # Identical seeds differ by no noise: the floor is 0 here.
    assert metrics["slot.sl_mgac.seed_std_ratio_floor"].value == pytest.approx(0.0, abs=1e-9)
    # Without wide rows, the main users' ratio is the goal metric, as before.
    plain = {m.name: m for m in sq.stability_metrics([_world(1, main), _world(2, main)])}
    assert plain["slot.sl_mgac.seed_std_ratio_vs_no_anchor"].value == pytest.approx(1.0)
    assert "slot.sl_mgac.seed_std_ratio_vs_no_anchor_main_users" not in plain
