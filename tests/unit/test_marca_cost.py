"""AutoBucket cost model (training/algorithms/marca_cost.py): isotonic fit, monotone table, recovery of the
simulator's cost function, JSON round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.algorithms import marca_cost as MC
from training.algorithms.marca import STAGE_SPLIT
from training.envs import allocate_oracle as O
from training.envs.allocate import AllocateConfig


@pytest.fixture(scope="module")
def fitted() -> MC.AutoBucketCostModel:
    return MC.fit_autobucket(AllocateConfig(), value_bins=3, replay_intervals=4, requests_per_interval=192, seed=2)


def test_isotonic_pools_adjacent_violators() -> None:
    assert np.allclose(MC.isotonic_increasing(np.array([1.0, 3.0, 2.0, 4.0])), [1.0, 2.5, 2.5, 4.0])
    assert np.allclose(MC.isotonic_increasing(np.array([3.0, 1.0]), np.array([1.0, 3.0])), [1.5, 1.5])
    with pytest.raises(ValueError, match="positive weights"):
        MC.isotonic_increasing(np.array([1.0, 2.0]), np.array([1.0, 0.0]))


def test_table_is_monotone_in_queue_length(fitted: MC.AutoBucketCostModel) -> None:
    for per_bin in fitted.stage_costs["pre_rank"]:
        assert np.all(np.diff(per_bin) >= 0)
    for per_bin in fitted.stage_costs["rank"]:
        table = np.asarray(per_bin).reshape(4, 3)  # (L_rank, tier)
        assert np.all(np.diff(table, axis=0) >= 0)


def test_recovers_the_simulators_cost_within_two_percent(fitted: MC.AutoBucketCostModel) -> None:
    cfg = AllocateConfig()
    truth = O.cost_table(cfg)
    estimate = fitted.joint_cost(O.ALL_ACTIONS)
    assert np.max(np.abs(estimate / truth - 1.0)) < 0.02
    values = np.full(384, float(fitted.value_bin_edges[-1]) + 1.0)  # the top value bin alone
    assert np.max(np.abs(fitted.joint_cost(O.ALL_ACTIONS, values) / truth - 1.0)) < 0.03
    assert fitted.contention == pytest.approx(cfg.contention, rel=0.02)
    table = fitted.to_cost_table(STAGE_SPLIT)
    assert table.contention == fitted.contention


def test_json_round_trip_and_bad_file(fitted: MC.AutoBucketCostModel, tmp_path: Path) -> None:
    path = fitted.save(tmp_path / "cost_table.json")
    again = MC.AutoBucketCostModel.load(path)
    assert np.allclose(again.joint_cost(O.ALL_ACTIONS), fitted.joint_cost(O.ALL_ACTIONS))
    (tmp_path / "bad.json").write_text('{"kind": "other"}')
    with pytest.raises(ValueError, match="AutoBucket"):
        MC.AutoBucketCostModel.load(tmp_path / "bad.json")
