"""The rank multi-agent training pool acts stage by stage: each stage observes the pool its upstream stages
really kept (issue 15: no preview pool), and the recorded (observation, action, log-prob) are the joint
actor's own on that observation."""

from __future__ import annotations

import numpy as np
import torch

from models.problems import RANK, RANK_STAGES
from training.rl.data import RolloutCollector
from training.rl.exploration import make_act, make_exploration
from training.rl.networks import make_actor
from training.rl.sim import BatchedSimPool
from training.rl.task import TaskSpec

D = RANK.observation_size


def _pool_and_act(n: int = 16) -> tuple[BatchedSimPool, object]:
    task = TaskSpec.from_problem(RANK, multi_agent=True)
    torch.manual_seed(0)
    # A wide initial spread, so that stages' weights (and so the pools they keep) differ row to row.
    actor = make_actor(task, hidden=(16,), init_std=0.5)
    pool = BatchedSimPool("rank", n, task, multi_agent=True)
    pool.reset(seed=4)
    return pool, make_act(actor, make_exploration("per_step"))


def test_act_in_turn_shows_each_stage_the_pool_its_upstream_stages_kept() -> None:
    pool, act = _pool_and_act()
    gen = torch.Generator().manual_seed(1)
    start = gen.get_state()
    joint, action, logp = pool.act_in_turn(act, gen)  # type: ignore[arg-type]
    assert joint.shape == (16, 3 * D) and action.shape == (16, 18)
    # Every block is the stage's observation of the pool the recorded joint action produces ...
    real = pool.sim.stage_observations(action.numpy())
    for k, stage in enumerate(RANK_STAGES):
        np.testing.assert_array_equal(joint[:, k * D : (k + 1) * D], real[stage])
    # ... and not the pool that default upstream weights would have produced (the old preview).
    preview = pool.sim.stage_observations(np.tile(np.asarray(RANK.default_action, np.float32), (16, 1)))
    assert not np.allclose(joint[:, 2 * D :], preview["re_rank"])
    # The recorded action and log-prob are the joint actor's on the recorded observation, same draws.
    again, again_logp = act(torch.from_numpy(joint), torch.Generator().set_state(start))  # type: ignore[operator]
    torch.testing.assert_close(again, action)
    torch.testing.assert_close(again_logp, logp)


def test_collector_records_in_turn_observations_and_their_successors() -> None:
    pool, act = _pool_and_act()
    rollout = RolloutCollector(pool, seed=2).collect(act, 5)  # type: ignore[arg-type]
    obs, next_obs, ends = rollout.obs, rollout.next_obs, rollout.ends
    going_on = ends[:-1] == 0
    # A step's successor is the next step's observation (every stage's block), where the episode goes on.
    torch.testing.assert_close(next_obs[:-1][going_on], obs[1:][going_on])
    # The later stages' blocks are their own observations, not copies of pre-rank's.
    assert not torch.allclose(obs[:, :, 2 * D :], obs[:, :, :D])


def test_act_in_turn_with_state_noise_plays_each_stage_the_noise_of_what_it_sees() -> None:
    # "antithetic_state": a stage's noise reads its own observation block, so stage k's columns from call k
    # (the placeholders of later stages still in the joint observation) are the recorded action's columns.
    task = TaskSpec.from_problem(RANK, multi_agent=True)
    torch.manual_seed(0)
    actor = make_actor(task, hidden=(16,), init_std=0.5)
    pool = BatchedSimPool("rank", 16, task, multi_agent=True)
    pool.pair_rows()
    pool.reset(seed=4)
    exploration = make_exploration("antithetic_state", 1.0, task.agents)
    act = make_act(actor, exploration)
    rollout = RolloutCollector(pool, seed=2).collect(act, 3, on_ends=exploration.episodes_ended)
    assert exploration.obs_sums is not None  # standardised from the steps seen: the state part is on
    # stage observations taken before stage 2 acts (placeholders) never reached the statistics
    assert exploration.last_obs is not None and not torch.equal(
        exploration.last_obs[:, 2 * D :], exploration.last_obs[:, :D]
    )
    gen = torch.Generator().manual_seed(1)
    joint, action, _ = pool.act_in_turn(act, gen)  # type: ignore[arg-type]
    real = pool.sim.stage_observations(action.numpy())
    for k, stage in enumerate(RANK_STAGES):
        np.testing.assert_array_equal(joint[:, k * D : (k + 1) * D], real[stage])
    assert rollout.obs.shape == (3, 16, 3 * D)
