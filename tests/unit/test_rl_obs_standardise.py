"""`LossConfig.obs_standardise` (issue 18, twentieth round; ours, off by default): every network of TSCAC and the
MA cascade reads its input through a `Standardise` layer fitted once from the run's first batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.problems import RANK
from tests.support.rl import fit, quick_run
from training.algorithms import ma_cascade, tscac
from training.algorithms.main_only import MainOnlyLoss
from training.export import export_policy
from training.rl.data import GymEnvPool, RolloutCollector, TransitionBatch
from training.rl.losses import LossConfig, LossModule, shipped_policy
from training.rl.networks import JointActor, Standardise
from training.rl.sim import BatchedSimPool
from training.rl.task import TaskSpec
from training.rl.toy_envs import TradeoffArmsEnv, arms_task
from training.rl.trainer import OfflineSource, OnlineSource, PolicyStart, Trainer

LEARNERS: dict[str, tuple[Any, Any, bool]] = {
    "tscac": (tscac.TSCACLoss, tscac.TSCACConfig, False),
    "ma_cascade": (ma_cascade.MACascadeLoss, ma_cascade.MACascadeConfig, True),
}


def _standardisers(learner: LossModule) -> dict[str, Standardise]:
    return {name: m for name, m in learner.named_modules() if isinstance(m, Standardise)}


def _rank_run(
    algo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standardise: bool, iterations: int = 2
) -> tuple[LossModule, list[TransitionBatch]]:
    """A tiny rank run warm-started at the production weights; (learner, every batch the Trainer updated on)."""
    loss_cls, cfg_cls, multi_agent = LEARNERS[algo]
    task = TaskSpec.from_problem(RANK, multi_agent=multi_agent)
    cfg = cfg_cls(minibatch_size=64, hidden=(16,), start_action=RANK.default_action, obs_standardise=standardise)
    batches: list[TransitionBatch] = []
    update = Trainer.update

    def recording_update(self: Trainer, batch: TransitionBatch, rollout: Any, steps: int = 0) -> dict[str, float]:
        batches.append(batch.index(torch.arange(len(batch))))  # a copy, before the update
        return update(self, batch, rollout, steps)

    monkeypatch.setattr(Trainer, "update", recording_update)
    source = OnlineSource(lambda n, s: BatchedSimPool("rank", n, task, multi_agent=multi_agent))
    run = quick_run(tmp_path / f"{algo}_{standardise}", iterations, n_envs=8, rollout_steps=16)
    return fit(loss_cls, cfg, run, task, source).learner, batches


def test_off_by_default_and_refused_where_a_loss_does_not_fit_every_network(tmp_path: Path) -> None:
    assert LossConfig().obs_standardise is False
    for algo, (loss_cls, cfg_cls, multi_agent) in LEARNERS.items():
        task = TaskSpec.from_problem(RANK, multi_agent=multi_agent)
        assert not _standardisers(loss_cls(task, cfg_cls())), algo
    with pytest.raises(ValueError, match="obs_standardise: main_only does not fit"):
        MainOnlyLoss(TaskSpec.from_problem(RANK), LossConfig(obs_standardise=True))
    task = arms_task()
    learner = tscac.TSCACLoss(task, tscac.TSCACConfig(obs_standardise=True))
    start = PolicyStart(rule=lambda obs: np.zeros((len(obs), 1), np.float32))
    source = OnlineSource(lambda n, s: GymEnvPool([TradeoffArmsEnv] * n, task))
    with pytest.raises(ValueError, match="obs_standardise: expected False with a policy_start"):
        Trainer(learner, quick_run(tmp_path, 1), start).fit(source)


@pytest.mark.parametrize("algo", ["tscac", "ma_cascade"])
def test_every_network_fitted_once_from_the_first_batch_whose_actions_are_unchanged(
    algo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, plain_batches = _rank_run(algo, tmp_path, monkeypatch, standardise=False)
    learner, batches = _rank_run(algo, tmp_path, monkeypatch, standardise=True)
    first, second = batches[0], batches[1]
    # the first batch is played before any statistics exist: bit-identical to the run without the option
    assert torch.equal(first.obs, plain_batches[0].obs) and torch.equal(first.action, plain_batches[0].action)
    assert not torch.equal(second.action, plain_batches[1].action)  # after the first update the option acts
    # every Standardise layer of the learner holds the first batch's statistics of what its network reads:
    # the centralised Q_i [joint obs; joint action], an MA cascade agent its own block, the rest the observation
    size = RANK.observation_size
    fitted = _standardisers(learner)
    assert len(fitted) >= 7  # actor, stage-one actor, best feasible and collecting copies, critics, targets
    for name, layer in fitted.items():
        if name.startswith("q_critics"):
            seen = torch.cat([first.obs, first.action], -1)
        elif ".agents." in name:
            k = int(name.split(".agents.")[1].split(".")[0])
            seen = first.obs[:, k * size : (k + 1) * size]
        else:
            seen = first.obs
        std = seen.std(0)
        torch.testing.assert_close(layer.mean, seen.mean(0), msg=name)
        torch.testing.assert_close(layer.std, torch.where(std > 1e-6, std, torch.ones_like(std)), msg=name)
    # the actor's input layer sees ~zero-mean, unit-std inputs on the first batch
    actor = learner.actor
    agents = list(actor.agents) if isinstance(actor, JointActor) else [actor]
    for k, agent in enumerate(agents):
        block = first.obs[:, k * size : (k + 1) * size]
        varying = block.std(0) > 1e-6
        assert varying.sum() > 10
        standardised = agent.net[0](block)  # type: ignore[index, operator]
        torch.testing.assert_close(standardised.mean(0), torch.zeros(size), atol=1e-4, rtol=0)
        torch.testing.assert_close(standardised.std(0)[varying], torch.ones(int(varying.sum())), atol=1e-4, rtol=0)


def test_offline_fits_every_network_on_the_logged_batch_before_cloning(tmp_path: Path) -> None:
    """Offline (and exact stage two's Q heads): the statistics come from the logged observations."""
    task = arms_task()
    collector = RolloutCollector(GymEnvPool([TradeoffArmsEnv] * 4, task), 0)

    def uniform(obs: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.randint(0, 3, (obs.shape[0], 1), generator=g).float()
        return a, torch.full((obs.shape[0],), -float(np.log(3.0)))

    batch = collector.collect(uniform, 20).flatten()
    cfg = tscac.TSCACConfig(minibatch_size=32, hidden=(8,), warm_start_steps=5, obs_standardise=True)
    learner = fit(tscac.TSCACLoss, cfg, quick_run(tmp_path, 1, offline_steps=2), task, OfflineSource(batch)).learner
    fitted = _standardisers(learner)
    assert any(name.startswith("main_q") for name in fitted)
    for layer in fitted.values():
        torch.testing.assert_close(layer.mean, batch.obs.mean(0))


@pytest.mark.parametrize("algo", ["tscac", "ma_cascade"])
def test_exported_standardised_actor_gives_the_torch_actors_outputs(algo: str, tmp_path: Path) -> None:
    loss_cls, cfg_cls, multi_agent = LEARNERS[algo]
    task = TaskSpec.from_problem(RANK, multi_agent=multi_agent)
    torch.manual_seed(0)
    learner = loss_cls(task, cfg_cls(hidden=(16,), start_action=RANK.default_action, obs_standardise=True))
    # observations whose columns differ in scale and offset, as rank's do; an actor that reads them
    scale = torch.logspace(-2, 0.5, task.obs_size)
    obs = torch.randn(512, task.obs_size) * scale + torch.linspace(-1, 3, task.obs_size)
    learner.fit_standardisers(obs, torch.rand(512, task.action_dim))
    actor = shipped_policy(learner)
    agents: list[Any] = list(actor.agents) if isinstance(actor, JointActor) else [actor]
    with torch.no_grad():
        for agent in agents:
            agent.net[-1].weight.normal_(0.0, 0.3)
    files = export_policy(actor, RANK, tmp_path / algo)
    size = RANK.observation_size
    for k, agent in enumerate(agents):
        name = f"{task.agents[k].name}.onnx" if multi_agent else "model.onnx"
        x = obs[:, k * size : (k + 1) * size]
        sess = ort.InferenceSession(str(files[name].path), providers=["CPUExecutionProvider"])
        mean, log_std = sess.run(None, {"observation": x.numpy()})
        with torch.no_grad():
            want_mean, want_log_std = agent(x)
            unfitted = agent.net[0].mean.clone()
            agent.net[0].mean.zero_()  # the same actor without its statistics acts otherwise
            assert (agent(x)[0] - want_mean).abs().max() > 1e-2
            agent.net[0].mean.copy_(unfitted)
        np.testing.assert_allclose(mean, want_mean.numpy(), atol=1e-5)
        np.testing.assert_allclose(log_std, want_log_std.numpy(), atol=1e-5)
