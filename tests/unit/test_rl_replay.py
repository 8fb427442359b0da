"""Replay: uniform ring buffer, n-step writer, R2D2 sequence writer and replay."""

from __future__ import annotations

import pytest
import torch

from training.rl.replay import NStepWriter, ReplayBuffer, SequenceReplay, SequenceWriter


def test_ring_buffer_overwrites_oldest_and_samples_uniformly() -> None:
    buf = ReplayBuffer(capacity=4, seed=0)
    buf.add({"x": torch.arange(3.0).unsqueeze(1), "a": torch.arange(3)})
    buf.add({"x": torch.arange(3.0, 6.0).unsqueeze(1), "a": torch.arange(3, 6)})
    assert len(buf) == 4
    rows = buf.sample(20000)
    # rows 0 and 1 were overwritten by 4 and 5; the rest are equally likely
    counts = torch.bincount(rows["a"], minlength=6).float() / 20000
    assert counts[0] == 0 and counts[1] == 0
    assert torch.allclose(counts[2:], torch.full((4,), 0.25), atol=0.02)
    assert torch.equal(rows["x"].squeeze(1).long(), rows["a"])  # fields stay aligned


def test_ring_buffer_rejects_mismatched_fields() -> None:
    buf = ReplayBuffer(capacity=4)
    buf.add({"x": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="field 'x' has shape"):
        buf.add({"x": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="differ"):
        buf.add({"y": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3).sample(1)


def _step(t: int, reward: list[float], term: list[bool], trunc: list[bool]) -> dict[str, torch.Tensor]:
    n = len(reward)
    return {
        "obs": torch.full((n, 1), float(t)),
        "next_obs": torch.full((n, 1), float(t + 1)),
        "reward": torch.tensor(reward),
        "terminated": torch.tensor(term),
        "truncated": torch.tensor(trunc),
    }


def test_n_step_writer_sums_rewards_and_cuts_at_episode_ends() -> None:
    writer = NStepWriter(n=3, gamma=0.5)
    # env 0: no end; env 1: terminated at t=1; env 2: truncated at t=0
    steps = [
        _step(0, [1.0, 1.0, 1.0], [False, False, False], [False, False, True]),
        _step(1, [2.0, 2.0, 2.0], [False, True, False], [False, False, False]),
        _step(2, [4.0, 4.0, 4.0], [False, False, False], [False, False, False]),
        _step(3, [8.0, 8.0, 8.0], [False, False, False], [False, False, False]),
    ]
    assert writer.push(steps[0]) is None and writer.push(steps[1]) is None
    out = writer.push(steps[2])
    assert out is not None
    assert torch.allclose(out["reward"], torch.tensor([1 + 0.5 * 2 + 0.25 * 4, 1 + 0.5 * 2, 1.0]))
    assert out["steps"].tolist() == [3, 2, 1]
    assert torch.allclose(out["discount"], torch.tensor([0.125, 0.0, 0.5]))  # terminal → 0; truncated → γ
    assert out["next_obs"].squeeze(1).tolist() == [3.0, 2.0, 1.0]
    assert out["obs"].squeeze(1).tolist() == [0.0, 0.0, 0.0]
    out = writer.push(steps[3])  # transition from t = 1
    assert torch.allclose(out["reward"], torch.tensor([2 + 2 + 2, 2.0, 2 + 2 + 2]))
    rest = writer.flush()  # from t = 2 and t = 3, fewer than n rewards, still bootstrapped
    assert [r["steps"].tolist() for r in rest] == [[2, 2, 2], [1, 1, 1]]
    assert torch.allclose(rest[0]["discount"], torch.full((3,), 0.25))


def test_sequence_writer_overlaps_pads_and_stores_the_first_state() -> None:
    writer = SequenceWriter(length=4, period=2)
    seqs = []
    for t in range(7):
        step = {
            "obs": torch.tensor([[float(t)]]),
            "terminated": torch.tensor([t == 6]),
            "truncated": torch.tensor([False]),
        }
        out = writer.push(step, hidden=torch.tensor([[10.0 * t]]))
        if out is not None:
            seqs.extend({k: v[i] for k, v in out.items()} for i in range(out["mask"].shape[0]))
    starts = [s["obs"][0, 0].item() for s in seqs]
    assert starts == [0.0, 2.0, 4.0]  # overlap of 2 steps
    assert [s["hidden"].item() for s in seqs] == [0.0, 20.0, 40.0]  # state before each first step
    last = seqs[-1]
    assert last["obs"].squeeze(1).tolist() == [4.0, 5.0, 6.0, 0.0]  # the episode ended: padded
    assert last["mask"].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_sequence_replay_is_time_major_with_burn_in() -> None:
    replay = SequenceReplay(capacity=8, length=4, burn_in=2)
    replay.add({"obs": torch.arange(12.0).reshape(3, 4, 1), "mask": torch.ones(3, 4), "hidden": torch.zeros(3, 5)})
    batch = replay.sample(6)
    assert batch["obs"].shape == (4, 6, 1) and batch["mask"].shape == (4, 6) and batch["hidden"].shape == (6, 5)
    assert bool((batch["obs"][1] - batch["obs"][0] == 1).all())  # consecutive steps along axis 0
    with pytest.raises(ValueError, match="length=4"):
        replay.add({"obs": torch.zeros(1, 3, 1), "mask": torch.ones(1, 3), "hidden": torch.zeros(1, 5)})
    with pytest.raises(ValueError, match="burn_in"):
        SequenceReplay(4, length=4, burn_in=4)
