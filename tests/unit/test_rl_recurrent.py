"""Recurrent pieces: cells equal torch's, K-head Q-network shapes, burn-in, ONNX step parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from training.rl.recurrent import (
    GRUCell,
    LSTMCell,
    RecurrentQNetwork,
    RecurrentStep,
    export_recurrent_step,
    unroll_with_burn_in,
)


def test_gru_cell_equals_torch_gru_cell() -> None:
    torch.manual_seed(0)
    ours, ref = GRUCell(5, 7), nn.GRUCell(5, 7)
    with torch.no_grad():
        ours.input_to_gates.weight.copy_(ref.weight_ih)
        ours.input_to_gates.bias.copy_(ref.bias_ih)
        ours.hidden_to_gates.weight.copy_(ref.weight_hh)
        ours.hidden_to_gates.bias.copy_(ref.bias_hh)
    x, h = torch.randn(9, 5), torch.randn(9, 7)
    assert torch.allclose(ours(x, h), ref(x, h), atol=1e-6)


def test_lstm_cell_equals_torch_lstm_cell_with_packed_state() -> None:
    torch.manual_seed(1)
    ours, ref = LSTMCell(4, 6), nn.LSTMCell(4, 6)
    with torch.no_grad():
        ours.input_to_gates.weight.copy_(ref.weight_ih)
        ours.input_to_gates.bias.copy_(ref.bias_ih)
        ours.hidden_to_gates.weight.copy_(ref.weight_hh)
        ours.hidden_to_gates.bias.copy_(ref.bias_hh)
    x, h, c = torch.randn(3, 4), torch.randn(3, 6), torch.randn(3, 6)
    h_ref, c_ref = ref(x, (h, c))
    out = ours(x, torch.cat([h, c], dim=-1))
    assert ours.state_size == 12
    assert torch.allclose(out[:, :6], h_ref, atol=1e-6) and torch.allclose(out[:, 6:], c_ref, atol=1e-6)


def test_q_network_shapes_and_resets() -> None:
    net = RecurrentQNetwork(obs_size=3, num_actions=4, hidden_size=8, num_heads=5, cell="lstm")
    obs = torch.randn(6, 2, 3)
    q, state = net.unroll(obs, net.initial_state(2))
    assert q.shape == (6, 2, 5, 4) and state.shape == (2, 16)
    # a reset at t = 3 makes steps 3… equal to a fresh unroll from t = 3
    resets = torch.zeros(6, 2)
    resets[3] = 1.0
    q_reset, _ = net.unroll(obs, torch.randn(2, 16), resets)
    q_fresh, _ = net.unroll(obs[3:], net.initial_state(2))
    assert torch.allclose(q_reset[3:], q_fresh, atol=1e-6)
    assert not torch.allclose(q_reset[:3], q[:3])
    with pytest.raises(ValueError, match="observation"):
        net.step(torch.zeros(2, 4), net.initial_state(2))


def test_burn_in_has_no_gradient_and_matches_a_full_unroll() -> None:
    torch.manual_seed(0)
    net = RecurrentQNetwork(obs_size=2, num_actions=3, hidden_size=4)
    obs = torch.randn(5, 3, 2)
    h0 = torch.randn(3, 4)
    out, start = unroll_with_burn_in(net.unroll, obs, h0, burn_in=2)
    full, _ = net.unroll(obs, h0)
    assert out.shape == (3, 3, 1, 3)
    assert torch.allclose(out, full[2:], atol=1e-6)
    assert not start.requires_grad
    # the burn-in steps do not receive gradient: perturbing obs[0] changes out only through the (detached) state
    obs_grad = obs.clone().requires_grad_(True)
    out2, _ = unroll_with_burn_in(net.unroll, obs_grad, h0, burn_in=2)
    out2.sum().backward()
    assert obs_grad.grad is not None
    assert float(obs_grad.grad[:2].abs().sum()) == 0.0 and float(obs_grad.grad[2:].abs().sum()) > 0.0


def test_recurrent_step_onnx_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    for cell in ("gru", "lstm"):
        net = RecurrentQNetwork(obs_size=5, num_actions=3, hidden_size=8, num_heads=4, cell=cell)
        step = RecurrentStep(net)
        path = tmp_path / f"{cell}.onnx"
        diff = export_recurrent_step(step, [5, net.state_size], step.input_names, step.output_names, path)
        assert diff <= 1e-5
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        obs, state = (
            np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32),
            np.zeros((7, net.state_size), np.float32),
        )
        q, nxt = session.run(None, {"observation": obs, "hidden_state": state})
        q_ref, nxt_ref = net.step(torch.from_numpy(obs), torch.from_numpy(state))
        assert q.shape == (7, 3) and np.allclose(q, q_ref.mean(-2).detach().numpy(), atol=1e-5)  # mean over heads
        assert np.allclose(nxt, nxt_ref.detach().numpy(), atol=1e-5)
