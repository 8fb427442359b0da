"""Off-policy evaluation: one-step and sequential estimators with confidence intervals and diagnostics.

Every estimator is a small function over arrays (logged rewards per signal,
behaviour propensities, the evaluation policy's probabilities) returning an
`Estimate`: a value per signal, a confidence interval per signal and the
importance-weight diagnostics. See `core.py` for how values and intervals are
computed from per-row terms.

The public API (numpy, scipy and — for fitted reward models — scikit-learn only; no torch):

    from training.ope import BanditFeedback, evaluate_logs, read_bandit_feedback
    estimates = evaluate_logs(read_bandit_feedback("logs.parquet", target="action_dist"))

or the array-level estimators (`ips`, `snips`, `doubly_robust`, …) on your own
arrays. Policies backed by ONNX files (`training.ope.policies`) are imported
from their module: they need onnxruntime.
"""

from training.ope.core import Estimate, Terms, WeightDiagnostics, make_estimate, paired_difference
from training.ope.errors import OPEInputError
from training.ope.fqe import FQEConfig, fqe
from training.ope.logs import (
    ESTIMATORS,
    REWARD_MODELS,
    BanditFeedback,
    cross_fitted_rewards,
    estimator_terms,
    evaluate_logs,
    read_bandit_feedback,
    shrink_weights,
    tune_shrinkage,
)
from training.ope.one_step import (
    NCIS_CAP_GRID,
    CapChoice,
    CIOptions,
    choose_ncis_cap,
    direct_method,
    doubly_robust,
    ips,
    kernel_log_density,
    ncis,
    ncis_mse_cap,
    snips,
    switch_dr,
)
from training.ope.sequential import pdis, sequential_doubly_robust, wpdis
from training.ope.weights import ImportanceWeights, importance_weights

__all__ = [
    "ESTIMATORS",
    "NCIS_CAP_GRID",
    "REWARD_MODELS",
    "BanditFeedback",
    "CIOptions",
    "CapChoice",
    "Estimate",
    "FQEConfig",
    "ImportanceWeights",
    "OPEInputError",
    "Terms",
    "WeightDiagnostics",
    "cross_fitted_rewards",
    "direct_method",
    "doubly_robust",
    "choose_ncis_cap",
    "estimator_terms",
    "evaluate_logs",
    "fqe",
    "importance_weights",
    "ips",
    "kernel_log_density",
    "make_estimate",
    "ncis",
    "ncis_mse_cap",
    "paired_difference",
    "pdis",
    "read_bandit_feedback",
    "sequential_doubly_robust",
    "shrink_weights",
    "snips",
    "switch_dr",
    "tune_shrinkage",
    "wpdis",
]
