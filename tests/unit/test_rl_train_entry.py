"""Training entry point: typed config files, clear errors, the `troupe train` CLI wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from training.algorithms.tscac import TSCACConfig
from training.rl.trainer import RunConfig
from training.train import load_config_file, train_problem


def test_config_files_yaml_and_toml_and_unknown_keys(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("run:\n  seed: 3\nalgo:\n  lam: 0.5\n  hidden: [8, 8]\n")
    data = load_config_file(y)
    cfg = TSCACConfig.from_dict(data["algo"])
    assert cfg.lam == 0.5 and cfg.hidden == (8, 8)
    t = tmp_path / "c.toml"
    t.write_text("[run]\nseed = 4\n")
    assert load_config_file(t)["run"]["seed"] == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("runn:\n  seed: 1\n")
    with pytest.raises(ValueError, match="unknown section.*runn"):
        load_config_file(bad)
    with pytest.raises(ValueError, match="unknown field.*lamda"):
        TSCACConfig.from_dict({"lamda": 1.0})
    with pytest.raises(ValueError, match="kl_epsilon"):
        TSCACConfig(kl_epsilon=-1.0)
    with pytest.raises(ValueError, match="iterations"):
        RunConfig(iterations=0)


def test_train_problem_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one of --sim"):
        train_problem("rank", "tscac", sim=True, data="x")
    with pytest.raises(ValueError, match="unknown algorithm .nope.; registered"):
        train_problem("rank", "nope", sim=True)


def test_cli_train_rank_is_registered() -> None:
    from pipelines.cli import app

    res = CliRunner().invoke(app, ["train", "rank", "--help"])
    assert res.exit_code == 0 and "--algo" in res.output
    res = CliRunner().invoke(app, ["train", "rank", "--algo", "tscac"])
    assert res.exit_code != 0  # neither --sim nor --data
