"""The project passes `mypy --strict`: the package, its tests, examples and benchmarks."""

from __future__ import annotations

import os

import pytest

from tests.conftest import ROOT


def test_project_passes_mypy_strict() -> None:
    api = pytest.importorskip("mypy.api", reason="mypy is not installed (./dev test installs it)")
    previous = os.getcwd()
    os.chdir(ROOT)  # mypy reads [tool.mypy] (strict, files, stubs) from pyproject.toml here
    try:
        stdout, stderr, status = api.run([])
    finally:
        os.chdir(previous)
    assert status == 0, stdout + stderr
