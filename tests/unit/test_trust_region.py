"""The reward-free trust region: interpolation between the cloned and the trained actor, the σ floor, the line search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from models.problems import RANK
from tests.support.rl import one_step_rank_columns
from training.ope.policies import clipped_gaussian_log_density
from training.ope.weights import importance_weights
from training.rl.networks import TanhGaussianActor
from training.rl.trust_region import StdFloor, TrustRegionConfig, actor_at, interpolate_state, line_search


def _actor(seed: int) -> TanhGaussianActor:
    torch.manual_seed(seed)
    return TanhGaussianActor(4, 3, 0.0, 1.0, (8,), init_mean=(0.2, 0.5, 0.8), init_std=0.03)


def test_interpolation_ends_at_the_two_actors_and_is_linear_between() -> None:
    cloned, trained = _actor(0), _actor(1)
    a, b = cloned.state_dict(), trained.state_dict()
    for k in a:
        assert torch.equal(interpolate_state(a, b, 0.0)[k], a[k])
        assert torch.allclose(interpolate_state(a, b, 1.0)[k], b[k])
        assert torch.allclose(interpolate_state(a, b, 0.25)[k], 0.75 * a[k] + 0.25 * b[k])
    stepped = actor_at(trained, a, 0.5)
    assert stepped is not trained and torch.allclose(trained.state_dict()["log_std_logit"], b["log_std_logit"])


def test_std_floor_keeps_log_sigma_at_least_the_cloned_actors() -> None:
    cloned, trained = _actor(0), _actor(1)
    with torch.no_grad():
        trained.log_std_logit.fill_(-8.0)  # σ collapsed to the lower bound
    obs = torch.randn(16, 4)
    mean, log_std = StdFloor(trained, cloned)(obs)
    assert torch.allclose(mean, trained(obs)[0])
    assert torch.all(log_std >= cloned(obs)[1] - 1e-7)
    assert torch.all(log_std > trained(obs)[1])


def _ess_share(shift: float) -> float:
    """ESS share of a Gaussian shifted by `shift`·σ in every one of 3 entries, on 20,000 draws of the unshifted one."""
    rng = np.random.default_rng(0)
    a = 0.5 + 0.03 * rng.standard_normal((20_000, 3))
    behaviour = clipped_gaussian_log_density(a, np.full_like(a, 0.5), np.full_like(a, 0.03), 0.0, 1.0)
    target = clipped_gaussian_log_density(a, np.full_like(a, 0.5 + 0.03 * shift), np.full_like(a, 0.03), 0.0, 1.0)
    return float(importance_weights(target, behaviour, log_space=True).diagnostics.ess_share)


def test_line_search_keeps_the_largest_step_above_the_share() -> None:
    # A trained policy 2σ away in every entry: ESS share exp(−3·(2t)²) at step t; 30 % ⇒ t ≤ 0.3171.
    found = line_search(lambda t: _ess_share(2.0 * t), 0.3, bisection_steps=8)
    assert found.met and found.ess_share >= 0.3
    assert 0.29 <= found.step <= 0.335
    assert found.tried[0][0] == 1.0 and found.tried[0][1] < 0.01


def test_line_search_takes_the_whole_step_when_it_overlaps_and_the_clone_when_nothing_does() -> None:
    assert line_search(lambda t: 0.9, 0.3, 4).step == 1.0
    none = line_search(lambda t: 0.1 * (1 - t), 0.3, 4)
    assert none.step == 0.0 and not none.met


def test_config_rejects_a_share_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="min_ess_share"):
        TrustRegionConfig(min_ess_share=1.0)
    assert not TrustRegionConfig().enabled and TrustRegionConfig(min_ess_share=0.3).enabled


def _rank_logs(folder: Path, n: int = 600, seed: int = 0) -> Path:
    """One-step rank sessions logged by a constant Gaussian (weights 0.3, σ 0.05) whose watch time grows
    steeply with the first weight, so an unconstrained offline learner runs off the logged support."""
    rng = np.random.default_rng(seed)
    d = RANK.observation_size
    x = rng.normal(size=(n, d))
    a = np.clip(0.3 + 0.05 * rng.normal(size=(n, 18)), 0, 1)
    ld = clipped_gaussian_log_density(a, np.full((n, 18), 0.3), np.full((n, 18), 0.05), 0.0, 1.0)
    rewards = {s: 100.0 * a[:, 0] if s == "watch_time" else np.full(n, 10.0) for s in RANK.signal_names}
    cols = one_step_rank_columns(x, a, ld, rewards)
    folder.mkdir(parents=True)
    pq.write_table(pa.table(cols), folder / "transitions.parquet")
    return folder / "transitions.parquet"


FAST_RCPO = {
    "run": {"iterations": 4, "offline_steps": 40},
    "algo": {"hidden": [16, 16], "minibatch_size": 128, "init_std": 0.05, "warm_start_steps": 300,
             "warm_start_lr": 1e-2, "actor_lr": 1e-1},  # a step big enough to leave the support from an exact clone
}  # fmt: skip


def test_the_retrain_job_ships_the_step_the_logs_can_evaluate_and_export_rebuilds_it(troupe_home: Path) -> None:
    from pipelines.jobs.export import run_export
    from pipelines.jobs.train import read_logged_actions, run_train

    data = _rank_logs(troupe_home / "runs" / "rank" / "k" / "dataset")
    off = {**FAST_RCPO, "trust_region": {"min_ess_share": 0.0}}  # configs/rank/rcpo.yaml turns it on
    free = run_train("rank", data, troupe_home / "free", algo="rcpo", config=off, seed=1)
    config = {**FAST_RCPO, "trust_region": {"min_ess_share": 0.3}}
    trained = run_train("rank", data, troupe_home / "runs" / "rank" / "k", algo="rcpo", config=config, seed=1)
    region = trained["trust_region"]
    logged = read_logged_actions(data)

    def ess_share(onnx: str) -> float:
        from training.ope.policies import OnnxPolicy

        target = OnnxPolicy(RANK, Path(onnx)).log_density(logged["observation"], logged["action"])
        return float(importance_weights(target, logged["log_density"], log_space=True).diagnostics.ess_share)

    assert free["trust_region"] is None and ess_share(free["onnx"]) < 0.3  # the learner alone leaves the support
    assert region["met"] and 0.0 < region["step"] < 1.0
    assert ess_share(trained["onnx"]) == pytest.approx(region["ess_share"], rel=1e-6) and region["ess_share"] >= 0.3
    assert trained["metrics"]["trust_region/step"] == region["step"]
    # The export step rebuilds the stepped actor from the checkpoint and the cloned actor's file: parity holds.
    exported = run_export("rank", trained)
    assert exported["parity"]["model.onnx"] <= 1e-5


def test_tscac_retraining_gets_the_same_reward_free_trust_region(troupe_home: Path) -> None:
    """The scheduled DAG's rank default (TSCAC): its stage-two actor is stepped back like RCPO's, and exported as such."""
    from pipelines.jobs.export import run_export
    from pipelines.jobs.train import read_logged_actions, run_train

    data = _rank_logs(troupe_home / "runs" / "rank" / "t" / "dataset")
    fast = {**FAST_RCPO, "algo": {**FAST_RCPO["algo"], "actor_lr": 1e-2}}
    free = run_train("rank", data, troupe_home / "free", algo="tscac", config={**fast, "trust_region": {"min_ess_share": 0.0}}, seed=1)  # fmt: skip
    trained = run_train("rank", data, troupe_home / "runs" / "rank" / "t", algo="tscac", config=fast, seed=1)
    region = trained["trust_region"]  # min_ess_share 0.3 from configs/rank/tscac.yaml
    logged = read_logged_actions(data)

    def ess_share(onnx: str) -> float:
        from training.ope.policies import OnnxPolicy

        target = OnnxPolicy(RANK, Path(onnx)).log_density(logged["observation"], logged["action"])
        return float(importance_weights(target, logged["log_density"], log_space=True).diagnostics.ess_share)

    assert free["trust_region"] is None and ess_share(free["onnx"]) < 0.05  # TSCAC alone leaves the support
    assert region["min_ess_share"] == 0.3 and region["met"] and 0.0 < region["step"] < 1.0
    assert ess_share(trained["onnx"]) == pytest.approx(region["ess_share"], rel=1e-6) and region["ess_share"] >= 0.3
    assert run_export("rank", trained)["parity"]["model.onnx"] <= 1e-5


def test_the_step_is_chosen_without_reading_a_reward_column(tmp_path: Path) -> None:
    from pipelines.jobs.train import read_logged_actions

    data = _rank_logs(tmp_path / "d")
    table = pq.read_table(data)
    pq.write_table(table.drop([c for c in table.column_names if c.startswith("reward_")]), data)
    logged = read_logged_actions(data)
    assert set(logged) == {"observation", "action", "log_density"} and logged["action"].shape == (600, 18)


@pytest.mark.parametrize("algo", ["rcpo", "tscac"])
def test_scheduled_rank_retraining_gets_the_trust_region_from_its_config_file(algo: str, tmp_path: Path) -> None:
    from pipelines.jobs.train import effective_config

    # TSCAC is what the scheduled troupe_retrain_rank trains by default (DEFAULT_ALGOS), RCPO what the demo trains.
    assert effective_config("rank", algo, {}, 0, tmp_path)["trust_region"] == {"min_ess_share": 0.3}
    flat = effective_config("rank", algo, {"actor_lr": 1e-4}, 0, tmp_path)  # flat overrides keep it
    assert flat["trust_region"] == {"min_ess_share": 0.3} and flat["algo"]["actor_lr"] == 1e-4
