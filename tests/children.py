"""A compile run as its own process, for the tests that kill one and resume it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def start(script: Path, artifact: Path, delay: float) -> subprocess.Popen[str]:
    """`python SCRIPT ARTIFACT DELAY` from the project root, its output captured as text."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(script), str(artifact), str(delay)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
