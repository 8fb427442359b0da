"""OPE on outside logs (training/ope/logs.py): the layout's checks, cross-fitted reward models, estimators, Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.ope import (
    BanditFeedback,
    CIOptions,
    OPEInputError,
    cross_fitted_rewards,
    evaluate_logs,
    ips,
    read_bandit_feedback,
)
from training.ope.logs import DEFAULT_CI

N_ACTIONS, LEN_LIST = 4, 2


@pytest.fixture(autouse=True)
def _one_openmp_thread() -> object:
    """Gradient boosting's OpenMP threads on a loaded 2-core machine: 40× slower than one thread (measured)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        yield


def synthetic(n: int = 3000, seed: int = 0) -> tuple[BanditFeedback, float]:
    """Binary rewards with a known logistic truth; uniform logging; a greedy-ish target. Returns (feedback, true value)."""
    rng = np.random.default_rng(seed)
    context = rng.normal(size=(n, 3))
    theta = rng.normal(size=(3, N_ACTIONS))
    position = rng.integers(0, LEN_LIST, n)
    truth = 1 / (1 + np.exp(-(context @ theta - 0.5 * position[:, None])))  # (n, A) at the logged position
    action = rng.integers(0, N_ACTIONS, n)
    reward = (rng.random(n) < truth[np.arange(n), action]).astype(float)
    logits = 2.0 * truth
    target = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    dist = np.repeat(target[:, :, None], LEN_LIST, axis=2)
    fb = BanditFeedback(context, action, reward, np.full(n, 1 / N_ACTIONS), dist, position)
    return fb, float(np.mean(np.sum(target * truth, axis=1)))


def test_on_policy_ips_is_the_mean_reward() -> None:
    fb, _ = synthetic(500)
    uniform = np.full((500, N_ACTIONS, LEN_LIST), 1 / N_ACTIONS)
    same = BanditFeedback(fb.context, fb.action, fb.reward, fb.pscore, uniform, fb.position)
    est = evaluate_logs(same, estimators=("ips", "snips"), ci=CIOptions("normal"))
    assert est["ips"].value[0] == pytest.approx(fb.reward.mean(), abs=1e-12)
    assert est["snips"].value[0] == pytest.approx(fb.reward.mean(), abs=1e-12)


@pytest.mark.parametrize("model", ["logistic", "gradient_boosting"])
def test_cross_fitted_estimates_cover_the_truth(model: str) -> None:
    fb, truth = synthetic()
    est = evaluate_logs(fb, reward_model=model, ci=CIOptions("normal"), estimators=("dm", "dr", "sndr", "dr_os"))
    for name in ("dr", "sndr", "dr_os"):
        assert est[name].ci_low[0] <= truth <= est[name].ci_high[0], (name, truth, est[name].to_dict())
    q = cross_fitted_rewards(fb, model)
    at = q[np.arange(fb.n_rounds), :, fb.position]
    assert at.min() >= 0.0 and at.max() <= 1.0  # probabilities, unlike a linear model's predictions


def test_any_scikit_learn_estimator_is_accepted_and_a_non_estimator_is_named() -> None:
    from sklearn.ensemble import RandomForestRegressor

    fb, truth = synthetic(1500)
    est = evaluate_logs(fb, reward_model=RandomForestRegressor(n_estimators=20, random_state=0),
                        estimators=("dr",), ci=CIOptions("normal"))  # fmt: skip
    assert abs(est["dr"].value[0] - truth) < 0.05
    with pytest.raises(OPEInputError, match="reward_model"):
        evaluate_logs(fb, reward_model=object(), estimators=("dr",))
    with pytest.raises(OPEInputError, match="reward_model"):
        evaluate_logs(fb, reward_model="linear_forest", estimators=("dr",))


def test_cross_fitting_never_predicts_a_row_with_a_model_that_saw_it() -> None:
    """A model that memorises its training rows (1-NN) predicts a row's own reward only if it saw it."""
    from sklearn.neighbors import KNeighborsRegressor

    fb, _ = synthetic(600)
    q = cross_fitted_rewards(fb, KNeighborsRegressor(n_neighbors=1), n_folds=3)
    own = q[np.arange(fb.n_rounds), fb.action, fb.position]
    assert np.mean(own == fb.reward) < 0.9  # in-sample 1-NN would reproduce every reward exactly


def test_shrinkage_limits_are_dr_and_dm() -> None:
    fb, _ = synthetic(800)
    q = cross_fitted_rewards(fb, "logistic")
    with_q = BanditFeedback(fb.context, fb.action, fb.reward, fb.pscore, fb.action_dist, fb.position, q)
    ci = CIOptions("normal")
    base = evaluate_logs(with_q, estimators=("dm", "dr"), ci=ci)
    inf = evaluate_logs(with_q, estimators=("dr_os",), shrinkage_lambda=float("inf"), ci=ci)["dr_os"]
    zero = evaluate_logs(with_q, estimators=("dr_os",), shrinkage_lambda=0.0, ci=ci)["dr_os"]
    tuned = evaluate_logs(with_q, estimators=("dr_os",), ci=ci)["dr_os"]
    assert inf.value[0] == pytest.approx(base["dr"].value[0], abs=1e-12)
    assert zero.value[0] == pytest.approx(base["dm"].value[0], abs=1e-12)
    assert any("shrinkage λ" in w for w in tuned.warnings)


def test_bootstrap_with_1000_resamples_by_default() -> None:
    assert DEFAULT_CI.method == "bootstrap" and DEFAULT_CI.n_bootstrap == 1000
    assert CIOptions().n_bootstrap == 1000
    fb, _ = synthetic(300)
    est = evaluate_logs(fb, estimators=("ips",))["ips"]
    assert est.ci_method == "bootstrap" and est.ci_low[0] < est.value[0] < est.ci_high[0]


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("pscore", {"pscore": np.full(10, 0.25)}),
        ("action", {"action": np.full(50, 7)}),
        ("action_dist", {"action_dist": np.full((50, N_ACTIONS, 1), 0.3)}),
        ("position", {"position": np.full(50, 5)}),
        ("reward", {"reward": np.full(50, np.nan)}),
        ("estimated_rewards", {"estimated_rewards": np.zeros((50, 2, 1))}),
    ],
)
def test_errors_name_the_argument(field: str, change: dict[str, object]) -> None:
    good = dict(
        context=np.zeros((50, 2)),
        action=np.zeros(50, dtype=int),
        reward=np.zeros(50),
        pscore=np.full(50, 0.25),
        action_dist=np.full((50, N_ACTIONS, 1), 0.25),
        position=None,
    )
    with pytest.raises(OPEInputError) as err:
        BanditFeedback(**{**good, **change})  # type: ignore[arg-type]
    assert err.value.field == field


def test_ips_length_mismatch_names_the_argument() -> None:
    with pytest.raises(OPEInputError, match="target_prob"):
        ips(np.ones(5), np.ones(4), np.ones(4))


def test_parquet_layout_round_trip(tmp_path: Path) -> None:
    fb, _ = synthetic(400)
    rows = np.arange(fb.n_rounds)
    table = pa.table(
        {
            **{f"context_{j}": fb.context[:, j] for j in range(fb.context.shape[1])},
            "action": fb.action,
            "position": fb.position,
            "reward": fb.reward,
            "pscore": fb.pscore,
            "pi_new": fb.action_dist[rows, :, fb.position].tolist(),
        }
    )
    path = tmp_path / "logs.parquet"
    pq.write_table(table, path)
    read = read_bandit_feedback(path, target="pi_new")
    ci = CIOptions("normal")
    assert evaluate_logs(read, estimators=("ips",), ci=ci)["ips"].value[0] == pytest.approx(
        evaluate_logs(fb, estimators=("ips",), ci=ci)["ips"].value[0], abs=1e-12
    )
    with pytest.raises(OPEInputError, match="action_dist_v2"):
        read_bandit_feedback(path, target="action_dist_v2")


def test_troupe_evaluate_logs(tmp_path: Path, troupe_home: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    fb, _ = synthetic(400)
    rows = np.arange(fb.n_rounds)
    q = cross_fitted_rewards(fb, "logistic")
    path = tmp_path / "logs.parquet"
    pq.write_table(
        pa.table(
            {
                "context": fb.context.tolist(),
                "action": fb.action,
                "position": fb.position,
                "reward": fb.reward,
                "pscore": fb.pscore,
                "pi_new": fb.action_dist[rows, :, fb.position].tolist(),
                "q_hat": q[rows, :, fb.position].tolist(),
            }
        ),
        path,
    )
    out = tmp_path / "report"
    args = [
        "evaluate",
        "--logs",
        str(path),
        "--target",
        "pi_new",
        "--reward-predictions",
        "q_hat",
        "--output",
        str(out),
    ]
    result = CliRunner().invoke(app, [*args, "--n-bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert "| sndr |" in result.output and "(200 resamples)" in result.output
    import json

    report = json.loads((out / "evaluation.json").read_text())
    with_q = BanditFeedback(fb.context, fb.action, fb.reward, fb.pscore, fb.action_dist, fb.position, q)
    direct = evaluate_logs(with_q, estimators=("dr",), ci=CIOptions("normal"))["dr"].value[0]
    assert report["dr"]["signals"]["reward"]["value"] == pytest.approx(direct, abs=1e-12)
    bad = CliRunner().invoke(app, ["evaluate", "--logs", str(path), "--target", "pi_old"])
    assert bad.exit_code == 2 and "pi_old" in bad.stderr and "\n" not in bad.stderr.strip()
