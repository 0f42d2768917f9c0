"""Configuration: the process default, and per-block overrides held in a context variable.

`configure(...)` changes the default for the whole process. `using(...)` overrides
it for a block in the current thread or task (and for threads that copy the
context); a model set with `using` wins over a fuzzy function's own `model=`,
so a test can send every call in a block to a scripted model.

`intercepting(wrap)` wraps the backend of every fuzzy call made in a block: how the pytest
plugin puts a cassette or its live-call guard at the LM boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lmdsl.cache import CachedBackend, default_cache_dir, open_store
from lmdsl.calls.records import History
from lmdsl.errors import ConfigurationError
from lmdsl.lm import resolve_model
from lmdsl.lm.types import Backend, Completion, Request

ModelSpec = str | Backend
# Wraps the backend a fuzzy call resolved, given the function's qualified name (see `intercepting`).
Interceptor = Callable[[Backend, str], Backend]


@dataclass(frozen=True)
class Settings:
    """One immutable configuration. Backends are resolved (and wrapped in the cache) once per model."""

    model: ModelSpec = "local"
    cache: bool = True
    cache_dir: Path | None = None
    temperature: float = 0.0
    max_tokens: int | None = None
    rollout: int = 0
    model_override: ModelSpec | None = None
    _backends: dict[int | str, Backend] = field(default_factory=dict, repr=False, compare=False)

    def model_for(self, pinned: ModelSpec | None) -> ModelSpec:
        """The model a fuzzy function runs on: a `using` block's, else its own, else the default."""
        return self.model_override or pinned or self.model

    def backend(self, model: ModelSpec) -> Backend:
        """The backend for a model, wrapped in the cache unless caching is off."""
        key: int | str = model if isinstance(model, str) else id(model)
        found = self._backends.get(key)
        if found is None or (not isinstance(model, str) and getattr(found, "backend", found) is not model):
            found = resolve_model(model)
            if self.cache and getattr(found, "cacheable", True):
                found = CachedBackend(found, open_store(self.cache_dir or default_cache_dir()))
            self._backends[key] = found
        return found

    def backend_for(self, pinned: ModelSpec | None, function: str) -> Backend:
        """The backend a call of `function` runs on: its model's (`model_for`), wrapped by each
        interceptor in force (innermost block last). Under an interceptor, a model that cannot be
        resolved (its package or API key missing) becomes a stand-in that raises the resolution
        error when asked: a wrapper that answers by itself (a cassette's replay) needs no model."""
        model = self.model_for(pinned)
        wrappers = _interceptors.get()
        if not wrappers:
            return self.backend(model)
        try:
            backend = self.backend(model)
        except ConfigurationError as error:  # only a model string fails to resolve
            backend = _Unresolved(str(model), error)
        for wrap in wrappers:
            backend = wrap(backend, function)
        return backend


class _Unresolved:
    """A model that failed to resolve, standing in for it behind an interceptor. Asked, it raises
    the error resolving it raised; it calls no model (`live = False`)."""

    cacheable = False
    live = False

    def __init__(self, name: str, error: ConfigurationError) -> None:
        self._name = name
        self._error = error

    @property
    def name(self) -> str:
        return self._name

    def complete(self, request: Request) -> Completion:
        raise self._error


_OPTIONS = frozenset({"model", "cache", "cache_dir", "temperature", "max_tokens", "rollout"})
_default = Settings()
_override: ContextVar[Settings | None] = ContextVar("lmdsl_settings", default=None)
_history = History(size=100)
_interceptors: ContextVar[tuple[Interceptor, ...]] = ContextVar("lmdsl_interceptors", default=())


def settings() -> Settings:
    """The configuration in force here: the innermost `using` block, else the process default."""
    return _override.get() or _default


def _changed(base: Settings, changes: dict[str, Any]) -> Settings:
    unknown = set(changes) - _OPTIONS
    if unknown:
        raise ConfigurationError(f"unknown option(s) {sorted(unknown)}; the options are {sorted(_OPTIONS)}")
    if "cache_dir" in changes and changes["cache_dir"] is not None:
        changes["cache_dir"] = Path(changes["cache_dir"]).expanduser()
    if "temperature" in changes and not 0.0 <= float(changes["temperature"]) <= 2.0:
        raise ConfigurationError(f"temperature must be between 0 and 2, not {changes['temperature']}")
    return replace(base, **changes, _backends={})


def configure(**options: Any) -> None:
    """Change the process-wide default: `model`, `cache`, `cache_dir`, `temperature`, `max_tokens`,
    `rollout` (a resample number: a different rollout is a different cache entry and seed)."""
    global _default
    _default = _changed(_default, options)


def _overridden(base: Settings, options: dict[str, Any]) -> Settings:
    """`base` changed by `options`; a `model` given here wins over the functions' own `model=`."""
    changed = _changed(base, options)
    if "model" in options:
        changed = replace(changed, model_override=options["model"], _backends={})
    return changed


@contextmanager
def process_default(**options: Any) -> Iterator[Settings]:
    """Override the process-wide default for this block, in every thread (a `using` block reaches
    only its context), then put back the default that was in force, whatever `configure` did
    meanwhile: how `lmdsl check` keeps the threads a checked file starts off the model."""
    global _default
    saved = _default
    _default = _overridden(saved, options)
    try:
        yield _default
    finally:
        _default = saved


@contextmanager
def using(**options: Any) -> Iterator[Settings]:
    """Override the configuration for this block, for example `with lmdsl.using(model=test_model):`."""
    token = _override.set(_overridden(settings(), options))
    try:
        yield settings()
    finally:
        _override.reset(token)


@contextmanager
def intercepting(wrap: Interceptor) -> Iterator[None]:
    """Wrap the backend of every fuzzy call made in this block (and in threads and tasks that
    copy the context: `map`, `evaluate`, `acall`): `wrap(backend, qualname)` returns the backend
    the call runs on. Applied once per call, to the backend resolved from the configuration; a
    strategy's sub-calls run on their call's backend, already wrapped. Nested blocks wrap
    outside the outer ones."""
    token = _interceptors.set((*_interceptors.get(), wrap))
    try:
        yield
    finally:
        _interceptors.reset(token)


def history() -> History:
    return _history
