"""The `troupe` CLI's contract: one-line errors with exit code 2, --debug tracebacks, plain help, commands as documented."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from models.errors import UnknownProblemError
from models.problems import get_problem
from pipelines.cli import app
from pipelines.cli.base import tidy_help
from tests.support.onnx_models import OUTPUT_SIZES, mlp_model


def _run(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def _assert_one_line_error(result: object, *needles: str) -> None:
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    err = result.stderr.strip()  # type: ignore[attr-defined]
    assert err.startswith("error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_unknown_problem_is_one_line_with_exit_code_2(troupe_home: Path) -> None:
    _assert_one_line_error(_run("registry", "list", "foo"), "unknown problem 'foo'", "rank")


def test_unknown_version_is_one_line(troupe_home: Path) -> None:
    _assert_one_line_error(_run("registry", "promote", "rank", "v3"), "'v3'")


def test_ab_report_without_logs_is_one_line(troupe_home: Path) -> None:
    _assert_one_line_error(_run("ab", "report", "--experiment", "nope"), "troupe ingest")


def test_evaluate_without_data_is_one_line(troupe_home: Path) -> None:
    _assert_one_line_error(_run("evaluate", "--problem", "rank", "--candidate", "x"), "dataset", "does not exist")


def test_usage_error_is_one_line(troupe_home: Path) -> None:
    _assert_one_line_error(_run("evaluate", "--problem", "rank"), "--candidate")


def test_debug_flag_raises_the_original_exception(troupe_home: Path) -> None:
    result = CliRunner().invoke(app, ["--debug", "registry", "list", "foo"])
    assert isinstance(result.exception, UnknownProblemError)


def test_deliberate_exit_codes_pass_through(troupe_home: Path) -> None:
    # `registry` alone prints its help (no_args_is_help) rather than an "error:" line.
    result = _run("registry")
    assert "error:" not in result.stderr
    assert "register" in result.output


def _commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    out = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        out += _commands(sub, (*path, name))
    return out


def test_help_has_no_python_type_metavars() -> None:
    root = get_command(app)
    tidy_help(root)
    paths = [p for p, _ in _commands(root)]
    assert ("registry", "register") in paths and ("evaluate",) in paths
    for path in paths:
        result = _run(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        for stray in ("<bool>", "<str>", "<int>", "<float>", "<path>"):
            assert stray not in result.output, (path, stray, result.output)


def test_registry_register_adds_a_version_list_shows_it(troupe_home: Path, tmp_path: Path) -> None:
    spec = get_problem("slot")
    model = tmp_path / "policy.onnx"
    onnx.save(mlp_model(spec.observation_size, OUTPUT_SIZES["slot"]), model)
    result = _run("registry", "register", "slot", str(model), "--version", "v3", "--promote")
    assert result.exit_code == 0, result.output
    listed = _run("registry", "list", "slot")
    assert "v3" in listed.output and "*" in listed.output
    # the same version twice is refused in one line
    _assert_one_line_error(_run("registry", "register", "slot", str(model), "--version", "v3"), "already registered")


def test_loop_dags_lists_tasks_upstream_first() -> None:
    from pipelines.cli.jobs import tasks_in_order

    def task(*upstream: str) -> SimpleNamespace:
        return SimpleNamespace(upstream_task_ids=set(upstream))

    # declared out of order on purpose: alphabetical would give a, b, dataset, train
    dag = SimpleNamespace(
        dag_id="d", task_dict={"train": task("dataset"), "dataset": task(), "b": task("train"), "a": task("train")}
    )
    assert tasks_in_order(dag) == ["dataset", "train", "b", "a"]


def test_troupe_demo_and_make_demo_gate_on_the_same_estimator() -> None:
    import inspect

    from pipelines.cli.demo import demo
    from pipelines.demo import DemoConfig

    default = inspect.signature(demo).parameters["gate_estimator"].default.default
    assert default == (DemoConfig.gate_estimator or "primary")
    assert inspect.signature(demo).parameters["users"].default.default == DemoConfig.users_per_day


def test_candidate_has_its_registry_name_in_the_evaluation(troupe_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluation calls the candidate what the register step will call it: <algorithm>-<interval key>."""
    import pipelines.jobs.evaluate as evaluate_job
    from pipelines.jobs import dag_steps

    seen: dict[str, str] = {}

    def fake_run_evaluate(cfg: object, policy_loader: object = None) -> dict[str, str]:
        seen["candidate"] = cfg.candidate  # type: ignore[attr-defined]
        return {"primary_estimator": "dr"}

    monkeypatch.setattr(evaluate_job, "run_evaluate", fake_run_evaluate)
    key = "20261120T000000Z-20261121T000000Z"
    data = {"run_dir": str(troupe_home / "run"), "interval_key": key, "dataset": str(troupe_home / "d.parquet")}
    dag_steps.evaluate_step("rank", data, {"algorithm": "rcpo", "onnx": None, "agents": {}})
    assert seen["candidate"] == f"rcpo-{key}"
