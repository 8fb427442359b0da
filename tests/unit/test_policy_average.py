"""Window average of iterates (training/rl/policy_average.py): the distilled policy is the visit-weighted mixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.rl.networks import CategoricalActor, TanhGaussianActor
from training.rl.policy_average import IterateSnapshot, IterateWindow, ShippedPolicy, distil_window


def _actor_with_probs(probs: np.ndarray) -> CategoricalActor:
    """A one-hot-state categorical actor whose π(·|s) is `probs[s]` (a linear layer set to log-probs)."""
    n_states, n_actions = probs.shape
    actor = CategoricalActor(n_states, n_actions, hidden=[])
    layer = actor.net[0]
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(np.log(probs).T, dtype=torch.float32))
        layer.bias.zero_()
    return actor


def _states(counts: list[int]) -> torch.Tensor:
    """One-hot rows: state s repeated counts[s] times."""
    idx = torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts))
    return torch.eye(len(counts))[idx]


def test_distilled_policy_is_the_visit_weighted_mixture() -> None:
    p1 = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    p2 = np.array([[0.1, 0.9], [0.6, 0.4], [0.5, 0.5]])
    counts1, counts2 = [30, 10, 5], [10, 30, 5]  # iterate 1 visits state 0 three times as often as iterate 2
    snaps = tuple(
        IterateSnapshot({k: v.clone() for k, v in _actor_with_probs(p).state_dict().items()}, _states(c))
        for p, c in ((p1, counts1), (p2, counts2))
    )
    student = _actor_with_probs(np.full((3, 2), 0.5))  # same architecture as the snapshots
    distil_window(student, snaps, steps=600, lr=0.05)
    c1, c2 = np.array(counts1)[:, None], np.array(counts2)[:, None]
    expected = (c1 * p1 + c2 * p2) / (c1 + c2)  # state 0: (30·0.9 + 10·0.1)/40 = 0.7
    got = student.log_probs_all(torch.eye(3)).exp().detach().numpy()
    np.testing.assert_allclose(got, expected, atol=0.01)
    assert got[0, 0] == pytest.approx(0.7, abs=0.01)


def test_window_keeps_the_last_iterates_as_frozen_copies_with_subsampled_states() -> None:
    torch.manual_seed(0)
    actor = CategoricalActor(4, 3, hidden=[8])
    window = IterateWindow(size=2, rows=5)
    for step in range(3):
        window.record(actor, torch.eye(4).repeat(3, 1))  # 12 rows → 5 kept
        with torch.no_grad():
            for p in actor.parameters():
                p.add_(1.0 + step)
    kept = window.contents()
    assert len(kept) == 2 and all(len(s.obs) == 5 for s in kept)
    # Copies: changing the actor after recording changed neither snapshot, and they differ from each other.
    first = kept[0].state["net.0.weight"]
    assert not torch.equal(first, actor.state_dict()["net.0.weight"])
    assert not torch.equal(first, kept[1].state["net.0.weight"])
    with pytest.raises(ValueError, match="size and rows"):
        IterateWindow(size=0, rows=5)


def test_distil_window_fits_a_box_actor_by_its_exact_kl() -> None:
    torch.manual_seed(0)
    teachers = [TanhGaussianActor(2, 1, 0.0, 1.0, hidden=[8]) for _ in range(2)]
    obs = torch.randn(64, 2)
    snaps = tuple(IterateSnapshot({k: v.clone() for k, v in t.state_dict().items()}, obs) for t in teachers)
    student = TanhGaussianActor(2, 1, 0.0, 1.0, hidden=[8])
    losses = distil_window(student, snaps, steps=200, lr=0.01)
    assert losses[-1] < losses[0]
    assert not any(p.requires_grad for p in snaps[0].state.values())


def test_shipped_policy_modes() -> None:
    actor = CategoricalActor(3, 2, hidden=[4])
    obs = torch.eye(3)
    iterate = ShippedPolicy("iterate", window=3)
    state = iterate.candidate(actor, obs)
    assert isinstance(state, dict) and iterate.newest_state(state) is state
    assert iterate.finish(actor, state) == {}
    average = ShippedPolicy("window_average", window=3, steps=5)
    kept = average.candidate(actor, obs)
    assert isinstance(kept, tuple) and len(kept) == 1
    assert average.newest_state(kept) is kept[-1].state
    best = CategoricalActor(3, 2, hidden=[4])
    metrics = average.finish(best, kept)
    assert "losses/window_average_kl" in metrics and not any(p.requires_grad for p in best.parameters())
    with pytest.raises(ValueError, match="best_feasible_ship"):
        ShippedPolicy("mean", window=3)


@pytest.mark.parametrize("algorithm", ["rcpo", "tscac"])
def test_constrained_losses_keep_windows_and_fit_the_average_when_training_ends(
    algorithm, tmp_path, monkeypatch
) -> None:
    from training.envs.cmdp import CMDPPool, random_cmdp, task_spec
    from training.rl.registry import get_algorithm
    from training.rl.trainer import OnlineSource, train

    cmdp = random_cmdp(0)
    source = OnlineSource(lambda n, s: CMDPPool(cmdp, n))
    run = {"iterations": 6, "rollout_steps": 8, "n_envs": 8, "device": "cpu", "seed": 0}
    run |= {"progress": False, "tensorboard": False, "plots": False}
    algo = {"hidden": [8], "best_feasible_window": 2, "best_feasible_ship": "window_average", "window_average_steps": 3}
    loss_class = get_algorithm(algorithm).loss
    finished = []
    original = loss_class.on_train_end
    monkeypatch.setattr(loss_class, "on_train_end", lambda self: finished.append(1) or original(self))
    loss = train(algorithm, task_spec(cmdp), source, {"run": run, "algo": algo}, tmp_path).learner
    assert finished == [1]  # the trainer called the hook once, after the last batch
    assert loss.shipping.window is not None and len(loss.shipping.window.contents()) == 2
    # A kept window is the tuple of its snapshots; fitting it gives best_actor the window's average.
    kept = loss.shipping.window.contents()
    metrics = loss.shipping.finish(loss.best_actor, kept)
    assert metrics["losses/window_average_kl"] >= 0
    with pytest.raises(ValueError, match="best_feasible_ship"):
        train(algorithm, task_spec(cmdp), source, {"run": run, "algo": {"best_feasible_ship": "x"}}, tmp_path)
