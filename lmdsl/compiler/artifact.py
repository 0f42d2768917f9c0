"""Compiled artifacts: JSON files holding each fuzzy function's parameters and how they were chosen.

An artifact is a parameter file (`Program.save`'s format) with more keys: the lmdsl
version, the model, the scores, the cost and the optimizer's settings. Loading one
runs no code; `Program.load` reads it like any parameter file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmdsl.compiler.base import Compiled
from lmdsl.files import write_atomic
from lmdsl.params import dump_params
from lmdsl.program import Program


def artifact_data(program: Program[..., Any], compiled: Compiled, *, model: str) -> dict[str, Any]:
    with program.with_params(compiled.params):
        data = dump_params(program.name, program.functions)
    data.update(
        model=model,
        scores={"uncompiled": compiled.baseline, "compiled": compiled.score},
        cost={"lm_calls": compiled.lm_calls, "tokens": compiled.tokens, "seconds": round(compiled.seconds, 2)},
        optimizer=json.loads(json.dumps(dict(compiled.settings), default=repr)),
        candidates=[{"label": c.label, "score": c.score} for c in compiled.candidates],
    )
    return data


def write_artifact(path: str | Path, program: Program[..., Any], compiled: Compiled, *, model: str) -> Path:
    """Write atomically (a temporary file renamed into place), so a crash never leaves half a file."""
    return write_atomic(path, json.dumps(artifact_data(program, compiled, model=model), indent=2, ensure_ascii=False))
