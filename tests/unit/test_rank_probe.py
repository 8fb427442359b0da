"""rank_probe's command line (issue 18, thirteenth round): the training budget reaches the probe, and the
per-iteration history finds each learner's own names for the comment multiplier and rates."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import rank_probe


def test_iterations_and_envs_reach_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_probe(
        algo: str, overrides: dict[str, object], seeds: list[int], users: int, iterations: int, *rest: Any
    ) -> float:
        seen.update(algo=algo, iterations=iterations, n_envs=rest[-1])
        return 0.0

    monkeypatch.setattr(rank_probe, "probe", fake_probe)
    rank_probe.main(["--algo", "tscac", "--iterations", "120", "--envs", "192", "--seeds", "100"])
    assert seen == {"algo": "tscac", "iterations": 120, "n_envs": 192}
    rank_probe.main(["--seeds", "100"])
    assert (seen["iterations"], seen["n_envs"]) == (40, 64)  # rank_quality's defaults


@pytest.mark.parametrize(
    "row",
    [
        # the generic Trainer's row (TSCAC, MA cascade)
        {"charts/lambda_comment": 0.5, "charts/signal_comment": 1.2, "charts/signal_watch_time": 150.0},
        # MA-RDPG's own loop (training/rl/offpolicy_runner.py prefixes its row with losses/)
        {
            "losses/charts/multiplier_comment": 0.5,
            "losses/per_request_comment": 1.2,
            "losses/per_request_watch_time": 150.0,
        },
    ],
)
def test_history_reads_each_learners_keys(row: dict[str, float]) -> None:
    assert [rank_probe._first(row, keys) for _, keys in rank_probe.HISTORY_KEYS] == [0.5, 1.2, 150.0]
