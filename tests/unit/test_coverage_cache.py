"""Cache faults the main suite leaves out: a busy answer retried at once, errors on a read-only view,
I/O and unclassified errors, a format race, a file that cannot be opened at all, and corrupt files
whose set-aside name is taken or that cannot be moved.

Faults SQLite only shows on real hardware (an I/O error, an instant busy answer) are played by a
connection wrapper that answers the next statements with a given error, carrying the result code
SQLite would give."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

import lmdsl
import lmdsl.cache
from lmdsl.cache import CACHE_FILE, SCHEMA_VERSION, CacheStore, _Handle
from lmdsl.lm.types import Completion, Usage
from tests.unit.test_cache import req
from tests.unit.test_cache_faults import error_with

pytestmark = pytest.mark.filterwarnings("error::lmdsl.CacheWarning")

STORED = Completion("stored reply", Usage(3, 2))


class Faulty:
    """Wraps a connection: the next statements raise `errors`, one each, then it passes through."""

    def __init__(self, inner: sqlite3.Connection, *errors: BaseException) -> None:
        self.inner = inner
        self.errors = list(errors)
        self.statements = 0

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        self.statements += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.inner.execute(sql, parameters)

    def close(self) -> None:
        self.inner.close()


def store_with_one_entry(directory: Path) -> CacheStore:
    """A store whose file holds `STORED` for `req("stored")`, with this thread's connection open
    and its memory layer empty, so the next `get` reads the file."""
    store = CacheStore(directory)
    store.put("m", req("stored"), STORED)
    store.clear_memory()
    return store


def faulty(store: CacheStore, *errors: BaseException) -> Faulty:
    """Make this thread's connection of `store` answer the next statements with `errors`."""
    handle = store._local.handle
    assert isinstance(handle, _Handle)
    wrapper = Faulty(handle.connection, *errors)
    handle.connection = cast(sqlite3.Connection, wrapper)
    return wrapper


def corrupt_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob(f"{CACHE_FILE}.corrupt-*"))


# -- rows ----------------------------------------------------------------------------------------------------


def test_a_row_holding_a_number_instead_of_text_is_a_miss_with_a_warning(tmp_path: Path) -> None:
    """A table created without column types (by hand, or another tool) keeps a number as a number:
    the row is not the bytes the cache wrote, so it fails its check rather than being decoded."""
    store = store_with_one_entry(tmp_path)
    store.close()
    connection = sqlite3.connect(tmp_path / CACHE_FILE, isolation_level=None)
    connection.execute("ALTER TABLE entries RENAME TO typed")
    connection.execute("CREATE TABLE entries (key PRIMARY KEY, model, value, digest, created)")
    connection.execute("INSERT INTO entries SELECT key, model, 42, digest, created FROM typed")
    connection.close()

    with pytest.warns(lmdsl.CacheWarning, match="a row of the cache file .* failed its check"):
        assert CacheStore(tmp_path).get("m", req("stored")) is None


# -- errors while running a statement ------------------------------------------------------------------------


def test_a_busy_answer_is_retried_at_once_without_a_warning(tmp_path: Path) -> None:
    """SQLite answers SQLITE_BUSY without waiting while a file is being recovered or switched to WAL:
    the statement is tried again within the timeout, and the reply is served."""
    store = store_with_one_entry(tmp_path)
    wrapper = faulty(
        store,
        error_with(sqlite3.SQLITE_BUSY, "database is locked"),
        error_with(sqlite3.SQLITE_BUSY_RECOVERY, "database is locked"),
    )
    hit = store.get("m", req("stored"))
    assert hit is not None and hit.text == "stored reply" and hit.cached
    assert wrapper.statements == 3


def test_a_failed_read_on_a_read_only_view_is_a_miss_and_the_file_is_kept(tmp_path: Path) -> None:
    """A read-only view cannot repair anything, so even a corrupt answer only costs this lookup."""
    store = store_with_one_entry(tmp_path)
    handle = store._local.handle
    assert isinstance(handle, _Handle)
    handle.writable = False
    faulty(store, error_with(sqlite3.SQLITE_CORRUPT, "database disk image is malformed"))
    with pytest.warns(
        lmdsl.CacheWarning, match="could not be read \\(database disk image is malformed\\); treated it as a miss"
    ):
        assert store.get("m", req("stored")) is None
    assert corrupt_files(tmp_path) == []
    store.clear_memory()
    hit = store.get("m", req("stored"))
    assert hit is not None and hit.text == "stored reply"


def test_an_io_error_on_writing_skips_storing_once_and_keeps_the_connection(tmp_path: Path) -> None:
    store = store_with_one_entry(tmp_path)
    wrapper = faulty(store, error_with(sqlite3.SQLITE_IOERR_WRITE, "disk I/O error"))
    with pytest.warns(
        lmdsl.CacheWarning, match="could not be written \\(disk I/O error\\); skipped it, the file is kept"
    ) as records:
        store.put("m", req("new"), Completion("new reply"))
    assert len(records) == 1
    assert store._local.handle.connection is wrapper
    store.put("m", req("newer"), Completion("newer reply"))  # the error has passed: stored
    store.clear_memory()
    assert store.get("m", req("new")) is None
    newer = store.get("m", req("newer"))
    assert newer is not None and newer.text == "newer reply"
    assert corrupt_files(tmp_path) == []


def test_an_unclassified_error_reopens_the_file_on_the_next_call(tmp_path: Path) -> None:
    store = store_with_one_entry(tmp_path)
    faulty(store, error_with(sqlite3.SQLITE_NOMEM, "out of memory"))
    with pytest.warns(lmdsl.CacheWarning, match="failed \\(out of memory\\); skipped it, the file is kept"):
        assert store.get("m", req("stored")) is None
    assert store._local.handle is None  # closed: the next call opens the file afresh
    hit = store.get("m", req("stored"))
    assert hit is not None and hit.text == "stored reply"
    assert isinstance(store._local.handle, _Handle)
    assert corrupt_files(tmp_path) == []


# -- errors while opening ------------------------------------------------------------------------------------


def test_an_unclassified_error_on_opening_skips_the_file_and_tries_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_with_one_entry(tmp_path).close()
    before = (tmp_path / CACHE_FILE).read_bytes()

    def out_of_memory(connection: sqlite3.Connection, timeout: float = 0.0) -> None:
        raise error_with(sqlite3.SQLITE_NOMEM, "out of memory")

    store = CacheStore(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(lmdsl.cache, "_enable_wal", out_of_memory)
        with pytest.warns(lmdsl.CacheWarning, match="failed \\(out of memory\\); skipped it, the file is kept"):
            assert store.get("m", req("stored")) is None
    assert (tmp_path / CACHE_FILE).read_bytes() == before
    assert corrupt_files(tmp_path) == []
    hit = store.get("m", req("stored"))
    assert hit is not None and hit.text == "stored reply"


def test_a_file_upgraded_by_another_process_while_migrating_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the first look at a new file's format and taking the write lock, another (newer)
    lmdsl gives it format 3: the check under the lock sees that, rolls back, and leaves the file."""
    real = lmdsl.cache._user_version
    seen: list[int] = []

    def racing(connection: sqlite3.Connection) -> int:
        version = real(connection)
        seen.append(version)
        if len(seen) == 2:  # the first look inside `_migrate`, before the lock
            other = sqlite3.connect(tmp_path / CACHE_FILE, isolation_level=None)
            other.execute("PRAGMA user_version = 3")
            other.close()
        return version

    monkeypatch.setattr(lmdsl.cache, "_user_version", racing)
    store = CacheStore(tmp_path)
    with pytest.warns(lmdsl.CacheWarning, match="written by a newer lmdsl \\(format 3\\); caching in memory only"):
        assert store.get("m", req("x")) is None
    assert seen == [0, 0, 3]
    store.put("m", req("x"), Completion("in memory"))
    hit = store.get("m", req("x"))
    assert hit is not None and hit.text == "in memory"
    connection = sqlite3.connect(tmp_path / CACHE_FILE)
    assert connection.execute("PRAGMA user_version").fetchone() == (3,)
    assert connection.execute("SELECT name FROM sqlite_master").fetchall() == []  # the table was not made
    connection.close()


def test_a_directory_where_the_file_should_be_falls_back_to_memory(tmp_path: Path) -> None:
    """Neither a read-write nor either read-only connection can open a directory."""
    (tmp_path / CACHE_FILE).mkdir()
    store = CacheStore(tmp_path)
    with pytest.warns(
        lmdsl.CacheWarning,
        match="cannot be written \\(unable to open database file\\) and holds nothing this lmdsl can read; caching in memory only",
    ):
        assert store.get("m", req("x")) is None
    store.put("m", req("x"), Completion("in memory"))
    hit = store.get("m", req("x"))
    assert hit is not None and hit.text == "in memory"
    assert (tmp_path / CACHE_FILE).is_dir() and list((tmp_path / CACHE_FILE).iterdir()) == []


def test_a_read_only_first_format_file_is_not_migrated_and_falls_back_to_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first-format file that cannot be written cannot be given the current table: it is read by
    nothing, and kept as it is (its rows are not dropped)."""
    path = tmp_path / CACHE_FILE
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("CREATE TABLE completions (key TEXT PRIMARY KEY, value TEXT)")
    connection.execute("INSERT INTO completions VALUES ('k', 'v')")
    connection.execute("PRAGMA user_version = 1")
    connection.close()

    def read_only(connection: sqlite3.Connection, timeout: float = 0.0) -> None:
        raise error_with(sqlite3.SQLITE_READONLY, "attempt to write a readonly database")

    monkeypatch.setattr(lmdsl.cache, "_enable_wal", read_only)
    store = CacheStore(tmp_path)
    with pytest.warns(
        lmdsl.CacheWarning,
        match="cannot be written \\(attempt to write a readonly database\\) and holds nothing this lmdsl can read",
    ):
        assert store.get("m", req("x")) is None
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT key, value FROM completions").fetchall() == [("k", "v")]
    assert connection.execute("PRAGMA user_version").fetchone() == (1,)
    connection.close()


# -- corrupt files -------------------------------------------------------------------------------------------


def test_an_impossible_format_number_is_corruption_and_the_file_is_replaced(tmp_path: Path) -> None:
    store_with_one_entry(tmp_path).close()
    connection = sqlite3.connect(tmp_path / CACHE_FILE, isolation_level=None)
    connection.execute("PRAGMA user_version = 5000")
    connection.close()

    store = CacheStore(tmp_path)
    with pytest.warns(lmdsl.CacheWarning, match="is corrupt \\(format number 5000 in the header\\); moved it to"):
        assert store.get("m", req("stored")) is None
    assert len(corrupt_files(tmp_path)) == 1
    store.put("m", req("stored"), STORED)
    store.close()
    connection = sqlite3.connect(tmp_path / CACHE_FILE)
    assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert connection.execute("SELECT count(*) FROM entries").fetchone() == (1,)
    connection.close()


class FrozenClock:
    """`time` for lmdsl.cache with a fixed wall clock, so the set-aside name is known in advance."""

    monotonic: Callable[[], float] = staticmethod(time.monotonic)
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    @staticmethod
    def time() -> float:
        return 1_700_000_000.0


@pytest.fixture
def garbage_cache(tmp_path: Path) -> Iterator[Path]:
    """A cache directory whose file is not a database at all."""
    (tmp_path / CACHE_FILE).write_bytes(b"not a database at all " * 200)
    yield tmp_path


def test_a_corrupt_file_is_set_aside_under_a_new_name_when_the_first_is_taken(
    garbage_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setattr(lmdsl.cache, "time", FrozenClock)
    taken = f"{CACHE_FILE}.corrupt-1700000000-{os.getpid()}"
    (garbage_cache / taken).write_bytes(b"set aside earlier")
    (garbage_cache / f"{taken}-1").write_bytes(b"and again")

    store = CacheStore(garbage_cache)
    with pytest.warns(lmdsl.CacheWarning, match=f"is corrupt .*; moved it to .*{taken}-2 and started a new one"):
        assert store.get("m", req("x")) is None
    assert corrupt_files(garbage_cache) == [taken, f"{taken}-1", f"{taken}-2"]
    assert (garbage_cache / taken).read_bytes() == b"set aside earlier"
    assert (garbage_cache / f"{taken}-1").read_bytes() == b"and again"
    assert (garbage_cache / f"{taken}-2").read_bytes() == b"not a database at all " * 200
    store.put("m", req("x"), Completion("fresh"))
    store.clear_memory()
    hit = store.get("m", req("x"))
    assert hit is not None and hit.text == "fresh"


def test_a_corrupt_file_that_cannot_be_moved_aside_leaves_caching_in_memory(
    garbage_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Path, target: Any) -> Path:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "replace", refuse)
    store = CacheStore(garbage_cache)
    with pytest.warns(
        lmdsl.CacheWarning,
        match="is corrupt .* and started a new one, but that failed too \\(\\[Errno 13\\] Permission denied.*; caching in memory only",
    ) as records:
        assert store.get("m", req("x")) is None
        store.put("m", req("x"), Completion("in memory"))
        hit = store.get("m", req("x"))
    assert len(records) == 1
    assert hit is not None and hit.text == "in memory"
    assert corrupt_files(garbage_cache) == []
    assert (garbage_cache / CACHE_FILE).read_bytes() == b"not a database at all " * 200
