"""Fine-tuned weights a compiled artifact records, and the model that runs on them.

An artifact compiled with `BootstrapFinetune` has a `weights` entry: a LoRA adapter GGUF
beside the artifact (a bare file name: never a path leading out of the artifact's folder),
its SHA-256 and size, the base model it was trained on (with that file's SHA-256), the
training settings and a digest of the training data. Loading checks all of it; a missing,
changed or truncated adapter, or another base model, is an `ArtifactError`, never a silent
fallback to the base model.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from lmdsl.errors import ArtifactError, ModelUnavailableError
from lmdsl.files import NotReadable, sha256_file
from lmdsl.lm.local import LocalModel, embedded_model_path
from lmdsl.unicode import printable

WEIGHTS_FORMAT = "lmdsl-lora-gguf/1"
EMBEDDED = "local"


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str
    file: str
    sha256: str


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    examples: int
    sha256: str


class WeightsEntry(BaseModel):
    """The `weights` entry of an artifact, its shape checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: str
    file: str
    sha256: str
    bytes: int
    base: _Base
    training: dict[str, Any]
    data: _Data


@dataclass(frozen=True)
class Weights:
    """Checked fine-tuned weights: the adapter file found beside the artifact, and the model running on it."""

    entry: WeightsEntry
    adapter: Path
    model: LocalModel


@functools.lru_cache(maxsize=8)
def _base_sha256(path: Path, size: int, modified: int) -> str:
    """The base model's hash, once per process while the file is unchanged (it is ~100 MB)."""
    return sha256_file(path)


def base_sha256(path: Path) -> str:
    status = path.stat()
    return _base_sha256(path, status.st_size, status.st_mtime_ns)


def entry_for(
    adapter: Path, *, training: Mapping[str, Any], examples: int, data_sha256: str, file: str | None = None
) -> WeightsEntry:
    """The entry recording `adapter` (trained on the embedded model), to be stored beside the artifact as `file`."""
    base = embedded_model_path()
    return WeightsEntry(
        format=WEIGHTS_FORMAT,
        file=file or adapter.name,
        sha256=sha256_file(adapter),
        bytes=adapter.stat().st_size,
        base=_Base(model=EMBEDDED, file=base.name, sha256=base_sha256(base)),
        training=dict(training),
        data=_Data(examples=examples, sha256=data_sha256),
    )


def load_weights(raw: object, artifact: Path) -> Weights:
    """The weights an artifact records, checked against the files; `ArtifactError` saying what is wrong."""
    where = printable(str(artifact))
    try:
        entry = WeightsEntry.model_validate(raw)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        raise ArtifactError(f"{where}: weights.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    if entry.format != WEIGHTS_FORMAT:
        raise ArtifactError(f"{where}: weights format {entry.format!r} is not {WEIGHTS_FORMAT!r}")
    name = entry.file
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise ArtifactError(
            f"{where}: weights file {printable(name)!r} is not a file name beside the artifact; "
            "an artifact names its adapter file in its own folder, never a path"
        )
    adapter = artifact.parent / name
    again = "compile again (`lmdsl compile`) to train new weights"
    try:
        found = sha256_file(adapter)
    except NotReadable as error:
        raise ArtifactError(f"{where}: the fine-tuned weights {printable(str(adapter))}: {error}; {again}") from None
    if found != entry.sha256:
        size = adapter.stat().st_size
        how = "truncated" if size < entry.bytes else "changed"
        raise ArtifactError(
            f"{where}: the fine-tuned weights {printable(str(adapter))} {how} since the compile "
            f"(SHA-256 {found[:12]}..., {size} bytes; the artifact records {entry.sha256[:12]}..., {entry.bytes} bytes); {again}"
        )
    if entry.base.model != EMBEDDED:
        raise ArtifactError(f"{where}: weights for base model {entry.base.model!r}; lmdsl fine-tunes only 'local'")
    try:
        base = embedded_model_path()
    except ModelUnavailableError as error:
        raise ArtifactError(f"{where}: the weights' base model is not installed: {error}") from None
    if base.name != entry.base.file or base_sha256(base) != entry.base.sha256:
        raise ArtifactError(
            f"{where}: the weights were trained on {entry.base.file} (SHA-256 {entry.base.sha256[:12]}...), "
            f"not on the installed embedded model {base.name}; {again}"
        )
    return Weights(entry, adapter, LocalModel(lora=adapter))
