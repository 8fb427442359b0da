"""TSCAC on hand-built constrained environments whose optimum is known (training/rl/toy_envs.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

from tests.support.rl import fit, quick_run
from training.algorithms import tscac
from training.rl.data import GymEnvPool
from training.rl.task import TaskSpec
from training.rl.toy_envs import (
    TradeoffArmsEnv,
    TradeoffBanditEnv,
    TradeoffChoicesEnv,
    arms_task,
    bandit_task,
    choices_task,
)
from training.rl.trainer import OnlineSource, RunConfig

ARM_MEANS = torch.tensor([[1.0, 0.0], [0.6, 0.6], [0.0, 1.0]])  # (main, safety) per arm


def _small(**kw: float | str) -> tscac.TSCACConfig:
    return tscac.TSCACConfig(minibatch_size=64, hidden=(32,), init_std=0.2, actor_lr=3e-3, **kw)  # type: ignore[arg-type]


def _zero_minibatch(obs: torch.Tensor) -> Any:
    """A minibatch of `obs` (one action column, two signals) whose other fields are zeros and unit weights:
    the exact stage-one and stage-two losses read only the observations."""
    from training.rl.losses import MiniBatch

    n = len(obs)
    zeros = torch.zeros(n)
    return MiniBatch(
        obs,
        torch.zeros(n, 1),
        torch.zeros(n, 2),
        obs,
        zeros,
        zeros,
        torch.zeros(n, 2),
        torch.zeros(n, 2),
        torch.ones(n),
    )


def _train_on_toy(
    cfg: tscac.TSCACConfig, run: RunConfig, task: TaskSpec, env: type[gym.Env[Any, Any]]
) -> tuple[tscac.TSCACLoss, torch.Tensor, torch.Tensor]:
    """Train online on a toy env; (learner, 256 random observations, the actor's mean probabilities on them)."""
    learner = fit(tscac.TSCACLoss, cfg, run, task, OnlineSource(lambda n, s: GymEnvPool([env] * n, task))).learner
    obs = torch.rand(256, 3) * 2 - 1
    with torch.no_grad():
        probs = learner.actor(obs).exp().mean(0)
    return learner, obs, probs


def test_discrete_tscac_meets_constraint_and_stays_near_stage_one(tmp_path: Path) -> None:
    learner, obs, probs = _train_on_toy(
        _small(lam=1.0, stage_one_entropy=1.0, lambda_control="fixed"),
        quick_run(tmp_path, plots=True),
        arms_task(),
        TradeoffArmsEnv,
    )
    main, safety = (probs @ ARM_MEANS).tolist()
    # optimum: main 2/3 at safety 0.5. Fixed-λ TSCAC lands inside the feasible set, better than the
    # safety-only arm (main 0) — not at the corner (see the benchmark report).
    assert safety >= 0.5
    assert main >= 0.3
    assert learner.stage_one_distances(obs)["safety"] <= 0.5  # stage two stays near stage one at λ = 1
    # artefacts of a run: metrics CSV, PNG curves, safetensors checkpoint
    assert (tmp_path / "metrics.csv").exists() and (tmp_path / "curves.png").exists()
    assert (tmp_path / "checkpoint.safetensors").exists()


def test_multi_discrete_tscac_takes_the_free_boost_and_meets_the_constraint(tmp_path: Path) -> None:
    # Factorised categorical actor, sampled stage two (the exact form is for one discrete choice only).
    # λ 0.3 makes π* ∝ π_safety · exp(A/λ) sharp enough to take the boost (at λ = 1 the 0.2 gain is a
    # 0.4-std advantage, so π* itself only leans 60/40); the looser KL bound is what that λ needs.
    learner, obs, logp = _train_on_toy(
        _small(lam=0.3, stage_one_entropy=0.3, lambda_control="fixed"),
        quick_run(tmp_path, iterations=40),
        choices_task(),
        TradeoffChoicesEnv,
    )
    arm_probs, boost_probs = logp[:3], logp[3:]
    main, safety = (arm_probs @ ARM_MEANS).tolist()
    assert torch.allclose(arm_probs.sum(), torch.tensor(1.0)) and torch.allclose(boost_probs.sum(), torch.tensor(1.0))
    assert boost_probs[1] >= 0.8  # the boost is free: the constrained optimum always takes it
    # optimum: main 2/3 + 0.2 at safety 0.5; main-only: arm A + boost, main 1.2 at safety 0.
    assert safety >= 0.45
    assert main + TradeoffChoicesEnv.BOOST * float(boost_probs[1]) >= 0.7
    assert learner.stage_one_distances(obs)["safety"] <= 2.5
    # One action column per component, each a valid index.
    actions, log_probs = learner.actor.sample(obs)
    assert actions.shape == (256, 2) and log_probs.shape == (256,)
    assert torch.allclose(log_probs, learner.actor.log_prob(obs, actions))


def test_gaussian_stage_two_stays_within_stated_kl_and_lambda_trades_main_for_safety(tmp_path: Path) -> None:
    task = bandit_task()
    src = OnlineSource(lambda n, s: GymEnvPool([TradeoffBanditEnv] * n, task))
    obs = torch.rand(256, 3) * 2 - 1
    means = {}
    for lam in (0.1, 3.0):
        cfg = _small(lam=lam, lambda_control="fixed")
        res = fit(tscac.TSCACLoss, cfg, quick_run(tmp_path / str(lam), 15), task, src, init_mean=(0.5,))
        learner = res.learner
        with torch.no_grad():
            means[lam] = learner.actor(obs)[0].mean().item()
        if lam == 3.0:
            assert learner.stage_one_distances(obs)["safety"] <= 0.5
    # small λ → the exp(A_main/Σλ) tilt dominates → more main signal (a larger action)
    assert means[0.1] > means[3.0] + 0.2


def test_tscac_lambda_follows_the_threshold(tmp_path: Path) -> None:
    """λ driven by the measured slack (ours): the shipped policy moves with the threshold it was given.

    Arms (main, safety) = (1, 0), (0.6, 0.6), (0, 1); the optimum mixes A and B so that safety is
    exactly the threshold: main* = 1 − (2/3)·threshold (0.733 at 0.4, 0.6 at 0.6). A fixed λ
    (the paper) lands in one place whatever the threshold; the controlled one meets each."""
    shipped: dict[float, tuple[float, float]] = {}
    final_lambda: dict[float, float] = {}
    for threshold in (0.4, 0.6):
        cfg = _small(lam=1.0, stage_one_entropy=0.3, critic_lr=0.01, lambda_kp=1.0, lambda_ki=0.3)
        run = quick_run(tmp_path / str(threshold), iterations=40)
        learner, obs, _ = _train_on_toy(cfg, run, arms_task(threshold), TradeoffArmsEnv)
        with torch.no_grad():
            probs = learner.shipped_actor()(obs).exp().mean(0)
        main, safety = (probs @ ARM_MEANS).tolist()
        assert bool(learner.has_best_feasible)
        assert safety >= threshold - 0.05  # 128 noisy steps per batch: the measured slack is ±0.04
        shipped[threshold] = (main, safety)
        final_lambda[threshold] = learner.lambdas[0]
    assert shipped[0.4][0] > shipped[0.6][0] + 0.1  # a looser threshold buys main signal
    assert shipped[0.4][0] >= 0.733 - 0.08  # near the optimum at 0.4 (40 iterations of 128 steps)
    assert final_lambda[0.4] < final_lambda[0.6] < 1.0  # λ moved, further down for the looser one


def test_tscac_requires_constraints() -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match="at least one constraint"):
        tscac.TSCACLoss(replace(bandit_task(), constraints=()), _small())
    with pytest.raises(ValueError, match="lam"):
        tscac.TSCACConfig(lam=0.0)
    with pytest.raises(ValueError, match="lambda_control"):
        tscac.TSCACConfig(lambda_control="sweep")
    with pytest.raises(ValueError, match="starting λ must lie"):
        tscac.TSCACConfig(lam=1e-4)


def test_offline_tscac_from_uniform_logs_beats_the_logging_policy(tmp_path: Path) -> None:
    """Offline: exact logged propensities (uniform), warm start, IS-weighted stages; uniform logs have main = safety = 0.533."""
    from training.rl.data import RolloutCollector
    from training.rl.trainer import OfflineSource

    task = arms_task()
    collector = RolloutCollector(GymEnvPool([TradeoffArmsEnv] * 8, task), 0)

    def uniform(obs: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.randint(0, 3, (obs.shape[0], 1), generator=g).float()
        return a, torch.full((obs.shape[0],), -float(torch.log(torch.tensor(3.0))))

    batch = collector.collect(uniform, 100).flatten()
    rc = quick_run(tmp_path, 8, offline_steps=30, behaviour_steps=200)
    cfg = _small(lam=0.3, stage_one_entropy=1.0, warm_start_steps=100, lambda_control="fixed")
    res = fit(tscac.TSCACLoss, cfg, rc, task, OfflineSource(batch))
    with torch.no_grad():
        probs = res.learner.actor(torch.rand(256, 3) * 2 - 1).exp().mean(0)
    main, safety = (probs @ ARM_MEANS).tolist()
    assert safety >= 0.5
    assert main >= 0.56  # better than the logging policy's 0.533, feasible


def test_temperature_annealing_scales_alpha_and_lambda_together_down_to_its_floor() -> None:
    """κ_t = 0.5^(t/h) floored (ours): λ_i and α shrink by one factor, so ν_i = λ_i/α is unchanged."""
    cfg = _small(temperature_halflife=10.0, temperature_floor=0.1)
    assert cfg.temperature_scale(0) == 1.0
    assert cfg.temperature_scale(10) == pytest.approx(0.5)
    assert cfg.temperature_scale(1000) == pytest.approx(0.1)
    assert _small().temperature_scale(1000) == 1.0  # off by default
    for bad in ({"temperature_halflife": -1.0}, {"temperature_floor": 0.0}, {"min_action_prob": 0.5}):
        with pytest.raises(ValueError):
            _small(**bad)
    with pytest.raises(ValueError, match="stage_two_step"):
        _small(stage_two_step=0.0)
    with pytest.raises(ValueError, match="main_q_target"):
        _small(main_q_target="monte_carlo")


def test_exact_stage_two_target_keeps_the_action_floor_and_steps_from_the_old_actor() -> None:
    """Exact stage two (ours: step η from π_old, floor p_min on every action): the loss is KL(target‖π)."""
    cfg = _small(lam=0.01, min_lambda=1e-3, min_action_prob=0.05, stage_two_step=0.5)
    loss = tscac.TSCACLoss(arms_task(), cfg)
    with torch.no_grad():  # a sharp A_1 head, so π* alone would be (almost) one-hot
        loss.main_q.heads[0][-1].weight.mul_(50.0)
        loss.actor.net[-1].bias.copy_(torch.tensor([0.0, 1.0, -1.0]))  # π_old ≠ uniform
    obs = torch.rand(64, 3) * 2 - 1
    mb = _zero_minibatch(obs)
    loss.previous_actor.load_state_dict(loss.actor.state_dict())
    with torch.no_grad():
        star = torch.log_softmax(loss.main_advantage_all_actions(obs) / loss.lambda_sum + loss.stage_one[0](obs), -1)
        stepped = torch.log_softmax(0.5 * loss.previous_actor(obs) + 0.5 * star, -1)
        target = (1 - 3 * 0.05) * stepped.exp() + 0.05
        expected = (target * (target.log() - loss.actor(obs))).sum(-1).mean()
        actual = loss._stage_two_exact(mb)
    assert float(star.exp().max(-1).values.mean()) > 0.99  # π* alone would drop two arms
    assert bool((target >= 0.05 - 1e-6).all())
    assert float(actual) == pytest.approx(float(expected), rel=1e-5)


def test_exact_stage_one_fits_softmax_of_each_signals_advantage_and_stage_two_reads_it() -> None:
    """`stage_one_exact` (ours): stage one's loss is KL(softmax(s_i·A_i/α) ‖ π_θi) over every action, and
    stage two's geometric mean uses that exact log-softmax, not the fitted actor's log-probabilities."""
    cfg = _small(lam=0.5, min_lambda=1e-3, stage_one_entropy=0.2, stage_one_exact=True)
    loss = tscac.TSCACLoss(arms_task(), cfg)
    assert loss.q_head_signals == (0, 1)  # main + the one constrained signal
    obs = torch.rand(64, 3) * 2 - 1
    mb = _zero_minibatch(obs)
    with torch.no_grad():
        a_safety = loss.advantages_all_actions(obs)[:, 1]
        log_target = torch.log_softmax(a_safety / 0.2, -1)  # ">=" constraint: sign +1, α = κ·0.2 = 0.2
        expected_one = (log_target.exp() * (log_target - loss.stage_one[0](obs))).sum(-1).mean()
        _, metrics = loss.actor_loss(mb)
        assert metrics["losses/stage_one_safety"] == pytest.approx(float(expected_one), rel=1e-5)
        # Stage two: π* ∝ π_θ1^(λ/Σλ) · exp(A_1/Σλ) with one constraint, λ/Σλ = 1, the exact π_θ1.
        star = torch.log_softmax(loss.main_advantage_all_actions(obs) / loss.lambda_sum + log_target, -1)
        expected_two = (star.exp() * (star - loss.actor(obs))).sum(-1).mean()
        assert float(loss._stage_two_exact(mb)) == pytest.approx(float(expected_two), rel=1e-5)
    # The sampled stage one and the fitted actor's log-probabilities differ from these (the test can fail).
    assert float((loss.stage_one[0](obs) - log_target).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="stage_one_exact"):
        _small(stage_one_exact=True, stage_one_entropy=0.0)
    with pytest.raises(ValueError, match="stage_one_exact: needs one discrete action"):
        tscac.TSCACLoss(bandit_task(), _small(stage_one_exact=True, stage_one_entropy=1.0))
