"""SL-MGAC's pieces (training/algorithms/sl_mgac.py) against hand-computed values, and one short training run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.problems import SLOT
from training.algorithms.sl_mgac import (
    LIVE,
    PAGE,
    SEQUENCE,
    SEQUENCE_LENGTH,
    GroupHeads,
    SLMGACConfig,
    SLMGACLoss,
    SlotEncoder,
    two_hot,
)
from training.rl.data import TransitionBatch
from training.rl.losses import MiniBatch
from training.rl.task import TaskSpec


def test_two_hot_splits_mass_between_the_two_nearest_bins_and_keeps_the_mean() -> None:
    support = torch.tensor([0.0, 1.0, 2.0, 3.0])
    rows = two_hot(torch.tensor([1.25, 0.0, 3.0, -5.0, 9.0]), support)
    assert torch.allclose(rows[0], torch.tensor([0.0, 0.75, 0.25, 0.0]))
    assert torch.allclose(rows[1], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(rows[2], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert torch.allclose(rows[3], torch.tensor([1.0, 0.0, 0.0, 0.0]))  # clipped to the support
    assert torch.allclose(rows[4], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert torch.allclose(rows.sum(1), torch.ones(5))
    assert torch.allclose(rows[0] @ support, torch.tensor(1.25))


def test_group_heads_route_each_row_to_its_own_groups_head() -> None:
    heads = GroupHeads(width=2, out=1, use_groups=True)
    with torch.no_grad():
        heads.heads.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        heads.heads.bias.zero_()
    h = torch.tensor([[2.0, 3.0], [2.0, 3.0], [2.0, 3.0]])
    obs = torch.zeros(3, SLOT.observation_size)
    obs[0, 0] = obs[1, 1] = obs[2, 2] = 1.0  # activity groups low, medium, high
    assert heads(h, obs).squeeze(-1).tolist() == [2.0, 3.0, 5.0]
    shared = GroupHeads(width=2, out=1, use_groups=False)
    assert shared.heads.out_features == 1


def test_target_attention_is_the_live_candidate_over_the_users_live_sequence() -> None:
    torch.manual_seed(0)
    enc = SlotEncoder(width=8)
    obs = torch.rand(5, SLOT.observation_size)
    obs[:, SEQUENCE] = 0.0
    # Row 0: no exposure; row 1: two (the rest padding); rows 2–4: five.
    obs[1, SEQUENCE.start : SEQUENCE.start + 4] = torch.tensor([2.0, 0.9, 0.0, 0.4])
    obs[2:, SEQUENCE] = torch.rand(3, SEQUENCE.stop - SEQUENCE.start) + 0.05
    _, weights = enc.attention(obs)
    assert weights.shape == (5, 1 + SEQUENCE_LENGTH)
    assert torch.allclose(weights.sum(1), torch.ones(5))
    assert weights[0].tolist() == [1.0] + [0.0] * SEQUENCE_LENGTH  # nothing to attend to but the empty slot
    assert (weights[1, 1:3] > 0).all() and (weights[1, 3:] == 0).all()  # padding gets no weight
    assert (weights[2:] > 0).all()
    # The sequence is what it reads: another page leaves the weights alone, another history does not,
    # and neither does another live candidate (the query).
    other_page = obs.clone()
    other_page[:, PAGE] = torch.flip(obs[:, PAGE], dims=[1]) * 3.0
    assert torch.equal(enc.attention(other_page)[1], weights)
    other_history = obs.clone()
    other_history[2:, SEQUENCE] = torch.flip(obs[2:, SEQUENCE], dims=[1]) * 3.0
    assert not torch.allclose(enc.attention(other_history)[1][2:], weights[2:])
    other_live = obs.clone()
    other_live[:, LIVE] = obs[:, LIVE] * 5.0 + 1.0
    assert not torch.allclose(enc.attention(other_live)[1][1:], weights[1:])
    assert enc(obs).shape == (5, 8) and torch.isfinite(enc(obs)).all()


def _loss(**cfg: object) -> SLMGACLoss:
    torch.manual_seed(0)
    return SLMGACLoss(TaskSpec.from_problem(SLOT), SLMGACConfig(**cfg))  # type: ignore[arg-type]


def _minibatch(n: int = 64) -> MiniBatch:
    g = torch.Generator().manual_seed(1)
    obs = torch.rand(n, SLOT.observation_size, generator=g)
    obs[:, :3] = torch.nn.functional.one_hot(torch.randint(0, 3, (n,), generator=g), 3).float()
    action = torch.randint(0, 7, (n, 1), generator=g).float()
    shown = (action[:, 0] > 0).float()
    rewards = torch.stack([shown * 120.0, 200.0 - shown * 30.0, torch.zeros(n), shown], dim=1)
    z = torch.zeros(n)
    return MiniBatch(
        obs,
        action,
        rewards,
        torch.rand(n, SLOT.observation_size, generator=g),
        z,
        z,
        z[:, None],
        z[:, None],
        torch.ones(n),
    )


def test_the_loss_trains_the_critic_toward_the_two_hot_target_and_the_student_toward_the_teacher() -> None:
    loss = _loss(minibatch_size=64)
    mb = _minibatch()
    opt = torch.optim.Adam(loss.parameters(), lr=3e-3)
    _, metrics = loss(mb)
    assert {"losses/critic", "losses/supervised", "losses/distill_kl", "charts/temperature"} <= set(metrics)
    for _ in range(100):
        total, metrics = loss(mb)
        opt.zero_grad()
        total.backward()
        opt.step()
    # The supervised heads learn the observed parts: an insertion's 2 live minutes, 3.33 video minutes.
    _, sup = loss.critic(mb.obs)
    rows = torch.arange(64)
    a = mb.action[:, 0].long()
    shown = a > 0
    assert torch.allclose(sup[rows, a, 0][shown], torch.full((int(shown.sum()),), 2.0), atol=0.3)
    assert torch.isfinite(loss.q_values(mb.obs)).all()
    # With the teacher held still, the distillation term alone pulls the student onto it.
    before = metrics["losses/distill_kl"]
    student_opt = torch.optim.Adam(loss.actor.parameters(), lr=1e-2)
    for _ in range(200):
        total, metrics = loss(mb)
        student_opt.zero_grad()
        total.backward()
        student_opt.step()
    assert metrics["losses/distill_kl"] < min(0.02, before / 5)


def test_the_ablations_switch_off_the_supervised_heads_and_the_groups() -> None:
    no_anchor = _loss(use_anchor=False)
    _, metrics = no_anchor(_minibatch())
    assert "losses/supervised" not in metrics
    assert no_anchor.critic.q.heads.out_features == 7 * 51 * 3
    no_groups = _loss(use_groups=False)
    assert no_groups.critic.q.heads.out_features == 7 * 51
    with pytest.raises(ValueError, match="target_entropy"):
        SLMGACConfig(target_entropy=math.log(7.0))
    with pytest.raises(ValueError, match="anchor_weight"):
        SLMGACConfig(anchor_weight=1.5)


def test_sl_mgac_refuses_a_task_that_is_not_slot() -> None:
    from models.problems import ALLOCATE

    with pytest.raises(ValueError, match="slot task's signals"):
        SLMGACLoss(TaskSpec.from_problem(ALLOCATE), SLMGACConfig())


def test_the_student_exports_to_onnx_logits_equal_to_torch(tmp_path: Path) -> None:
    from training.export import export_policy

    loss = _loss()
    files = export_policy(loss.actor, SLOT, tmp_path)
    session = ort.InferenceSession(str(files["model.onnx"].path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    obs = np.random.default_rng(0).random((32, SLOT.observation_size), dtype=np.float32)
    (onnx_logits,) = session.run(None, {session.get_inputs()[0].name: obs})
    with torch.no_grad():
        torch_logits = loss.actor.log_probs_all(torch.as_tensor(obs)).numpy()  # type: ignore[operator]
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-5)
    # The served student's input follows the observation, the live sequence included (its last field).
    assert session.get_inputs()[0].shape[1] == SLOT.observation_size == SEQUENCE.stop


def test_window_average_ships_the_mixture_of_the_last_students_and_last_iterate_ships_the_actor() -> None:
    loss = _loss(ship="window_average", ship_window=2, window_average_steps=400, actor_lr=1e-2)
    obs = _minibatch().obs
    # Two collecting students that disagree: one always inserts at position 1, the other never inserts.
    states = []
    for favourite in (1, 0):
        with torch.no_grad():
            for p in loss.actor.parameters():
                p.zero_()
            last = [m for m in loss.actor.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.bias[favourite] = 4.0
        states.append({k: v.clone() for k, v in loss.actor.state_dict().items()})
        loss.window.record(loss.actor, obs)  # what on_batch_start does online, batch by batch
    assert loss.shipped_actor() is loss.actor  # nothing fitted before training ends
    metrics = loss.on_train_end()
    assert "losses/window_average_kl" in metrics
    shipped = loss.shipped_actor()
    assert shipped is not loss.actor and not any(p.requires_grad for p in shipped.parameters())
    with torch.no_grad():
        probs = torch.exp(shipped.log_probs_all(obs))
        mixture = torch.zeros_like(probs)
        for state in states:
            loss.actor.load_state_dict(state)
            mixture += torch.exp(loss.actor.log_probs_all(obs)) / len(states)
    # Equal states per iterate: the visit-weighted mixture is the plain average of the two policies.
    assert torch.allclose(probs, mixture, atol=0.03)
    assert float(probs[:, 0].mean()) == pytest.approx(float(probs[:, 1].mean()), abs=0.03)
    # weights_average: the parameter-wise mean of the same two students.
    by_weights = _loss(ship="weights_average", ship_window=2)
    for state in states:
        by_weights.actor.load_state_dict(state)
        by_weights.window.record(by_weights.actor, obs)
    assert by_weights.on_train_end() == {}
    for key, value in by_weights.shipped_actor().state_dict().items():
        torch.testing.assert_close(value, (states[0][key] + states[1][key]) / 2)
    last = _loss(ship="last_iterate")
    assert last.window is None and last.on_train_end() == {} and last.shipped_actor() is last.actor
    with pytest.raises(ValueError, match="ship"):
        SLMGACConfig(ship="best")


def test_shipped_teacher_is_the_weight_mean_of_the_teachers_of_the_shipped_students_batches() -> None:
    loss = _loss(ship="weights_average", ship_window=2)
    mb = _minibatch()
    batch = TransitionBatch(mb.obs, mb.action, mb.rewards, mb.next_obs, mb.done, torch.full((len(mb.obs),), math.nan))
    teachers, students = [], []
    for shift in (1.0, 2.0, 4.0):  # three batches; the window keeps the last two
        with torch.no_grad():
            for p in (*loss.teacher.parameters(), *loss.actor.parameters()):
                p.add_(shift)
        teachers.append({k: v.clone() for k, v in loss.teacher.state_dict().items()})
        students.append({k: v.clone() for k, v in loss.actor.state_dict().items()})
        rng = torch.get_rng_state()
        loss.on_batch_start(batch)  # what the trainer calls online, before it updates on the batch
        assert torch.equal(torch.get_rng_state(), rng)  # no draws from the global generator: training unchanged
    assert loss.shipped_teacher() is loss.teacher  # nothing averaged before training ends
    loss.on_train_end()
    shipped_teacher = loss.shipped_teacher()
    assert shipped_teacher is not loss.teacher and not any(p.requires_grad for p in shipped_teacher.parameters())
    for key, value in shipped_teacher.state_dict().items():
        torch.testing.assert_close(value, (teachers[1][key] + teachers[2][key]) / 2)
    # The same batches as the shipped student's window.
    for key, value in loss.shipped_actor().state_dict().items():
        torch.testing.assert_close(value, (students[1][key] + students[2][key]) / 2)
    with torch.no_grad():  # and it is a different policy from the last teacher
        assert not torch.allclose(shipped_teacher(mb.obs), loss.teacher(mb.obs))
    last = _loss(ship="last_iterate")
    assert last.teacher_window is None and last.on_train_end() == {} and last.shipped_teacher() is last.teacher
