"""Compiled artifacts: JSON files holding each fuzzy function's parameters and how they were chosen.

An artifact is a parameter file (`Program.save`'s format) with more keys: the lmdsl
version, the model, the scores, the cost and the optimizer's settings. Loading one
runs no code; `Program.load` reads it like any parameter file.

The cost (`cost`) is what choosing these parameters took: `lm_calls` and `tokens` that
reached a model, `seconds`, and `cached_calls`, the LM calls the completion cache answered.
A compile answered entirely by the cache (no LM call) does not wipe out what an earlier compile
spent: when the artifact it replaces, for the same program, recorded LM calls, that earlier
`lm_calls`, `tokens` and `seconds` are kept, and `cached_calls` is this compile's. A compile that
reached a model at all records its own cost.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmdsl.compiler.base import Compiled
from lmdsl.errors import ArtifactError
from lmdsl.files import sha256_file, write_atomic
from lmdsl.params import dump_params, read_params_file
from lmdsl.program import Program
from lmdsl.weights import Weights, WeightsEntry


def artifact_data(
    program: Program[..., Any], compiled: Compiled, *, model: str, earlier: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The artifact's JSON data; `earlier` is the cost recorded by the artifact it replaces, if any."""
    with program.with_params(compiled.params):
        data = dump_params(program.name, program.functions)
    data.update(
        model=model,
        scores={"uncompiled": compiled.baseline, "compiled": compiled.score},
        cost=compile_cost(compiled, earlier),
        optimizer=json.loads(json.dumps(dict(compiled.settings), default=repr)),
        candidates=[{"label": c.label, "score": c.score} for c in compiled.candidates],
    )
    return data


def compile_cost(compiled: Compiled, earlier: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `cost` to record (the rule is in the module docstring)."""
    cost: dict[str, Any] = {
        "lm_calls": compiled.lm_calls,
        "tokens": compiled.tokens,
        "seconds": round(compiled.seconds, 2),
        "cached_calls": compiled.cached_calls,
    }
    if compiled.lm_calls == 0 and earlier is not None and _count(earlier.get("lm_calls")) > 0:
        cost.update(
            lm_calls=_count(earlier.get("lm_calls")),
            tokens=_count(earlier.get("tokens")),
            seconds=earlier.get("seconds") if isinstance(earlier.get("seconds"), (int, float)) else None,
        )
    return cost


def recorded_cost(path: str | Path, program: Program[..., Any]) -> Mapping[str, Any] | None:
    """The cost recorded by the artifact at `path`, if it is one of this program's; None otherwise."""
    try:
        data = read_params_file(Path(path))
    except ArtifactError:  # none yet, or not one to take anything from
        return None
    cost = (data.model_extra or {}).get("cost")
    return cost if data.program == program.name and isinstance(cost, Mapping) else None


def write_artifact(path: str | Path, program: Program[..., Any], compiled: Compiled, *, model: str) -> Path:
    """Write atomically (a temporary file renamed into place), so a crash never leaves half a file.
    Fine-tuned weights are copied beside it first (`NAME.lora.gguf` for `NAME.json`), and recorded with their hash."""
    data = artifact_data(program, compiled, model=model, earlier=recorded_cost(path, program))
    if compiled.weights is not None:
        data["weights"] = place_weights(compiled.weights, Path(path)).model_dump(mode="json")
    return write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False))


def place_weights(weights: Weights, artifact: Path) -> WeightsEntry:
    """Copy the adapter beside the artifact (atomically) and return its entry naming that copy."""
    name = f"{artifact.name.removesuffix('.json')}.lora.gguf"
    target = artifact.parent / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if weights.adapter.resolve() != target.resolve():
        handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=target.parent)
        os.close(handle)
        try:
            shutil.copyfile(weights.adapter, temporary)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    if sha256_file(target) != weights.entry.sha256:
        raise ArtifactError(f"{target}: the copied weights do not match the trained ones; compile again")
    return weights.entry.model_copy(update={"file": name})


def _count(value: object) -> int:
    """A recorded count: a whole number >= 0, or 0 for anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
