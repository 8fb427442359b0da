"""Off-policy evaluation: one-step and sequential estimators with confidence intervals and diagnostics.

Every estimator is a small function over arrays (logged rewards per signal,
behaviour propensities, the evaluation policy's probabilities) returning an
`Estimate`: a value per signal, a confidence interval per signal and the
importance-weight diagnostics. See `core.py` for how values and intervals are
computed from per-row terms.
"""
