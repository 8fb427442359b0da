"""Recurrent networks: GRU/LSTM cells, a recurrent Q-network with K heads, burn-in unrolls, an ONNX step module.

Shapes: B = batch, T = time (sequences are time-major), O = observation size,
H = hidden size, S = state size (H for a GRU, 2H for an LSTM: [h; c] packed
into one tensor so every recurrent net has one state input and one state
output — what an ONNX graph and a per-session state store want), K = heads,
A = discrete actions.

* `GRUCell`, `LSTMCell` — the equations of `torch.nn.GRUCell` / `LSTMCell`
  (Cho et al. 2014; Hochreiter & Schmidhuber 1997, forget gate of Gers et al.),
  written with `nn.Linear` so the TorchScript ONNX exporter emits plain
  MatMul/Sigmoid/Tanh, and the state is a single (B, S) tensor.
* `RecurrentQNetwork` — encoder MLP → cell → K linear Q-heads: step
  (B, O), (B, S) → Q (B, K, A), (B, S); `unroll` over (T, B, O) with optional
  resets. K heads are MaRCA's AWRQ ensemble (each head its own TD loss, head
  weights η_k ∝ TD loss in training, the plain mean at serving); K = 1 is a
  DRQN/R2D2 Q-network.
* `unroll_with_burn_in` — R2D2's burn-in: run the first steps without
  gradient from the stored state, then unroll the rest with gradient.
* `RecurrentStep` — the export wrapper: inputs `observation` (B, O) and
  `hidden_state` (B, S), outputs `q_values` (B, A) (mean over heads) and
  `next_hidden_state` (B, S). MA-RDPG's message LSTM and SL-MGAC-style
  recurrent actors use the same step contract through `export_recurrent_step`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn


class GRUCell(nn.Module):
    """h' = (1 − z) ⊙ n + z ⊙ h with r = σ(W_r x + U_r h), z = σ(W_z x + U_z h),
    n = tanh(W_n x + r ⊙ (U_n h + b_hn)) — torch.nn.GRUCell's parameterisation (gates ordered r, z, n)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"GRUCell: input_size and hidden_size must be ≥ 1, got {input_size}, {hidden_size}")
        self.hidden_size = hidden_size
        self.state_size = hidden_size
        self.input_to_gates = nn.Linear(input_size, 3 * hidden_size)
        self.hidden_to_gates = nn.Linear(hidden_size, 3 * hidden_size)
        bound = 1.0 / hidden_size**0.5  # torch's RNN initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, state: Tensor) -> Tensor:
        gi = self.input_to_gates(x)
        gh = self.hidden_to_gates(state)
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        reset = torch.sigmoid(i_r + h_r)
        update = torch.sigmoid(i_z + h_z)
        candidate = torch.tanh(i_n + reset * h_n)
        return (1.0 - update) * candidate + update * state


class LSTMCell(nn.Module):
    """(h', c') with c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c') — torch.nn.LSTMCell's gates (i, f, g, o).

    The state is one tensor [h; c] of size S = 2H; `hidden(state)` returns h.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"LSTMCell: input_size and hidden_size must be ≥ 1, got {input_size}, {hidden_size}")
        self.hidden_size = hidden_size
        self.state_size = 2 * hidden_size
        self.input_to_gates = nn.Linear(input_size, 4 * hidden_size)
        self.hidden_to_gates = nn.Linear(hidden_size, 4 * hidden_size)
        bound = 1.0 / hidden_size**0.5
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def hidden(self, state: Tensor) -> Tensor:
        return state[..., : self.hidden_size]

    def forward(self, x: Tensor, state: Tensor) -> Tensor:
        h, c = state[..., : self.hidden_size], state[..., self.hidden_size :]
        gates = self.input_to_gates(x) + self.hidden_to_gates(h)
        i, f, g, o = gates.chunk(4, dim=-1)
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_next = torch.sigmoid(o) * torch.tanh(c_next)
        return torch.cat([h_next, c_next], dim=-1)


def make_cell(kind: str, input_size: int, hidden_size: int) -> GRUCell | LSTMCell:
    if kind == "gru":
        return GRUCell(input_size, hidden_size)
    if kind == "lstm":
        return LSTMCell(input_size, hidden_size)
    raise ValueError(f"cell must be 'gru' or 'lstm', got {kind!r}")


def cell_output(cell: GRUCell | LSTMCell, state: Tensor) -> Tensor:
    """The part of the state a head reads: h (the whole state for a GRU, the first half for an LSTM)."""
    return cell.hidden(state) if isinstance(cell, LSTMCell) else state


class RecurrentQNetwork(nn.Module):
    """Per-agent recurrent Q-network with K heads (MaRCA's AWRQ agent; DRQN/R2D2 when K = 1).

    step: observation (B, O), state (B, S) → Q (B, K, A), next state (B, S).
    Deviation from MaRCA: the encoder is a ReLU MLP of our choosing (the paper
    does not fix one); the heads share the encoder and the cell (ours: cheap
    ensembling, the diversity comes from the heads' own initialisations).
    """

    def __init__(
        self,
        obs_size: int,
        num_actions: int,
        hidden_size: int = 64,
        num_heads: int = 1,
        cell: str = "gru",
        encoder_sizes: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        if obs_size < 1 or num_actions < 1 or num_heads < 1:
            raise ValueError(
                f"RecurrentQNetwork: obs_size, num_actions and num_heads must be ≥ 1, got "
                f"{obs_size}, {num_actions}, {num_heads}"
            )
        self.obs_size, self.num_actions, self.num_heads = obs_size, num_actions, num_heads
        layers: list[nn.Module] = []
        prev = obs_size
        for size in encoder_sizes:
            layers += [nn.Linear(prev, size), nn.ReLU()]
            prev = size
        self.encoder = nn.Sequential(*layers)
        self.cell = make_cell(cell, prev, hidden_size)
        self.heads = nn.Linear(hidden_size, num_heads * num_actions)

    @property
    def state_size(self) -> int:
        return self.cell.state_size

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.zeros(batch_size, self.state_size, device=device)

    def step(self, obs: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        if not torch.jit.is_tracing() and (obs.shape[-1] != self.obs_size or state.shape[-1] != self.state_size):
            raise ValueError(
                f"RecurrentQNetwork.step: observation (…, {self.obs_size}) and state (…, {self.state_size}) "
                f"expected, got {tuple(obs.shape)} and {tuple(state.shape)}"
            )
        next_state = self.cell(self.encoder(obs), state)
        q = self.heads(cell_output(self.cell, next_state))
        return q.reshape(*q.shape[:-1], self.num_heads, self.num_actions), next_state

    def unroll(self, obs: Tensor, state: Tensor, resets: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """obs (T, B, O), state (B, S), resets (T, B) — 1 where step t starts a new episode (state zeroed
        before the step) → Q (T, B, K, A), final state (B, S)."""
        qs = []
        for t in range(obs.shape[0]):
            if resets is not None:
                state = state * (1.0 - resets[t].to(state)).unsqueeze(-1)
            q, state = self.step(obs[t], state)
            qs.append(q)
        return torch.stack(qs), state


def unroll_with_burn_in(
    unroll: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    obs: Tensor,
    stored_state: Tensor,
    burn_in: int,
) -> tuple[Tensor, Tensor]:
    """R2D2 burn-in: refresh the stored state on obs[:burn_in] without gradient, then unroll obs[burn_in:].

    unroll(obs (T, B, …), state (B, S)) → (outputs (T, B, …), final state);
    returns the outputs for steps burn_in … T−1 (with gradient) and the state
    the training part started from (detached).
    """
    if not 0 <= burn_in < obs.shape[0]:
        raise ValueError(f"unroll_with_burn_in: burn_in must be in [0, T={obs.shape[0]}), got {burn_in}")
    state = stored_state
    if burn_in:
        with torch.no_grad():
            _, state = unroll(obs[:burn_in], state)
    state = state.detach()
    outputs, _ = unroll(obs[burn_in:], state)
    return outputs, state


class RecurrentStep(nn.Module):
    """ONNX step of a RecurrentQNetwork: (observation, hidden_state) → (q_values = mean over heads, next_hidden_state).

    The plain mean over heads is MaRCA's serving rule (training weights heads
    by their TD loss; serving does not).
    """

    input_names = ("observation", "hidden_state")
    output_names = ("q_values", "next_hidden_state")

    def __init__(self, network: RecurrentQNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, observation: Tensor, hidden_state: Tensor) -> tuple[Tensor, Tensor]:
        q, next_state = self.network.step(observation, hidden_state)
        return q.mean(dim=-2), next_state


def export_recurrent_step(
    module: nn.Module,
    input_sizes: Sequence[int],
    input_names: Sequence[str],
    output_names: Sequence[str],
    path: Path,
    opset: int = 17,
    parity_samples: int = 256,
    tolerance: float = 1e-5,
    seed: int = 0,
) -> float:
    """Export a single-step module (inputs (B, size_i) each) with a dynamic batch axis; check onnxruntime parity.

    Parity: the module is run for 3 chained steps on `parity_samples` random
    rows, feeding each step's state output back — so a wrongly wired state
    shows up. The state is assumed to be the last input and the last output.
    Returns the max |torch − onnxruntime|; raises `ValueError` above `tolerance`.
    """
    import onnxruntime as ort

    module = module.cpu().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    examples = tuple(torch.zeros(2, size) for size in input_sizes)
    axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
    torch.onnx.export(
        module,
        examples,
        str(path),
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_axes=axes,
        opset_version=opset,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(parity_samples, size, generator=generator) for size in input_sizes]
    worst = 0.0
    for _ in range(3):
        with torch.no_grad():
            expected = module(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(list(output_names), {n: x.numpy() for n, x in zip(input_names, inputs, strict=True)})
        for e, g in zip(expected, got, strict=True):
            worst = max(worst, float(np.max(np.abs(e.numpy() - g))))
        inputs = [*inputs[:-1], expected[-1]]  # the state output feeds the next step
    if worst > tolerance:
        raise ValueError(f"ONNX parity failed for {path.name}: max |torch − onnxruntime| = {worst:.3g} > {tolerance}")
    return worst
