"""Random tabular CMDPs: the generator's promises, the LP optimum, exact evaluation and the Gymnasium env."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from training.envs.cmdp import (
    CMDPEnv,
    CMDPPool,
    TabularCMDP,
    evaluate,
    meets_constraints,
    random_cmdp,
    solve_lp,
    task_spec,
)


def _deterministic_policies(cmdp: TabularCMDP):
    for choice in itertools.product(range(cmdp.n_actions), repeat=cmdp.n_states):
        policy = np.zeros((cmdp.n_states, cmdp.n_actions))
        policy[np.arange(cmdp.n_states), choice] = 1.0
        yield policy


@pytest.mark.parametrize("seed,n_constraints", [(0, 1), (1, 1), (2, 2), (3, 2)])
def test_lp_optimum_beats_every_feasible_deterministic_policy(seed: int, n_constraints: int) -> None:
    cmdp = random_cmdp(seed, n_states=4, n_actions=3, n_constraints=n_constraints)
    solution = solve_lp(cmdp)
    assert solution.feasible
    # The LP's own policy, evaluated exactly, has the LP's value and meets every constraint.
    values = evaluate(cmdp, solution.policy)
    assert values[0] == pytest.approx(solution.main_value, abs=1e-8)
    assert (values[1:] >= cmdp.thresholds - 1e-8).all()
    feasible_mains = []
    for policy in _deterministic_policies(cmdp):
        v = evaluate(cmdp, policy)
        if (v[1:] >= cmdp.thresholds).all():
            feasible_mains.append(v[0])
            assert v[0] <= solution.main_value + 1e-9
    # Binding constraints: the optimum mixes, so no deterministic policy reaches it exactly.
    assert not feasible_mains or max(feasible_mains) < solution.main_value - 1e-6


def test_unconstrained_lp_equals_value_iteration() -> None:
    cmdp = random_cmdp(5, n_states=6, n_actions=3, gamma=0.9)
    q = np.zeros((cmdp.n_states, cmdp.n_actions))
    for _ in range(2000):  # γ^2000 ≈ 0: converged to machine precision
        q = cmdp.main_reward + cmdp.gamma * cmdp.transitions @ q.max(1)
    optimum = (1 - cmdp.gamma) * cmdp.initial @ q.max(1)
    assert solve_lp(cmdp, constrained=False).main_value == pytest.approx(optimum, abs=1e-9)


def test_generator_varies_sizes_and_every_constraint_binds() -> None:
    instances = [random_cmdp(seed, n_constraints=1 + seed % 2) for seed in range(12)]
    assert len({c.n_states for c in instances}) >= 3
    assert len({c.n_actions for c in instances}) >= 2
    assert all(4 <= c.n_states <= 10 and 2 <= c.n_actions <= 4 and 0.8 <= c.gamma <= 0.95 for c in instances)
    for cmdp in instances:
        constrained, free = solve_lp(cmdp), solve_lp(cmdp, constrained=False)
        at_free = evaluate(cmdp, free.policy)
        assert (constrained.duals > 1e-6).all()
        assert constrained.main_value <= 0.99 * free.main_value
        # The unconstrained optimum violates at least one threshold (that is what "binds" means here).
        assert not meets_constraints(cmdp, at_free, tolerance=0.0)
    # Same seed, same instance.
    again = random_cmdp(3, n_constraints=2)
    assert np.array_equal(again.transitions, instances[3].transitions)
    assert np.array_equal(again.thresholds, instances[3].thresholds)


def test_exact_evaluation_matches_monte_carlo_through_the_env() -> None:
    cmdp = random_cmdp(7, n_states=5, n_actions=3, gamma=0.8, n_constraints=2)
    rng = np.random.default_rng(0)
    policy = rng.dirichlet(np.ones(cmdp.n_actions), size=cmdp.n_states)
    exact = evaluate(cmdp, policy)
    env = CMDPEnv(cmdp)
    # One episode's summed signals estimate J / (1 − γ) without bias (geometric episode end).
    sums = []
    obs, _ = env.reset(seed=1)
    episode = np.zeros(3)
    while len(sums) < 4000:
        state = int(np.argmax(obs))
        obs, reward, terminated, truncated, info = env.step(int(rng.choice(cmdp.n_actions, p=policy[state])))
        assert reward == info["signals"]["main"]
        episode += [info["signals"][name] for name in cmdp.signal_names]
        assert not truncated
        if terminated:
            sums.append(episode.copy())
            episode[:] = 0.0
            obs, _ = env.reset()
    estimates = np.asarray(sums) * (1 - cmdp.gamma)
    mean, stderr = estimates.mean(0), estimates.std(0, ddof=1) / np.sqrt(len(estimates))
    assert (np.abs(mean - exact) < 4 * stderr).all(), (mean, exact, stderr)
    # The check has power: a different policy's values lie outside the same interval.
    other = evaluate(cmdp, np.roll(policy, 1, axis=1))
    assert (np.abs(mean - other) > 4 * stderr).any()


def test_env_observation_action_and_task() -> None:
    env = CMDPEnv(instance_seed=4, n_constraints=2)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (env.cmdp.n_states,) and obs.sum() == 1.0 and env.observation_space.contains(obs)
    task = env.task()
    assert task.signal_names == ("main", "aux1", "aux2")
    assert [(c.signal, c.direction) for c in task.constraints] == [("aux1", ">="), ("aux2", ">=")]
    assert [c.threshold for c in task.constraints] == pytest.approx(list(env.cmdp.thresholds))
    assert task.action.n == env.cmdp.n_actions and task.obs_size == env.cmdp.n_states
    assert task_spec(env.cmdp, discount=0.99).discounts == (0.99, 0.99, 0.99)
    with pytest.raises(ValueError, match="action must be in"):
        env.step(env.cmdp.n_actions)


def test_bad_input_names_the_field() -> None:
    cmdp = random_cmdp(0, n_states=4, n_actions=2)
    with pytest.raises(ValueError, match="policy must have shape"):
        evaluate(cmdp, np.ones((3, 2)) / 2)
    with pytest.raises(ValueError, match="probability vector over actions"):
        evaluate(cmdp, np.ones((4, 2)))
    with pytest.raises(ValueError, match="TabularCMDP.transitions"):
        TabularCMDP(cmdp.transitions * 2, cmdp.main_reward, cmdp.aux_rewards, cmdp.initial, 0.9, cmdp.thresholds)
    with pytest.raises(ValueError, match="TabularCMDP.thresholds"):
        cmdp.with_thresholds(np.zeros(2))
    with pytest.raises(ValueError, match="n_constraints must be 1 or 2"):
        random_cmdp(0, n_constraints=3)


def test_pool_per_decision_means_are_the_exact_values() -> None:
    cmdp = random_cmdp(8, n_states=6, n_actions=2, gamma=0.85, n_constraints=1)
    policy = np.array([[0.3, 0.7]] * cmdp.n_states)
    exact = evaluate(cmdp, policy)
    pool = CMDPPool(cmdp, n_envs=64)
    obs = pool.reset(seed=3)
    rng = np.random.default_rng(0)
    totals, ends = np.zeros((64, 2)), 0
    for _ in range(1500):
        assert obs.shape == (64, cmdp.n_states) and (obs.sum(1) == 1).all()
        step = pool.step((rng.random(64) < 0.7).astype(np.float32)[:, None])
        totals += step.rewards
        ends += int(step.terminated.sum())
        obs = step.obs
    # Renewal-reward: the long-run per-decision mean of each env is J; the 64 envs are independent.
    per_env = totals / 1500
    mean, stderr = per_env.mean(0), per_env.std(0, ddof=1) / np.sqrt(64)
    assert (np.abs(mean - exact) < 4 * stderr).all(), (mean, exact, stderr)
    assert ends / (64 * 1500) == pytest.approx(1 - cmdp.gamma, abs=0.01)
    with pytest.raises(ValueError, match="actions must be in"):
        pool.step(np.full((64, 1), 2.0))


def test_truncating_pool_reports_the_same_draws_and_its_bootstrapped_targets_have_the_exact_values() -> None:
    cmdp = random_cmdp(8, n_states=6, n_actions=2, gamma=0.85, n_constraints=1)
    policy = np.array([[0.3, 0.7]] * cmdp.n_states)
    pools = {end: CMDPPool(cmdp, n_envs=64, random_end=end) for end in ("terminate", "truncate")}
    obs = {end: pool.reset(seed=3) for end, pool in pools.items()}
    rng = np.random.default_rng(0)
    n = cmdp.n_states
    a_matrix, b_vector = np.zeros((n, n)), np.zeros(n)
    for _ in range(2000):
        actions = (rng.random(64) < 0.7).astype(np.float32)[:, None]
        steps = {end: pool.step(actions) for end, pool in pools.items()}
        term, trunc = steps["terminate"], steps["truncate"]
        # The same dynamics and the same random end, told as a truncation instead of a termination.
        assert np.array_equal(term.next_obs, trunc.next_obs) and np.array_equal(term.obs, trunc.obs)
        assert np.array_equal(term.terminated, trunc.truncated) and not trunc.terminated.any()
        assert not term.truncated.any()
        # LSTD(0) at discount γ, bootstrapping from s' on every row (the end is not terminal).
        phi, phi_next = obs["truncate"], trunc.next_obs
        a_matrix += phi.T @ (phi - cmdp.gamma * phi_next)
        b_vector += phi.T @ trunc.rewards[:, 0]
        obs = {end: steps[end].obs for end in pools}
    values = np.linalg.solve(a_matrix, b_vector)
    p_pi = np.einsum("sa,sat->st", policy, cmdp.transitions)
    r_pi = (policy * cmdp.rewards()[0]).sum(1)
    exact = np.linalg.solve(np.eye(n) - cmdp.gamma * p_pi, r_pi)
    assert values == pytest.approx(exact, rel=0.03)
    with pytest.raises(ValueError, match="CMDPPool.random_end"):
        CMDPPool(cmdp, n_envs=4, random_end="stop")


def test_truncating_env_reports_the_same_draws_and_discounts_by_gamma() -> None:
    cmdp = random_cmdp(4, n_constraints=1)
    envs = {end: CMDPEnv(cmdp, random_end=end) for end in ("terminate", "truncate")}
    for env in envs.values():
        env.reset(seed=11)
    ends = 0
    for t in range(300):
        term = envs["terminate"].step(t % cmdp.n_actions)
        trunc = envs["truncate"].step(t % cmdp.n_actions)
        assert np.array_equal(term[0], trunc[0]) and term[1] == trunc[1]
        assert (term[2], term[3]) == (trunc[3], False) and trunc[2] is False
        ends += int(term[2])
    assert ends > 0
    assert envs["truncate"].task().signals[0].discount == pytest.approx(cmdp.gamma)
    assert envs["terminate"].task().signals[0].discount == pytest.approx(0.999)
    with pytest.raises(ValueError, match="CMDPEnv.random_end"):
        CMDPEnv(cmdp, random_end="stop")


def test_benchmark_reuse_reads_rows_of_named_algorithms_and_marks_their_commit(tmp_path) -> None:
    import json

    from benchmarks.cmdp import _reused_rows, summarise

    runs = [
        {"algorithm": "main_only", "instance": 0, "seed": 0, "shipped": {"gap": 0.01, "feasible": False}},
        {"algorithm": "main_only", "instance": 7, "seed": 0, "shipped": {"gap": 0.5, "feasible": False}},
        {"algorithm": "rcpo", "instance": 0, "seed": 0, "shipped": {"gap": 0.02, "feasible": True}},
    ]
    path = tmp_path / "cmdp.json"
    path.write_text(json.dumps({"git_commit": "abc123", "runs": runs}))
    rows = _reused_rows(["main_only"], [0, 1], str(path))
    # Only main_only, only instances 0–1 (instance 7 is outside this run), marked with the old commit.
    assert [(r["algorithm"], r["instance"], r["reused"]) for r in rows] == [("main_only", 0, "abc123")]
    assert _reused_rows([], [0], str(path)) == []
    with pytest.raises(SystemExit, match="unknown"):
        _reused_rows(["ppo"], [0], str(path))
    with pytest.raises(SystemExit, match="no rows"):
        _reused_rows(["tscac"], [0], str(path))
    rows[0]["last"] = rows[0]["shipped"]
    gap = next(m for m in summarise(rows, [0]) if m.name == "cmdp.main_only.median_gap")
    assert gap.value == pytest.approx(0.01) and "reused from commit abc123" in gap.note
