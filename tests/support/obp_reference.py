"""Run by the peer library's own interpreter (`.venv-obp/bin/python tests/support/obp_reference.py OUT.npz`).

Draws obp's synthetic bandit data (SyntheticBanditDataset), builds an
evaluation policy and reward predictions, spreads rounds over three positions,
and writes inputs and obp 0.5.7's estimates to OUT.npz. Imports obp and numpy
only: it never imports Troupe, and Troupe never imports obp
(tests/unit/test_ope_logs_vs_obp.py compares the two through this file's output).
"""

from __future__ import annotations

import sys

import numpy as np
from obp.dataset import SyntheticBanditDataset, logistic_reward_function
from obp.ope import (
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    InverseProbabilityWeighting,
    SelfNormalizedDoublyRobust,
    SelfNormalizedInverseProbabilityWeighting,
)

N_ROUNDS, N_ACTIONS, DIM_CONTEXT, LEN_LIST, LAMBDA = 3000, 8, 5, 3, 25.0


def main(out: str) -> None:
    dataset = SyntheticBanditDataset(
        n_actions=N_ACTIONS,
        dim_context=DIM_CONTEXT,
        reward_type="binary",
        reward_function=logistic_reward_function,
        beta=-2.0,  # a logging policy that prefers low-reward actions: the target below differs from it
        random_state=12345,
    )
    fb = dataset.obtain_batch_bandit_feedback(n_rounds=N_ROUNDS)
    rng = np.random.default_rng(7)
    position = rng.integers(0, LEN_LIST, size=N_ROUNDS)
    # target: softmax(3 · expected reward) at every position, slightly different per position
    logits = 3.0 * fb["expected_reward"][:, :, None] + 0.3 * np.arange(LEN_LIST)[None, None, :] * rng.normal(
        size=(1, N_ACTIONS, 1)
    )
    action_dist = np.exp(logits - logits.max(axis=1, keepdims=True))
    action_dist /= action_dist.sum(axis=1, keepdims=True)
    # reward predictions: the truth plus noise, clipped to [0, 1] (a fixed, imperfect model)
    q = np.clip(fb["expected_reward"][:, :, None] + rng.normal(0, 0.1, (N_ROUNDS, N_ACTIONS, LEN_LIST)), 0, 1)
    kw = dict(reward=fb["reward"], action=fb["action"], pscore=fb["pscore"], position=position, action_dist=action_dist)
    estimates = {
        "ips": InverseProbabilityWeighting().estimate_policy_value(**kw),
        "snips": SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**kw),
        "dm": DirectMethod().estimate_policy_value(**kw, estimated_rewards_by_reg_model=q),
        "dr": DoublyRobust().estimate_policy_value(**kw, estimated_rewards_by_reg_model=q),
        "sndr": SelfNormalizedDoublyRobust().estimate_policy_value(**kw, estimated_rewards_by_reg_model=q),
        "dr_os": DoublyRobustWithShrinkage(lambda_=LAMBDA).estimate_policy_value(
            **kw, estimated_rewards_by_reg_model=q
        ),
    }
    np.savez_compressed(
        out,
        context=fb["context"],
        action=fb["action"],
        reward=fb["reward"],
        pscore=fb["pscore"],
        position=position,
        action_dist=action_dist,
        estimated_rewards=q,
        shrinkage_lambda=LAMBDA,
        **{f"obp_{k}": np.float64(v) for k, v in estimates.items()},
    )


if __name__ == "__main__":
    main(sys.argv[1])
