"""PID Lagrange multipliers and the best-feasible-iterate tracker, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from training.rl.lagrangian import BestFeasibleTracker, PIDLagrangian, PIDLagrangianConfig, relative_violations


def test_relative_violations_signs_and_scale() -> None:
    # ">=" 0.5 with value 0.4: violated by 0.1/0.5 = 0.2; "<=" 2.0 with value 1.0: satisfied by 1/2 → −0.5;
    # threshold 0 → absolute: "<=" 0 with value 0.3 → 0.3.
    got = relative_violations([0.4, 1.0, 0.3], [0.5, 2.0, 0.0], [1.0, -1.0, -1.0])
    assert got == pytest.approx([0.2, -0.5, 0.3])
    with pytest.raises(ValueError, match="one entry each"):
        relative_violations([0.4], [0.5, 1.0], [1.0, 1.0])


def test_pure_integral_is_projected_dual_ascent() -> None:
    pid = PIDLagrangian(1, PIDLagrangianConfig(kp=0.0, ki=0.5, kd=0.0, max_multiplier=10.0))
    # λ = 0.5 · I, I ← max(0, I + Δ): Δ = 1, 1, −3, 2 → I = 1, 2, 0 (clipped from −1), 2 → λ = .5, 1, 0, 1
    assert [pid.update([d])[0] for d in (1.0, 1.0, -3.0, 2.0)] == pytest.approx([0.5, 1.0, 0.0, 1.0])


def test_pid_terms_by_hand() -> None:
    cfg = PIDLagrangianConfig(kp=2.0, ki=1.0, kd=4.0, smoothing=0.5, max_multiplier=100.0)
    pid = PIDLagrangian(2, cfg)
    # Step 1: Δ = (0.2, −0.1). EMA starts at Δ; no derivative yet. I = (0.2, 0).
    #   λ = 2·(0.2, −0.1) + 1·(0.2, 0) = (0.6, −0.2) → clipped (0.6, 0).
    assert pid.update([0.2, -0.1]) == pytest.approx([0.6, 0.0])
    # Step 2: Δ = (0.4, −0.1). EMA = 0.5·prev + 0.5·Δ = (0.3, −0.1); D = max(0, EMA − prev) = (0.1, 0);
    #   I = (0.6, 0); λ = 2·(0.3, −0.1) + (0.6, 0) + 4·(0.1, 0) = (1.6, −0.2) → (1.6, 0).
    assert pid.update([0.4, -0.1]) == pytest.approx([1.6, 0.0])
    # Step 3: Δ = (0.0, 0.0). EMA = (0.15, −0.05); D = max(0, EMA − prev) = (0, 0.05) (the first
    #   violation falls: no D term; the second rises, though still satisfied); I = (0.6, 0);
    #   λ = (2·0.15 + 0.6, 2·(−0.05) + 4·0.05) = (0.9, 0.1).
    assert pid.update([0.0, 0.0]) == pytest.approx([0.9, 0.1])


def test_anti_windup_caps_the_integral() -> None:
    pid = PIDLagrangian(1, PIDLagrangianConfig(kp=0.0, ki=1.0, max_multiplier=2.0))
    for _ in range(50):  # a long infeasible stretch
        pid.update([1.0])
    assert pid.multipliers[0] == 2.0 and pid.integral[0] == pytest.approx(2.0)
    # Without the cap the integral would be 50 and take 50 satisfied steps to unwind; with it, 2.
    pid.update([-1.0])
    pid.update([-1.0])
    assert pid.multipliers[0] == pytest.approx(0.0)


def test_pid_settles_where_dual_ascent_swings() -> None:
    """A plant with lag: the constraint value follows λ slowly (like a policy that moves after the
    multiplier). After 100 steps pure dual ascent still swings around the threshold; with the P term
    the swing is damped fifty times over."""

    def late_swing(cfg: PIDLagrangianConfig) -> tuple[float, float]:
        pid, value, history = PIDLagrangian(1, cfg), 0.0, []
        for _ in range(200):
            target = 0.2 + 0.6 * np.tanh(pid.multipliers[0])  # the value the policy would reach under λ
            value += 0.05 * (target - value)  # the policy's lag
            pid.update(relative_violations([value], [0.5], [1.0]))
            history.append(value)
        late = np.asarray(history[100:])
        return float(np.ptp(late)), float(late.mean())

    swing_integral, _ = late_swing(PIDLagrangianConfig(kp=0.0, ki=1.0))
    swing_pid, mean_pid = late_swing(PIDLagrangianConfig(kp=3.0, ki=1.0, smoothing=1.0))
    assert swing_integral > 0.02
    assert swing_pid < swing_integral / 50 and abs(mean_pid - 0.5) < 0.001


def test_state_dict_round_trip() -> None:
    a = PIDLagrangian(1, PIDLagrangianConfig(kp=1.0, ki=1.0, kd=1.0))
    a.update([0.3])
    b = PIDLagrangian(1, a.cfg)
    b.load_state_dict(a.state_dict())
    assert a.update([0.5]) == pytest.approx(b.update([0.5]))


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="kp"):
        PIDLagrangianConfig(kp=-1.0)
    with pytest.raises(ValueError, match="at least one"):
        PIDLagrangianConfig(kp=0.0, ki=0.0, kd=0.0)
    with pytest.raises(ValueError, match="smoothing"):
        PIDLagrangianConfig(smoothing=0.0)
    with pytest.raises(ValueError, match="expected 2 violations"):
        PIDLagrangian(2).update([0.1])


def test_tracker_keeps_best_feasible_by_window_mean() -> None:
    tracker = BestFeasibleTracker(window=2, tolerance=0.01)
    state = {"w": [1.0]}
    assert not tracker.offer(0, 1.0, [0.0], state)  # window not full yet
    # Window (1.0, 0.9), slacks (0, −0.005) → mean slack −0.0025 and own −0.005 ≥ −0.01: feasible, best = 0.95.
    assert tracker.offer(1, 0.9, [-0.005], state)
    assert tracker.best is not None and tracker.best.iteration == 1
    assert tracker.best.main_value == pytest.approx(0.95)
    state["w"][0] = 2.0  # the kept state is a copy, not a reference
    assert tracker.best.state == {"w": [1.0]}
    # Higher main but infeasible: mean slack (−0.005 − 0.02)/2 < −0.01 → rejected.
    assert not tracker.offer(2, 3.0, [-0.02], state)
    # Feasible but lower mean main ((3.0 + 0.0)/2 = 1.5 > 0.95 → accepted; then (0 + 0.5)/2 = 0.25 → not).
    assert tracker.offer(3, 0.0, [0.05], state)
    assert tracker.best.main_value == pytest.approx(1.5) and tracker.best.state == {"w": [2.0]}
    assert not tracker.offer(4, 0.5, [0.05], state)
    assert tracker.best.iteration == 3
    # Window mean feasible ((0.05 − 0.02)/2 ≥ 0) but the kept iterate's own batch violates: rejected.
    assert not tracker.offer(5, 9.0, [-0.02], state)
    assert tracker.best.iteration == 3


def test_constraint_controller_reads_thresholds_senses_and_margin() -> None:
    from models.problems import Constraint, DiscreteAction
    from training.rl.lagrangian import ConstraintController
    from training.rl.task import TaskSignal, TaskSpec

    task = TaskSpec(
        obs_size=2,
        action=DiscreteAction(n=2),
        signals=(TaskSignal("main", 0.9), TaskSignal("clicks", 0.9), TaskSignal("cost", 0.9)),
        constraints=(Constraint("clicks", ">=", 0.5), Constraint("cost", "<=", 2.0)),
    )
    pure_integral = PIDLagrangianConfig(kp=0.0, ki=1.0)
    controller = ConstraintController(task, pure_integral, window=1, margin=0.1, initial=[0.0, 0.3])
    # clicks 0.4 (≥ 0.5 violated by 0.2 relative), cost 1.0 (≤ 2 satisfied by 0.5 relative); margin +0.1 each:
    # integral (0 + 0.3, 0.3 − 0.4) → λ = (0.3, 0.0 clipped from −0.1).
    multipliers, metrics, improved = controller.step(np.array([0.4, 1.0]), 1.0, {"w": 1})
    assert multipliers == pytest.approx([0.3, 0.0])
    assert metrics["charts/multiplier_clicks"] == pytest.approx(0.3)
    assert not improved  # clicks violated: not a feasible iterate
    # Both satisfied (absolute slacks 0.1 and 1.0): the first feasible iterate is kept.
    _, metrics, improved = controller.step(np.array([0.6, 1.0]), 0.8, {"w": 2})
    assert improved and controller.tracker.best is not None and controller.tracker.best.state == {"w": 2}
    assert controller.tracker.best.slacks == pytest.approx([0.1, 1.0])
    assert metrics["charts/best_feasible_iteration"] == 1.0
    # Offline (no actor state): multipliers move, the tracker is not consulted.
    _, _, improved = controller.step(np.array([0.9, 0.0]), 5.0, None)
    assert not improved and controller.tracker.best.state == {"w": 2}


def test_tracker_start_measures_early_iterates_but_never_keeps_them() -> None:
    tracker = BestFeasibleTracker(window=2, start=2)
    # Iterations 0 and 1 are feasible with a high main value but come before `start`: not kept.
    assert not tracker.offer(0, 5.0, [0.1], {"w": 0})
    assert not tracker.offer(1, 5.0, [0.1], {"w": 1})
    assert tracker.best is None
    # Iteration 2: its window still holds iteration 1's measurement, mean main (5 + 1)/2 = 3.
    assert tracker.offer(2, 1.0, [0.1], {"w": 2})
    assert tracker.best is not None and tracker.best.iteration == 2
    assert tracker.best.main_value == pytest.approx(3.0)
    with pytest.raises(ValueError, match="start"):
        BestFeasibleTracker(start=-1)


def test_tracker_recency_accepts_a_later_iterate_close_to_the_peak() -> None:
    tracker = BestFeasibleTracker(window=1, recency=0.1)
    assert tracker.offer(0, 10.0, [0.0], {"w": 0})
    # 9.5 ≥ 10 − 0.1·10 = 9: a later, nearly as good iterate replaces the kept one.
    assert tracker.offer(1, 9.5, [0.0], {"w": 1})
    assert tracker.best is not None and tracker.best.state == {"w": 1}
    # The bar stays at the peak (10), not at the kept 9.5: 8.9 < 9 is refused.
    assert not tracker.offer(2, 8.9, [0.0], {"w": 2})
    assert tracker.peak_main == pytest.approx(10.0)
    # A new peak raises the bar: 12 → bar 10.8; then 10.9 is accepted and 10.7 is not.
    assert tracker.offer(3, 12.0, [0.0], {"w": 3})
    assert tracker.offer(4, 10.9, [0.0], {"w": 4})
    assert not tracker.offer(5, 10.7, [0.0], {"w": 5})
    assert tracker.best.iteration == 4
    with pytest.raises(ValueError, match="recency"):
        BestFeasibleTracker(recency=1.0)


def test_rcpo_and_tscac_configs_refuse_bad_tracker_settings_by_name() -> None:
    from training.algorithms.rcpo import RCPOConfig
    from training.algorithms.tscac import TSCACConfig

    for config in (RCPOConfig, TSCACConfig):
        assert config(best_feasible_start=50).best_feasible_start == 50
        with pytest.raises(ValueError, match="best_feasible_start"):
            config(best_feasible_start=-1)
        with pytest.raises(ValueError, match="best_feasible_recency"):
            config(best_feasible_recency=1.5)


def test_controller_passes_start_and_recency_to_its_tracker() -> None:
    from models.problems import Constraint, DiscreteAction
    from training.rl.lagrangian import ConstraintController
    from training.rl.task import TaskSignal, TaskSpec

    task = TaskSpec(
        obs_size=1,
        action=DiscreteAction(n=2),
        signals=(TaskSignal("main", 0.9), TaskSignal("clicks", 0.9)),
        constraints=(Constraint("clicks", ">=", 0.5),),
    )
    controller = ConstraintController(
        task, PIDLagrangianConfig(), window=1, margin=0.0, recency=0.05, best_feasible_start=1
    )
    assert (controller.tracker.start, controller.tracker.recency) == (1, 0.05)
    _, _, improved = controller.step(np.array([0.6]), 1.0, {"w": 0})  # batch 0 < start: not kept
    assert not improved and controller.tracker.best is None
    _, _, improved = controller.step(np.array([0.6]), 0.5, {"w": 1})
    assert improved and controller.tracker.best is not None and controller.tracker.best.state == {"w": 1}
