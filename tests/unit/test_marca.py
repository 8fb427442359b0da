"""MaRCA (training/algorithms/marca.py): mixer monotonicity, head weights, credit shares, one-hook variants,
the factorised decision rule, the per-stage cost split, and a tiny online run that learns action values."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from training.algorithms import marca as M
from training.envs import allocate_oracle as O
from training.envs.allocate import AllocateConfig, BatchedAllocateSim
from training.rl.mixers import MonotoneMixer, SumMixer
from training.rl.registry import get_algorithm

TINY = M.MarcaConfig(
    num_heads=2,
    hidden_size=16,
    encoder_size=32,
    batch_size=256,
    requests_per_interval=128,
    train_intervals=32,
    updates_per_interval=4,
    learning_starts=256,
    epsilon_decay_fraction=0.6,
)


def _obs(n: int = 64, seed: int = 3) -> np.ndarray:
    sim = BatchedAllocateSim(n, AllocateConfig(), seed)
    return sim.reset(seed)


def test_mixer_is_monotone_in_every_agent_q() -> None:
    torch.manual_seed(0)
    learner = M.MarcaLearner(TINY)
    obs = torch.as_tensor(_obs())
    q = torch.randn(obs.shape[0], 3)
    slopes = learner.mixer_slopes(q, obs)
    assert (slopes >= 0).all()
    for k in range(3):
        bumped = q.clone()
        bumped[:, k] += 0.5
        assert (learner.mixer(bumped, obs) >= learner.mixer(q, obs) - 1e-6).all()


def test_head_weights_are_proportional_to_td_loss() -> None:
    eta = M.head_weights(torch.tensor([1.0, 3.0]))
    assert torch.allclose(eta, torch.tensor([0.25, 0.75]))
    assert torch.allclose(M.head_weights(torch.tensor([2.0, 2.0, 4.0])), torch.tensor([0.25, 0.25, 0.5]))
    assert torch.allclose(M.head_weights(torch.zeros(4)), torch.full((4,), 0.25))


def test_credit_shares_follow_the_variance_of_conditional_means() -> None:
    shares = M.credit_shares([np.array([0.0, 2.0]), np.array([1.0, 1.0, 1.0])])
    assert np.allclose(shares, [1.0, 0.0])
    shares = M.credit_shares([np.array([0.0, 2.0]), np.array([0.0, 4.0])])  # variances 1 and 4
    assert np.allclose(shares, [0.2, 0.8])
    assert np.allclose(M.credit_shares([np.ones(3), np.ones(2)]), [0.5, 0.5])


@pytest.mark.parametrize(
    ("variant", "parent", "hook"),
    [
        (M.QmixLearner, M.MarcaLearner, "awrq_refinements"),
        (M.VdnLearner, M.QmixLearner, "build_mixer"),
        (M.DqnLearner, M.VdnLearner, "agent_split"),
    ],
)
def test_each_baseline_overrides_exactly_one_hook(variant: type, parent: type, hook: str) -> None:
    assert variant.__mro__[1] is parent
    own_methods = [n for n, v in vars(variant).items() if inspect.isfunction(v)]
    assert own_methods == [hook]
    assert hook in M.HOOKS


def test_variants_behave_as_their_hook_says() -> None:
    marca, qmix, vdn, dqn = (M.VARIANTS[v](TINY) for v in ("marca", "qmix", "vdn", "dqn"))
    assert marca.refinements == M.AwrqRefinements(2, True) and qmix.refinements == M.AwrqRefinements(1, False)
    assert isinstance(qmix.mixer, MonotoneMixer) and isinstance(vdn.mixer, SumMixer)
    assert marca.split.num_actions == (8, 4, 12) and dqn.split.num_actions == (384,)
    assert marca.agents[0].num_heads == 2 and qmix.agents[0].num_heads == 1


def test_agent_split_round_trips_every_joint_action() -> None:
    for split in (M.STAGE_SPLIT, M.JOINT_SPLIT):
        agent = split.to_agent_actions(O.ALL_ACTIONS)
        assert np.array_equal(split.to_joint(agent), O.ALL_ACTIONS)
        assert len({tuple(r) for r in agent}) == 384


def test_per_stage_costs_sum_to_the_simulators_cost() -> None:
    cfg = AllocateConfig()
    for split in (M.STAGE_SPLIT, M.JOINT_SPLIT):
        table = M.CostTable.from_simulator(cfg, split)
        agent = split.to_agent_actions(O.ALL_ACTIONS)
        total = sum(t[agent[:, i]] for i, t in enumerate(table.per_agent))
        assert np.allclose(total, O.cost_table(cfg), rtol=1e-5)


def test_vdn_factorised_decision_is_the_exact_joint_argmax() -> None:
    torch.manual_seed(1)
    learner = M.VdnLearner(TINY)
    cfg = AllocateConfig()
    obs = _obs()
    cost = M.CostTable.from_simulator(cfg, learner.split)
    lam = 0.7
    policy = M.MarcaPolicy(learner, cost, lambda o: lam)
    got = policy(obs)
    values = learner.joint_action_values(torch.as_tensor(obs)).numpy()
    joint_cost = O.cost_table(cfg) * cfg.contention_factor(float(obs[0, 1]))
    best = O.ALL_ACTIONS[np.argmax(values - lam * joint_cost[None, :], axis=1)]
    assert np.array_equal(got, best)
    # a larger λ never buys more compute
    cheap = M.MarcaPolicy(learner, cost, lambda o: 50.0)(obs)
    assert cfg.expected_cost(cheap).sum() <= cfg.expected_cost(got).sum()


def _spearman_to_oracle(learner: M.MarcaLearner, seed: int = 5) -> float:
    cfg = AllocateConfig()
    sim = BatchedAllocateSim(64, cfg, seed)
    obs = sim.reset(seed)
    truth = O.expected_revenue(cfg, O.Requests.from_observation(obs), sim.traffic, 0.8)
    predicted = learner.joint_action_values(torch.as_tensor(obs)).numpy()
    return float(np.mean([spearmanr(p, t).statistic for p, t in zip(predicted, truth, strict=True)]))


def test_tiny_online_run_learns_action_values_and_beats_random() -> None:
    torch.set_num_threads(1)
    result = M.train(TINY, "marca")
    untrained = M.MarcaLearner(TINY)
    assert _spearman_to_oracle(result.learner) > 0.6 > _spearman_to_oracle(untrained)
    cfg = AllocateConfig(intervals_per_day=24)
    cost = M.CostTable.from_simulator(cfg, result.learner.split)
    learned = O.run_days(M.MarcaPolicy(result.learner, cost, M.FeedbackLambda(0.8, 1.5)), cfg, 64, [11])
    rng = np.random.default_rng(0)
    random = O.run_days(lambda o: O.ALL_ACTIONS[rng.integers(0, 384, o.shape[0])], cfg, 64, [11])
    assert learned.revenue_per_day[0] > 1.1 * random.revenue_per_day[0]
    assert np.isfinite([r["td_loss"] for r in result.history if "td_loss" in r]).all()


def test_registered_and_config_errors_name_the_field() -> None:
    spec = get_algorithm("marca")
    assert spec.multi_agent and spec.data == "online" and spec.fit is M.fit
    with pytest.raises(ValueError, match="num_heads"):
        M.MarcaConfig(num_heads=0)
    with pytest.raises(ValueError, match="variant"):
        M.train(TINY, "maddpg")


def test_value_weighted_loss_and_learning_rate_decay_options() -> None:
    with pytest.raises(ValueError, match="loss_value_power"):
        M.MarcaConfig(loss_value_power=-1.0)
    with pytest.raises(ValueError, match="final_learning_rate_fraction"):
        M.MarcaConfig(final_learning_rate_fraction=0.0)
    obs = torch.as_tensor(_obs(64))
    value = torch.expm1(obs[:, 0] * 5.0)
    assert torch.equal(M.MarcaLearner(TINY).row_weights(obs), torch.ones(64))  # p = 0: unweighted, as before
    weights = M.MarcaLearner(M.MarcaConfig(loss_value_power=1.0)).row_weights(obs)
    assert torch.allclose(weights.mean(), torch.tensor(1.0)) and torch.allclose(weights, value / value.mean())
    # the step size falls linearly from learning_rate to the fraction of it over the gradient steps taken
    torch.set_num_threads(1)
    cfg = M.MarcaConfig(**{**TINY.__dict__, "train_intervals": 8, "final_learning_rate_fraction": 0.25})
    seen: list[float] = []
    original = torch.optim.Adam.step

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    try:
        torch.optim.Adam.step = spy  # type: ignore[method-assign]
        M.train(cfg, "marca")
    finally:
        torch.optim.Adam.step = original  # type: ignore[method-assign]
    assert seen[0] == cfg.learning_rate and 0.25 * cfg.learning_rate < seen[-1] < 0.3 * cfg.learning_rate
    assert all(a >= b for a, b in zip(seen, seen[1:], strict=False))


def test_onnx_agent_steps_chained_along_the_cascade_match_torch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    torch.manual_seed(2)
    learner = M.MarcaLearner(TINY)
    errors = M.export_agents(learner, tmp_path)
    assert set(errors) == {"retrieval", "pre_rank", "rank"} and max(errors.values()) < 1e-5
    obs = _obs(32).astype(np.float32)
    state = np.zeros((32, TINY.hidden_size), np.float32)
    expected = learner.serving_q(torch.as_tensor(obs))
    for name, want in zip(learner.split.names, expected, strict=True):
        session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        q, state = session.run(["q_values", "next_hidden_state"], {"observation": obs, "hidden_state": state})
        assert np.allclose(q, want.numpy(), atol=1e-5)
