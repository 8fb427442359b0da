"""The warm start at the incumbent constant (`start_action`): every rank learner's first policy plays it exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import rank_quality
from models.problems import RANK
from training.algorithms import ma_rdpg
from training.rl.networks import START_BOUND_MARGIN, BetaActor, CategoricalActor, TanhGaussianActor
from training.rl.registry import get_algorithm
from training.rl.task import TaskSpec

# A fixed-fusion winner of the benchmark's search: a weight on the lower bound (like 0) and interior ones.
STAGE = (0.25, 0.0, 0.5, 0.2, 0.5, 0.5)
CONSTANT = torch.tensor(STAGE * 3)
# What a tanh-squashed actor can play for it: a bound is moved START_BOUND_MARGIN of the half-width inside.
PLAYABLE = CONSTANT.clamp(0.5 * START_BOUND_MARGIN, 1.0 - 0.5 * START_BOUND_MARGIN)


def _obs(task: TaskSpec, n: int = 64) -> torch.Tensor:
    return torch.randn(n, task.obs_size, generator=torch.Generator().manual_seed(3)) * 2.0


@pytest.mark.parametrize("algo", ["tscac", "ma_cascade", "main_only", "rcpo"])
def test_every_on_policy_rank_learner_starts_playing_the_constant_in_every_state(algo: str) -> None:
    spec = get_algorithm(algo)
    task = TaskSpec.from_problem(RANK, multi_agent=spec.multi_agent)
    default = spec.loss(task, spec.config.from_dict({}), tuple(RANK.default_action))  # type: ignore[misc]
    learner = spec.loss(  # type: ignore[misc]
        task, spec.config.from_dict({"start_action": CONSTANT.tolist()}), tuple(RANK.default_action)
    )
    obs = _obs(task)
    with torch.no_grad():
        played = learner.actor.mode(obs)
        # every policy the loss copies from the actor (TSCAC's stage one, the best-feasible copy) too
        others = [p.mode(obs) for p in learner.policies()[1:]]
        if hasattr(learner, "best_actor"):
            others.append(learner.best_actor.mode(obs))
        default_played = default.actor.mode(obs)
    assert torch.allclose(played, PLAYABLE.expand_as(played), atol=1e-6)
    for o in others:
        assert torch.allclose(o, played, atol=1e-6)
    # without it: about the production weights, and not one action for every state (small random last layer)
    assert (default_played - torch.tensor(RANK.default_action)).abs().max() < 0.01
    assert default_played.std(0).max() > 1e-5
    # σ stays the configured exploration: the warm start moves the median only
    assert torch.allclose(learner.actor.distribution(obs).scale, default.actor.distribution(obs).scale)


def test_the_warm_started_actor_learns_state_dependent_deviations_from_its_first_step() -> None:
    actor = TanhGaussianActor(24, 6, 0.0, 1.0, (16, 16))
    actor.start_constant(torch.tensor(STAGE))
    obs = torch.randn(32, 24)
    target = torch.rand(32, 6)  # a state-dependent target the constant cannot match
    opt = torch.optim.SGD(actor.parameters(), lr=0.5)
    for _ in range(3):
        loss = (actor.mode(obs) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        moved = actor.mode(obs)
    # no longer one action for every state (the weight started on a bound moves too, but tanh is flat there)
    interior = [i for i, w in enumerate(STAGE) if w > 0]
    assert moved[:, interior].std(0).min() > 1e-4


def test_beta_actor_starts_at_an_interior_constant_exactly() -> None:
    actor = BetaActor(24, 6, 0.0, 1.0, (16,), init_std=0.1)
    target = torch.tensor([0.25, 0.15, 0.5, 0.2, 0.5, 0.8])
    actor.start_constant(target)
    with torch.no_grad():
        played = actor.mode(torch.randn(50, 24) * 3.0)
    assert torch.allclose(played, target.expand_as(played), atol=1e-5)


def test_categorical_actors_and_wrong_lengths_are_refused() -> None:
    with pytest.raises(TypeError, match="box actor"):
        CategoricalActor(4, 3, (8,)).start_constant(torch.zeros(1))
    spec = get_algorithm("tscac")
    task = TaskSpec.from_problem(RANK)
    with pytest.raises(ValueError, match="start_action: 6 values for an action of 18"):
        spec.loss(task, spec.config.from_dict({"start_action": list(STAGE)}))  # type: ignore[misc]
    with pytest.raises(ValueError, match="start_action"):
        ma_rdpg.MARDPGConfig(start_action=(float("nan"),))


def test_ma_rdpg_stage_actors_start_at_their_slice_for_every_observation_and_message() -> None:
    task = TaskSpec.from_problem(RANK, multi_agent=True)
    module = ma_rdpg.MARDPG(task, ma_rdpg.MARDPGConfig(message_size=8, start_action=tuple(CONSTANT.tolist())))
    obs = torch.randn(40, module.obs_size)
    state = torch.randn(40, module.state_size)
    with torch.no_grad():
        for actors in (module.actors, module.target_actors, module.best_actors):
            for actor in actors:
                action, _ = actor(obs, state)
                assert torch.allclose(action, PLAYABLE[:6].expand_as(action), atol=1e-6)
    with pytest.raises(ValueError, match="18"):
        ma_rdpg.MARDPG(task, ma_rdpg.MARDPGConfig(start_action=STAGE))


def test_the_benchmark_starts_the_online_learners_at_the_searched_constant_and_not_bc() -> None:
    start = np.asarray(CONSTANT.tolist(), np.float32)
    for algo in (*rank_quality.ONLINE, *rank_quality.OFF_POLICY):
        assert rank_quality._algo_config(algo, None, start)["start_action"] == pytest.approx(CONSTANT.tolist())
    assert "start_action" not in rank_quality._algo_config("bc", None, start)
    assert "start_action" not in rank_quality._algo_config("tscac", None, None)


def test_ma_rdpg_actors_wait_for_actor_starts_while_the_critic_learns(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_ma_rdpg import RelaySim, relay_task

    start = (0.3, 0.6, 0.2)
    cfg = ma_rdpg.MARDPGConfig(
        hidden_sizes=(16,), message_size=4, batch_size=32, start_action=start, actor_starts=12, learning_starts=2
    )
    steps = {"critic": 0, "before_first_actor_step": -1}
    critic_loss, actor_loss = ma_rdpg.MARDPG.critic_loss, ma_rdpg.MARDPG.actor_loss

    def counted_critic(
        self: ma_rdpg.MARDPG, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        steps["critic"] += 1
        return critic_loss(self, batch, generator)

    def counted_actor(self: ma_rdpg.MARDPG, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if steps["before_first_actor_step"] < 0:
            steps["before_first_actor_step"] = steps["critic"]
        return actor_loss(self, batch)

    monkeypatch.setattr(ma_rdpg.MARDPG, "critic_loss", counted_critic)
    monkeypatch.setattr(ma_rdpg.MARDPG, "actor_loss", counted_actor)
    moved = ma_rdpg.train(cfg, relay_task(), RelaySim(8), 14, 4)  # two requests past actor_starts
    fresh = ma_rdpg.MARDPG(relay_task(), cfg)
    heads = lambda m: torch.cat([p.flatten() for a in m.actors for p in a.policy.parameters()])  # noqa: E731
    # the critic stepped on requests 2..11 (two steps each) before the actors' first step, on request 12
    assert steps["before_first_actor_step"] == (cfg.actor_starts - cfg.learning_starts) * cfg.updates_per_request + 1
    assert not torch.equal(heads(moved), heads(fresh))
    with pytest.raises(ValueError, match="actor_starts"):
        ma_rdpg.MARDPGConfig(actor_starts=-1)


def test_ma_rdpg_refuses_a_run_too_short_for_actor_starts_naming_the_field_and_the_length(tmp_path: Path) -> None:
    from tests.unit.test_ma_rdpg import RelaySim, relay_task

    cfg = ma_rdpg.MARDPGConfig(hidden_sizes=(16,), message_size=4, batch_size=32, actor_starts=320)
    with pytest.raises(ValueError, match=r"actor_starts: 320 requests, but the run has only 160"):
        ma_rdpg.train(cfg, relay_task(), RelaySim(8), 160, 32)
    # through the CLI path too: 5 iterations × 32 requests with the shipped rank config's actor_starts
    from training.train import train_problem

    run = {"iterations": 5, "n_envs": 2, "rollout_steps": 32, "progress": False, "tensorboard": False}
    run["out_dir"] = str(tmp_path)
    with pytest.raises(ValueError, match=r"actor_starts: 320 requests, but the run has only 160"):
        train_problem("rank", "ma_rdpg", sim=True, config={"run": run, "algo": {"actor_starts": 320}})


def test_the_benchmark_evaluates_the_shipped_best_feasible_actor_not_the_last_iterate() -> None:
    from training.rl.losses import shipped_policy

    spec = get_algorithm("tscac")
    task = TaskSpec.from_problem(RANK)
    other = [0.9, 0.1, 0.1, 0.1, 0.1, 0.1] * 3

    def learner(start: list[float]) -> torch.nn.Module:
        return spec.loss(task, spec.config.from_dict({"start_action": start}))  # type: ignore[misc,no-any-return]

    trained = learner(CONSTANT.tolist())
    assert shipped_policy(trained) is trained.actor  # nothing feasible kept: the last iterate ships
    trained.best_actor.load_state_dict(learner(other).actor.state_dict())
    trained.has_best_feasible.fill_(True)
    assert shipped_policy(trained) is trained.best_actor
    shipped = rank_quality.evaluate("tscac", trained, users=20, days=1, seed=7)
    assert shipped == rank_quality.evaluate("tscac", learner(other), users=20, days=1, seed=7)
    assert shipped[0] != rank_quality.evaluate("tscac", learner(CONSTANT.tolist()), users=20, days=1, seed=7)[0]
    # a loss without a best feasible copy ships its actor
    main_only = get_algorithm("main_only")
    plain = main_only.loss(task, main_only.config.from_dict({}))  # type: ignore[misc]
    assert shipped_policy(plain) is plain.actor


def test_ma_rdpg_deviation_bound_keeps_every_stage_within_the_bound_of_its_start() -> None:
    task = TaskSpec.from_problem(RANK, multi_agent=True)
    cfg = ma_rdpg.MARDPGConfig(message_size=8, start_action=tuple(CONSTANT.tolist()), deviation_bound=0.2)
    module = ma_rdpg.MARDPG(task, cfg)
    low, high = (CONSTANT[:6] - 0.2).clamp(min=0.0), (CONSTANT[:6] + 0.2).clamp(max=1.0)
    obs, state = torch.randn(40, module.obs_size), torch.randn(40, module.state_size)
    for actor in module.actors:
        assert torch.allclose(actor.policy.low, low) and torch.allclose(actor.policy.high, high)
        with torch.no_grad():
            assert torch.allclose(actor(obs, state)[0], CONSTANT[:6].expand(40, 6), atol=0.2 * START_BOUND_MARGIN)
            actor.policy.body[-1].bias.fill_(50.0)  # however far the actor is pushed, it stays inside
            assert torch.allclose(actor(obs, state)[0], high.expand(40, 6))
    # exploration and clipping still use the full box
    assert module.box_low.tolist() == [0.0] * 6 and module.box_high.tolist() == [1.0] * 6
    with pytest.raises(ValueError, match="deviation_bound"):
        ma_rdpg.MARDPGConfig(deviation_bound=-0.1)
