"""A persistent cache of completions that wraps any backend.

Two layers: an in-memory LRU keyed on the `Request` itself (hashable, so a hit
costs one dict lookup), and a SQLite file in WAL mode keyed on a SHA-256 of the
canonical request, shared safely by threads (one connection each) and
processes.

The file is not trusted: every row carries a digest of its key and contents and
is checked when read, so a damaged row is a miss (with a `CacheWarning`), never a
wrong answer. Failures are told apart by SQLite's error code: a corrupt file is
set aside and replaced; a full disk or a read-only file is kept and still served,
only storing stops; a locked file is waited for, then skipped. Any text, lone
surrogates included, is hashed and stored escaped, so it round-trips exactly.
Nothing that happens to the file raises: the worst case is caching in memory only.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections import OrderedDict
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lmdsl.lm.types import Backend, Completion, Request, Usage
from lmdsl.warn import warn_user

if TYPE_CHECKING:  # sqlite3, hashlib and logging load on first use of the disk layer: import lmdsl stays fast
    import sqlite3

CACHE_FILE = "completions.sqlite3"
# `PRAGMA user_version` of the file. 0 is a new file or the first format (table `completions`, rows
# without digests), which cannot be verified, so it is dropped rather than migrated.
SCHEMA_VERSION = 2
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries ("
    "key TEXT PRIMARY KEY, model TEXT NOT NULL, value TEXT NOT NULL, digest TEXT NOT NULL, created REAL NOT NULL)"
)
# Run on opening: the file holds the table with every column this version uses, or it is not usable.
_PROBE = "SELECT key, model, value, digest, created FROM entries LIMIT 1"
_TIMEOUT = 30.0

# What went wrong with the file, which decides what to do about it (see `_fault`).
Fault = Literal["corrupt", "full", "read-only", "io", "busy", "other"]


class CacheWarning(UserWarning):
    """The cache file, or a row of it, could not be used as is (damaged, full, read-only, locked);
    lmdsl carried on without it."""


def default_cache_dir() -> Path:
    """`LMDSL_CACHE_DIR` if set, else the user's cache directory."""
    configured = os.environ.get("LMDSL_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("lmdsl"))


_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def request_key(model: str, request: Request) -> str:
    """The canonical request, hashed: model, messages, schema and sampling, rollout included.

    `surrogatepass` encodes every string, lone surrogates included, and stays one-to-one,
    so keys of surrogate-free requests are what they always were.
    """
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

    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def encode_completion(completion: Completion) -> str:
    """A completion as ASCII JSON: lone surrogates are escaped, so any text is stored and read back exactly."""
    return json.dumps(
        {
            "text": completion.text,
            "usage": [completion.usage.input_tokens, completion.usage.output_tokens],
            "finish_reason": completion.finish_reason,
        },
        ensure_ascii=True,
        separators=(",", ":"),
    )


def decode_completion(value: bytes) -> Completion | None:
    """The completion `encode_completion` wrote, marked cached; None for anything else."""
    try:
        data = json.loads(value)
        text = data["text"]
        input_tokens, output_tokens = data["usage"]
        finish_reason = data["finish_reason"]
    except (ValueError, TypeError, KeyError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(text, str) or finish_reason not in ("stop", "length"):
        return None
    if not all(type(n) is int and n >= 0 for n in (input_tokens, output_tokens)):
        return None
    return Completion(text, Usage(input_tokens, output_tokens), finish_reason, cached=True)


def row_digest(key: bytes, model: bytes, value: bytes) -> bytes:
    """The digest stored with a row, over the bytes as SQLite holds them (hex, ASCII)."""
    import hashlib

    # NUL-separated, the model last: key (hex) and value (JSON) hold no NUL, so no two rows join alike
    return hashlib.sha256(b"\0".join((key, value, model))).hexdigest().encode("ascii")


@dataclass(slots=True)
class _Handle:
    """One thread's connection. `writable` is False for a read-only view of a file that cannot be written;
    `identity` is the (device, inode) of the file when it was opened, to see whether another process
    has replaced it since."""

    connection: sqlite3.Connection
    writable: bool
    identity: tuple[int, int] | None


class _NewerFormat(Exception):
    """The file was written by a newer lmdsl: leave it alone."""


class _Damaged(Exception):
    """The file's header holds a format number no lmdsl writes (they count 1, 2, 3...): damage."""


class CacheStore:
    """Completions on disk with a bounded memory layer in front. Safe across threads and processes.

    Everything `get` returns is marked `cached`. `timeout` bounds the wait for a file another
    connection holds locked; after it the call is a miss (or the store is skipped).
    """

    def __init__(self, directory: Path, *, memory_size: int = 8192, timeout: float = _TIMEOUT) -> None:
        self.directory = directory
        self.path = directory / CACHE_FILE
        self._memory: OrderedDict[tuple[str, Request], Completion] = OrderedDict()
        self._memory_size = memory_size
        self._timeout = timeout
        self._lock = threading.Lock()
        self._local = threading.local()
        self._disabled = False
        self._warned: set[str] = set()

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

    def close(self) -> None:
        """Close this thread's connection (the next call opens the file again)."""
        import sqlite3

        handle: _Handle | None = getattr(self._local, "handle", None)
        self._local.handle = None
        if handle is not None:
            with suppress(sqlite3.Error):
                handle.connection.close()

    # -- disk layer: rows -----------------------------------------------------------------
    def _disk_get(self, key: str) -> Completion | None:
        found = self._execute("SELECT key, model, value, digest FROM entries WHERE key = ?", (key,), write=False)
        if not found:
            return None
        stored_key, model, value, digest = found[0]
        completion = None
        if isinstance(stored_key, bytes) and isinstance(model, bytes) and isinstance(value, bytes):
            if stored_key == key.encode("ascii") and digest == row_digest(stored_key, model, value):
                completion = decode_completion(value)
        if completion is None:
            _log("cache row %s failed its check; treated as a miss", key)
            self._warn_once(
                "row",
                f"a row of the cache file {self.path} failed its check (damaged or altered); "
                "treated it as a miss, and it is replaced when the reply is stored again",
            )
        return completion

    def _disk_put(self, key: str, model: str, completion: Completion) -> None:
        try:
            value = encode_completion(completion)
        except (TypeError, ValueError, RecursionError) as error:  # not plain data: keep it in memory only
            _log("cache skipped a reply it cannot encode: %s", error)
            return
        if decode_completion(value.encode("ascii")) is None:  # e.g. no token counts: would read back as damage
            _log("cache skipped a reply it could not read back: %s", value[:200])
            return
        readable_model = model.encode("utf-8", "backslashreplace").decode("utf-8")
        digest = row_digest(key.encode("ascii"), readable_model.encode("utf-8"), value.encode("ascii"))
        self._execute(
            "INSERT OR REPLACE INTO entries (key, model, value, digest, created) VALUES (?, ?, ?, ?, ?)",
            (key, readable_model, value, digest.decode("ascii"), time.time()),
            write=True,
        )

    def _execute(self, sql: str, parameters: tuple[object, ...], *, write: bool) -> list[tuple[object, ...]] | None:
        """One statement on this thread's connection; None if it could not run (reported and handled).

        SQLite's busy handler waits up to `timeout` for a lock; the few busy answers it gives at once
        (a file being switched to WAL, recovered, checkpointed) are retried here within the same bound.
        After the file was replaced (set aside here, or by another process) the statement runs once more,
        on the new file.
        """
        import sqlite3

        deadline = time.monotonic() + self._timeout
        reopened = False
        while True:
            handle = self._handle()
            if handle is None or (write and not handle.writable):
                return None
            try:
                return handle.connection.execute(sql, parameters).fetchall()
            except (sqlite3.Error, UnicodeDecodeError) as error:
                fault = _fault(error)
                if fault == "busy" and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                if self._on_failure(handle, fault, error) and not reopened:
                    reopened = True
                    continue
                return None

    def _on_failure(self, handle: _Handle, fault: Fault, error: BaseException) -> bool:
        """A statement failed on an open connection: repair what can be repaired, else skip it.
        True if this thread now has a new connection to try again on."""
        _log("cache %s: %s", fault, error)
        if fault == "busy":
            self._warn_busy()
        elif not handle.writable:  # a read-only view: nothing to repair, so a miss
            self._warn_once(fault, f"the cache file {self.path} could not be read ({error}); treated it as a miss")
        elif fault == "corrupt":
            self.close()
            self._local.handle = self._recover(error, handle.identity, again=False)
            return self._local.handle is not None
        elif fault == "full":
            self._warn_once(
                "full",
                f"the disk holding the cache file {self.path} is full ({error}); new replies are not stored "
                "while it is, stored ones are still served",
            )
        elif fault == "read-only":
            handle.writable = False
            self._warn_read_only(error)
        elif fault == "io":
            self._warn_once(
                "io", f"the cache file {self.path} could not be written ({error}); skipped it, the file is kept"
            )
        else:  # unexpected: open the file afresh next time
            self.close()
            self._warn_once("other", f"the cache file {self.path} failed ({error}); skipped it, the file is kept")
        return False

    # -- disk layer: the file -------------------------------------------------------------
    def _handle(self) -> _Handle | None:
        if self._disabled:
            return None
        handle: _Handle | None = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._connect(again=False)
            self._local.handle = handle
        return handle

    def _connect(self, *, again: bool) -> _Handle | None:
        """Open the file for reading and writing; else, if it cannot be written, read-only."""
        import sqlite3

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            self._disable(f"the cache directory {self.directory} is not usable ({error})")
            return None
        identity = _identity(self.path)  # of the file that fails, if it does
        try:
            return self._open()
        except _NewerFormat as error:
            self._disable(f"the cache file {self.path} was written by a newer lmdsl (format {error})")
            return None
        except (sqlite3.Error, UnicodeDecodeError, _Damaged) as error:
            fault = _fault(error, opening=True)
            _log("cache %s on opening: %s", fault, error)
            if fault == "corrupt":
                return self._recover(error, identity, again=again)
            if fault == "busy":
                self._warn_busy()
                return None
            if fault == "other":
                self._warn_once("other", f"the cache file {self.path} failed ({error}); skipped it, the file is kept")
                return None
            return self._open_read_only(fault, error)

    def _open(self) -> _Handle:
        import sqlite3

        connection = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        identity = _identity(self.path)
        try:
            connection.text_factory = bytes  # rows are checked as stored; nothing is decoded before that
            _enable_wal(connection, self._timeout)
            connection.execute("PRAGMA synchronous=NORMAL")
            if _user_version(connection) != SCHEMA_VERSION:
                self._migrate(connection)
            connection.execute(_PROBE).fetchall()
        except BaseException:
            connection.close()
            raise
        return _Handle(connection, True, identity)

    def _migrate(self, connection: sqlite3.Connection) -> None:
        """Give a new or first-format file the current table. First-format rows carry no digest, so
        they cannot be trusted: they are dropped (with a warning), not converted."""
        import sqlite3

        if _user_version(connection) > SCHEMA_VERSION:
            raise _NewerFormat(_user_version(connection))
        connection.execute("BEGIN IMMEDIATE")  # another process may be doing the same: decide under the lock
        try:
            version = _user_version(connection)
            if version > SCHEMA_VERSION:
                raise _NewerFormat(version)
            dropped = 0
            if version < SCHEMA_VERSION:
                old = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'completions'"
                if connection.execute(old).fetchone() is not None:
                    dropped = int(connection.execute("SELECT count(*) FROM completions").fetchone()[0])
                    connection.execute("DROP TABLE completions")
                connection.execute(_SCHEMA)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            connection.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error, UnicodeDecodeError):
                connection.execute("ROLLBACK")
            raise
        if dropped:
            message = (
                f"the cache file {self.path} was written by an earlier lmdsl, without row checksums; "
                f"its {dropped} entries were dropped and are recomputed when asked for"
            )
            warn_user(message, CacheWarning)

    def _open_read_only(self, fault: Fault, error: BaseException) -> _Handle | None:
        """The file cannot be written (read-only, full disk, I/O error): serve what it holds.

        `mode=ro` needs the WAL's shared-memory file; where that cannot be created either (a read-only
        directory, a full disk), `immutable=1` reads the database file alone. Its rows are still
        checked, so a view that misses the latest writes is at worst a miss.
        """
        import sqlite3

        if _identity(self.path) is not None:
            uri = self.path.absolute().as_uri()
            for options in ("?mode=ro", "?mode=ro&immutable=1"):
                connection = None
                try:
                    connection = sqlite3.connect(
                        uri + options, uri=True, timeout=self._timeout, isolation_level=None, check_same_thread=False
                    )
                    connection.text_factory = bytes
                    if _user_version(connection) != SCHEMA_VERSION:
                        connection.close()
                        break
                    connection.execute(_PROBE).fetchall()
                except (sqlite3.Error, UnicodeDecodeError, _Damaged) as second:
                    _log("cache read-only open (%s) failed: %s", options, second)
                    if connection is not None:
                        connection.close()
                    continue
                if fault == "read-only":
                    self._warn_read_only(error)
                else:
                    self._warn_once(
                        fault,
                        f"the cache file {self.path} could not be opened for writing ({error}; a full disk?); "
                        "stored replies are served, new ones are not stored",
                    )
                return _Handle(connection, False, None)
        self._disable(f"the cache file {self.path} cannot be written ({error}) and holds nothing this lmdsl can read")
        return None

    def _recover(self, error: BaseException, identity: tuple[int, int] | None, *, again: bool) -> _Handle | None:
        """Move a corrupt file aside (kept for inspection) and start a fresh one.

        If the file is no longer the one that failed, another process has already replaced it: use that.
        """
        import sqlite3

        if not again and identity is not None and _identity(self.path) != identity:
            return self._connect(again=True)
        stamp = f"{self.path.name}.corrupt-{int(time.time())}-{os.getpid()}"
        aside = self.path.with_name(stamp)
        count = 0
        while aside.exists():
            count += 1
            aside = self.path.with_name(f"{stamp}-{count}")
        message = f"the cache file {self.path} is corrupt ({error}); moved it to {aside} and started a new one"
        try:
            for suffix in ("", "-wal", "-shm"):
                with suppress(FileNotFoundError):
                    Path(f"{self.path}{suffix}").replace(Path(f"{aside}{suffix}"))
            handle = self._open()
        except (OSError, sqlite3.Error, UnicodeDecodeError, _NewerFormat, _Damaged) as second:
            self._disable(f"{message}, but that failed too ({second})")
            return None
        warn_user(message, CacheWarning)
        return handle

    # -- reporting ------------------------------------------------------------------------
    def _disable(self, message: str) -> None:
        self._disabled = True
        message = f"{message}; caching in memory only"
        warn_user(message, CacheWarning)

    def _warn_busy(self) -> None:
        self._warn_once(
            "busy",
            f"the cache file {self.path} stayed locked by another connection for {self._timeout:g} s; "
            "skipped it (a miss), the file is kept",
        )

    def _warn_read_only(self, error: BaseException) -> None:
        self._warn_once(
            "read-only",
            f"the cache file {self.path} is read-only ({error}); stored replies are served, new ones are not stored",
        )

    def _warn_once(self, kind: str, message: str) -> None:
        """A condition that lasts (a full disk, a read-only file) is reported once per store, not per call."""
        with self._lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        warn_user(message, CacheWarning)


def _log(message: str, *args: object) -> None:
    import logging

    logging.getLogger("lmdsl.cache").warning(message, *args)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_dev, status.st_ino)


def _user_version(connection: sqlite3.Connection) -> int:
    """The file's format; a number far beyond any lmdsl's is a damaged header, not a newer lmdsl."""
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if version > 1000:
        raise _Damaged(f"format number {version} in the header")
    return version


def _fault(error: BaseException, *, opening: bool = False) -> Fault:
    """Classify by SQLite's (primary) result code, not by message text.

    A message that is not UTF-8 (so Python raises `UnicodeDecodeError` instead) came from damaged text
    in the file, as does an impossible format number. A generic SQL error while opening means the file
    does not hold the expected table.
    """
    import sqlite3

    if isinstance(error, (UnicodeDecodeError, _Damaged)):
        return "corrupt"
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return "other"
    primary = code & 0xFF
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_FORMAT):
        return "corrupt"
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_PROTOCOL):
        return "busy"
    if primary == sqlite3.SQLITE_FULL:
        return "full"
    if primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
        return "read-only"
    if primary == sqlite3.SQLITE_IOERR:
        return "io"
    if primary == sqlite3.SQLITE_ERROR and opening:
        return "corrupt"
    return "other"


def _enable_wal(connection: sqlite3.Connection, timeout: float = _TIMEOUT) -> None:
    """Switch to WAL. SQLite answers SQLITE_BUSY at once (no busy handler) while another
    process is switching the same new file, so wait for it here like any other lock."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if _fault(error) != "busy" or time.monotonic() > deadline:
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
