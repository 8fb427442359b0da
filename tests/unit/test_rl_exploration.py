"""Learner options for long-horizon objectives: per-signal discount overrides and per-episode exploration noise."""

from __future__ import annotations

import pytest
import torch

from models.problems import BoxAction
from training.algorithms.main_only import MainOnlyLearner
from training.rl.data import GymEnvPool, RolloutCollector
from training.rl.learner import LearnerConfig
from training.rl.task import TaskSignal, TaskSpec
from training.rl.toy_envs import TradeoffBanditEnv


def _task() -> TaskSpec:
    return TaskSpec(
        obs_size=3,
        action=BoxAction(size=2, low=0.0, high=1.0),
        signals=(TaskSignal("main", 0.9), TaskSignal("aux", 0.5)),
    )


def test_discounts_override_the_tasks_and_are_validated() -> None:
    task = _task()
    assert MainOnlyLearner(task, LearnerConfig()).gammas.tolist() == pytest.approx([0.9, 0.5])
    learner = MainOnlyLearner(task, LearnerConfig(discounts=(0.99, 0.8)))
    assert learner.gammas.tolist() == pytest.approx([0.99, 0.8])
    with pytest.raises(ValueError, match="discounts"):
        LearnerConfig(discounts=(1.0, 0.5))
    with pytest.raises(ValueError, match="discounts: 1 values for 2 signals"):
        MainOnlyLearner(task, LearnerConfig(discounts=(0.99,)))


def test_episode_noise_is_held_until_the_rows_episode_ends() -> None:
    learner = MainOnlyLearner(_task(), LearnerConfig(episode_noise=True, init_std=0.3))
    gen = torch.Generator().manual_seed(0)
    obs = torch.zeros(4, 3)
    a1, lp1 = learner.act(obs, gen)
    a2, lp2 = learner.act(obs, gen)
    assert torch.equal(a1, a2) and torch.equal(lp1, lp2)  # same offset while the episodes last
    learner.episodes_ended(torch.tensor([True, False, False, True]), gen)
    a3, _ = learner.act(obs, gen)
    assert not torch.equal(a3[0], a1[0]) and not torch.equal(a3[3], a1[3])
    assert torch.equal(a3[1:3], a1[1:3])
    # the default draws fresh noise every step
    plain = MainOnlyLearner(_task(), LearnerConfig(init_std=0.3))
    assert not torch.equal(plain.act(obs, gen)[0], plain.act(obs, gen)[0])


def test_collector_reports_episode_ends() -> None:
    task = TaskSpec(
        obs_size=3, action=BoxAction(1, 0.0, 1.0), signals=(TaskSignal("main", 0.9), TaskSignal("safety", 0.9))
    )
    pool = GymEnvPool([lambda: TradeoffBanditEnv(horizon=2)] * 3, task)
    seen: list[torch.Tensor] = []
    rollout = RolloutCollector(pool, 0).collect(
        lambda o, g: (torch.full((o.shape[0], 1), 0.5), torch.zeros(o.shape[0])),
        4,
        on_ends=lambda ended, g: seen.append(ended.clone()),
    )
    assert len(seen) == 4
    assert torch.equal(torch.stack(seen), rollout.ends > 0)
    assert torch.stack(seen)[1].all() and not torch.stack(seen)[0].any()  # horizon 2: every row ends at step 2
