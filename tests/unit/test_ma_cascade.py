"""Multi-agent cascade (CTDE) on a hand-built two-agent constrained ParallelEnv."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.rl import fit, quick_run
from training.algorithms import ma_cascade
from training.rl.networks import JointActor
from training.rl.toy_envs import TradeoffTeamEnv, bandit_task, team_task
from training.rl.trainer import OnlineSource


def test_ma_cascade_trains_decentralised_actors_under_the_team_constraint(tmp_path: Path) -> None:
    task = team_task()
    rc = quick_run(tmp_path, 12)
    src = OnlineSource(lambda n, s: ma_cascade.ParallelEnvPool([TradeoffTeamEnv] * n, task))
    safety = {}
    for lam in (0.1, 30.0):
        cfg = ma_cascade.MACascadeConfig(
            minibatch_size=64, hidden=(32,), init_std=0.2, actor_lr=3e-3, lam=lam, stage_one_entropy=1.0
        )
        res = fit(ma_cascade.MACascadeLoss, cfg, rc, task, src, init_mean=(0.5, 0.5))
        safety[lam] = res.history[-1]["charts/signal_safety"]
    learner = res.learner
    assert isinstance(learner.actor, JointActor)
    last = res.history[-1]
    assert "losses/central_q_main" in last and "losses/stage_two" in last
    # the team's constraint scheme works through λ: a larger λ keeps the team closer to its safety policy
    assert safety[30.0] > safety[0.1] + 0.05
    # the centralised critics learn: their loss falls over training
    assert last["losses/central_q_safety"] < res.history[0]["losses/central_q_safety"]
    # decentralised execution: agent 1's action does not depend on agent 2's observation
    obs = torch.rand(4, 6)
    changed = obs.clone()
    changed[:, 3:] = torch.rand(4, 3)
    with torch.no_grad():
        assert torch.equal(learner.actor(obs)[0][:, 0], learner.actor(changed)[0][:, 0])
    # the centralised critic reads the joint observation and the joint action
    assert learner.q_critics.heads[0][0].in_features == 6 + 2


def test_ma_cascade_needs_agents() -> None:
    with pytest.raises(ValueError, match="multi-agent task"):
        ma_cascade.MACascadeLoss(bandit_task(), ma_cascade.MACascadeConfig())
