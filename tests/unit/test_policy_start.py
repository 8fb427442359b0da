"""The warm start at a state-dependent rule (`PolicyStart`, ours): TSCAC's actor plays the rule on observations it
was never fitted on, every copy of the actor starts there too, σ is untouched, and other learners refuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.headroom_rank import (
    OBSERVED_FEATURES,
    OBSERVED_TILT,
    REFERENCE_CONSTANT,
    REFERENCE_TABLE,
    TiltedTablePolicy,
    constant,
)
from models.problems import RANK
from training.rl.networks import BetaActor, CloneConfig, TanhGaussianActor
from training.rl.registry import get_algorithm
from training.rl.sim import BatchedSimPool
from training.rl.task import TaskSpec
from training.rl.trainer import OfflineSource, OnlineSource, PolicyStart, RunConfig, Trainer
from training.train import train_problem

RULE = TiltedTablePolicy(REFERENCE_TABLE, OBSERVED_TILT, OBSERVED_FEATURES)
START_ACTION = np.tile(np.asarray(REFERENCE_CONSTANT, np.float32), 3)
# Small enough for a unit test (about 2 s); the probe's defaults fit four times closer (CloneConfig's docstring).
SMALL = PolicyStart(RULE, rollout_steps=128, clone=CloneConfig(steps=2000, minibatch_size=512))


def _tscac(task: TaskSpec) -> object:
    spec = get_algorithm("tscac")
    return spec.loss(task, spec.config.from_dict({"start_action": START_ACTION.tolist()}), None)  # type: ignore[misc]


def _fresh_observations(task: TaskSpec, seed: int, steps: int = 64) -> np.ndarray:
    """The rule played on 16 rows of another world and other users than the fit's (seed 100)."""
    pool = BatchedSimPool("rank", 16, task)
    obs, seen = pool.reset(seed), []
    for _ in range(steps):
        seen.append(obs)
        obs = pool.step(RULE(obs).astype(np.float32)).obs
    return np.concatenate(seen)


def test_the_tscac_actor_started_at_the_rule_plays_it_on_fresh_observations() -> None:
    torch.manual_seed(0)
    task = TaskSpec.from_problem(RANK)
    learner = _tscac(task)
    trainer = Trainer(learner, RunConfig(seed=100, n_envs=16, progress=False), SMALL)  # type: ignore[arg-type]
    source = OnlineSource(lambda n, seed: BatchedSimPool("rank", n, task))
    sigma = learner.actor.distribution(torch.zeros(1, task.obs_size)).scale.clone()  # type: ignore[attr-defined]
    obs = _fresh_observations(task, seed=7)
    x = torch.as_tensor(obs)
    with torch.no_grad():
        before = (learner.actor.mode(x).numpy() - RULE(obs)).__abs__().mean()  # type: ignore[attr-defined]
    mse = trainer.start_at_rule(source, SMALL)
    with torch.no_grad():
        played = learner.actor.mode(x).numpy()  # type: ignore[attr-defined]
        copies = [p.mode(x) for p in learner.stage_one] + [  # type: ignore[attr-defined]
            learner.best_actor.mode(x),  # type: ignore[attr-defined]
            learner.previous_actor.mode(x),  # type: ignore[attr-defined]
        ]
        sigma_after = learner.actor.distribution(torch.zeros(1, task.obs_size)).scale  # type: ignore[attr-defined]
    error = np.abs(played - RULE(obs))
    # The constant start misses the state-aware rule by ~0.1 per weight; the fitted start by a few hundredths.
    assert before > 0.06
    assert error.mean() < 0.035, error.mean()
    assert np.quantile(error, 0.9) < 0.09
    assert mse < 0.01
    # It is the rule it plays, not the constant it started at: the state-dependent part is there too.
    assert np.corrcoef(played[:, 4], RULE(obs)[:, 4])[0, 1] > 0.8
    assert np.abs(played - constant(REFERENCE_CONSTANT)(obs)).mean() > 2 * error.mean()
    for c in copies:
        assert torch.allclose(c, torch.as_tensor(played), atol=1e-6)
    assert torch.equal(sigma_after, sigma)


def test_train_problem_starts_at_the_rule_only_when_asked() -> None:
    config = {
        "run": {"seed": 100, "iterations": 1, "n_envs": 16, "rollout_steps": 4, "progress": False, "plots": False},
        "algo": {"start_action": START_ACTION.tolist(), "minibatch_size": 16, "epochs": 1},
    }
    off = train_problem("rank", "tscac", sim=True, config=config)
    assert off.cloned_actor_state is None
    on = train_problem("rank", "tscac", sim=True, config=config, policy_start=SMALL)
    assert on.cloned_actor_state is not None
    task = TaskSpec.from_problem(RANK)
    started = _tscac(task)
    started.actor.load_state_dict(on.cloned_actor_state)  # type: ignore[attr-defined]
    obs = _fresh_observations(task, seed=8, steps=16)
    with torch.no_grad():
        error = np.abs(started.actor.mode(torch.as_tensor(obs)).numpy() - RULE(obs))  # type: ignore[attr-defined]
    assert error.mean() < 0.035


def test_other_learners_actors_and_offline_runs_refuse_a_policy_start() -> None:
    obs, actions = torch.randn(8, 27), torch.rand(8, 18)
    with pytest.raises(TypeError, match="tanh-Gaussian"):
        BetaActor(27, 18, 0.0, 1.0, (8,)).start_policy(obs, actions, CloneConfig(steps=1))
    with pytest.raises(ValueError, match="actions"):
        TanhGaussianActor(27, 18, 0.0, 1.0, (8,)).start_policy(obs, actions[:, :6], CloneConfig(steps=1))
    for algo, error in (("ma_cascade", TypeError), ("main_only", NotImplementedError), ("rcpo", NotImplementedError)):
        spec = get_algorithm(algo)
        task = TaskSpec.from_problem(RANK, multi_agent=spec.multi_agent)
        learner = spec.loss(task, spec.config.from_dict({}), None)  # type: ignore[misc]
        with pytest.raises(error):
            learner.start_policy(torch.randn(8, task.obs_size), torch.rand(8, task.action_dim), CloneConfig(steps=1))
    task = TaskSpec.from_problem(RANK)
    trainer = Trainer(_tscac(task), RunConfig(progress=False, iterations=1), SMALL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="online training only"):
        trainer._fit_offline(OfflineSource(None), None, None, None, 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rollout_steps"):
        PolicyStart(RULE, rollout_steps=0)
    with pytest.raises(ValueError, match="lr"):
        CloneConfig(lr=0.0)


def test_learners_with_their_own_loop_refuse_a_policy_start() -> None:
    """MA-RDPG trains in its own replay loop, which never reads a `PolicyStart`: `train` says so."""
    from training.rl.trainer import train

    spec = get_algorithm("ma_rdpg")
    task = TaskSpec.from_problem(RANK, multi_agent=spec.multi_agent)
    source = OnlineSource(lambda n, seed: BatchedSimPool("rank", n, task, multi_agent=spec.multi_agent))
    with pytest.raises(ValueError, match="policy_start: ma_rdpg trains in its own loop"):
        train("ma_rdpg", task, source, {"run": {"progress": False}}, policy_start=SMALL)
