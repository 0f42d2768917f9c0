"""What the cache tells the user about its file, word for word: each warning's text (said once, as a
warning: not logged as well), the log lines under the `lmdsl.cache` logger, and that a lasting condition (a full disk, a read-only file, I/O errors, an
unexpected error) is reported once per store, whether it is first met on opening the file or on
running a statement.

Faults that need real hardware are played by a connection wrapper that answers the next statements
with a given error, carrying the result code SQLite would give."""

from __future__ import annotations

import logging
import os
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest

import lmdsl
import lmdsl.cache
from lmdsl.cache import CACHE_FILE, CacheStore, _Handle
from lmdsl.lm.types import Completion, Usage
from tests.unit.test_cache import req
from tests.unit.test_cache_faults import error_with

pytestmark = pytest.mark.filterwarnings("error::lmdsl.CacheWarning")

STORED = Completion("stored reply", Usage(3, 2), "length")
BIG = Completion("x" * 20_000)  # needs new pages: cannot be stored in a file that may not grow


def raising(error: BaseException) -> Callable[..., None]:
    """A stand-in for `_enable_wal` that fails the way opening a file can fail."""

    def enable_wal(connection: sqlite3.Connection, timeout: float = 0.0) -> None:
        raise error

    return enable_wal


class Faulty:
    """Wraps a connection: the next statements raise `errors`, one each, then it passes through."""

    def __init__(self, inner: sqlite3.Connection, *errors: BaseException) -> None:
        self.inner = inner
        self.errors = list(errors)
        self.statements: list[str] = []

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        self.statements.append(sql)
        if self.errors:
            raise self.errors.pop(0)
        return self.inner.execute(sql, parameters)

    def close(self) -> None:
        self.inner.close()


def this_thread_handle(store: CacheStore) -> _Handle:
    handle = store._local.handle
    assert isinstance(handle, _Handle)
    return handle


def faulty(store: CacheStore, *errors: BaseException) -> Faulty:
    """Make this thread's open connection of `store` answer its next statements with `errors`."""
    handle = this_thread_handle(store)
    wrapper = Faulty(handle.connection, *errors)
    handle.connection = cast(sqlite3.Connection, wrapper)
    return wrapper


def store_with_one_entry(directory: Path) -> CacheStore:
    """A store whose file holds `STORED` for `req("stored")`, its connection open, its memory empty."""
    store = CacheStore(directory)
    store.put("m", req("stored"), STORED)
    store.clear_memory()
    return store


@contextmanager
def caught() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield records


def texts(records: list[warnings.WarningMessage]) -> list[tuple[type[Warning], str]]:
    return [(record.category, str(record.message)) for record in records]


def cache_log(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    """(logger, level, message) of every record logged from lmdsl/cache.py, in order."""
    here = os.path.join("lmdsl", "cache.py")
    return [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.pathname.endswith(here)]


def stored_keys(directory: Path) -> list[str]:
    connection = sqlite3.connect(directory / CACHE_FILE)
    try:
        return [key for (key,) in connection.execute("SELECT key FROM entries ORDER BY key")]
    finally:
        connection.close()


W = logging.WARNING
KEY_OF_STORED = "1eac99e29a17b74ce96fc42c6e23531bcaf05cecaf92097e6aaab7f2359b7bd5"


# -- a full disk ----------------------------------------------------------------------------------------------


def test_a_full_disk_met_on_opening_is_not_reported_again_when_a_write_meets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store_with_one_entry(tmp_path).close()
    path = tmp_path / CACHE_FILE
    store = CacheStore(tmp_path)
    caplog.set_level(logging.WARNING)
    with monkeypatch.context() as patch, caught() as on_opening:
        patch.setattr(lmdsl.cache, "_enable_wal", raising(error_with(sqlite3.SQLITE_FULL, "database or disk is full")))
        assert store.get("m", req("stored")) == Completion("stored reply", Usage(3, 2), "length", cached=True)
        store.put("m", req("not stored"), Completion("y"))  # the view is read-only: nothing is tried
    opened = (
        f"the cache file {path} could not be opened for writing (database or disk is full; a full disk?); "
        "stored replies are served, new ones are not stored"
    )
    assert texts(on_opening) == [(lmdsl.CacheWarning, opened)]
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, "cache full on opening: database or disk is full"),
    ]
    assert this_thread_handle(store).writable is False

    store.close()  # the next call opens the file for writing again
    caplog.clear()
    with caught() as later:
        store.put("m", req("fits"), Completion("a small reply"))
        connection = this_thread_handle(store).connection
        assert this_thread_handle(store).writable is True
        connection.execute(f"PRAGMA max_page_count = {connection.execute('PRAGMA page_count').fetchone()[0]}")
        store.put("m", req("big"), BIG)  # SQLITE_FULL, the same condition: no second warning
    assert texts(later) == []
    assert cache_log(caplog) == [("lmdsl.cache", W, "cache full: database or disk is full")]
    store.close()
    assert len(stored_keys(tmp_path)) == 2  # "stored" and "fits"; neither "not stored" nor "big"


def test_a_full_disk_met_by_a_write_is_reported_once_with_its_own_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_with_one_entry(tmp_path)
    caplog.set_level(logging.WARNING)
    faulty(store, error_with(sqlite3.SQLITE_FULL, "database or disk is full"))
    with caught() as records:
        store.put("m", req("a"), Completion("a"))
        store.put("m", req("b"), Completion("b"))  # the disk has room again: stored, and nothing to say
    message = (
        f"the disk holding the cache file {tmp_path / CACHE_FILE} is full (database or disk is full); "
        "new replies are not stored while it is, stored ones are still served"
    )
    assert texts(records) == [(lmdsl.CacheWarning, message)]
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, "cache full: database or disk is full"),
    ]
    assert this_thread_handle(store).writable is True
    store.clear_memory()
    assert store.get("m", req("a")) is None
    assert store.get("m", req("b")) == Completion("b", cached=True)


# -- I/O errors -----------------------------------------------------------------------------------------------


def test_an_io_error_met_on_opening_is_not_reported_again_when_a_write_meets_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store_with_one_entry(tmp_path).close()
    path = tmp_path / CACHE_FILE
    store = CacheStore(tmp_path)
    caplog.set_level(logging.WARNING)
    with monkeypatch.context() as patch, caught() as on_opening:
        patch.setattr(lmdsl.cache, "_enable_wal", raising(error_with(sqlite3.SQLITE_IOERR_SHMSIZE, "disk I/O error")))
        assert store.get("m", req("stored")) == Completion("stored reply", Usage(3, 2), "length", cached=True)
    opened = (
        f"the cache file {path} could not be opened for writing (disk I/O error; a full disk?); "
        "stored replies are served, new ones are not stored"
    )
    assert texts(on_opening) == [(lmdsl.CacheWarning, opened)]
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, "cache io on opening: disk I/O error"),
    ]

    store.close()
    caplog.clear()
    with caught() as later:
        store.clear_memory()
        assert store.get("m", req("stored")) is not None  # opened for writing this time
        faulty(store, error_with(sqlite3.SQLITE_IOERR_WRITE, "disk I/O error"))
        store.put("m", req("new"), Completion("new reply"))
    assert texts(later) == []
    assert cache_log(caplog) == [("lmdsl.cache", W, "cache io: disk I/O error")]
    assert this_thread_handle(store).writable is True


def test_an_io_error_on_writing_is_reported_with_its_own_text(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = store_with_one_entry(tmp_path)
    caplog.set_level(logging.WARNING)
    faulty(store, error_with(sqlite3.SQLITE_IOERR_WRITE, "disk I/O error"))
    with caught() as records:
        store.put("m", req("new"), Completion("new reply"))
    message = (
        f"the cache file {tmp_path / CACHE_FILE} could not be written (disk I/O error); skipped it, the file is kept"
    )
    assert texts(records) == [(lmdsl.CacheWarning, message)]
    assert cache_log(caplog) == [("lmdsl.cache", W, "cache io: disk I/O error")]


# -- unexpected errors ----------------------------------------------------------------------------------------


def test_an_unexpected_error_met_on_opening_is_not_reported_again_when_a_statement_meets_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store_with_one_entry(tmp_path).close()
    path = tmp_path / CACHE_FILE
    store = CacheStore(tmp_path)
    caplog.set_level(logging.WARNING)
    with monkeypatch.context() as patch, caught() as on_opening:
        patch.setattr(lmdsl.cache, "_enable_wal", raising(error_with(sqlite3.SQLITE_NOMEM, "out of memory")))
        assert store.get("m", req("stored")) is None
    message = f"the cache file {path} failed (out of memory); skipped it, the file is kept"
    assert texts(on_opening) == [(lmdsl.CacheWarning, message)]
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, "cache other on opening: out of memory"),
    ]
    assert store._local.handle is None

    caplog.clear()
    with caught() as later:
        hit = store.get("m", req("stored"))  # opened afresh
        assert hit == Completion("stored reply", Usage(3, 2), "length", cached=True)
        store.clear_memory()
        faulty(store, error_with(sqlite3.SQLITE_NOMEM, "out of memory"))
        assert store.get("m", req("stored")) is None
    assert texts(later) == []
    assert cache_log(caplog) == [("lmdsl.cache", W, "cache other: out of memory")]
    assert store._local.handle is None  # closed: opened afresh by the next call
    assert store.get("m", req("stored")) == Completion("stored reply", Usage(3, 2), "length", cached=True)


# -- a file that turns out to be read-only -------------------------------------------------------------------


def test_a_write_refused_as_read_only_stops_storing_and_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_with_one_entry(tmp_path)
    path = tmp_path / CACHE_FILE
    caplog.set_level(logging.WARNING)
    wrapper = faulty(store, error_with(sqlite3.SQLITE_READONLY, "attempt to write a readonly database"))
    with caught() as records:
        store.put("m", req("first"), Completion("first reply"))
        store.put("m", req("second"), Completion("second reply"))  # not even tried: the file is read-only
        assert store.get("m", req("stored")) == Completion("stored reply", Usage(3, 2), "length", cached=True)
        wrapper.errors.append(error_with(sqlite3.SQLITE_READONLY_RECOVERY, "attempt to write a readonly database"))
        store.clear_memory()
        assert store.get("m", req("stored")) is None  # the same condition, met reading: not reported again
    message = (
        f"the cache file {path} is read-only (attempt to write a readonly database); "
        "stored replies are served, new ones are not stored"
    )
    assert texts(records) == [(lmdsl.CacheWarning, message)]
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, "cache read-only: attempt to write a readonly database"),
        ("lmdsl.cache", W, "cache read-only: attempt to write a readonly database"),
    ]
    assert this_thread_handle(store).writable is False
    assert [sql.split()[0].upper() for sql in wrapper.statements] == ["INSERT", "SELECT", "SELECT"]

    with caught() as more:
        wrapper.errors.append(error_with(sqlite3.SQLITE_CORRUPT, "database disk image is malformed"))
        assert store.get("m", req("stored")) is None  # another condition on the read-only view: reported
        assert store.get("m", req("stored")) == Completion("stored reply", Usage(3, 2), "length", cached=True)
    assert texts(more) == [
        (
            lmdsl.CacheWarning,
            f"the cache file {path} could not be read (database disk image is malformed); treated it as a miss",
        )
    ]
    store.close()
    assert stored_keys(tmp_path) == [KEY_OF_STORED]  # neither "first" nor "second" was stored
    assert sorted(p.name for p in tmp_path.iterdir()) == [CACHE_FILE]  # nothing set aside


# -- a locked file --------------------------------------------------------------------------------------------


def test_a_file_locked_by_another_writer_is_reported_as_locked_and_the_connection_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A second connection holds the write lock; with no time to wait (`timeout=0`) the store skips."""
    store_with_one_entry(tmp_path).close()
    store = CacheStore(tmp_path, timeout=0)
    assert store.get("m", req("stored")) is not None
    opened = this_thread_handle(store)
    holder = sqlite3.connect(tmp_path / CACHE_FILE, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    caplog.set_level(logging.WARNING)
    try:
        with caught() as records:
            store.put("m", req("a"), Completion("a"))
            store.put("m", req("b"), Completion("b"))
            store.clear_memory()
            assert store.get("m", req("stored")) is not None  # WAL readers are not blocked by a writer
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    message = (
        f"the cache file {tmp_path / CACHE_FILE} stayed locked by another connection for 0 s; "
        "skipped it (a miss), the file is kept"
    )
    assert texts(records) == [(lmdsl.CacheWarning, message)]
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, "cache busy: database is locked"),
        ("lmdsl.cache", W, "cache busy: database is locked"),
    ]
    assert store._local.handle is opened and opened.writable is True
    store.put("m", req("c"), Completion("c"))  # the lock is gone
    store.close()
    assert len(stored_keys(tmp_path)) == 2


def test_the_wait_for_a_lock_is_reported_with_the_timeout_as_given(tmp_path: Path) -> None:
    holder = sqlite3.connect(tmp_path / CACHE_FILE, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("CREATE TABLE other (a)")  # takes the lock, and keeps it until closed
    try:
        store = CacheStore(tmp_path, timeout=0.0)
        with caught() as records:
            assert store.get("m", req("x")) is None
            store.put("m", req("x"), Completion("in memory"))
        assert store.get("m", req("x")) == Completion("in memory", cached=True)
    finally:
        holder.close()
    assert texts(records) == [
        (
            lmdsl.CacheWarning,
            f"the cache file {tmp_path / CACHE_FILE} stayed locked by another connection for 0 s; "
            "skipped it (a miss), the file is kept",
        )
    ]


# -- a corrupt file, found by a statement -------------------------------------------------------------------


def test_a_statement_answered_corrupt_sets_the_file_aside_and_runs_again_on_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(lmdsl.cache, "time", FrozenClock)
    store = store_with_one_entry(tmp_path)
    caplog.set_level(logging.WARNING)
    faulty(store, error_with(sqlite3.SQLITE_CORRUPT, "database disk image is malformed"))
    with caught() as records:
        store.put("m", req("new"), Completion("new reply", Usage(1, 1)))
    aside = tmp_path / f"{CACHE_FILE}.corrupt-1700000000-{os.getpid()}"
    message = (
        f"the cache file {tmp_path / CACHE_FILE} is corrupt (database disk image is malformed); "
        f"moved it to {aside} and started a new one"
    )
    assert texts(records) == [(lmdsl.CacheWarning, message)]
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, "cache corrupt: database disk image is malformed"),
    ]
    assert this_thread_handle(store).writable is True
    store.close()
    assert stored_keys(tmp_path) == ["12edf73239bb80ea92f89f7106a0254e3ebf49f84644dfb48427c35b9020e248"]
    connection = sqlite3.connect(aside)
    assert connection.execute("SELECT key FROM entries").fetchall() == [(KEY_OF_STORED,)]
    connection.close()


class FrozenClock:
    """`time` for lmdsl.cache with a fixed wall clock, so the set-aside name is known in advance."""

    @staticmethod
    def time() -> float:
        return 1_700_000_000.0

    @staticmethod
    def monotonic() -> float:
        import time

        return time.monotonic()

    @staticmethod
    def sleep(seconds: float) -> None:
        import time

        time.sleep(seconds)


# -- replies the file cannot hold ----------------------------------------------------------------------------


def test_a_reply_that_cannot_be_encoded_is_logged_and_kept_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CacheStore(tmp_path)
    caplog.set_level(logging.WARNING)
    odd = Completion("x", Usage(cast(int, object()), 2))
    with caught() as records:
        store.put("m", req("odd"), odd)
    assert records == []
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, "cache skipped a reply it cannot encode: Object of type object is not JSON serializable")
    ]
    hit = store.get("m", req("odd"))
    assert hit is not None and hit.text == "x" and hit.cached


def test_a_reply_that_would_not_read_back_is_logged_with_its_first_200_characters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CacheStore(tmp_path)
    caplog.set_level(logging.WARNING)
    store.put("m", req("negative"), Completion("x" * 300, Usage(-1, 2)))
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, "cache skipped a reply it could not read back: " + '{"text":"' + "x" * 191)
    ]
    assert store.get("m", req("negative")) == Completion("x" * 300, Usage(-1, 2), "stop", cached=True)
    store.close()
    assert not (tmp_path / CACHE_FILE).exists() or stored_keys(tmp_path) == []


# -- closing ------------------------------------------------------------------------------------------------


def test_closing_a_connection_that_fails_to_close_does_not_raise(tmp_path: Path) -> None:
    store = store_with_one_entry(tmp_path)

    class WontClose(Faulty):
        def close(self) -> None:
            self.inner.close()
            raise error_with(sqlite3.SQLITE_BUSY, "unable to close due to unfinalized statements")

    handle = this_thread_handle(store)
    handle.connection = cast(sqlite3.Connection, WontClose(handle.connection))
    store.close()
    assert store._local.handle is None
    hit = store.get("m", req("stored"))  # opened afresh
    assert hit == Completion("stored reply", Usage(3, 2), "length", cached=True)


# -- where a warning points (issue 16) -----------------------------------------------------------------------


def test_a_cache_warning_points_at_the_users_call_not_into_lmdsl(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    model = lmdsl.ScriptedModel([{"tag": "a"}], cacheable=True)

    @lmdsl.fuzzy
    def tag(text: str) -> str:
        """Tag it."""

    with lmdsl.using(model=model, cache=True, cache_dir=blocker / "cache"), pytest.warns(lmdsl.CacheWarning) as said:
        tag("x")  # the user's line
    lines = Path(__file__).read_text().splitlines()
    called = next(number for number, text in enumerate(lines, 1) if text.endswith('tag("x")  # the user\'s line'))
    assert [(w.filename, w.lineno) for w in said] == [(__file__, called)]
