"""rank_quality's seed plan (issue 18, eleventh round): one world per seed, three disjoint user seeds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import rank_quality
from models.problems import RANK


@pytest.mark.parametrize("offset", [1000, 3000])
def test_one_world_per_seed_with_disjoint_search_train_and_judge_users(offset: int) -> None:
    seeds = range(1000)
    plans = [rank_quality.seed_plan(s, "one", world_offset=offset) for s in seeds]
    for s, plan in zip(seeds, plans, strict=True):
        assert plan.train_world == plan.judge_world == plan.search_world == offset + s
    # every role's users come from its own seeds: no seed serves two roles, in one seed's plan or across seeds
    roles = {role: {p.user_seeds()[role] for p in plans} for role in ("train", "judge", "search")}
    assert all(len(users) == len(plans) for users in roles.values())
    assert not roles["train"] & roles["judge"]
    assert not roles["train"] & roles["search"]
    assert not roles["judge"] & roles["search"]


def test_the_split_layout_is_the_one_before_the_eleventh_round() -> None:
    plan = rank_quality.seed_plan(2, "split")
    assert plan.train_world is None  # the catalog of world 2, drawn from the training seed itself
    assert (plan.train_users, plan.judge_world, plan.search_world, plan.search_users) == (2, 1002, 10_000, None)


def test_a_bad_plan_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="worlds"):
        rank_quality.seed_plan(0, "three")
    with pytest.raises(ValueError, match="seed"):
        rank_quality.seed_plan(1000, "one")  # its users would be world 1000's judged users


def test_learners_train_on_the_judged_worlds_catalog_and_the_constant_is_judged_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import training.train

    seen: dict[str, Any] = {}

    def fake_train(problem: str, algo: str, **kw: Any) -> Any:
        seen["config"] = kw["config"]
        return argparse.Namespace(learner=None)

    def fake_evaluate(algo: str, learner: Any, users: int, days: int, seed: int) -> tuple[float, dict[str, float]]:
        seen.setdefault("judged", []).append(seed)
        return 1.0, {}

    monkeypatch.setattr(training.train, "train_problem", fake_train)
    monkeypatch.setattr(rank_quality, "evaluate", fake_evaluate)
    a = argparse.Namespace(
        worlds="one", rdpg_iterations=2, iterations=2, n_envs=4, users=10, days=1, lam=None, start="incumbent"
    )
    constant = np.full(18, 0.5, np.float32)
    for algo in ("tscac", "bc", "ma_rdpg"):
        rank_quality.run_one(algo, 3, a, constant)
        assert seen["config"]["sim"] == {"world_seed": 1003}, algo
        assert seen["config"]["run"]["seed"] == 3  # the training users
    rank_quality.run_one("fixed_fusion", 3, a, constant)
    assert seen["judged"] == [1003] * 4
    rank_quality.run_one("tscac", 3, argparse.Namespace(**{**vars(a), "worlds": "split"}), constant)
    assert seen["config"]["sim"] == {}  # the old layout: world 3 itself


def test_the_search_is_cached_per_world_user_seed_users_and_days(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[int, int, int, int | None]] = []

    def fake_search(users: int, days: int, seed: int, user_seed: int | None = None, **kw: Any) -> Any:
        calls.append((users, days, seed, user_seed))
        return np.full(18, 0.1 * len(calls), np.float32), [{"weights": [0.0] * 6, "comment": 1.2}]

    monkeypatch.setattr(rank_quality, "fixed_fusion_search", fake_search)
    first, table = rank_quality.searched_constant(1003, 50, 3, 20_003, cache=tmp_path)
    again, table_again = rank_quality.searched_constant(1003, 50, 3, 20_003, cache=tmp_path)
    assert calls == [(50, 3, 1003, 20_003)]
    np.testing.assert_allclose(again, first)
    assert table_again == table
    other, _ = rank_quality.searched_constant(1003, 60, 3, 20_003, cache=tmp_path)  # more users: searched anew
    assert len(calls) == 2 and not np.allclose(other, first)


def _fake_world(monkeypatch: pytest.MonkeyPatch, calls: list[tuple[float, ...]]) -> None:
    """A stand-in for the simulator under `fixed_fusion_search`: the comment rate rises with the comment weight
    (block position 4; 1.0 + 0.21·w, so w 0.5 gives 1.105 — over 1.1, under 1.1 × 1.03 = 1.133 — and w 0.7
    gives 1.147) and watch time falls with it; every other constraint is met with room."""
    import training.envs
    import training.envs.evaluate

    def fake_evaluate(problem: str, action: np.ndarray, **kw: Any) -> Any:
        calls.append(tuple(float(x) for x in action[:6]))
        w = float(action[4])
        per_decision = {c.signal: 2.0 * c.threshold for c in RANK.constraints} | {"comment": 1.0 + 0.21 * w}
        return argparse.Namespace(
            per_decision=per_decision, signals={"watch_time": argparse.Namespace(mean=1000.0 - 100.0 * w)}
        )

    monkeypatch.setattr(training.envs, "constant_policy", lambda problem, action: np.asarray(action))
    monkeypatch.setattr(training.envs.evaluate, "evaluate_policy", fake_evaluate)


def test_the_search_margin_passes_over_a_constant_just_above_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[float, ...]] = []
    _fake_world(monkeypatch, calls)
    plain, table = rank_quality.fixed_fusion_search(50, 1, 3100, 20_100)
    assert plain[4] == pytest.approx(0.5)  # comment 1.105: the plain rule keeps the point on the threshold
    safe, _ = rank_quality.fixed_fusion_search(50, 1, 3100, 20_100, margin=0.03)
    assert safe[4] == pytest.approx(0.7)  # 1.105 < 1.133: the next feasible-with-margin point instead
    np.testing.assert_allclose(safe.reshape(3, 6), np.tile(safe[:6], (3, 1)))  # the same block at every stage
    # the margin-0 table's points are not evaluated again, and the answer is the same without them
    calls.clear()
    reused, _ = rank_quality.fixed_fusion_search(50, 1, 3100, 20_100, margin=0.03, known=table)
    fresh_points = len(calls)
    calls.clear()
    rank_quality.fixed_fusion_search(50, 1, 3100, 20_100, margin=0.03)
    np.testing.assert_allclose(reused, safe)
    assert fresh_points < len(calls)


def test_the_margin_is_part_of_the_search_cache_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[float, ...]] = []
    _fake_world(monkeypatch, calls)
    plain, _ = rank_quality.searched_constant(3100, 50, 1, 20_100, cache=tmp_path)
    assert (tmp_path / "world3100_users20100_n50_days1.json").is_file()  # margin 0: the old name, still valid
    safe, _ = rank_quality.searched_constant(3100, 50, 1, 20_100, cache=tmp_path, margin=0.03)
    assert (tmp_path / "world3100_users20100_n50_days1_margin0.03.json").is_file()
    assert (plain[4], safe[4]) == pytest.approx((0.5, 0.7))
    calls.clear()
    again, _ = rank_quality.searched_constant(3100, 50, 1, 20_100, cache=tmp_path, margin=0.03)
    assert calls == [] and np.allclose(again, safe)


def test_a_bad_margin_is_refused_naming_the_field() -> None:
    from training.algorithms.fixed_fusion import FixedFusionConfig

    with pytest.raises(ValueError, match="margin"):
        FixedFusionConfig(margin=-0.01)
    with pytest.raises(SystemExit, match="--search-margin"):
        rank_quality.main(["--search-margin", "1.5", "--algos", "fixed_fusion"])
