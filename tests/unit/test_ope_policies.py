"""ONNX policies → probabilities and densities, checked against serving's own sampling rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.problems import ALLOCATE, RANK, SLOT
from models.registry import ModelRegistry
from serving.exploration import ExplorationConfig
from serving.exploration import clipped_gaussian_log_density as serving_log_density
from serving.exploration import discrete_probabilities as serving_probabilities
from tests.unit._ope_onnx import register_linear_policy, write_linear_onnx
from training.ope.errors import OPEInputError
from training.ope.policies import PRODUCTION, Exploration, OnnxPolicy


def _linear(rng: np.random.Generator, d: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0, 0.5, (d, k)), rng.normal(0, 0.5, k)


def test_slot_probabilities_match_serving(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w, b = _linear(rng, SLOT.observation_size, 7)
    path = write_linear_onnx(tmp_path / "slot.onnx", SLOT.observation_size, {"logits": (w, b)})
    x = rng.normal(size=(5, SLOT.observation_size))
    expl = Exploration(temperature=0.7, epsilon=0.1)
    policy = OnnxPolicy(SLOT, path, exploration=expl)
    table = policy.action_probabilities(x)[0]
    logits = x.astype(np.float32) @ w.astype(np.float32) + b.astype(np.float32)
    cfg = ExplorationConfig(temperature=0.7, epsilon=0.1)
    for i in range(5):
        np.testing.assert_allclose(table[i], serving_probabilities(logits[i], cfg), rtol=1e-5)
    a = np.array([0, 3, 6, 2, 1])
    np.testing.assert_allclose(policy.probability(x, a), table[np.arange(5), a])
    with pytest.raises(OPEInputError, match="observation"):
        policy.probability(x[:, :3], a)


def test_allocate_probability_is_the_product_over_components(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    width = sum(ALLOCATE.action.nvec)  # type: ignore[union-attr]
    path = write_linear_onnx(
        tmp_path / "a.onnx",
        ALLOCATE.observation_size,
        {"action_scores": _linear(rng, ALLOCATE.observation_size, width)},
    )
    policy = OnnxPolicy(ALLOCATE, path)
    x = rng.normal(size=(4, ALLOCATE.observation_size))
    tables = policy.action_probabilities(x)
    assert [t.shape[1] for t in tables] == list(ALLOCATE.action.nvec)  # type: ignore[union-attr]
    a = np.array([[1, 0, 1, 3, 2, 0]] * 4)
    expected = np.prod([t[:, a[0, k]] for k, t in enumerate(tables)], axis=0)
    np.testing.assert_allclose(policy.probability(x, a), expected)


def test_rank_log_density_matches_serving_for_single_and_stage_observations(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    d = RANK.observation_size
    mean_w, log_std_w = _linear(rng, d, 18), _linear(rng, d, 18)
    path = write_linear_onnx(tmp_path / "r.onnx", d, {"action_mean": mean_w, "action_log_std": log_std_w})
    policy = OnnxPolicy(RANK, path)
    x = rng.normal(size=(3, d))
    a = np.clip(rng.normal(0.5, 0.4, (3, 18)), 0, 1)  # some entries sit on the bounds
    mean, std = policy.gaussian(x)
    got = policy.log_density(x, a)
    for i in range(3):
        assert got[i] == pytest.approx(serving_log_density(a[i], mean[i], std[i], 0.0, 1.0), rel=1e-5)
    # 72-wide (serving logs three stage observations): stage i uses block i of the model run on obs i.
    x3 = rng.normal(size=(2, 3 * d))
    m3, s3 = policy.gaussian(x3)
    for stage in range(3):
        ms, _ = policy.gaussian(x3[:, stage * d : (stage + 1) * d])
        np.testing.assert_allclose(m3[:, stage * 6 : (stage + 1) * 6], ms[:, stage * 6 : (stage + 1) * 6])
    assert np.all((policy.mean_action(x) >= 0) & (policy.mean_action(x) <= 1))


def test_from_registry_loads_production_and_named_versions(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    reg = ModelRegistry(tmp_path / "registry")
    register_linear_policy(reg, "slot", "v1", {"logits": _linear(rng, SLOT.observation_size, 7)}, tmp_path)
    register_linear_policy(reg, "slot", "v2", {"logits": _linear(rng, SLOT.observation_size, 7)}, tmp_path)
    reg.promote("slot", "v1")
    x = rng.normal(size=(4, SLOT.observation_size))
    prod = OnnxPolicy.from_registry(reg, "slot", PRODUCTION)
    v1 = OnnxPolicy.from_registry(reg, "slot", "v1")
    v2 = OnnxPolicy.from_registry(reg, "slot", "v2")
    assert prod.name == "slot/v1"
    np.testing.assert_allclose(prod.action_probabilities(x)[0], v1.action_probabilities(x)[0])
    assert not np.allclose(prod.action_probabilities(x)[0], v2.action_probabilities(x)[0])
