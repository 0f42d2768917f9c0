"""Shared fixtures: every test run gets its own cache directory and a clean history."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["LMDSL_CACHE_DIR"] = tempfile.mkdtemp(prefix="lmdsl-test-cache-")
# pytest-mypy-plugins and the basedpyright test run `mypy`/`basedpyright` from PATH: this venv's
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

import lmdsl  # noqa: E402  (the cache directory must be set before lmdsl reads it)
from lmdsl.config import history  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


# The longest tests, started first: at the end of the queue, one of them kept one worker busy
# for a minute while the other had nothing left to take.
LONGEST_FIRST = (
    "test_the_rule_cases_pass_under_the_oldest_mypy",
    "test_a_few_lora_steps_change_the_answer_and_the_artifact_runs_on_them",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: getattr(item, "originalname", item.name) not in LONGEST_FIRST)


@pytest.fixture(autouse=True)
def _clean_history() -> Iterator[None]:
    history().clear()
    yield


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    """A private, empty cache directory configured for the duration of one test."""
    with lmdsl.using(cache=True, cache_dir=tmp_path):
        yield tmp_path


@pytest.fixture(autouse=True)
def _measure_the_sandbox_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under pytest-cov, the sandbox child's own process is measured too (see sandbox_coverage)."""
    if "coverage" in sys.modules:
        from tests.sandbox_coverage import install

        install(monkeypatch)
