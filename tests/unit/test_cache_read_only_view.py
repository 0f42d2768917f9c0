"""A cache file that cannot be opened for writing is only read: through SQLite's `mode=ro`, which sees
what other connections have in the write-ahead log and never checkpoints it, and where that cannot
open, through `immutable=1`, which reads the database file alone."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

import lmdsl
import lmdsl.cache
from lmdsl.cache import CACHE_FILE, CacheStore
from lmdsl.lm.types import Completion, Usage
from tests.unit.test_cache import req
from tests.unit.test_cache_fault_reports import (
    W,
    cache_log,
    caught,
    raising,
    texts,
    this_thread_handle,
)
from tests.unit.test_cache_faults import error_with

pytestmark = pytest.mark.filterwarnings("error::lmdsl.CacheWarning")

READ_ONLY = error_with(sqlite3.SQLITE_READONLY, "attempt to write a readonly database")


def test_the_read_only_view_sees_the_log_of_a_live_writer_and_leaves_file_and_log_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / CACHE_FILE
    writer = CacheStore(tmp_path)  # another process, still running: its replies are in the WAL only
    for i in range(3):
        writer.put("m", req(f"q{i}"), Completion(f"reply {i}", Usage(i, 1)))
    before = path.read_bytes()
    log_before = (tmp_path / f"{CACHE_FILE}-wal").read_bytes()
    assert b"reply 0" not in before and b"reply 0" in log_before

    reader = CacheStore(tmp_path, timeout=0.25)
    caplog.set_level(logging.WARNING)
    with monkeypatch.context() as patch, caught() as records:
        patch.setattr(lmdsl.cache, "_enable_wal", raising(READ_ONLY))
        found = [reader.get("m", req(f"q{i}")) for i in range(3)]
        reader.put("m", req("new"), Completion("not stored"))
    assert found == [Completion(f"reply {i}", Usage(i, 1), "stop", cached=True) for i in range(3)]
    message = (
        f"the cache file {path} is read-only (attempt to write a readonly database); "
        "stored replies are served, new ones are not stored"
    )
    assert texts(records) == [(lmdsl.CacheWarning, message)]
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, "cache read-only on opening: attempt to write a readonly database"),
    ]
    view = this_thread_handle(reader)
    assert (view.writable, view.identity) == (False, None)
    assert view.connection.execute("PRAGMA busy_timeout").fetchone() == (250,)  # the store's timeout

    writer.close()  # the reader is now the last connection: a read-only one checkpoints nothing
    reader.close()
    assert path.read_bytes() == before
    assert (tmp_path / f"{CACHE_FILE}-wal").read_bytes() == log_before


def test_where_mode_ro_cannot_open_the_file_alone_is_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The write-ahead log's path is taken by a directory: neither a read-write nor a `mode=ro`
    connection can open the file, `immutable=1` (which ignores the log) can."""
    path = tmp_path / CACHE_FILE
    store = CacheStore(tmp_path)
    store.put("m", req("stored"), Completion("stored reply", Usage(3, 2), "length"))
    store.close()
    Path(f"{path}-wal").mkdir()

    reader = CacheStore(tmp_path)
    caplog.set_level(logging.WARNING)
    with caught() as records:
        hit = reader.get("m", req("stored"))
        reader.put("m", req("new"), Completion("not stored"))
    assert hit == Completion("stored reply", Usage(3, 2), "length", cached=True)
    message = (
        f"the cache file {path} is read-only (unable to open database file); "
        "stored replies are served, new ones are not stored"
    )
    assert texts(records) == [(lmdsl.CacheWarning, message)]
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, "cache read-only on opening: unable to open database file"),
        ("lmdsl.cache", W, "cache read-only open (?mode=ro) failed: unable to open database file"),
    ]
    assert this_thread_handle(reader).writable is False
    reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [CACHE_FILE, f"{CACHE_FILE}-wal"]


def test_a_file_that_cannot_be_written_and_holds_an_older_format_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / CACHE_FILE
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("CREATE TABLE completions (key TEXT PRIMARY KEY, value TEXT)")
    connection.close()
    before = path.read_bytes()

    store = CacheStore(tmp_path)
    caplog.set_level(logging.WARNING)
    with monkeypatch.context() as patch, caught() as records:
        patch.setattr(lmdsl.cache, "_enable_wal", raising(error_with(sqlite3.SQLITE_FULL, "database or disk is full")))
        assert store.get("m", req("x")) is None
        store.put("m", req("x"), Completion("in memory"))
        assert store.get("m", req("x")) == Completion("in memory", cached=True)
    message = (
        f"the cache file {path} cannot be written (database or disk is full) and holds nothing this lmdsl "
        "can read; caching in memory only"
    )
    assert texts(records) == [(lmdsl.CacheWarning, message)]
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, "cache full on opening: database or disk is full"),
    ]
    assert store._local.handle is None
    assert path.read_bytes() == before
