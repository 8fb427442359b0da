"""Baselines on the hand-built constrained environments with known optima (training/rl/toy_envs.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from models.problems import BoxAction, Constraint
from tests.support.rl import fit, quick_run
from training.algorithms import bc, fixed_fusion, main_only, rcpo
from training.rl.data import GymEnvPool, TransitionBatch
from training.rl.task import TaskSignal, TaskSpec
from training.rl.toy_envs import TradeoffArmsEnv, arms_task, bandit_task
from training.rl.trainer import OfflineSource, OnlineSource, train

ARM_MEANS = torch.tensor([[1.0, 0.0], [0.6, 0.6], [0.0, 1.0]])
OPTIMUM_MAIN = 2.0 / 3.0  # mix arm A 1/6 and arm B 5/6: safety exactly 0.5


def _arm_values(actor: torch.nn.Module) -> tuple[float, float]:
    with torch.no_grad():
        probs = actor(torch.rand(256, 3) * 2 - 1).exp().mean(0)
    main, safety = (probs @ ARM_MEANS).tolist()
    return main, safety


def _src() -> OnlineSource:
    task = arms_task()
    return OnlineSource(lambda n, s: GymEnvPool([TradeoffArmsEnv] * n, task))


def test_main_only_violates_the_constraint(tmp_path: Path) -> None:
    cfg = main_only.MainOnlyConfig(minibatch_size=64, hidden=(32,), actor_lr=3e-3)
    res = fit(main_only.MainOnlyLoss, cfg, quick_run(tmp_path), arms_task(), _src())
    main, safety = _arm_values(res.learner.actor)
    assert main > 0.9 and safety < 0.5


def test_rcpo_reaches_the_constrained_optimum(tmp_path: Path) -> None:
    cfg = rcpo.RCPOConfig(minibatch_size=64, hidden=(32,), actor_lr=3e-3)
    res = fit(rcpo.RCPOLoss, cfg, quick_run(tmp_path), arms_task(), _src())
    main, safety = _arm_values(res.learner.actor)
    assert safety >= 0.45
    assert main >= OPTIMUM_MAIN - 0.12
    assert "charts/multiplier_safety" in res.history[-1]


def test_bc_recovers_the_logging_policy(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    n = 3000
    probs = torch.tensor([0.2, 0.5, 0.3])
    action = torch.multinomial(probs, n, replacement=True, generator=g).float()[:, None]
    obs = torch.rand(n, 3, generator=g)
    rewards = ARM_MEANS[action[:, 0].long()]
    batch = TransitionBatch(obs, action, rewards, obs, torch.zeros(n), torch.log(probs)[action[:, 0].long()])
    cfg = bc.BCConfig(minibatch_size=256, hidden=(16,), actor_lr=1e-2)
    res = fit(bc.BCLoss, cfg, quick_run(tmp_path, 10), arms_task(), OfflineSource(batch))
    with torch.no_grad():
        learned = res.learner.actor(obs[:500]).exp().mean(0)
    assert torch.allclose(learned, probs, atol=0.05)
    with pytest.raises(ValueError, match="OfflineSource"):
        train("bc", arms_task(), _src(), {"run": {"device": "cpu", "out_dir": str(tmp_path)}})


def test_fixed_fusion_grid_finds_the_best_feasible_constant() -> None:
    task = bandit_task(threshold=0.35)
    grid = [np.array([a], dtype=np.float32) for a in np.linspace(0, 1, 11)]
    res = fixed_fusion.train(
        fixed_fusion.FixedFusionConfig(block_size=1),
        task,
        lambda a: {"main": float(a[0]), "safety": 1.0 - float(a[0])},
        grid,
    )
    assert res.feasible
    assert res.action[0] == pytest.approx(0.6)
    assert len(res.table) == 11
    # infeasible everywhere → least violation wins and is reported as infeasible
    res2 = fixed_fusion.train(
        fixed_fusion.FixedFusionConfig(block_size=1),
        bandit_task(threshold=1.5),
        lambda a: {"main": float(a[0]), "safety": 1.0 - float(a[0])},
        grid,
    )
    assert not res2.feasible and res2.action[0] == pytest.approx(0.0)


def test_fixed_fusion_ranks_by_the_configured_objective() -> None:
    # The main signal per decision prefers a = 1.0, the configured objective (e.g. per user-day) a = 0.2.
    grid = [np.array([a], dtype=np.float32) for a in (0.2, 0.6, 1.0)]

    def ev(a: np.ndarray) -> dict[str, float]:
        return {"main": float(a[0]), "safety": 1.0, "per_user_day": 1.0 - float(a[0])}

    cfg = fixed_fusion.FixedFusionConfig(block_size=1)
    assert fixed_fusion.train(cfg, bandit_task(threshold=0.0), ev, grid).action[0] == pytest.approx(1.0)
    res = fixed_fusion.train(
        fixed_fusion.FixedFusionConfig(block_size=1, objective="per_user_day"), bandit_task(threshold=0.0), ev, grid
    )
    assert res.action[0] == pytest.approx(0.2) and res.main == pytest.approx(0.8)


def test_fixed_fusion_rank_grid_shape() -> None:
    cands = fixed_fusion.FixedFusionConfig(main_weights=(1.0,), aux_weights=(0.3,)).candidates(18)
    assert len(cands) == 1
    np.testing.assert_allclose(cands[0], np.array([1.0, 0.3, 0.3, 0.3, 0.3, 0.3] * 3, dtype=np.float32))


def test_fixed_fusion_refinement_finds_what_the_shared_grid_cannot() -> None:
    # Two stages × blocks of 3 (main, clicks, likes). The objective wants clicks high and likes low at
    # every stage; the constraint wants some likes. The grid ties clicks and likes to one value.
    task = TaskSpec(
        obs_size=1,
        action=BoxAction(size=6, low=0.0, high=1.0),
        signals=(TaskSignal("main", 0.5), TaskSignal("likes", 0.5)),
        constraints=(Constraint("likes", ">=", 0.2),),
    )

    def ev(a: np.ndarray) -> dict[str, float]:
        clicks, likes = a[1::3].mean(), a[2::3].mean()
        return {"main": float(a[0::3].mean() + 2 * clicks - likes), "likes": float(likes)}

    cfg = fixed_fusion.FixedFusionConfig(main_weights=(0.5, 1.0), aux_weights=(0.0, 0.3, 1.0), block_size=3)
    grid_only = fixed_fusion.train(cfg, task, ev)
    np.testing.assert_allclose(grid_only.action, [1.0, 1.0, 1.0] * 2)  # best shared value
    refined = fixed_fusion.train(dataclasses.replace(cfg, refine_sweeps=1), task, ev)
    np.testing.assert_allclose(refined.action, [1.0, 1.0, 0.3] * 2)  # likes down to the lowest feasible value
    assert refined.feasible and refined.main == pytest.approx(2.7) and grid_only.main == pytest.approx(2.0)
    # Every point evaluated once: the grid's 6, then the sweep's new ones (the current point is not re-run).
    assert len(refined.table) == len({a.tobytes() for a, _ in refined.table})
