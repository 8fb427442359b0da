"""Shared reinforcement-learning pieces used by every algorithm in `training/algorithms/`.

* `functional`    — verified math: TD / n-step targets, GAE, TD(λ) returns, soft target updates,
  clipped self-normalised importance weights, the one constraint-slack helper.
* `distributions` — `TanhNormal` (exact log-det), `ScaledBeta`, `FactorisedCategorical`; exact KL.
* `task`          — `TaskSpec`: what an algorithm needs to know about any environment that
  follows the vector-reward convention (signals with discounts, constraints, action space).
* `networks`      — actors returning `torch.distributions` objects, per-signal critics.
* `exploration`   — collector-side noise: per step, per episode, antithetic pairs.
* `episode_pairs` — antithetic episode-pair advantages and their buffer.
* `behaviour`     — a learned behaviour-policy model μ̂ (offline rows without a logged propensity).
* `data`          — `TransitionBatch`, the Parquet transition loader, env pools and rollout collection.
* `losses`        — `LossModule`: one algorithm's networks and losses, with named hooks for variants.
* `registry`      — the one registry: algorithm name → config class, loss class, single/multi-agent.
* `trainer`       — `Trainer` (optimisers, DDP, target updates, logging, checkpoints) and the generic `train`.
* `runtime`       — seeding, devices, torchrun/DDP, metrics (JSONL + CSV + TensorBoard + PNG), safetensors.
"""
