"""The `slot` world's mechanisms (training/envs/slot.py): live supply by hour, group tolerance and conversion,
live fatigue that wears with exposure and recovers over days, page-dependent displacement.

Paired comparisons step two simulators built with the same seed: they draw the
same users and consume their random numbers in the same order whatever the
actions, so differences come from the actions alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.problems import SLOT
from training.envs import SlotConfig, make_batched
from training.envs.slot import BatchedSlotSim, broadcast_schedule

LIVE = SLOT.observation_slices()["live_candidate"]


def _pair(n: int = 256, seed: int = 3, **overrides: object) -> tuple[BatchedSlotSim, BatchedSlotSim]:
    a = make_batched("slot", n, seed, **overrides)
    b = make_batched("slot", n, seed, **overrides)
    a.reset()
    b.reset()
    assert isinstance(a, BatchedSlotSim) and isinstance(b, BatchedSlotSim)
    return a, b


def test_live_supply_varies_by_hour_and_an_empty_hour_has_no_candidate() -> None:
    on_air = broadcast_schedule(SlotConfig(), 40, np.random.default_rng(0))
    per_hour = on_air.sum(axis=1)
    assert per_hour[19:23].mean() > 3 * per_hour[5:10].mean()
    # No stream on air at all: the candidate is zero and nobody enters.
    sim = make_batched("slot", 64, 0)
    assert isinstance(sim, BatchedSlotSim)
    sim.on_air[:] = False
    obs = sim.reset()
    np.testing.assert_array_equal(obs[:, LIVE], 0.0)
    _, rewards, _, _ = sim.step(np.full(64, 1))
    assert rewards["live_watch_time"].sum() == 0.0
    assert rewards["live_exposure"].sum() == 64


def test_exposure_penalty_follows_group_tolerance_taste_and_fatigue() -> None:
    # Nobody enters (entry logit −50), so exposure changes experience only by the penalty and the
    # video that drops off the page; a twin world without the penalty measures the latter.
    never, shown = _pair(live_entry_intercept=-50.0)
    never_free, shown_free = _pair(live_entry_intercept=-50.0, live_exposure_penalty=0.0)
    fatigue = np.linspace(0.0, 6.0, never.n).astype(np.float32)
    for sim in (never, shown, never_free, shown_free):
        sim.live_fatigue[:] = fatigue
    actions = np.full(never.n, 2)
    cfg, users = shown.config, shown.users
    group, taste = users.group.copy(), users.live_taste.copy()  # before the step: a done row gets a new user
    e_never = never.step(np.zeros(never.n, np.int64))[3]["experience"]
    e_shown = shown.step(actions)[3]["experience"]
    e_never_free = never_free.step(np.zeros(never.n, np.int64))[3]["experience"]
    e_shown_free = shown_free.step(actions)[3]["experience"]
    penalty = (e_never - e_shown) - (e_never_free - e_shown_free)
    expected = (
        cfg.live_exposure_penalty
        * np.asarray(cfg.group_live_tolerance)[group]
        * (1.0 - taste)
        * (1.0 + cfg.live_fatigue_wear * fatigue)
    )
    np.testing.assert_allclose(penalty, expected, rtol=1e-4, atol=1e-5)
    assert len(set(group.tolist())) == 3  # every group was checked


def test_conversion_depends_on_group_and_falls_with_hidden_fatigue_the_prediction_misses() -> None:
    fresh, worn = _pair(n=4096, seed=5)
    worn.live_fatigue[:] = 10.0
    obs_fresh, obs_worn = fresh.observe(), worn.observe()
    np.testing.assert_array_equal(obs_fresh, obs_worn)  # the prediction does not see the fatigue
    _, r_fresh, _, _ = fresh.step(np.full(fresh.n, 1))
    _, r_worn, _, _ = worn.step(np.full(worn.n, 1))
    assert r_worn["live_watch_time"].sum() < 0.5 * r_fresh["live_watch_time"].sum()
    # Same users, conversion offsets of the groups swapped: the high group's predictions fall.
    base = make_batched("slot", 4096, 5)
    swapped = make_batched("slot", 4096, 5, group_live_conversion=(0.3, 0.0, -0.3))
    group = np.argmax(base.reset()[:, :3], axis=1)
    pred_base, pred_swapped = base.observe()[:, LIVE.start], swapped.reset()[:, LIVE.start]
    assert pred_swapped[group == 2].mean() < pred_base[group == 2].mean()
    assert pred_swapped[group == 0].mean() > pred_base[group == 0].mean()


def test_live_fatigue_grows_with_exposures_and_recovers_by_day() -> None:
    sim = make_batched("slot", 128, 7)
    assert isinstance(sim, BatchedSlotSim)
    sim.reset()
    day_before = sim.users.day.copy()
    sim.step(np.full(sim.n, 3))
    same_day = sim.users.day == day_before
    assert same_day.sum() > 100
    np.testing.assert_array_equal(sim.live_fatigue[same_day], 1.0)  # one exposure each
    sim.live_fatigue[:] = 8.0
    rho = sim.config.live_fatigue_recovery
    for _ in range(200):
        day_before, user_before = sim.users.day.copy(), sim.users.user_id.copy()
        sim.step(np.zeros(sim.n, np.int64))
        same_user = sim.users.user_id == user_before
        moved = same_user & (sim.users.day > day_before)
        if moved.any():
            away = (sim.users.day - day_before)[moved]
            np.testing.assert_allclose(sim.live_fatigue[moved], 8.0 * rho**away, rtol=1e-6)
            return
        np.testing.assert_array_equal(sim.live_fatigue[same_user], 8.0)
    pytest.fail("no user reached the next day in 200 requests")


def test_displacement_costs_more_short_video_watch_higher_on_the_page() -> None:
    top, bottom = _pair(n=2048, seed=11)
    never = make_batched("slot", 2048, 11)
    never.reset()
    page_watch = top.observe()[:, SLOT.observation_slices()["page_video_watch_time"]].sum(axis=1)
    w_top = top.step(np.full(top.n, 1))[1]["watch_time"]
    w_bottom = bottom.step(np.full(bottom.n, 6))[1]["watch_time"]
    w_never = never.step(np.zeros(never.n, np.int64))[1]["watch_time"]
    assert (w_never - w_top).mean() > 1.5 * (w_never - w_bottom).mean() > 0.0
    # What the live stream displaces depends on the page: long pages lose more.
    long_page = page_watch > np.median(page_watch)
    assert (w_never - w_top)[long_page].mean() > 1.3 * (w_never - w_top)[~long_page].mean()


def test_config_rejects_bad_slot_parameters() -> None:
    with pytest.raises(ValueError, match="group_live_tolerance"):
        SlotConfig(group_live_tolerance=(1.0, 1.0))
    with pytest.raises(ValueError, match="live_fatigue_recovery"):
        SlotConfig(live_fatigue_recovery=1.5)
    with pytest.raises(ValueError, match="broadcast_hours"):
        SlotConfig(broadcast_hours=(0.0, 4.0))


def test_paired_users_are_the_same_people_whatever_the_policy_and_the_row_count() -> None:
    def users_met(action: int, rows: int) -> dict[int, tuple[int, float]]:
        sim = make_batched("slot", rows, 5, max_users=40, days=2, paired_users=True)
        sim.reset(seed=9)
        met: dict[int, tuple[int, float]] = {}
        while not sim.all_done:  # type: ignore[union-attr]
            u = sim.users
            for r in np.flatnonzero(u.active):
                met[int(u.user_id[r])] = (int(u.group[r]), float(u.live_taste[r]))
            sim.step(np.full(sim.n, action))
        return met

    never, always = users_met(0, 8), users_met(1, 5)
    assert sorted(never) == list(range(40))
    assert never == always


def test_the_live_sequence_observes_each_exposure_and_what_it_brought_without_changing_the_world() -> None:
    sim, scrambled = _pair(64, seed=5)
    seq = SLOT.observation_slices()["user_live_sequence"]
    k = (seq.stop - seq.start) // 2
    rest = np.ones(SLOT.observation_size, bool)
    rest[seq] = False
    assert not sim.observe()[:, seq].any()  # new users: no exposure yet
    rng, noise = np.random.default_rng(0), np.random.default_rng(1)
    history: list[list[float]] = [[] for _ in range(sim.n)]  # per row: live minutes of its exposures
    for _ in range(40):
        actions = np.where(rng.random(sim.n) < 0.5, rng.integers(1, 7, sim.n), 0)
        # The sequence is observed, not simulated: a world whose sequences are garbage plays out the same.
        scrambled.live_sequence_watch[:] = noise.uniform(0, 1e3, scrambled.live_sequence_watch.shape)
        scrambled.live_sequence_time[:] = noise.uniform(-1e6, 1e6, scrambled.live_sequence_time.shape)
        obs, rewards, done, info = sim.step(actions)
        obs_s, rewards_s, _, _ = scrambled.step(actions)
        for name, value in rewards.items():
            np.testing.assert_array_equal(value, rewards_s[name])
        np.testing.assert_array_equal(obs[:, rest], obs_s[:, rest])
        for row in np.flatnonzero(info["active"] & (actions > 0)):
            history[row].insert(0, float(rewards["live_watch_time"][row]) / 60.0)
        for row in np.flatnonzero(done):
            history[row] = []  # a fresh user takes the row
        for row in range(sim.n):
            pairs = obs[row, seq].reshape(k, 2)
            want = history[row][:k]
            np.testing.assert_allclose(pairs[: len(want), 0], want, rtol=1e-6)
            assert (pairs[: len(want), 1] > 0).all() and not pairs[len(want) :].any()
            assert (np.diff(pairs[: len(want), 1]) <= 0).all()  # most recent first: fresher first
