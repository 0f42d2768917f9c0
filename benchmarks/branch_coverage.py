#!/usr/bin/env python
"""Branch coverage of each module from a coverage.py JSON report, core modules first.

    .venv/bin/python -m pytest tests/unit -p no:lmdsl --cov=lmdsl --cov-branch --cov-report=json:coverage.json

(`-p no:lmdsl`: the pytest plugin, loaded from its entry point before coverage starts, would import
lmdsl early and hide its module-level lines; the plugin tests load it again in their own runs.)
    .venv/bin/python benchmarks/branch_coverage.py [coverage.json]

Prints, per module, the branches taken of all branches and the lines run of all lines
(coverage.py's own "Cover" column mixes the two).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CORE = (
    "lmdsl/signature.py",
    "lmdsl/prompt.py",
    "lmdsl/calls/function.py",
    "lmdsl/strategies/",
    "lmdsl/params.py",
    "lmdsl/cache.py",
    "lmdsl/program.py",
    "lmdsl/compiler/",
    "lmdsl/lm/hosted.py",
    "lmdsl/sandbox/",
)


def main() -> int:
    report = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "coverage.json").read_text())
    rows = []
    for name, data in report["files"].items():
        summary = data["summary"]
        branches, taken = summary.get("num_branches", 0), summary.get("covered_branches", 0)
        lines, run = summary["num_statements"], summary["covered_lines"]
        core = any(name.startswith(prefix) or name == prefix for prefix in CORE)
        rows.append((not core, name, taken, branches, run, lines))
    print(f"{'module':36} {'branches':>16} {'lines':>16}")
    for other, name, taken, branches, run, lines in sorted(rows):
        share = f"{100 * taken / branches:5.1f}%" if branches else "   - "
        print(
            f"{name:36} {share} {taken:4}/{branches:<4} {100 * run / max(lines, 1):5.1f}% {run:4}/{lines:<4}"
            f"{'' if other else '  core'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
