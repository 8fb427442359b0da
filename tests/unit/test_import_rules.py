"""The import rules of ARCHITECTURE.md, enforced by import-linter (contracts in pyproject.toml).

Besides checking the real tree, the checker is run on a throw-away tree that
breaks each rule, to show the check fails when it should.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def run_checker(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_real_tree_keeps_the_rules() -> None:
    result = run_checker(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def _fake_tree(tmp: Path, module: str, body: str) -> Path:
    for pkg in ("models", "training", "serving", "pipelines", "feature_store", "infra"):
        (tmp / pkg).mkdir()
        (tmp / pkg / "__init__.py").write_text("")
    (tmp / "training" / "algo.py").write_text("X = 1\n")
    (tmp / f"{module}.py").write_text(textwrap.dedent(body))
    (tmp / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    return tmp


@pytest.mark.parametrize(
    ("module", "body", "broken"),
    [
        ("serving/api", "import torch\n", "serving never imports training or torch"),
        ("serving/deep", "def f():\n    from training import algo\n    return algo\n", "serving never imports"),
        ("models/bad", "from torch import nn\n", "models imports no torch"),
    ],
)
def test_checker_fails_on_a_violation(tmp_path: Path, module: str, body: str, broken: str) -> None:
    (tmp_path / "torch").mkdir()  # a stand-in so the external package resolves
    (tmp_path / "torch" / "__init__.py").write_text("")
    (tmp_path / "torch" / "nn.py").write_text("")
    root = _fake_tree(tmp_path, module, body)
    result = run_checker(root)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout


def test_importing_serving_loads_neither_torch_nor_training() -> None:
    """A runtime check too: transitive imports through third-party code count."""
    code = (
        "import importlib, pkgutil, sys, serving\n"
        "for m in pkgutil.walk_packages(serving.__path__, 'serving.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'training'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
