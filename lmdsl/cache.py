"""A persistent cache of completions that wraps any backend.

Two layers: an in-memory LRU keyed on the `Request` itself (hashable, so a hit
costs one dict lookup), and a SQLite file in WAL mode keyed on a SHA-256 of the
canonical request, shared safely by threads (one connection each) and
processes. A corrupt file is reported, set aside and replaced: never a crash.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from lmdsl.lm.types import Backend, Completion, Request, Usage

if TYPE_CHECKING:  # sqlite3, hashlib and logging load on first use of the disk layer: import lmdsl stays fast
    import sqlite3

CACHE_FILE = "completions.sqlite3"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS completions ("
    "key TEXT PRIMARY KEY, model TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL)"
)


class CacheWarning(UserWarning):
    """The cache file could not be used as is (corrupt, unwritable); lmdsl carried on without it."""


def default_cache_dir() -> Path:
    """`LMDSL_CACHE_DIR` if set, else the user's cache directory."""
    configured = os.environ.get("LMDSL_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("lmdsl"))


_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def request_key(model: str, request: Request) -> str:
    """The canonical request, hashed: model, messages, schema and sampling, rollout included."""
    canonical = _CANONICAL.encode(
        [
            model,
            [[m.role, m.content] for m in request.messages],
            request.json_schema,
            request.max_tokens,
            float(request.temperature),
            request.rollout,
        ]
    )
    import hashlib

    return hashlib.sha256(canonical.encode()).hexdigest()


class CacheStore:
    """Completions on disk with a bounded memory layer in front. Safe across threads and processes.

    Everything `get` returns is marked `cached`.
    """

    def __init__(self, directory: Path, *, memory_size: int = 8192) -> None:
        self.directory = directory
        self.path = directory / CACHE_FILE
        self._memory: OrderedDict[tuple[str, Request], Completion] = OrderedDict()
        self._memory_size = memory_size
        self._lock = threading.Lock()
        self._local = threading.local()
        self._disabled = False

    # -- memory layer -------------------------------------------------------------------
    def get(self, model: str, request: Request) -> Completion | None:
        key = (model, request)
        with self._lock:
            hit = self._memory.get(key)
            if hit is not None:
                self._memory.move_to_end(key)
                return hit
        hit = self._disk_get(request_key(model, request))
        if hit is not None:
            self._remember(key, hit)
        return hit

    def put(self, model: str, request: Request, completion: Completion) -> None:
        self._remember((model, request), completion)
        self._disk_put(request_key(model, request), model, completion)

    def _remember(self, key: tuple[str, Request], completion: Completion) -> None:
        if not completion.cached:
            completion = replace(completion, cached=True)
        with self._lock:
            self._memory[key] = completion
            if len(self._memory) > self._memory_size:
                self._memory.popitem(last=False)

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()

    # -- disk layer ---------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection | None:
        import sqlite3

        if self._disabled:
            return None
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        try:
            connection = self._open()
        except sqlite3.DatabaseError as error:
            if _busy(error):  # another process holds the file: not corruption, so try again next call
                _log("cache busy, skipped: %s", error)
                return None
            connection = self._recover(error)
        except OSError as error:
            self._disable(f"the cache directory {self.directory} is not usable ({error})")
            return None
        self._local.connection = connection
        return connection

    def _open(self) -> sqlite3.Connection:
        import sqlite3

        self.directory.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            _enable_wal(connection)
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_SCHEMA)
            connection.execute("SELECT key FROM completions LIMIT 1").fetchall()
        except sqlite3.DatabaseError:
            connection.close()
            raise
        return connection

    def _recover(self, error: sqlite3.DatabaseError) -> sqlite3.Connection | None:
        """Move a corrupt file aside (kept for inspection) and start a fresh one."""
        import sqlite3

        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}-{os.getpid()}")
        message = f"the cache file {self.path} is corrupt ({error}); moved it to {aside} and started a new one"
        try:
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    source.replace(Path(f"{aside}{suffix}"))
            connection = self._open()
        except (OSError, sqlite3.DatabaseError) as second:
            self._disable(f"{message}, but that failed too ({second})")
            return None
        _log(message)
        warnings.warn(message, CacheWarning, stacklevel=2)
        return connection

    def _disable(self, message: str) -> None:
        self._disabled = True
        message = f"{message}; caching in memory only"
        _log(message)
        warnings.warn(message, CacheWarning, stacklevel=2)

    def _disk_get(self, key: str) -> Completion | None:
        import sqlite3

        connection = self._connection()
        if connection is None:
            return None
        try:
            row = connection.execute("SELECT value FROM completions WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as error:
            self._on_failure(error)
            return None
        if row is None:
            return None
        try:
            data = json.loads(row[0])
            return Completion(
                text=str(data["text"]),
                usage=Usage(int(data["usage"][0]), int(data["usage"][1])),
                finish_reason="length" if data["finish_reason"] == "length" else "stop",
                cached=True,
            )
        except (ValueError, KeyError, TypeError, IndexError):
            _log("dropping an unreadable cache row %s", key)
            return None

    def _disk_put(self, key: str, model: str, completion: Completion) -> None:
        import sqlite3

        connection = self._connection()
        if connection is None:
            return
        value = json.dumps(
            {
                "text": completion.text,
                "usage": [completion.usage.input_tokens, completion.usage.output_tokens],
                "finish_reason": completion.finish_reason,
            },
            ensure_ascii=False,
        )
        try:
            connection.execute(
                "INSERT OR REPLACE INTO completions (key, model, value, created) VALUES (?, ?, ?, ?)",
                (key, model, value, time.time()),
            )
        except sqlite3.DatabaseError as error:
            self._on_failure(error)

    def _on_failure(self, error: sqlite3.DatabaseError) -> None:
        """A query failed: a locked database is a miss; anything else means the file went bad."""
        if _busy(error):
            _log("cache busy, skipped: %s", error)
            return
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = self._recover(error)


def _log(message: str, *args: object) -> None:
    import logging

    logging.getLogger("lmdsl.cache").warning(message, *args)


def _busy(error: sqlite3.DatabaseError) -> bool:
    """Another connection holds a lock: a transient condition, not a damaged file."""
    import sqlite3

    return isinstance(error, sqlite3.OperationalError) and ("locked" in str(error) or "busy" in str(error))


def _enable_wal(connection: sqlite3.Connection, timeout: float = 30.0) -> None:
    """Switch to WAL. SQLite answers SQLITE_BUSY at once (no busy handler) while another
    process is switching the same new file, so wait for it here like any other lock."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if not _busy(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@functools.cache
def open_store(directory: Path) -> CacheStore:
    """One store per directory per process, so the memory layer is shared."""
    return CacheStore(directory)


class CachedBackend:
    """A backend whose completions are served from a `CacheStore` when the same request was made."""

    cacheable = False  # already cached: configuration must not wrap it twice

    def __init__(self, backend: Backend, store: CacheStore) -> None:
        self.backend = backend
        self.store = store
        self._name = backend.name

    @property
    def name(self) -> str:
        return self._name

    def complete(self, request: Request) -> Completion:
        hit = self.store.get(self._name, request)
        if hit is not None:
            return hit
        completion = self.backend.complete(request)
        self.store.put(self._name, request, completion)
        return completion
