"""Options for long-horizon objectives: per-signal discount overrides, collector-side exploration (per step,
per episode, antithetic) and antithetic episode-pair advantages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.problems import BoxAction
from tests.support.rl import fit, quick_run
from training.algorithms.main_only import MainOnlyLoss
from training.rl.data import GymEnvPool, Rollout, RolloutCollector
from training.rl.episode_pairs import EpisodePairBuffer, episode_pair_advantages
from training.rl.exploration import (
    AntitheticNoise,
    AntitheticStateNoise,
    PerEpisodeNoise,
    PerStepNoise,
    make_act,
    make_exploration,
)
from training.rl.losses import LossConfig
from training.rl.task import AgentSlice, TaskSignal, TaskSpec
from training.rl.toy_envs import TradeoffBanditEnv


def _task() -> TaskSpec:
    return TaskSpec(
        obs_size=3,
        action=BoxAction(size=2, low=0.0, high=1.0),
        signals=(TaskSignal("main", 0.9), TaskSignal("aux", 0.5)),
    )


def test_discounts_override_the_tasks_and_are_validated() -> None:
    task = _task()
    assert MainOnlyLoss(task, LossConfig()).gammas.tolist() == pytest.approx([0.9, 0.5])
    learner = MainOnlyLoss(task, LossConfig(discounts=(0.99, 0.8)))
    assert learner.gammas.tolist() == pytest.approx([0.99, 0.8])
    with pytest.raises(ValueError, match="discounts"):
        LossConfig(discounts=(1.0, 0.5))
    with pytest.raises(ValueError, match="discounts: 1 values for 2 signals"):
        MainOnlyLoss(task, LossConfig(discounts=(0.99,)))


def test_episode_noise_is_held_until_the_rows_episode_ends() -> None:
    actor = MainOnlyLoss(_task(), LossConfig(init_std=0.3)).actor
    act = make_act(actor, PerEpisodeNoise())
    gen = torch.Generator().manual_seed(0)
    obs = torch.zeros(4, 3)
    a1, lp1 = act(obs, gen)
    a2, lp2 = act(obs, gen)
    assert torch.equal(a1, a2) and torch.equal(lp1, lp2)  # same offset while the episodes last
    exploration = PerEpisodeNoise()
    act = make_act(actor, exploration)
    a1, _ = act(obs, gen)
    exploration.episodes_ended(torch.tensor([True, False, False, True]), gen)
    a3, _ = act(obs, gen)
    assert not torch.equal(a3[0], a1[0]) and not torch.equal(a3[3], a1[3])
    assert torch.equal(a3[1:3], a1[1:3])
    # per-step exploration draws fresh noise every step
    plain = make_act(actor, PerStepNoise())
    assert not torch.equal(plain(obs, gen)[0], plain(obs, gen)[0])
    # the stored log-probability is the actor's exact density of the played action
    assert torch.allclose(lp1, actor.log_prob(obs, a2), atol=1e-5)


def test_collector_reports_episode_ends() -> None:
    task = TaskSpec(
        obs_size=3, action=BoxAction(1, 0.0, 1.0), signals=(TaskSignal("main", 0.9), TaskSignal("safety", 0.9))
    )
    pool = GymEnvPool([lambda: TradeoffBanditEnv(horizon=2)] * 3, task)
    seen: list[torch.Tensor] = []
    rollout = RolloutCollector(pool, 0).collect(
        lambda o, g: (torch.full((o.shape[0], 1), 0.5), torch.zeros(o.shape[0])),
        4,
        on_ends=lambda ended, g: seen.append(ended.clone()),
    )
    assert len(seen) == 4
    assert torch.equal(torch.stack(seen), rollout.ends > 0)
    assert torch.stack(seen)[1].all() and not torch.stack(seen)[0].any()  # horizon 2: every row ends at step 2


def test_learner_episode_pair_advantages_match_hand_computed_values() -> None:
    # two pairs (rows 0/1 and 2/3), two signals: outcomes [main, aux]
    outcomes = torch.tensor([[10.0, 0.2], [4.0, 0.6], [1.0, 1.0], [3.0, 0.0]])
    adv = episode_pair_advantages(outcomes, torch.tensor([0, 1, 2, 3]))
    assert torch.allclose(adv, torch.tensor([[3.0, -0.2], [-3.0, 0.2], [-1.0, 0.5], [1.0, -0.5]]))
    with pytest.raises(ValueError, match="partner"):
        episode_pair_advantages(outcomes, torch.tensor([0, 2, 1, 3]))


def _rollout(rewards: list[list[float]], ends: list[list[int]]) -> Rollout:
    """(T, N) main-signal rewards (aux = 1 per step) and episode ends → a Rollout with obs = step index."""
    r = torch.tensor(rewards)
    t, n = r.shape
    obs = torch.arange(t, dtype=torch.float32)[:, None, None].expand(t, n, 3).clone()
    return Rollout(
        obs=obs,
        action=torch.zeros(t, n, 2),
        rewards=torch.stack([r, torch.ones(t, n) * torch.arange(n)[None, :]], dim=-1),
        next_obs=obs,
        terminated=torch.tensor(ends, dtype=torch.float32),
        ends=torch.tensor(ends, dtype=torch.float32),
        behaviour_log_prob=torch.zeros(t, n),
    )


def test_learner_episode_pair_buffer_waits_for_both_episodes_across_rollouts() -> None:
    buf = EpisodePairBuffer(2)
    # row 0: episode 0 = steps 0-1 (returns 1 + 2 = 3), row 1: episode 0 = steps 0-2 (5 + 5 + 5 = 15)
    buf.add(_rollout([[1.0, 5.0], [2.0, 5.0]], [[0, 0], [1, 0]]), torch.zeros(4, 2))
    assert buf.pop_ready() is None  # row 1's episode 0 has not ended
    buf.add(_rollout([[7.0, 5.0], [7.0, 9.0]], [[0, 1], [0, 0]]), torch.arange(8.0).reshape(4, 2))
    ready = buf.pop_ready()
    assert ready is not None
    batch, adv, targets = ready
    assert len(batch) == 5  # 2 steps of row 0's episode + 3 of row 1's
    # row 0's steps (+z): (3 − 15) / 2 = −6; row 1's: +6; main = undiscounted episode sum
    assert sorted(adv[:, 0].tolist()) == [-6.0, -6.0, 6.0, 6.0, 6.0]
    # aux (per-decision mean): row 0 = 0 per step, row 1 = 1 per step → ∓0.5
    assert sorted(adv[:, 1].tolist()) == [-0.5, -0.5, 0.5, 0.5, 0.5]
    assert targets.shape == (5, 2)
    # the rest (row 0's episode 1, row 1's episode 1) stays until their partners end
    assert buf.pop_ready() is None
    assert len(buf.store["key"]) == 3


def test_antithetic_noise_pairs_offsets_per_episode_index() -> None:
    exploration = AntitheticNoise()
    gen = torch.Generator().manual_seed(0)
    shape = torch.Size([4, 2])
    z0 = exploration.noise(shape, gen, torch.zeros(4, 3)).clone()
    assert torch.allclose(z0[0], -z0[1]) and torch.allclose(z0[2], -z0[3])
    exploration.episodes_ended(torch.tensor([True, False, False, False]), gen)  # row 0 starts episode 1 first
    z1 = exploration.noise(shape, gen, torch.zeros(4, 3)).clone()
    assert not torch.allclose(z1[0], z0[0]) and torch.allclose(z1[1], z0[1])
    exploration.episodes_ended(torch.tensor([False, True, False, False]), gen)  # row 1 reaches episode 1 later
    z2 = exploration.noise(shape, gen, torch.zeros(4, 3))
    assert torch.allclose(z2[1], -z1[0])
    # through a tanh-Gaussian actor, partners' pre-squash offsets are opposite: u_0 − loc = −(u_1 − loc)
    actor = MainOnlyLoss(_task(), LossConfig(init_std=0.3)).actor
    act = make_act(actor, AntitheticNoise())
    obs = torch.zeros(4, 3)
    action, _ = act(obs, gen)
    d = actor.distribution(obs)
    u = d.unsquash(action) - d.loc
    assert torch.allclose(u[0], -u[1], atol=1e-4)
    with pytest.raises(ValueError, match="advantage"):
        LossConfig(advantage="td")
    with pytest.raises(ValueError, match="exploration='antithetic'"):
        LossConfig(advantage="episode_pairs")


@pytest.mark.parametrize("exploration", ["antithetic", "antithetic_state"])
def test_learner_episode_pairs_train_on_paired_rank_rows_and_refuse_unpaired_pools(
    tmp_path: Path, exploration: str
) -> None:
    from models.problems import RANK
    from training.rl.sim import BatchedSimPool
    from training.rl.trainer import OnlineSource

    task = TaskSpec.from_problem(RANK)
    pools: list[BatchedSimPool] = []

    def make_pool(n: int, seed: int) -> BatchedSimPool:
        pools.append(BatchedSimPool("rank", n, task))
        return pools[-1]

    cfg = LossConfig(advantage="episode_pairs", exploration=exploration, minibatch_size=256)
    res = fit(MainOnlyLoss, cfg, quick_run(tmp_path, 3, n_envs=16, rollout_steps=40), task, OnlineSource(make_pool))
    assert pools[0].sim.config.paired_rows  # the loop asked the pool for antithetic row pairs
    assert res.history[-1]["charts/episode_pair_transitions"] > 0  # complete pairs reached the actor
    unpaired = GymEnvPool([lambda: TradeoffBanditEnv(horizon=2)] * 2, _task())
    with pytest.raises(ValueError, match="antithetic row pairs"):
        fit(MainOnlyLoss, cfg, quick_run(tmp_path, 1, n_envs=2), _task(), OnlineSource(lambda n, s: unpaired))


def _warm_state_noise(exploration: AntitheticStateNoise, obs: torch.Tensor, gen: torch.Generator) -> None:
    """Feed `obs` as the standardisation steps (no episode ends) so the statistics are fixed from it."""
    for _ in range(exploration.standardise_steps):
        exploration.noise(torch.Size([obs.shape[0], 3]), gen, obs)
        exploration.episodes_ended(torch.zeros(obs.shape[0], dtype=torch.bool), gen)


def _unit_square(n: int) -> torch.Tensor:
    """(n, 2) rows cycling through (±1, ±1): per-column mean 0 and std 1, so ŝ = obs afterwards."""
    corners = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    return corners.repeat(n // 4, 1)


def test_state_noise_is_standard_normal_at_every_step() -> None:
    n = 40_000
    gen = torch.Generator().manual_seed(0)
    exploration = AntitheticStateNoise(0.7, standardise_steps=1)
    _warm_state_noise(exploration, torch.randn(n, 4, generator=gen) * torch.tensor([1.0, 5.0, 0.1, 0.0]), gen)
    obs = torch.randn(n, 4, generator=gen) * 3.0 + 1.0  # other states than the statistics' (still exact)
    z = exploration.noise(torch.Size([n, 3]), gen, obs)[0::2]  # even rows: independent draws
    assert z.mean(0).abs().max() < 0.03
    assert (z.var(0) - 1.0).abs().max() < 0.04
    assert torch.corrcoef(z.T)[~torch.eye(3, dtype=torch.bool)].abs().max() < 0.03  # independent components


def test_state_noise_with_no_state_share_plays_antithetic_noise_bit_for_bit() -> None:
    actor = MainOnlyLoss(_task(), LossConfig(init_std=0.3)).actor
    plain, state = AntitheticNoise(), AntitheticStateNoise(0.0)
    act_plain, act_state = make_act(actor, plain), make_act(actor, state)
    gen_plain, gen_state = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for step in range(6):
        obs = torch.randn(4, 3, generator=torch.Generator().manual_seed(step))
        a_plain, lp_plain = act_plain(obs, gen_plain)
        a_state, lp_state = act_state(obs, gen_state)
        assert torch.equal(a_plain, a_state) and torch.equal(lp_plain, lp_state)
        ended = torch.tensor([step % 2 == 0, step == 3, False, step % 3 == 0])
        plain.episodes_ended(ended, gen_plain)
        state.episodes_ended(ended, gen_state)


def test_state_noise_partners_play_opposite_noise_and_a_state_keeps_its_offset() -> None:
    gen = torch.Generator().manual_seed(1)
    exploration = AntitheticStateNoise(0.5, standardise_steps=1)
    _warm_state_noise(exploration, _unit_square(8), gen)
    shape = torch.Size([8, 3])
    fresh, tired = torch.tensor([1.0, 0.3]), torch.tensor([-0.2, 0.9])
    seen: dict[str, torch.Tensor] = {}
    for name, state in [("fresh", fresh), ("tired", tired), ("fresh", fresh), ("tired", tired)]:
        obs = state.repeat(8, 1)
        obs[4:6] = torch.tensor([0.5, -0.5])  # one pair elsewhere: partners see the same state, pairs differ
        z = exploration.noise(shape, gen, obs)
        assert torch.equal(z[0::2], -z[1::2])  # partners: exactly opposite at every step
        if name in seen:
            assert torch.equal(z, seen[name])  # the same state in the same episode: the same offset
        seen[name] = z.clone()
        exploration.episodes_ended(torch.zeros(8, dtype=torch.bool), gen)
    assert not torch.allclose(seen["fresh"], seen["tired"])  # another state: another offset
    # a new episode of rows 0 and 3 (row 1 and row 2 reach theirs later): pairs by episode index, as antithetic
    exploration.episodes_ended(torch.tensor([True, False, False, True, False, False, False, False]), gen)
    z = exploration.noise(shape, gen, fresh.repeat(8, 1))
    assert not torch.allclose(z[0], seen["fresh"][0]) and torch.equal(z[1], seen["fresh"][1])
    exploration.episodes_ended(torch.tensor([False, True, True, False, False, False, False, False]), gen)
    z = exploration.noise(shape, gen, fresh.repeat(8, 1))
    assert torch.equal(z[0::2], -z[1::2])


@pytest.mark.parametrize("share", [0.3, 0.8])
def test_state_noise_correlates_by_the_states_cosine(share: float) -> None:
    n = 40_000
    gen = torch.Generator().manual_seed(2)
    exploration = AntitheticStateNoise(share, standardise_steps=1)
    _warm_state_noise(exploration, _unit_square(n), gen)
    shape = torch.Size([n, 3])

    def at(state: list[float]) -> torch.Tensor:
        return exploration.noise(shape, gen, torch.tensor(state).repeat(n, 1))[0::2].flatten()

    early, late, opposite = at([1.0, 0.0]), at([0.0, 2.0]), at([-3.0, 0.0])
    assert float(torch.corrcoef(torch.stack([early, late]))[0, 1]) == pytest.approx(1 - share, abs=0.02)
    assert float(torch.corrcoef(torch.stack([early, opposite]))[0, 1]) == pytest.approx(1 - 2 * share, abs=0.02)
    assert torch.equal(at([2.0, 0.0]), early)  # only the direction of ŝ counts


def test_state_noise_share_is_validated_and_pairs_with_episode_advantages() -> None:
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="state_noise_share"):
            LossConfig(exploration="antithetic_state", state_noise_share=bad)
        with pytest.raises(ValueError, match="state_noise_share"):
            AntitheticStateNoise(bad)
    cfg = LossConfig(exploration="antithetic_state", state_noise_share=0.8, advantage="episode_pairs")
    assert isinstance(make_exploration(cfg.exploration, cfg.state_noise_share), AntitheticStateNoise)
    with pytest.raises(ValueError, match="exploration='antithetic' or 'antithetic_state'"):
        LossConfig(exploration="per_episode", advantage="episode_pairs")


def test_state_noise_of_each_agent_reads_only_its_own_observation_block() -> None:
    agents = (AgentSlice("a", obs_size=2, action_size=1), AgentSlice("b", obs_size=2, action_size=2))
    gen = torch.Generator().manual_seed(4)
    exploration = AntitheticStateNoise(0.9, agents, standardise_steps=1)
    warm = torch.cat([_unit_square(8), _unit_square(8)], dim=1)
    exploration.noise(torch.Size([8, 3]), gen, warm)
    exploration.episodes_ended(torch.zeros(8, dtype=torch.bool), gen)
    obs = torch.tensor([[1.0, 0.0, 0.0, 1.0]]).repeat(8, 1)
    z = exploration.noise(torch.Size([8, 3]), gen, obs).clone()
    obs[:, 2:] = torch.tensor([1.0, -1.0])  # agent b's block changes (a placeholder replaced, say)
    z_b_moved = exploration.noise(torch.Size([8, 3]), gen, obs)
    assert torch.equal(z_b_moved[:, :1], z[:, :1]) and not torch.allclose(z_b_moved[:, 1:], z[:, 1:])
