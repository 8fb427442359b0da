"""The toy environments' known optima are right: Q* vs policy evaluation, the LQR's Riccati solution, memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.rl.toy_mdps import MemoryEnv, QuadraticBanditEnv, ScalarLQREnv, TabularMDP, TabularMDPEnv, random_mdp


def test_q_star_is_the_value_of_its_greedy_policy_and_beats_others() -> None:
    mdp = random_mdp(5, [2, 2], 0.9, seed=0)
    q_star = mdp.optimal_q()
    greedy = q_star.argmax(1)
    assert np.allclose(mdp.policy_q(greedy), q_star, atol=1e-8)
    other = (greedy + 1) % mdp.num_actions
    assert (mdp.policy_q(other).max(1) <= q_star.max(1) + 1e-9).all()
    # two-state hand example: stay (a=0) pays 1 in state 1; γ = 0.5 → V*(1) = 2, Q*(0, go) = 0 + 0.5·2 = 1
    p = np.zeros((2, 2, 2))
    p[0, 0, 0] = p[0, 1, 1] = p[1, 0, 1] = p[1, 1, 0] = 1.0
    r = np.array([[0.0, 0.0], [1.0, 0.0]])
    q = TabularMDP(p, r, 0.5, (2,)).optimal_q()
    assert q[1, 0] == pytest.approx(2.0) and q[0, 1] == pytest.approx(1.0) and q[0, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        TabularMDP(p * 0.5, r, 0.5, (2,))


def test_tabular_env_truncates_and_takes_components() -> None:
    mdp = random_mdp(4, [2, 3], 0.9, seed=1)
    env = TabularMDPEnv(mdp, num_envs=3, horizon=2, seed=0)
    obs = env.reset()
    assert obs.shape == (3, 4) and torch.equal(obs.sum(1), torch.ones(3))
    s = obs.argmax(1).numpy()
    step = env.step(torch.tensor([[1, 2], [0, 0], [1, 0]]))
    assert np.allclose(step.reward.numpy(), mdp.rewards[s, [5, 0, 3]])
    assert not step.truncated.any() and env.step(torch.zeros(3, dtype=torch.long)).truncated.all()


def test_lqr_riccati_gain_is_optimal() -> None:
    env = ScalarLQREnv(dims=1, control_cost=1.0, gamma=0.9)
    p, k = env.riccati()
    assert p == pytest.approx(1.0 + 0.9 * p - 0.81 * p * p / (1.0 + 0.9 * p))
    starts = torch.linspace(-1, 1, 11).unsqueeze(1)
    best = env.discounted_return(env.optimal_action, starts, steps=400)
    assert torch.allclose(best, -p * starts.squeeze(1) ** 2, atol=1e-6)
    for gain in (0.8 * k, 1.2 * k):
        assert bool(
            (
                env.discounted_return(lambda s, g=gain: -g * s, starts[starts != 0].unsqueeze(1))
                < env.discounted_return(env.optimal_action, starts[starts != 0].unsqueeze(1))
            ).all()
        )


def test_bandit_reward_peaks_at_the_optimal_action() -> None:
    env = QuadraticBanditEnv(num_envs=4, noise=0.0, seed=0)
    obs = env.reset()
    assert torch.allclose(env.step(env.optimal_action(obs)).reward, torch.zeros(4))
    obs = env.reset()
    assert bool((env.step(env.optimal_action(obs) + 0.1).reward < 0).all())


def test_memory_env_pays_only_the_cue_at_the_last_step() -> None:
    env = MemoryEnv(num_cues=3, length=4, num_envs=6, seed=0)
    obs = env.reset()
    cue = obs[:, :3].argmax(1)
    for _ in range(3):
        step = env.step(torch.zeros(6, dtype=torch.long))
        assert float(step.reward.abs().sum()) == 0.0 and not step.terminated.any()
        assert float(step.obs[:, :3].abs().sum()) == 0.0  # the cue is gone after t = 0
    last = env.step(cue)
    assert torch.equal(last.reward, torch.ones(6)) and last.terminated.all()
    assert torch.equal(last.obs[:, :3].sum(1), torch.ones(6))  # a new episode shows a new cue
