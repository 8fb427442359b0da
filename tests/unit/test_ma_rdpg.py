"""MA-RDPG: the Bellman chain over the stages, the message, the constrained scheme, export, registry."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.problems import RANK, BoxAction, Constraint
from training.algorithms import ma_rdpg
from training.rl.task import AgentSlice, TaskSignal, TaskSpec


def relay_task(threshold: float = 0.6) -> TaskSpec:
    return TaskSpec(
        obs_size=9,
        action=BoxAction(size=3, low=0.0, high=1.0),
        signals=(TaskSignal("main", 0.5), TaskSignal("safety", 0.5)),
        constraints=(Constraint("safety", ">=", threshold),),
        agents=tuple(AgentSlice(name, 3, 1) for name in ("first", "second", "third")),
        name="relay",
    )


class RelaySim:
    """Three stages act in turn (the `BatchedRankSim` sequential interface, `positions` = the actions so far).

    Only the first stage sees the request's sign x ∈ {−1, +1}; the team's main reward is
    1 − (a_third − (0.5 + 0.4x))², so the third stage can only earn more than 0.84 (its best
    constant) through the message. The safety signal is 1 − a_third, constrained ≥ 0.6: the unconstrained
    optimum (mean a_third 0.5) violates it; the constrained one plays a_third ≈ 0.8 / 0.0 for x = ±1.
    A session is 4 requests, the user's horizon 8.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.rng = n, np.random.default_rng(seed)
        self.request = np.zeros(n, np.int64)
        self._draw()

    def _draw(self) -> None:
        self.x = self.rng.choice([-1.0, 1.0], size=self.n).astype(np.float32)

    def stage_observation(self, k: int, positions: Any) -> np.ndarray:
        obs = np.zeros((self.n, 3), np.float32)
        obs[:, 0] = self.x if k == 0 else 0.0
        obs[:, 1 + min(k, 1)] = 1.0
        return obs

    def run_stage(self, k: int, weights: np.ndarray, positions: Any) -> list[np.ndarray]:
        return [*(positions or []), np.asarray(weights)[:, 0]]

    def serve_page(self, actions: list[np.ndarray]) -> tuple[Any, dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
        main = 1.0 - (actions[2] - (0.5 + 0.4 * self.x)) ** 2
        rewards = {"main": main.astype(np.float32), "safety": (1.0 - actions[2]).astype(np.float32)}
        self.request += 1
        session_end = self.request % 4 == 0
        done = self.request % 8 == 0
        self._draw()
        return None, rewards, done, {"active": np.ones(self.n, bool), "session_end": session_end}


def _train(requests: int, **overrides: Any) -> tuple[ma_rdpg.MARDPG, list[dict[str, float]]]:
    cfg = ma_rdpg.MARDPGConfig(
        hidden_sizes=(32,), message_size=8, batch_size=128, actor_lr=1e-3, updates_per_request=3, **overrides
    )
    rows: list[dict[str, float]] = []
    module = ma_rdpg.train(cfg, relay_task(), RelaySim(32), requests, 20, rows.append)
    return module, rows


def _greedy(actors: Any, x: float) -> list[float]:
    """The deterministic actions of one request whose sign is x, from a zero message."""
    sim = RelaySim(1)
    sim.x[:] = x
    state = torch.zeros(1, actors[0].state_size)
    actions = []
    with torch.no_grad():
        for k, actor in enumerate(actors):
            a, state = actor(torch.as_tensor(sim.stage_observation(k, None)), state)
            actions.append(float(a[0, 0]))
    return actions


def test_the_last_stage_acts_on_what_the_first_saw_through_the_message_and_the_constraint_holds() -> None:
    module, rows = _train(400)
    assert bool(module.has_best_feasible)
    shipped = module.shipped_actors()
    plus, minus = _greedy(shipped, 1.0), _greedy(shipped, -1.0)
    # x reaches the third stage only through the message: its action follows x
    assert plus[2] - minus[2] > 0.3
    main = 1.0 - ((plus[2] - 0.9) ** 2 + (minus[2] - 0.1) ** 2) / 2
    # the best any policy without the message can do is 0.84 (the shipped actors: the state that started
    # the kept window's newest iteration; on this seed 0.87, the last iterate's was above 0.9)
    assert main > 0.84
    # the multiplier rose while the constraint was violated, and the shipped iterate meets it
    assert max(r["charts/multiplier_safety"] for r in rows) > 0.3
    assert 1.0 - (plus[2] + minus[2]) / 2 >= 0.6 - 0.03


def _actor_params(actors: Any) -> torch.Tensor:
    """All of a module's (or module list's) parameters as one flat tensor, to compare actors exactly."""
    return torch.cat([p.flatten() for p in actors.parameters()])


@pytest.mark.parametrize("window", [1, 3])
def test_the_tracker_keeps_the_actors_that_played_the_window_not_their_state_after_it(window: int) -> None:
    # A threshold every iteration meets: the tracker keeps the window with the highest main value.
    def run(requests: int) -> tuple[ma_rdpg.MARDPG, list[dict[str, float]]]:
        cfg = ma_rdpg.MARDPGConfig(
            hidden_sizes=(16,), message_size=4, batch_size=64, actor_lr=3e-3, best_feasible_window=window
        )
        rows: list[dict[str, float]] = []
        return ma_rdpg.train(cfg, relay_task(threshold=0.0), RelaySim(16), requests, 10, rows.append), rows

    module, rows = run(100)
    kept = int(rows[-1]["charts/best_feasible_iteration"])
    # the state that started the window's newest iteration (the tracker's last measurement)
    before = run(10 * kept)[0].actors if kept > 0 else ma_rdpg.MARDPG(relay_task(), module.cfg).actors
    after = run(10 * (kept + 1))[0].actors  # what the tracker kept before: the state after the window
    assert bool(module.has_best_feasible)
    assert torch.equal(_actor_params(module.shipped_actors()), _actor_params(before))
    assert not torch.equal(_actor_params(module.shipped_actors()), _actor_params(after))


def _requests(module: ma_rdpg.MARDPG, reset: float, terminal: float) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(int(reset * 2 + terminal))
    b = 4
    return {
        "state": torch.randn(b, module.state_size, generator=g),
        "obs": torch.randn(b, 3, 3, generator=g),
        "action": torch.rand(b, 3, 1, generator=g),
        "reward": torch.randn(b, 2, generator=g),
        "discount": torch.full((b, 2), 0.5 * (1.0 - terminal)),
        "reset": torch.full((b,), reset),
        "next_obs": torch.randn(b, 3, generator=g),
    }


def _expected_critic_loss(
    module: ma_rdpg.MARDPG, batch: dict[str, torch.Tensor], reset: float = 0.0, pick: Any = None
) -> float:
    """The critic loss recomputed stage by stage: every critic's (one, or the twins') squared error on one
    target, whose bootstrap is target critic 1's value, or `pick`(Q'_1, Q'_2) per signal (no smoothing)."""
    critics = [module.critic] if module.critic2 is None else [module.critic, module.critic2]
    expected = 0.0
    with torch.no_grad():
        h, h_target = batch["state"], batch["state"]
        for k in range(3):
            o, a = batch["obs"][:, k], batch["action"][:, k]
            stage = torch.full((4,), k)
            qs = [critic(stage, h[:, :4], o, a) for critic in critics]
            h = module.actors[k].cell(torch.cat([o, a], -1), h)
            h_target = module.target_actors[k].cell(torch.cat([o, a], -1), h_target)
            if k < 2:  # the next stage of the same request: no reward, discount 1
                nxt, o2, r, d = k + 1, batch["obs"][:, k + 1], 0.0, 1.0
            else:  # the next request's pre-rank, on a message that restarts after a session end
                h, h_target = h * (1 - reset), h_target * (1 - reset)
                nxt, o2, r, d = 0, batch["next_obs"], batch["reward"], batch["discount"]
            a2 = module.target_actors[nxt].policy(torch.cat([o2, h_target[:, :4]], -1))
            stage2 = torch.full((4,), nxt)
            q2 = module.target_critic(stage2, h_target[:, :4], o2, a2)
            if pick is not None:
                q2 = pick(q2, module.target_critic2(stage2, h_target[:, :4], o2, a2))
            y = r + d * q2
            expected += sum(float(((q - y) ** 2).mean()) for q in qs)
    return expected


@pytest.mark.parametrize(("reset", "terminal"), [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)])
def test_the_critic_target_hands_over_stage_to_stage_on_the_message_sent(reset: float, terminal: float) -> None:
    module = ma_rdpg.MARDPG(relay_task(), ma_rdpg.MARDPGConfig(hidden_sizes=(16,), message_size=4))
    batch = _requests(module, reset, terminal)
    expected = _expected_critic_loss(module, batch, reset)
    assert module.critic_loss(batch)["critic_loss"].item() == pytest.approx(expected, rel=1e-5)


def test_the_critic_loss_trains_the_message_cells_and_the_actor_loss_the_policy_heads() -> None:
    module = ma_rdpg.MARDPG(relay_task(), ma_rdpg.MARDPGConfig(hidden_sizes=(16,), message_size=4))
    batch = _requests(module, 0.0, 0.0)
    module.critic_loss(batch)["critic_loss"].backward()
    assert module.actors[0].cell.input_to_gates.weight.grad is not None
    assert module.actors[0].policy.body[0].weight.grad is None
    module.zero_grad(set_to_none=True)
    module.actor_loss(batch)["actor_loss"].backward()
    assert module.actors[2].policy.body[0].weight.grad is not None
    assert module.actors[0].cell.input_to_gates.weight.grad is None


def test_the_mixed_value_weights_the_constraint_by_its_multiplier() -> None:
    module = ma_rdpg.MARDPG(relay_task(), ma_rdpg.MARDPGConfig(hidden_sizes=(16,)))
    module.set_multipliers(np.array([3.0]))
    assert module.mix.tolist() == pytest.approx([0.25, 0.75])


def test_the_per_request_mix_puts_every_signal_on_its_horizon() -> None:
    # γ 0.99 for watch time, 0.9 for the interactions: a comment's discounted sum is a tenth of the horizon's
    cfg = ma_rdpg.MARDPGConfig(hidden_sizes=(16,), message_size=4, discounts=(0.99, 0.9, 0.9, 0.9, 0.9, 0.9))
    task = TaskSpec.from_problem(RANK, multi_agent=True)
    comment = task.signal_names.index("comment")
    multipliers = np.zeros(len(task.constraints))
    multipliers[[c.signal for c in task.constraints].index("comment")] = 1.0
    plain, per_request = (ma_rdpg.MARDPG(task, replace(cfg, per_request_mix=flag)) for flag in (False, True))
    for module in (plain, per_request):
        module.set_multipliers(multipliers)
    assert plain.mix[0].item() == pytest.approx(0.5) and plain.mix[comment].item() == pytest.approx(0.5)
    assert per_request.mix[0].item() == pytest.approx(0.5)
    assert per_request.mix[comment].item() == pytest.approx(5.0, rel=1e-4)


def test_each_stage_exports_with_the_message_as_input_and_output(tmp_path: Path) -> None:
    import onnxruntime as ort

    module = ma_rdpg.MARDPG(TaskSpec.from_problem(RANK, multi_agent=True), ma_rdpg.MARDPGConfig(message_size=8))
    actor = module.actors[1]
    assert ma_rdpg.export_stage(actor, tmp_path / "rank.onnx") <= 1e-5
    session = ort.InferenceSession(str(tmp_path / "rank.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["observation", "message"]
    assert [o.name for o in session.get_outputs()] == ["action", "next_message"]
    # starts at the spec's default stage weights whatever it observes
    obs = np.random.default_rng(0).normal(size=(5, RANK.observation_size)).astype(np.float32)
    action, _ = session.run(None, {"observation": obs, "message": np.zeros((5, 16), np.float32)})
    assert np.allclose(action, np.clip((1.0, 0.3, 0.3, 0.3, 0.3, 0.3), 0.03, 0.97), atol=0.05)


def test_registered_online_multi_agent_and_bad_config_names_the_field() -> None:
    from training.rl.registry import get_algorithm

    spec = get_algorithm("ma_rdpg")
    assert spec.multi_agent and spec.fit is not None and spec.data == "online"
    with pytest.raises(ValueError, match="unknown field"):
        ma_rdpg.MARDPGConfig.from_dict({"message_sise": 8})
    with pytest.raises(ValueError, match="cell"):
        ma_rdpg.MARDPGConfig(cell="rnn")
    with pytest.raises(ValueError, match="discounts"):
        ma_rdpg.MARDPGConfig(discounts=(1.0,))
    with pytest.raises(ValueError, match="3 box agents"):
        ma_rdpg.MARDPG(TaskSpec.from_problem(RANK), ma_rdpg.MARDPGConfig())


def test_the_sequential_evaluator_carries_the_state_within_a_session_only() -> None:
    from training.rl.sim import evaluate_sequential

    longest: list[float] = []

    def counting(stage: int, obs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if stage == 0:
            state = state + 1.0  # requests seen in this session
            longest.append(float(state.max()))
        return np.tile(np.float32([0.1, 0.0, 0.1, 1.0, 0.1, 0.3]), (obs.shape[0], 1)), state

    a = evaluate_sequential(counting, 1, n_users=20, days=1, seed=3)
    assert 1.0 < max(longest) <= 40.0  # a session ends at 40 requests at the latest; the count restarts
    b = evaluate_sequential(counting, 1, n_users=20, days=1, seed=3)
    assert a["per_decision"] == b["per_decision"]  # common random numbers: the same users, the same luck


def test_trains_in_the_rank_simulator_and_exports_and_registers_through_the_cli_path(tmp_path: Path) -> None:
    from models.registry import ModelRegistry
    from training.train import export_and_register, train_problem

    run = {"seed": 0, "iterations": 2, "rollout_steps": 4, "n_envs": 8, "out_dir": str(tmp_path / "run")}
    run |= {"progress": False, "tensorboard": False, "plots": False}
    res = train_problem("rank", "ma_rdpg", sim=True, config={"run": run, "algo": {"batch_size": 16, "message_size": 4}})
    assert len(res.history) == 2 and "charts/multiplier_comment" in res.history[-1]
    out = export_and_register(res, "rank", "ma_rdpg", tmp_path / "onnx", str(tmp_path / "registry"), "t1")
    assert set(out["exported"]) == {"pre_rank.onnx", "rank.onnx", "re_rank.onnx", "model.onnx"}
    assert out["registered"] == "rank/t1"
    ModelRegistry(tmp_path / "registry").promote("rank", "t1")  # every file loads and runs in onnxruntime


HOLDOUT_CONFIG = ma_rdpg.MARDPGConfig(
    hidden_sizes=(32,),
    message_size=8,
    batch_size=128,
    actor_lr=1e-3,
    updates_per_request=3,
    best_feasible_window=1,
    holdout_users=1,
)
"""A small MA-RDPG that judges its candidates on held-out users (each test brings its own judge)."""


def test_choose_on_holdout_ships_the_richest_candidate_feasible_with_margin_else_the_closest() -> None:
    task = relay_task(threshold=1.0)  # safety >= 1.0
    judged = [(5.0, np.array([1.2])), (9.0, np.array([1.02])), (7.0, np.array([1.05])), (8.0, np.array([0.9]))]
    # margin 0.03: 1.02 misses 1.03, so the richest of those meeting it is 7.0 (index 2), not 9.0
    assert ma_rdpg.choose_on_holdout(task, judged, 0.03) == 2
    assert ma_rdpg.choose_on_holdout(task, judged, 0.0) == 1
    # none meets 1.0 with the margin: the one closest to feasible
    assert ma_rdpg.choose_on_holdout(task, [(9.0, np.array([0.8])), (1.0, np.array([0.95]))], 0.03) == 1


def test_holdout_users_ship_the_candidate_the_held_out_users_prefer_not_the_trackers_last() -> None:
    # The held-out judge prefers the oldest candidate it is shown and says the others miss the constraint,
    # so that one ships instead of the tracker's choice.
    shown: list[torch.Tensor] = []

    def judge(actors: Any) -> tuple[float, np.ndarray]:
        shown.append(_actor_params(torch.nn.ModuleList(actors)).clone())
        return 10.0 - len(shown), np.array([1.0 if len(shown) == 1 else -1.0])

    cfg = HOLDOUT_CONFIG  # on this seed the tracker keeps iterations 0, then 2
    plain = ma_rdpg.train(replace(cfg, holdout_users=0), relay_task(), RelaySim(32), 200, 10)
    module = ma_rdpg.train(cfg, relay_task(), RelaySim(32), 200, 10, judge=judge)
    assert 2 <= len(shown) <= cfg.holdout_candidates  # the tracker's latest kept iterates, oldest first
    assert module.holdout["chosen"] == module.holdout["iterations"][0]
    assert torch.equal(_actor_params(module.shipped_actors()), shown[0])
    # training itself is unchanged: the tracker's own choice is the last candidate shown, and differs
    assert torch.equal(_actor_params(plain.shipped_actors()), shown[-1])
    assert not torch.equal(_actor_params(module.shipped_actors()), _actor_params(plain.shipped_actors()))
    with pytest.raises(ValueError, match="holdout_users"):
        ma_rdpg.train(cfg, relay_task(), RelaySim(32), 200, 10)


def test_holdout_spread_judges_snapshots_spread_over_the_run_and_the_trackers_pick() -> None:
    shown: list[torch.Tensor] = []

    def judge(actors: Any) -> tuple[float, np.ndarray]:  # the last one shown is the richest, all feasible
        shown.append(_actor_params(torch.nn.ModuleList(actors)).clone())
        return float(len(shown)), np.array([1.0])

    cfg = replace(HOLDOUT_CONFIG, holdout_spread=True)
    module = ma_rdpg.train(cfg, relay_task(), RelaySim(32), 200, 10, judge=judge)
    # 20 iterations, 4 snapshots: the actors that started iterations 4, 9, 14 and 19, and the tracker's 2
    assert module.holdout["iterations"] == [2, 4, 9, 14, 19]
    assert module.holdout["chosen"] == 19
    assert torch.equal(_actor_params(module.shipped_actors()), shown[-1])


def _stage_rule(stage: int, obs: np.ndarray) -> np.ndarray:
    """A state-dependent start for `start_policy`: weights that follow the group, the minutes in session and the
    pool's predicted comment (the columns the headroom rule reads), different per stage."""
    group = np.argmax(obs[:, :3], axis=1)
    weights = np.tile(np.float32([0.1, 0.05, 0.05, 0.85, 0.2, 0.15]), (obs.shape[0], 1))
    weights[:, 4] = 0.1 + 0.2 * group + 0.5 * np.clip(obs[:, 16], 0.0, 0.5)
    weights[:, 0] = np.clip(0.05 * stage + 0.1 * obs[:, 26], 0.0, 1.0)
    return weights


def _stage_observations(rows: int, seed: int) -> list[np.ndarray]:
    """Fresh local observations of the three stages of one request in the rank simulator, the rule playing."""
    from training.envs import make_batched

    sim: Any = make_batched("rank", rows, seed)
    sim.reset(seed)
    for _ in range(5):  # a few requests in, so minutes and completion vary between rows
        sim.serve_page(sim.cascade(np.tile(np.float32([0.1, 0.05, 0.05, 0.85, 0.2, 0.15]), (rows, 3))))
    out, positions = [], None
    for k in range(3):
        obs = sim.stage_observation(k, positions)
        out.append(obs)
        positions = sim.run_stage(k, _stage_rule(k, obs), positions)
    return out


def test_a_start_policy_makes_every_stage_play_the_rule_on_fresh_observations_then_deviate_within_the_bound() -> None:
    from training.envs import make_batched

    task = TaskSpec.from_problem(RANK, multi_agent=True)
    cfg = ma_rdpg.MARDPGConfig(message_size=8, deviation_bound=0.1, batch_size=32, learning_starts=2, seed=3)
    module = ma_rdpg.MARDPG(task, cfg, start_policy=_stage_rule)
    observations = _stage_observations(64, seed=11)
    message = torch.randn(64, module.state_size)  # whatever the message says
    for k, obs in enumerate(observations):
        rule = _stage_rule(k, obs)
        assert np.ptp(rule[:, 4]) > 0.1  # the rule really depends on the state
        action, _ = module.actors[k](torch.as_tensor(obs), message)
        assert np.abs(action.detach().numpy() - rule).max() < 1e-6
    # Trained a little (the actors from the second request on), the stages deviate from the rule, within ± 0.1.
    sim: Any = make_batched("rank", 16, 5)
    sim.reset(5)
    trained = ma_rdpg.train(cfg, task, sim, requests=12, per_iteration=4, start_policy=_stage_rule)
    deviations = []
    for k, obs in enumerate(observations):
        action, _ = trained.actors[k](torch.as_tensor(obs), torch.zeros(64, trained.state_size))
        deviations.append(np.abs(action.detach().numpy() - _stage_rule(k, obs)).max())
    assert 1e-4 < max(deviations) <= 0.1 + 1e-6, deviations
    with pytest.raises(ValueError, match="not both"):
        ma_rdpg.MARDPG(task, replace(cfg, start_action=(0.5,) * 18), start_policy=_stage_rule)
    with pytest.raises(ValueError, match="ONNX"):  # the rule is numpy, not a graph
        ma_rdpg.export_for_serving(trained, Path("unused"))


# ---------------------------------------------------------------- TD3's stabilisers (issue 18, sixteenth round)


@pytest.mark.parametrize("direction", [">=", "<="])
def test_twin_critics_bootstrap_on_the_pessimistic_of_the_two_target_critics_per_signal(direction: str) -> None:
    task = relay_task()
    task = replace(task, constraints=(Constraint("safety", direction, 0.6),))
    module = ma_rdpg.MARDPG(task, ma_rdpg.MARDPGConfig(hidden_sizes=(16,), message_size=4, twin_critics=True))
    assert module.critic2 is not None and module.target_critic2 is not None
    # the twins disagree: target 2 is higher on main, and on safety lower (">=") or higher ("<="), so the
    # pessimistic pick is target 1's value on main and target 2's on safety in both cases
    module.target_critic2.load_state_dict(module.target_critic.state_dict())
    with torch.no_grad():
        module.target_critic2.body[-1].bias.add_(torch.tensor([1.0, -1.0 if direction == ">=" else 1.0]))
    batch = _requests(module, 0.0, 0.0)
    loss = module.critic_loss(batch)["critic_loss"].item()

    def pessimistic(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
        safety = torch.minimum(q1, q2)[:, 1] if direction == ">=" else torch.maximum(q1, q2)[:, 1]
        return torch.stack([torch.minimum(q1, q2)[:, 0], safety], 1)

    assert loss == pytest.approx(_expected_critic_loss(module, batch, pick=pessimistic), rel=1e-5)
    # and not what target critic 1 alone (plain DDPG's target), nor the max everywhere, would give
    assert loss != pytest.approx(_expected_critic_loss(module, batch, pick=lambda a, b: a), rel=1e-3)
    assert loss != pytest.approx(_expected_critic_loss(module, batch, pick=torch.maximum), rel=1e-3)


def test_clipped_double_q_takes_the_min_where_the_signal_is_wanted_up_and_the_max_where_down() -> None:
    q1 = torch.tensor([[1.0, 5.0, -2.0]])
    q2 = torch.tensor([[3.0, 4.0, -1.0]])
    out = ma_rdpg.clipped_double_q(q1, q2, torch.tensor([1.0, 1.0, -1.0]))
    assert out.tolist() == [[1.0, 4.0, -1.0]]


def test_twin_critics_both_learn_and_their_losses_train_the_shared_message_cells() -> None:
    module = ma_rdpg.MARDPG(relay_task(), ma_rdpg.MARDPGConfig(hidden_sizes=(16,), message_size=4, twin_critics=True))
    groups = module.parameter_groups()
    assert module.critic2 is not None
    assert {id(p) for p in module.critic2.parameters()} <= {id(p) for p in groups["critic"]}
    batch = _requests(module, 0.0, 0.0)
    module.critic_loss(batch)["critic_loss"].backward()
    assert module.critic.body[0].weight.grad is not None and module.critic2.body[0].weight.grad is not None
    assert module.actors[0].cell.input_to_gates.weight.grad is not None


def test_the_actors_and_the_targets_step_only_every_policy_delay_critic_steps() -> None:
    module = ma_rdpg.MARDPG(relay_task(), ma_rdpg.MARDPGConfig(hidden_sizes=(16,), message_size=4, policy_delay=3))
    groups = module.parameter_groups()
    actor_opt = torch.optim.Adam(groups["actor"], lr=1e-2)
    critic_opt = torch.optim.Adam(groups["critic"], lr=1e-2)
    batch = _requests(module, 0.0, 0.0)
    moved: dict[str, list[int]] = {"critic": [], "actors": [], "targets": []}
    for step in range(1, 7):
        before = {
            "critic": _actor_params(module.critic).clone(),
            "actors": torch.cat([p.flatten() for p in groups["actor"]]).clone(),
            "targets": _actor_params(module.target_actors).clone(),
        }
        out = ma_rdpg.gradient_step(module, batch, critic_opt, actor_opt, step, actors_learn=True)
        after = {
            "critic": _actor_params(module.critic),
            "actors": torch.cat([p.flatten() for p in groups["actor"]]),
            "targets": _actor_params(module.target_actors),
        }
        for key in moved:
            if not torch.equal(before[key], after[key]):
                moved[key].append(step)
        assert ("actor_loss" in out) == (step % 3 == 0)
    assert moved == {"critic": [1, 2, 3, 4, 5, 6], "actors": [3, 6], "targets": [3, 6]}


def test_target_smoothing_noise_is_clipped_and_the_action_stays_in_the_box() -> None:
    g = torch.Generator().manual_seed(0)
    action = torch.full((4000, 2), 0.5)
    action[:, 1] = 0.98
    w, low, high = torch.full((2,), 0.1), torch.zeros(2), torch.ones(2)
    # σ = 10 half-widths: nearly every draw is clipped, to exactly ± 0.5 · 0.1
    wide = ma_rdpg.smoothed_action(action, w, 10.0, 0.5, low, high, g)
    assert float((wide[:, 0] - 0.5).abs().max()) == pytest.approx(0.05)
    assert float((wide[:, 0] - 0.5).abs().min()) > 0.0
    assert float(wide[:, 1].max()) == pytest.approx(1.0)  # 0.98 + 0.05 clipped to the box
    # TD3's σ 0.2: the noise has sd ≈ 0.2 · 0.1 (a few draws clipped at 2.5 sd)
    td3 = ma_rdpg.smoothed_action(action, w, 0.2, 0.5, low, high, g)
    assert float((td3[:, 0] - 0.5).std()) == pytest.approx(0.02, rel=0.1)


def test_target_noise_scales_to_the_actors_deviation_box_or_the_action_box() -> None:
    task = TaskSpec.from_problem(RANK, multi_agent=True)
    start = tuple([0.5] * (3 * task.agents[0].action_size))
    cfg = ma_rdpg.MARDPGConfig(hidden_sizes=(16,), message_size=4, start_action=start, deviation_bound=0.1)
    actor_box = ma_rdpg.MARDPG(task, replace(cfg, target_noise=0.2))
    action_box = ma_rdpg.MARDPG(task, replace(cfg, target_noise=0.2, target_noise_box="action"))
    assert actor_box.target_noise_half_width.shape == (3, task.agents[0].action_size)
    assert torch.allclose(actor_box.target_noise_half_width, torch.tensor(0.1))
    assert torch.allclose(action_box.target_noise_half_width, torch.tensor(0.5))
    # the smoothing perturbs the critic's target: the loss differs from the one without it
    batch_task = ma_rdpg.MARDPG(task, cfg)
    b, o, d, n = 8, task.agents[0].obs_size, task.agents[0].action_size, len(task.signals)
    g = torch.Generator().manual_seed(1)
    batch = {
        "state": torch.zeros(b, batch_task.state_size),
        "obs": torch.randn(b, 3, o, generator=g),
        "action": torch.rand(b, 3, d, generator=g),
        "reward": torch.randn(b, n, generator=g),
        "discount": torch.full((b, n), 0.9),
        "reset": torch.zeros(b),
        "next_obs": torch.randn(b, o, generator=g),
    }
    plain = batch_task.critic_loss(batch)["critic_loss"].item()
    smoothed = ma_rdpg.MARDPG(task, replace(cfg, target_noise=0.2)).critic_loss(batch, torch.Generator().manual_seed(2))
    assert smoothed["critic_loss"].item() != pytest.approx(plain, rel=1e-6)


def test_td3_stabilisers_still_learn_the_relay_through_the_message() -> None:
    module, _ = _train(400, twin_critics=True, policy_delay=2, target_noise=0.2)
    plus, minus = _greedy(module.actors, 1.0), _greedy(module.actors, -1.0)
    assert plus[2] - minus[2] > 0.3


@pytest.mark.parametrize(
    ("field", "value"),
    [("policy_delay", 0), ("target_noise", -0.1), ("target_noise_clip", -1.0), ("target_noise_box", "x")],
)
def test_td3_fields_reject_invalid_values_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        ma_rdpg.MARDPGConfig(**{field: value})


def test_held_multipliers_stay_at_their_start_and_weigh_the_mix_while_free_ones_move_from_it() -> None:
    held, rows = _train(60, initial_multipliers=(0.5,), hold_multipliers=True)
    assert [r["charts/multiplier_safety"] for r in rows] == [0.5] * len(rows)
    # Q_mix = (Q_main + 0.5·Q_safety) / 1.5 (per-request mix off: horizon factor 1)
    assert torch.allclose(held.mix, torch.tensor([1.0, 0.5]) / 1.5)
    # the same start, free: the PID moves ν from 0.5 (the relay's unconstrained optimum violates safety)
    _, free = _train(60, initial_multipliers=(0.5,))
    assert free[0]["charts/multiplier_safety"] != pytest.approx(0.5)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"hold_multipliers": True}, "hold_multipliers"),
        ({"initial_multipliers": (-0.1,)}, "initial_multipliers"),
        ({"initial_multipliers": (30.0,)}, "initial_multipliers"),
    ],
)
def test_multiplier_start_fields_reject_invalid_values_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ma_rdpg.MARDPGConfig(**overrides)


def test_initial_multipliers_need_one_value_per_constraint_of_the_task() -> None:
    with pytest.raises(ValueError, match="initial_multipliers"):
        _train(20, initial_multipliers=(0.5, 0.5))


# ---------------------------------------------------------------- session-held, state-dependent exploration (19th round)


def _session_noise(rows: int, obs_size: int, share: float, stats_requests: int = 1) -> ma_rdpg.SessionStateNoise:
    generator = torch.Generator().manual_seed(7)
    return ma_rdpg.SessionStateNoise(rows, 3, obs_size, share, stats_requests, generator)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_session_noise_keeps_the_per_request_marginal_and_correlates_as_the_share_says(share: float) -> None:
    rows, noise_std = 20_000, torch.tensor([0.1, 0.2, 0.05])
    g = torch.Generator().manual_seed(3)
    obs = torch.randn(rows, 5, generator=g) * torch.tensor([1.0, 10.0, 0.1, 3.0, 1.0]) + 2.0
    noise = _session_noise(rows, 5, share)
    first = noise(0, obs, noise_std)  # the statistics are fixed on these observations (stats_requests 1)
    # every request's noise is N(0, σ²) per weight, whatever ρ
    assert torch.allclose(first.std(0), noise_std, rtol=0.03)
    assert torch.allclose(first.mean(0), torch.zeros(3), atol=0.03 * float(noise_std.max()))
    # the same observation in the same session: the same noise
    assert torch.equal(noise(0, obs, noise_std), first)
    # the opposite observation (ô → −ô, cos −1): correlation (1 − ρ) − ρ
    mirrored = noise(0, 2 * noise.mean[0] - obs, noise_std)
    correlation = float((first * mirrored / noise_std**2).mean())
    assert correlation == pytest.approx(1.0 - 2.0 * share, abs=0.03)


def test_session_noise_is_redrawn_only_for_the_rows_whose_session_restarts() -> None:
    noise_std = torch.full((3,), 0.1)
    obs = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    noise = _session_noise(8, 4, 0.5)
    before = noise(1, obs, noise_std)
    restart = torch.tensor([True, False] * 4)
    noise.restart(restart)
    after = noise(1, obs, noise_std)
    assert torch.equal(after[~restart], before[~restart])
    assert (after[restart] != before[restart]).all()


def test_session_noise_gives_a_constant_column_no_weight_and_a_stateless_row_the_held_offset() -> None:
    noise_std = torch.full((3,), 0.1)
    obs = torch.randn(16, 3, generator=torch.Generator().manual_seed(2))
    obs[:, 2] = 4.0  # constant where the statistics are fixed
    noise = _session_noise(16, 3, 1.0)
    first = noise(0, obs, noise_std)
    moved = obs.clone()
    moved[:, 2] = -9.0
    assert torch.equal(noise(0, moved, noise_std), first)
    # a row at the statistics' mean has no direction: the whole σ goes to the held column, still unit
    at_mean = noise(0, noise.mean[0].expand(16, 3), noise_std)
    assert torch.allclose(at_mean, noise_std * noise.matrices[0][:, :, 0])


class RecordingRelay(RelaySim):
    """The relay recording what every stage saw and played: (request, stage, observation, weights)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        super().__init__(n, seed)
        self.played: list[tuple[int, int, np.ndarray, np.ndarray]] = []

    def stage_observation(self, k: int, positions: Any) -> np.ndarray:
        self.seen = super().stage_observation(k, positions)
        return self.seen

    def run_stage(self, k: int, weights: np.ndarray, positions: Any) -> list[np.ndarray]:
        self.played.append((int(self.request[0]), k, self.seen, np.array(weights)))
        return super().run_stage(k, weights, positions)


def _played_noise(requests: int, **overrides: Any) -> tuple[dict[tuple[int, int], np.ndarray], list[np.ndarray]]:
    """{(request, stage): played − deterministic action (N, 1), NaN where the box clipped it} and stage 0's
    observations per request, for actors that never learn (no message, no gradient step)."""
    cfg = ma_rdpg.MARDPGConfig(hidden_sizes=(8,), message=False, learning_starts=requests + 1, **overrides)
    sim = RecordingRelay(16)
    module = ma_rdpg.train(cfg, relay_task(), sim, requests, 8)
    noise, first_stage = {}, []
    with torch.no_grad():
        for request, k, obs, weights in sim.played:
            o = torch.as_tensor(obs)
            actor: Any = module.actors[k]
            mean = actor.policy(torch.cat([o, torch.zeros(len(o), cfg.message_size)], dim=-1)).numpy()
            noise[request, k] = np.where((weights > 0) & (weights < 1), weights - mean, np.nan)
            if k == 0:
                first_stage.append(obs)
    return noise, first_stage


def test_the_default_exploration_draws_fresh_noise_per_stage_and_request_from_the_runs_generator() -> None:
    noise, _ = _played_noise(6)
    generator = torch.Generator().manual_seed(1)  # train's generator: cfg.seed + 1
    for request in range(6):
        for k in range(3):
            expected = (torch.randn(16, 1, generator=generator) * 0.1).numpy()  # σ 0.2 × half-width 0.5
            played = noise[request, k]
            assert np.isfinite(played).sum() > 8
            assert np.allclose(played[np.isfinite(played)], expected[np.isfinite(played)], atol=1e-6)


def test_session_state_exploration_holds_the_noise_over_a_session_and_follows_the_state() -> None:
    # the relay's sessions are 4 requests; the statistics are fixed after the first iteration (8 requests)
    held, _ = _played_noise(16, exploration="session_state", state_noise_share=0.0)
    for session in range(4):
        for k in range(3):
            first = held[4 * session, k]
            for request in range(4 * session + 1, 4 * session + 4):
                both = np.isfinite(first) & np.isfinite(held[request, k])
                assert np.allclose(held[request, k][both], first[both], atol=1e-6)
            if session:  # redrawn at the restart
                both = np.isfinite(first) & np.isfinite(held[4 * session - 1, k])
                assert not np.allclose(held[4 * session - 1, k][both], first[both], atol=1e-3)
    # ρ = 1: stage 0 sees the sign x — within a session the noise repeats when x repeats and flips when it flips
    # (one standardised column: ô/|ô| = ±1); stages 1 and 2 see constant columns only, so their noise is held
    state, first_stage = _played_noise(16, exploration="session_state", state_noise_share=1.0)
    for request in (9, 10, 11):  # session 2, after the statistics were fixed
        x_same = first_stage[request][:, 0] == first_stage[8][:, 0]
        now, then = state[request, 0][:, 0], state[8, 0][:, 0]
        ok = np.isfinite(now) & np.isfinite(then)
        assert np.allclose(now[ok & x_same], then[ok & x_same], atol=1e-6)
        assert np.allclose(now[ok & ~x_same], -then[ok & ~x_same], atol=1e-6)
        for k in (1, 2):
            ok = np.isfinite(state[request, k]) & np.isfinite(state[8, k])
            assert np.allclose(state[request, k][ok], state[8, k][ok], atol=1e-6)


@pytest.mark.parametrize(
    ("field", "value"),
    [("exploration", "ou"), ("state_noise_share", -0.1), ("state_noise_share", 1.5), ("state_noise_share", math.nan)],
)
def test_exploration_fields_reject_invalid_values_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        ma_rdpg.MARDPGConfig(**{field: value})


# ---------------------------------------------------------------- observation standardisation (20th round)


class ScaledRelay(RecordingRelay):
    """The recording relay with observations on very different scales (the rank observation's columns' std range
    0.013–3.1): the sign column × 50 + 100, a noisy column of std 0.01 per row, the stage's one-hot column."""

    def stage_observation(self, k: int, positions: Any) -> np.ndarray:
        obs = super().stage_observation(k, positions)
        obs[:, 0] = 50.0 * obs[:, 0] + 100.0
        obs[:, 1] = 0.01 * self.rng.standard_normal(self.n).astype(np.float32)
        self.seen = obs
        return obs


def _standardisers(module: torch.nn.Module) -> list[Any]:
    from training.rl.networks import Standardise

    return [m for m in module.modules() if isinstance(m, Standardise)]


def _critic_statistics(module: ma_rdpg.MARDPG, k: int) -> Any:
    """Stage k's statistics as the critics read them (the `Standardise` with buffers mean and std)."""
    assert module.critic_observation is not None
    return module.critic_observation[k]


def _scaled_run(requests: int, **overrides: Any) -> tuple[ma_rdpg.MARDPG, ScaledRelay]:
    """A relay run of 8 requests per iteration (the statistics are fitted after request 8 when on)."""
    cfg = ma_rdpg.MARDPGConfig(hidden_sizes=(16,), message_size=4, batch_size=32, **overrides)
    sim = ScaledRelay(16)
    return ma_rdpg.train(cfg, relay_task(), sim, requests, 8), sim


def test_obs_standardise_is_off_by_default_and_adds_nothing() -> None:
    assert ma_rdpg.MARDPGConfig().obs_standardise is False
    plain = ma_rdpg.MARDPG(relay_task(), ma_rdpg.MARDPGConfig(hidden_sizes=(16,), message_size=4))
    assert plain.critic_observation is None and not _standardisers(plain)
    with pytest.raises(ValueError, match="obs_standardise"):
        plain.fit_observation_statistics([torch.zeros(4, 3)] * 3)
    # on: the same parameters, drawn in the same order (the standardisers are parameter-free buffers)
    on = ma_rdpg.MARDPG(relay_task(), ma_rdpg.MARDPGConfig(hidden_sizes=(16,), message_size=4, obs_standardise=True))
    assert torch.equal(_actor_params(on), _actor_params(plain))
    # per stage: the critics' set, and one in each actor's policy head and message cell (actors, targets, best)
    assert len(_standardisers(on)) == 3 + 3 * 3 * 2


@pytest.mark.parametrize("start", ["constant", "default"])
def test_obs_standardise_plays_the_first_iteration_bit_identically_and_fits_once_from_it(start: str) -> None:
    # "constant": the warm start at a constant (plays it whatever the input), the critic learning from request 4
    # when off; "default": the spec-free default init (the input reaches the action), nothing learns
    overrides: dict[str, Any] = (
        {"start_action": (0.3, 0.5, 0.7), "actor_starts": 8} if start == "constant" else {"learning_starts": 100}
    )
    on_module, on = _scaled_run(16, obs_standardise=True, **overrides)
    _, off = _scaled_run(16, **overrides)
    first = [(r, k, a) for r, k, _, a in on.played if r < 8]
    assert len(first) == 24
    for (request, k, played), (_, _, _, played_off) in zip(first, off.played, strict=False):
        assert np.array_equal(played, played_off), (request, k)
    if start == "default":  # the fit changes what the actors play from the second iteration on
        assert any(
            not np.array_equal(a, b) for (r, _, _, a), (_, _, _, b) in zip(on.played, off.played, strict=True) if r >= 8
        )
    # stage k's statistics are those of its first-iteration observations, never refitted on the later ones
    for k in range(3):
        seen = np.concatenate([obs for r, stage, obs, _ in on.played if stage == k and r < 8])
        critic = _critic_statistics(on_module, k)
        torch.testing.assert_close(critic.mean, torch.as_tensor(seen.mean(0)))
        torch.testing.assert_close(
            critic.std, torch.as_tensor(np.where(seen.std(0, ddof=1) > 1e-6, seen.std(0, ddof=1), 1.0))
        )
        assert float(critic.std[1]) == pytest.approx(0.01, rel=0.2)


def test_obs_standardise_takes_no_gradient_step_before_the_fit_and_the_targets_share_the_statistics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fitted_at_step: list[bool] = []
    step = ma_rdpg.gradient_step

    def recording(module: ma_rdpg.MARDPG, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        fitted_at_step.append(not torch.equal(_critic_statistics(module, 0).std, torch.ones(3)))
        return step(module, *args, **kwargs)

    monkeypatch.setattr(ma_rdpg, "gradient_step", recording)
    module, _ = _scaled_run(24, obs_standardise=True, learning_starts=2)
    # learning_starts 2 < the first iteration's 8 requests: the first step waits for the fit (request 8)
    assert fitted_at_step and all(fitted_at_step) and len(fitted_at_step) == 2 * (24 - 8 + 1)
    # the target actors got the statistics at the fit (34 Polyak moves at τ 0.01 would leave them 71 % short),
    # and Polyak on equal statistics keeps them equal (to float rounding)
    for k in range(3):
        reference = _critic_statistics(module, k)
        for copy_of_actor in (module.actors[k], module.target_actors[k]):
            layers = _standardisers(copy_of_actor)
            assert len(layers) == 2  # the policy head's and the message cell's
            for layer in layers:
                torch.testing.assert_close(layer.mean, reference.mean)
                torch.testing.assert_close(layer.std, reference.std)


def test_obs_standardise_fit_reaches_every_copy_of_the_stage_actors() -> None:
    module = ma_rdpg.MARDPG(
        relay_task(), ma_rdpg.MARDPGConfig(hidden_sizes=(16,), message_size=4, obs_standardise=True)
    )
    g = torch.Generator().manual_seed(0)
    observations = [torch.randn(64, 3, generator=g) * torch.tensor([50.0, 0.01, 1.0]) + k for k in range(3)]
    module.fit_observation_statistics(observations)
    for k in range(3):
        reference = _critic_statistics(module, k)
        torch.testing.assert_close(reference.mean, observations[k].mean(0))
        for copy_of_actor in (module.actors[k], module.target_actors[k], module.best_actors[k]):
            for layer in _standardisers(copy_of_actor):
                assert torch.equal(layer.mean, reference.mean) and torch.equal(layer.std, reference.std)
        # the critics (and their targets) read stage k's observation standardised with the same statistics
        state = torch.randn(64, 2 * module.cfg.message_size, generator=g)  # the LSTM state [h; c]
        action = torch.rand(64, 1, generator=g)
        standardised = (observations[k] - reference.mean) / reference.std
        for critic in (module.critic, module.target_critic):
            expected = critic(torch.full((64,), k), module.message(state), standardised, action)
            torch.testing.assert_close(module._q(critic, k, state, observations[k], action), expected)


def test_obs_standardise_exports_each_stage_with_the_statistics_in_the_graph(tmp_path: Path) -> None:
    import onnxruntime as ort

    task = TaskSpec.from_problem(RANK, multi_agent=True)
    module = ma_rdpg.MARDPG(task, ma_rdpg.MARDPGConfig(message_size=8, obs_standardise=True))
    g = torch.Generator().manual_seed(0)
    scales = torch.logspace(-2, 0.5, RANK.observation_size)  # std 0.01 … 3.2, as the rank observation's columns
    module.fit_observation_statistics([torch.randn(512, RANK.observation_size, generator=g) * scales + 1.0] * 3)
    with torch.no_grad():  # an actor whose action reads its observation (the default start barely does)
        for actor in module.actors:
            actor.policy.body[-1].weight.normal_(0.0, 0.3, generator=g)  # type: ignore[index,union-attr]
    files = module.export_for_serving(tmp_path)
    obs = (torch.randn(64, RANK.observation_size, generator=g) * scales + 1.0).numpy()
    message = (0.1 * torch.randn(64, 2 * module.cfg.message_size, generator=g)).numpy()  # the LSTM state [h; c]
    for k, agent in enumerate(task.agents):
        assert files[f"{agent.name}.onnx"].max_abs_diff <= 1e-5
        session = ort.InferenceSession(str(tmp_path / f"{agent.name}.onnx"), providers=["CPUExecutionProvider"])
        action, _, next_message = session.run(None, {"observation": obs, "message": message})
        with torch.no_grad():
            expected_action, expected_message = module.actors[k](torch.as_tensor(obs), torch.as_tensor(message))
            unstandardised = copy.deepcopy(module.actors[k])
            for layer in _standardisers(unstandardised):
                layer.mean.zero_()
                layer.std.fill_(1.0)
            raw_action, _ = unstandardised(torch.as_tensor(obs), torch.as_tensor(message))
        np.testing.assert_allclose(action, expected_action.numpy(), atol=1e-5)
        np.testing.assert_allclose(next_message, expected_message.numpy(), atol=1e-5)
        assert float((expected_action - raw_action).abs().max()) > 1e-2  # the statistics matter to the action
