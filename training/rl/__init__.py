"""Shared reinforcement-learning pieces used by every algorithm in `training/algorithms/`.

* `functional` — verified math: TD targets, GAE, TD(λ) returns, soft target updates,
  clipped self-normalised importance weights (each unit-tested against hand-computed values).
* `task`       — `TaskSpec`: what an algorithm needs to know about any environment that
  follows the vector-reward convention (signals with discounts, constraints, action space).
* `networks`   — actors (Gaussian, categorical, per-agent joint) and per-signal critics.
* `behaviour`  — a learned behaviour-policy model for offline importance weighting.
* `data`       — `TransitionBatch`, the Parquet transition loader and online rollout collection.
* `learner`    — the constrained actor-critic skeleton; algorithms override named hooks.
* `runtime`    — seeding, devices, torchrun/DDP, metrics (CSV + TensorBoard + PNG), safetensors checkpoints.
"""
