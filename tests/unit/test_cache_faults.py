"""Told apart: a full disk, a read-only file, a locked file and a corrupt one. Only corruption costs the file."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import lmdsl
from lmdsl.cache import CACHE_FILE, CachedBackend, CacheStore, _fault, _Handle
from lmdsl.lm.types import Completion
from tests.unit.test_cache import CountingBackend, corrupt_files, req, rows
from tests.unit.test_cache_integrity import STORED, caught, write_cache

pytestmark = pytest.mark.filterwarnings("error::lmdsl.CacheWarning")

BIG = Completion("x" * 20_000)  # needs new pages, so it cannot be stored in a file that may not grow


def assert_serves_stored(store: CacheStore) -> None:
    """Every entry of `STORED` comes from the file (the memory layer is emptied first)."""
    store.clear_memory()
    for text, completion in STORED:
        hit = store.get("m", req(text))
        assert hit is not None and hit.text == completion.text and hit.cached


def handle(store: CacheStore) -> _Handle:
    """This thread's open connection to the store's file."""
    assert store.get("m", req(STORED[0][0])) is not None
    opened = store._local.handle
    assert isinstance(opened, _Handle)
    return opened


# -- a full disk -------------------------------------------------------------------------------------------


def test_a_full_disk_skips_storing_with_one_warning_and_keeps_serving(tmp_path: Path) -> None:
    """`max_page_count` at the file's size makes SQLite itself answer SQLITE_FULL ("database or disk is
    full") to a write, as it does on a full disk, without filling one."""
    write_cache(tmp_path)
    store = CacheStore(tmp_path)
    connection = handle(store).connection
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")

    backend = CountingBackend("m")
    cached = CachedBackend(backend, store)
    with pytest.warns(lmdsl.CacheWarning, match="full.*not stored.*still served") as records:
        store.put("m", req("big"), BIG)
        for i in range(20):
            store.put("m", req(f"big {i}"), BIG)
            cached.complete(req(f"asked {i}"))
        assert_serves_stored(store)
    assert len(records) == 1  # once per store, not per call
    assert len(backend.calls) == 20
    assert corrupt_files(tmp_path) == []  # a healthy file is kept
    store.close()
    stored = rows(tmp_path)
    assert all(BIG.text not in value for _key, _model, value in stored)  # small replies may still fit
    assert len(stored) >= len(STORED)


@contextmanager
def tiny_disk(directory: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs mounted on `directory` (root only, as in CI); skipped where mounting is not allowed."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    directory.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(directory)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace')}")
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(directory)], check=True)


def fill(directory: Path, name: str) -> None:
    """Write `name` until the disk is full (unbuffered, so closing it has nothing left to write)."""
    with open(directory / name, "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 1024)
        except OSError as error:
            assert error.errno == errno.ENOSPC


def test_a_really_full_disk_is_not_corruption(tmp_path: Path) -> None:
    """On a full tmpfs: a store already open gets SQLITE_FULL on writing; a new process cannot even
    create the WAL's shared-memory file (SQLITE_IOERR_SHMSIZE). Both keep the file and serve it."""
    with tiny_disk(tmp_path / "disk") as disk:
        write_cache(disk)
        before = (disk / CACHE_FILE).read_bytes()
        running = CacheStore(disk)
        handle(running)
        fill(disk, "filler")
        with pytest.warns(lmdsl.CacheWarning, match="full") as records:
            for i in range(5):
                running.put("m", req(f"big {i}"), BIG)
            assert_serves_stored(running)
        assert len(records) == 1
        running.close()

        fill(disk, "more filler")  # closing removed the WAL files and freed their space
        starting = CacheStore(disk)
        with pytest.warns(lmdsl.CacheWarning, match="could not be opened for writing") as records:
            assert_serves_stored(starting)
            for i in range(5):
                starting.put("m", req(f"big {i}"), BIG)
        assert len(records) == 1
        starting.close()
        assert corrupt_files(disk) == []
        assert (disk / CACHE_FILE).read_bytes() == before


def test_a_directory_that_cannot_be_created_falls_back_to_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "mkdir", no_space)
    cached = CachedBackend(CountingBackend(), CacheStore(tmp_path / "new"))
    with pytest.warns(lmdsl.CacheWarning, match="No space left on device.*memory only"):
        assert not cached.complete(req()).cached
    assert cached.complete(req()).cached


# -- a read-only file or directory ----------------------------------------------------------------------------


@contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make `paths` unwritable. Root (as in CI) ignores permission bits, so as root this sets the
    immutable attribute (`chattr +i`), which binds root too: writes fail with EPERM as on a read-only
    mount. As anyone else, plain permissions do it (EACCES)."""
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in paths}
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    if shutil.which("chattr") is None:
        pytest.skip("chattr is needed to make a file read-only for root")
    done: list[Path] = []
    try:
        for path in paths:
            result = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
            if result.returncode:
                pytest.skip(f"chattr +i is not possible here: {result.stderr.decode(errors='replace')}")
            done.append(path)
        yield
    finally:
        for path in done:
            subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_cache_directory_is_served_not_set_aside(tmp_path: Path) -> None:
    write_cache(tmp_path)
    path = tmp_path / CACHE_FILE
    before = path.read_bytes()
    with read_only(path, tmp_path):
        backend = CountingBackend("m")
        cached = CachedBackend(backend, CacheStore(tmp_path))
        with pytest.warns(lmdsl.CacheWarning, match="read-only.*served.*not stored") as records:
            assert_serves_stored(cached.store)
            assert not cached.complete(req("new")).cached
            assert cached.complete(req("new")).cached  # from memory
            cached.store.put("m", req("another"), Completion("y"))
        assert len(records) == 1
        assert backend.calls == [req("new")]
        cached.store.close()
    assert sorted(tmp_path.iterdir()) == [path]  # nothing set aside, no WAL files left behind
    assert path.read_bytes() == before


def test_a_read_only_cache_file_in_a_writable_directory_is_served(tmp_path: Path) -> None:
    write_cache(tmp_path)
    path = tmp_path / CACHE_FILE
    with read_only(path):
        store = CacheStore(tmp_path)
        with pytest.warns(lmdsl.CacheWarning, match="read-only") as records:
            for i in range(5):
                store.put("m", req(f"new {i}"), Completion("y"))
            assert_serves_stored(store)
        assert len(records) == 1
        store.clear_memory()
        assert store.get("m", req("new 0")) is None
        store.close()
    assert corrupt_files(tmp_path) == []
    assert len(rows(tmp_path)) == len(STORED)


def test_a_read_only_directory_without_a_cache_falls_back_to_memory(tmp_path: Path) -> None:
    with read_only(tmp_path):
        cached = CachedBackend(CountingBackend(), CacheStore(tmp_path))
        with pytest.warns(lmdsl.CacheWarning, match="cannot be written.*memory only"):
            assert not cached.complete(req()).cached
        assert cached.complete(req()).cached
    assert list(tmp_path.iterdir()) == []


# -- a locked file ---------------------------------------------------------------------------------------------


def test_a_file_locked_for_longer_than_the_timeout_is_a_miss_not_corruption(tmp_path: Path) -> None:
    """A connection in exclusive locking mode keeps every other one out, readers included."""
    write_cache(tmp_path)
    holder = sqlite3.connect(tmp_path / CACHE_FILE, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("UPDATE entries SET created = 0")  # takes the lock, and keeps it until closed
    store = CacheStore(tmp_path, timeout=0.1)
    try:
        with pytest.warns(lmdsl.CacheWarning, match="locked.*0.1 s.*kept") as records:
            assert store.get("m", req(STORED[0][0])) is None
            store.put("m", req("new"), Completion("y"))
            assert store.get("m", req(STORED[1][0])) is None
        assert len(records) == 1
    finally:
        holder.close()
    assert corrupt_files(tmp_path) == []
    with caught() as later:
        assert_serves_stored(store)  # the lock is gone: the same store uses the file again
        store.put("m", req("new"), Completion("y"))
    assert later == []
    store.close()
    assert len(rows(tmp_path)) == len(STORED) + 1


def test_a_writer_holding_the_lock_makes_a_store_skip_not_fail(tmp_path: Path) -> None:
    write_cache(tmp_path)
    store = CacheStore(tmp_path, timeout=0.1)
    handle(store)
    holder = sqlite3.connect(tmp_path / CACHE_FILE, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.warns(lmdsl.CacheWarning, match="locked") as records:
            store.put("m", req("new"), Completion("y"))
            assert_serves_stored(store)  # WAL readers are not blocked by a writer
        assert len(records) == 1
    finally:
        holder.execute("COMMIT")
        holder.close()
    store.put("m", req("newer"), Completion("z"))
    store.close()
    assert corrupt_files(tmp_path) == []
    assert len(rows(tmp_path)) == len(STORED) + 1


# -- classification by SQLite's result code -------------------------------------------------------------------


def error_with(code: int, message: str = "some message") -> sqlite3.Error:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        pytest.param(error_with(sqlite3.SQLITE_CORRUPT), "corrupt", id="corrupt"),
        pytest.param(error_with(sqlite3.SQLITE_CORRUPT_INDEX), "corrupt", id="corrupt-index"),
        pytest.param(error_with(sqlite3.SQLITE_NOTADB), "corrupt", id="not-a-database"),
        pytest.param(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "corrupt", id="undecodable"),
        pytest.param(error_with(sqlite3.SQLITE_FULL), "full", id="full"),
        pytest.param(error_with(sqlite3.SQLITE_IOERR_SHMSIZE), "io", id="io-shmsize"),
        pytest.param(error_with(sqlite3.SQLITE_IOERR_WRITE), "io", id="io-write"),
        pytest.param(error_with(sqlite3.SQLITE_READONLY), "read-only", id="read-only"),
        pytest.param(error_with(sqlite3.SQLITE_READONLY_DIRECTORY), "read-only", id="read-only-directory"),
        pytest.param(error_with(sqlite3.SQLITE_CANTOPEN), "read-only", id="cannot-open"),
        pytest.param(error_with(sqlite3.SQLITE_PERM), "read-only", id="permission"),
        pytest.param(error_with(sqlite3.SQLITE_BUSY, "database is locked"), "busy", id="busy"),
        pytest.param(error_with(sqlite3.SQLITE_BUSY_SNAPSHOT), "busy", id="busy-snapshot"),
        pytest.param(error_with(sqlite3.SQLITE_BUSY_RECOVERY), "busy", id="busy-recovery"),
        pytest.param(error_with(sqlite3.SQLITE_LOCKED, "database table is locked"), "busy", id="locked"),
        pytest.param(error_with(sqlite3.SQLITE_PROTOCOL), "busy", id="protocol"),
        pytest.param(error_with(sqlite3.SQLITE_ERROR, "no such table: entries"), "other", id="error"),
        pytest.param(error_with(sqlite3.SQLITE_NOMEM), "other", id="no-memory"),
        pytest.param(sqlite3.ProgrammingError("Cannot operate on a closed database."), "other", id="no-code"),
        pytest.param(error_with(sqlite3.SQLITE_CORRUPT, "database is locked"), "corrupt", id="code-not-text"),
    ],
)
def test_faults_are_told_apart_by_result_code(error: BaseException, fault: str) -> None:
    assert _fault(error) == fault
    generic = getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_ERROR
    assert _fault(error, opening=True) == ("corrupt" if generic else fault)  # the file lacks the expected table


def test_real_errors_carry_the_codes_the_classification_reads(tmp_path: Path) -> None:
    (tmp_path / "garbage").write_bytes(b"not a database at all" * 100)
    connection = sqlite3.connect(tmp_path / "garbage")
    with pytest.raises(sqlite3.DatabaseError) as raised:
        connection.execute("SELECT * FROM sqlite_master").fetchall()
    connection.close()
    assert _fault(raised.value) == "corrupt"

    first = sqlite3.connect(tmp_path / "db", isolation_level=None, timeout=0)
    first.execute("CREATE TABLE t (a)")
    first.execute("BEGIN EXCLUSIVE")
    second = sqlite3.connect(tmp_path / "db", isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as raised:
        second.execute("SELECT * FROM t").fetchall()
    first.close()
    second.close()
    assert _fault(raised.value) == "busy"

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = sqlite3.connect(tmp_path / "full", isolation_level=None)
        full.execute("CREATE TABLE t (a)")
        full.execute(f"PRAGMA max_page_count = {full.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(sqlite3.OperationalError) as raised:
            full.execute("INSERT INTO t VALUES (?)", ("x" * 10_000,))
        full.close()
    assert _fault(raised.value) == "full"
