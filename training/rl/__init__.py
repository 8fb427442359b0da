"""Shared reinforcement-learning pieces used by every algorithm in `training/algorithms/`.

* `functional`    — verified math: TD / n-step targets, GAE, TD(λ) returns, soft target updates,
  clipped self-normalised importance weights, the one constraint-slack helper.
* `distributions` — `TanhNormal` (exact log-det), `ScaledBeta`, `FactorisedCategorical`; exact KL.
* `task`          — `TaskSpec`: what an algorithm needs to know about any environment that
  follows the vector-reward convention (signals with discounts, constraints, action space).
* `networks`      — actors returning `torch.distributions` objects, per-signal critics.
* `exploration`   — collector-side noise: per step, per episode, antithetic pairs (state-dependent: ours).
* `episode_pairs` — antithetic episode-pair advantages and their buffer.
* `behaviour`     — a learned behaviour-policy model μ̂ (offline rows without a logged propensity).
* `data`          — `TransitionBatch`, the Parquet transition loader, env pools and rollout collection.
* `losses`        — `LossModule`: one algorithm's networks and losses, with named hooks for variants.
* `registry`      — the one registry: algorithm name → config class, loss class, single/multi-agent.
* `trainer`       — `Trainer` (optimisers, DDP, target updates, logging, checkpoints) and the generic `train`.
* `runtime`       — seeding, devices, torchrun/DDP, metrics (JSONL + CSV + TensorBoard + PNG), safetensors.

Off-policy and recurrent families (docs/offpolicy.md):

* `offpolicy_functional` — n-step returns, DQN / double-DQN targets, TD3 clipped double-Q and smoothing.
* `replay`        — uniform replay, the n-step writer, R2D2 sequence replay with stored state and burn-in.
* `recurrent`     — GRU/LSTM cells, the K-head recurrent Q-network, burn-in unrolls, ONNX step export.
* `mixers`        — VDN sum and the monotone (softplus) QMIX-style hypernetwork mixer.
* `discrete`      — ε-greedy with propensities, masked per-agent argmax, multi-discrete joint indices.
* `toy_mdps`      — batched envs with exact optima (tabular Q*, quadratic bandit, discounted LQR, memory).
* `offpolicy_runner` — dqn/ddpg/td3 through the generic `train` (EnvPool adapter, logging, checkpoint).
"""
