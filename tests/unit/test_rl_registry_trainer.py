"""The algorithm registry, the trainer's parameter-group check and the generic `train`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.rl import quick_run
from training.algorithms.main_only import MainOnlyConfig, MainOnlyLoss
from training.rl.data import GymEnvPool, TransitionBatch
from training.rl.losses import LossConfig, LossModule, MiniBatch, ParamGroup
from training.rl.registry import AlgorithmSpec, get_algorithm, register_algorithm
from training.rl.toy_envs import TradeoffArmsEnv, arms_task
from training.rl.trainer import OfflineSource, OnlineSource, Trainer, train


def test_registry_names_config_loss_and_agents() -> None:
    spec = get_algorithm("tscac")
    assert spec.config.__name__ == "TSCACConfig" and spec.loss.__name__ == "TSCACLoss"
    assert spec.loss.algorithm == "tscac" and not spec.multi_agent
    assert get_algorithm("ma_cascade").multi_agent
    assert get_algorithm("bc").data == "offline"
    assert get_algorithm("fixed_fusion").loss is None
    with pytest.raises(ValueError, match="unknown algorithm 'nope'; registered: .*main_only"):
        get_algorithm("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register_algorithm(AlgorithmSpec("main_only", MainOnlyConfig, LossModule))


class _ForgetsANetwork(MainOnlyLoss):
    def build(self) -> None:
        self.extra = torch.nn.Linear(2, 2)  # never declared in parameter_groups()


def test_trainer_refuses_parameters_outside_every_group(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra.weight.*in no parameter group"):
        Trainer(_ForgetsANetwork(arms_task(), LossConfig()), quick_run(tmp_path))

    class Twice(MainOnlyLoss):
        def parameter_groups(self) -> list[ParamGroup]:
            return [*super().parameter_groups(), ParamGroup("again", list(self.actor.parameters()), 1e-3)]

    with pytest.raises(ValueError, match="groups 'actor' and 'again'"):
        Trainer(Twice(arms_task(), LossConfig()), quick_run(tmp_path))


def test_lr_anneal_decays_every_group_linearly_to_zero_over_the_run(tmp_path: Path) -> None:
    cfg = MainOnlyConfig(actor_lr=1e-2, critic_lr=2e-2, lr_anneal=True)
    trainer = Trainer(MainOnlyLoss(arms_task(), cfg), quick_run(tmp_path, iterations=4))
    trainer.anneal_lr(0)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([1e-2, 2e-2])
    trainer.anneal_lr(3)  # the last of 4 iterations: a quarter of the step
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([2.5e-3, 5e-3])
    steady = Trainer(MainOnlyLoss(arms_task(), MainOnlyConfig(actor_lr=1e-2)), quick_run(tmp_path, iterations=4))
    steady.anneal_lr(3)
    assert steady.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)  # off by default


def test_entropy_halflife_halves_the_bonus_every_halflife_and_refuses_a_negative_one(tmp_path: Path) -> None:
    cfg = MainOnlyConfig(entropy_coef=0.04, entropy_halflife=10)
    trainer = Trainer(MainOnlyLoss(arms_task(), cfg), quick_run(tmp_path, iterations=40))
    assert trainer.loss.entropy_weight == pytest.approx(0.04)
    trainer.anneal_lr(20)
    assert trainer.loss.entropy_weight == pytest.approx(0.01)
    steady = Trainer(MainOnlyLoss(arms_task(), MainOnlyConfig(entropy_coef=0.04)), quick_run(tmp_path, iterations=40))
    steady.anneal_lr(20)
    assert steady.loss.entropy_weight == pytest.approx(0.04)  # constant by default
    with pytest.raises(ValueError, match="entropy_halflife: must be >= 0"):
        MainOnlyConfig(entropy_halflife=-1)


def test_generic_train_logs_episode_returns_live_and_refuses_online_settings_offline(tmp_path: Path) -> None:
    task = arms_task()
    src = OnlineSource(lambda n, s: GymEnvPool([TradeoffArmsEnv] * n, task))
    run = {"iterations": 3, "n_envs": 4, "rollout_steps": 8, "device": "cpu", "progress": False, "tensorboard": False}
    res = train("rcpo", task, src, {"run": run, "algo": {"minibatch_size": 16, "hidden": [8]}}, out_dir=tmp_path)
    last = res.history[-1]
    # TradeoffArmsEnv episodes last 8 steps: every iteration ends 4 episodes
    assert last["charts/episode_length"] == 8.0
    assert "charts/episode_return_main" in last and "charts/episode_constraint_slack_safety" in last
    assert "charts/multiplier_safety" in last
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and (tmp_path / "curves.png").exists()
    # a step where the batch met the constraint was checkpointed as the best feasible iterate
    if res.best_feasible is not None:
        assert (tmp_path / "best_feasible.safetensors").exists()
    g = torch.Generator().manual_seed(0)
    n = 64
    action = torch.randint(0, 3, (n, 1), generator=g).float()
    obs = torch.rand(n, 3, generator=g)
    batch = TransitionBatch(obs, action, torch.rand(n, 2), obs, torch.zeros(n), torch.full((n,), -1.0986))
    with pytest.raises(ValueError, match="offline training .* needs advantage='gae'"):
        train(
            "main_only",
            task,
            OfflineSource(batch),
            {"run": run, "algo": {"exploration": "per_episode"}},
            out_dir=tmp_path / "off",
        )
    # the same setting in the `online` section is simply not applied offline
    res = train(
        "main_only",
        task,
        OfflineSource(batch),
        {
            "run": {**run, "offline_steps": 2},
            "algo": {"minibatch_size": 16, "warm_start_steps": 0},
            "online": {"exploration": "per_episode"},
        },
        out_dir=tmp_path / "off2",
    )
    assert len(res.history) == 3


def test_offline_keeps_logged_propensities_and_fills_only_missing_ones(tmp_path: Path) -> None:
    """The trainer's behaviour model replaces no logged propensity unless asked (issue 14, offline = online)."""
    task = arms_task()
    seen: list[torch.Tensor] = []

    class Spy(MainOnlyLoss):
        def actor_loss(self, mb: MiniBatch) -> tuple[torch.Tensor, dict[str, float]]:
            seen.append(mb.behaviour_log_prob.detach().clone())
            return super().actor_loss(mb)

    g = torch.Generator().manual_seed(0)
    n = 64
    action = torch.randint(0, 3, (n, 1), generator=g).float()
    obs = torch.rand(n, 3, generator=g)
    logged = torch.full((n,), -1.0986)
    logged[:8] = float("nan")  # eight rows without a propensity
    batch = TransitionBatch(obs, action, torch.rand(n, 2), obs, torch.zeros(n), logged)
    rc = quick_run(tmp_path, 1, offline_steps=1, behaviour_steps=5)
    Trainer(Spy(task, LossConfig(minibatch_size=n, warm_start_steps=0)), rc).fit(OfflineSource(batch))
    values = torch.cat(seen)
    assert not torch.isnan(values).any()
    assert (values == -1.0986).float().mean().item() > 0.7  # logged rows kept exactly
