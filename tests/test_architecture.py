"""The house rules, enforced: the import contract (import-linter) and the linters (ruff).

The contract lives in pyproject.toml ([tool.importlinter]); docs/architecture.md explains it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_import_contract_holds() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "lmdsl/errors.py",
            "def _late() -> None:\n    import lmdsl.program  # noqa: F401\n",
            "every import points down",
        ),
        ("lmdsl/signature.py", "import lmdsl.calls.function  # noqa: F401\n", "every import points down"),
        (
            "lmdsl/sandbox/child.py",
            "def _late() -> None:\n    import lmdsl.errors  # noqa: F401\n",
            "standard library only",
        ),
        ("plugins/mypy.py", "import lmdsl.program  # noqa: F401\n", "rule table only"),
    ],
)
def test_an_import_against_the_layers_breaks_the_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    """The contract can fail: the same check on a copy of the package with one bad import added
    (an import inside a function counts too)."""
    shutil.copytree(ROOT / "lmdsl", tmp_path / "lmdsl", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "plugins", tmp_path / "plugins", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + "\n\n" + line)
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [text for text in result.stdout.splitlines() if text.endswith("BROKEN")]
    assert len(broken) == 1 and contract in broken[0], result.stdout


def test_ruff_finds_nothing_to_fix() -> None:
    targets = ["lmdsl", "plugins", "tests", "benchmarks", "examples"]
    lint = subprocess.run(
        [str(BIN / "ruff"), "check", "--no-cache", *targets], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatted = subprocess.run(
        [str(BIN / "ruff"), "format", "--check", "--no-cache", *targets],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
