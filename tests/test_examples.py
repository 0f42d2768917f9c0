"""The README's example test file runs as a user would run it: `pytest examples/test_support_program.py`.

It replays its committed cassette (no model runs, the live-call guard is on), runs its property
and snapshot tests, and must never write to the example (a snapshot that no longer matches
fails instead of being rewritten).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "test_support_program.py"
CASSETTES = ROOT / "examples" / "cassettes" / "test_support_program"


def test_the_example_test_file_passes_offline_from_its_cassette() -> None:
    before = {path: path.read_bytes() for path in (EXAMPLE, *CASSETTES.iterdir())}
    environment = {**os.environ, "CI": "true"}  # inline-snapshot compares only, as in CI
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout
    assert {path: path.read_bytes() for path in before} == before
