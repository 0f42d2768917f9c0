"""How the cache gets back a usable file: a corrupt file set aside (with its WAL and shared-memory
files) under a name that is free, a format number told apart from damage, a first-format file upgraded
once under the write lock, and failures during that upgrade reported as what they were."""

from __future__ import annotations

import logging
import os
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest

import lmdsl
import lmdsl.cache
from lmdsl.cache import CACHE_FILE, CacheStore
from lmdsl.lm.types import Completion, Usage
from tests.unit.test_cache import req
from tests.unit.test_cache_fault_reports import FrozenClock, cache_log, stored_keys
from tests.unit.test_cache_faults import error_with

pytestmark = pytest.mark.filterwarnings("error::lmdsl.CacheWarning")

W = logging.WARNING
GARBAGE = b"not a database at all " * 200
STAMP = f"{CACHE_FILE}.corrupt-1700000000-{os.getpid()}"
KEY_OF_X = "ba11f8bdf91db4e50159bc7499e5f43a972201a8dc384ba9fa74500370ea9ffa"


@contextmanager
def caught() -> Iterator[list[str]]:
    """The messages of the CacheWarnings raised inside (any other warning fails the test)."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        messages: list[str] = []
        yield messages
    for record in records:
        assert issubclass(record.category, lmdsl.CacheWarning), record
        messages.append(str(record.message))


def user_version(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])
    finally:
        connection.close()


def tables(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return [
            name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ]
    finally:
        connection.close()


def a_file_of_format(directory: Path, version: int) -> bytes:
    """A healthy cache file holding one reply, its header then given format `version`; its bytes."""
    store = CacheStore(directory)
    store.put("m", req("x"), Completion("stored", Usage(1, 1)))
    store.close()
    connection = sqlite3.connect(directory / CACHE_FILE, isolation_level=None)
    connection.execute(f"PRAGMA user_version = {version}")
    connection.close()
    return (directory / CACHE_FILE).read_bytes()


# -- setting a corrupt file aside ----------------------------------------------------------------------------


def test_a_corrupt_file_goes_aside_with_its_wal_and_shm_under_the_first_free_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection still has the file open, so its write-ahead log and shared-memory file are
    there when the file is found corrupt: they go aside with it."""
    monkeypatch.setattr(lmdsl.cache, "time", FrozenClock)
    path = tmp_path / CACHE_FILE
    earlier = CacheStore(tmp_path)
    earlier.put("m", req("earlier"), Completion("earlier", Usage(1, 1)))
    earlier.close()
    other = sqlite3.connect(path, isolation_level=None)  # another process, its connection kept open
    assert other.execute("SELECT count(*) FROM entries").fetchone() == (1,)
    path.write_bytes(GARBAGE)
    assert Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    (tmp_path / STAMP).write_bytes(b"set aside earlier")
    caplog.set_level(logging.WARNING)

    store = CacheStore(tmp_path)
    aside = tmp_path / f"{STAMP}-1"
    try:
        with caught() as messages:
            store.put("m", req("x"), Completion("fresh", Usage(1, 1)))  # the first call: stored in the new file
        assert Path(f"{aside}-wal").exists() and Path(f"{aside}-shm").exists()
    finally:
        other.close()
    message = f"the cache file {path} is corrupt (file is not a database); moved it to {aside} and started a new one"
    assert messages == [message]
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, "cache corrupt on opening: file is not a database"),
    ]
    assert (tmp_path / STAMP).read_bytes() == b"set aside earlier"
    assert aside.read_bytes()[: len(GARBAGE)] == GARBAGE
    store.close()
    names = {p.name for p in tmp_path.iterdir()}
    assert (
        {CACHE_FILE, STAMP, f"{STAMP}-1"}
        <= names
        <= {CACHE_FILE, STAMP, f"{STAMP}-1", f"{STAMP}-1-wal", f"{STAMP}-1-shm"}
    )
    assert stored_keys(tmp_path) == [KEY_OF_X]


def test_a_file_replaced_again_and_again_is_set_aside_after_one_second_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each look at the file finds another one (as if other processes kept replacing it): after one
    second look the cache sets the file aside itself rather than chasing it."""
    monkeypatch.setattr(lmdsl.cache, "time", FrozenClock)
    (tmp_path / CACHE_FILE).write_bytes(GARBAGE)
    looks: list[int] = []

    def ever_new(path: Path) -> tuple[int, int]:
        looks.append(1)
        return (1, len(looks))

    monkeypatch.setattr(lmdsl.cache, "_identity", ever_new)
    store = CacheStore(tmp_path)
    with caught() as messages:
        assert store.get("m", req("x")) is None
        store.put("m", req("x"), Completion("fresh", Usage(1, 1)))
    assert messages == [
        f"the cache file {tmp_path / CACHE_FILE} is corrupt (file is not a database); "
        f"moved it to {tmp_path / STAMP} and started a new one"
    ]
    assert (tmp_path / STAMP).read_bytes() == GARBAGE
    store.close()
    assert stored_keys(tmp_path) == [KEY_OF_X]


# -- format numbers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 1000])
def test_a_format_number_a_later_lmdsl_could_write_leaves_the_file_alone(
    tmp_path: Path, version: int, caplog: pytest.LogCaptureFixture
) -> None:
    before = a_file_of_format(tmp_path, version)
    caplog.set_level(logging.WARNING)
    store = CacheStore(tmp_path)
    with caught() as messages:
        assert store.get("m", req("x")) is None
        store.put("m", req("x"), Completion("in memory"))
        assert store.get("m", req("x")) == Completion("in memory", cached=True)
    message = f"the cache file {tmp_path / CACHE_FILE} was written by a newer lmdsl (format {version}); caching in memory only"
    assert messages == [message]
    assert cache_log(caplog) == []  # said once, as a warning
    assert (tmp_path / CACHE_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CACHE_FILE]


@pytest.mark.parametrize("version", [1001, 2**31 - 1])
def test_a_format_number_no_lmdsl_writes_is_damage(
    tmp_path: Path, version: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lmdsl.cache, "time", FrozenClock)
    before = a_file_of_format(tmp_path, version)
    store = CacheStore(tmp_path)
    with caught() as messages:
        assert store.get("m", req("x")) is None
        store.put("m", req("x"), Completion("fresh", Usage(1, 1)))
    assert messages == [
        f"the cache file {tmp_path / CACHE_FILE} is corrupt (format number {version} in the header); "
        f"moved it to {tmp_path / STAMP} and started a new one"
    ]
    assert (tmp_path / STAMP).read_bytes() == before
    store.close()
    assert user_version(tmp_path / CACHE_FILE) == 2
    assert stored_keys(tmp_path) == [KEY_OF_X]


# -- the first format --------------------------------------------------------------------------------------


def write_first_format(path: Path, entries: int, *, version: int = 0) -> None:
    """A cache file as the first lmdsl wrote it: table `completions`, no digests."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("CREATE TABLE completions (key TEXT PRIMARY KEY, model TEXT, value TEXT, created REAL)")
    for i in range(entries):
        connection.execute("INSERT INTO completions VALUES (?, 'm', 'unverifiable', 0)", (f"{i:064x}",))
    connection.execute(f"PRAGMA user_version = {version}")
    connection.close()


def test_a_first_format_file_is_upgraded_and_its_entries_dropped_with_one_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / CACHE_FILE
    write_first_format(path, entries=2)
    caplog.set_level(logging.WARNING)
    store = CacheStore(tmp_path)
    with caught() as messages:
        store.put("m", req("x"), Completion("fresh", Usage(1, 1)))
    message = (
        f"the cache file {path} was written by an earlier lmdsl, without row checksums; "
        "its 2 entries were dropped and are recomputed when asked for"
    )
    assert messages == [message]
    assert cache_log(caplog) == []  # said once, as a warning
    store.close()
    assert tables(path) == ["entries"]
    assert user_version(path) == 2
    assert stored_keys(tmp_path) == [KEY_OF_X]


def test_a_file_brought_to_the_current_format_while_waiting_for_the_lock_is_not_upgraded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first look sees a first-format file; by the time the write lock is held, another process has
    upgraded it (and a table named `completions` belongs to someone else now): the decision taken under
    the lock is to change nothing."""
    path = tmp_path / CACHE_FILE
    write_first_format(path, entries=0)
    real = lmdsl.cache._user_version
    looks: list[int] = []

    def racing(connection: sqlite3.Connection) -> int:
        version = real(connection)
        looks.append(version)
        if len(looks) == 2:  # `_migrate`'s first look, before it takes the lock
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("DROP TABLE completions")
            other.execute(
                "CREATE TABLE entries (key TEXT PRIMARY KEY, model TEXT NOT NULL, value TEXT NOT NULL, "
                "digest TEXT NOT NULL, created REAL NOT NULL)"
            )
            other.execute("CREATE TABLE completions (note TEXT)")
            other.execute("INSERT INTO completions VALUES ('kept')")
            other.execute("PRAGMA user_version = 2")
            other.close()
        return version

    monkeypatch.setattr(lmdsl.cache, "_user_version", racing)
    store = CacheStore(tmp_path)
    with caught() as messages:
        store.put("m", req("x"), Completion("stored", Usage(1, 1)))
    assert messages == []
    assert looks[:3] == [0, 0, 2]
    store.close()
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT note FROM completions").fetchall() == [("kept",)]
    connection.close()
    assert tables(path) == ["completions", "entries"]
    assert stored_keys(tmp_path) == [KEY_OF_X]


class FailsCreatingTheTable:
    """A connection on which creating the table fails as on a full disk, after which SQLite has already
    rolled the transaction back; `rollback_error`, if given, is what a ROLLBACK then raises."""

    def __init__(self, inner: sqlite3.Connection, rollback_error: BaseException | None) -> None:
        self.inner = inner
        self.rollback_error = rollback_error

    @property
    def text_factory(self) -> Any:
        return self.inner.text_factory

    @text_factory.setter
    def text_factory(self, value: Any) -> None:
        self.inner.text_factory = value

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        if sql.upper().startswith("CREATE TABLE"):
            self.inner.execute("ROLLBACK")
            raise error_with(sqlite3.SQLITE_FULL, "database or disk is full")
        if sql.strip().upper() == "ROLLBACK" and self.rollback_error is not None:
            raise self.rollback_error
        return self.inner.execute(sql, parameters)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize(
    "rollback_error",
    [
        pytest.param(None, id="no-transaction-to-roll-back"),
        pytest.param(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), id="undecodable-message"),
    ],
)
def test_a_failed_rollback_does_not_hide_the_error_that_stopped_the_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rollback_error: BaseException | None
) -> None:
    """The full disk is what is reported (and the file kept), not the rollback that could not run."""
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        return FailsCreatingTheTable(real_connect(*args, **kwargs), rollback_error)

    store = CacheStore(tmp_path)
    with monkeypatch.context() as patch, caught() as messages:
        patch.setattr(sqlite3, "connect", connect)
        assert store.get("m", req("x")) is None
        store.put("m", req("x"), Completion("in memory"))
        assert store.get("m", req("x")) == Completion("in memory", cached=True)
    assert messages == [
        f"the cache file {tmp_path / CACHE_FILE} cannot be written (database or disk is full) "
        "and holds nothing this lmdsl can read; caching in memory only"
    ]
    assert not [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert tables(tmp_path / CACHE_FILE) == []


def test_a_corrupt_file_replaced_by_another_process_meanwhile_is_used_not_set_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between this store failing to open the corrupt file and setting it aside, another process sets it
    aside and starts a healthy one: the store sees the file is no longer the one that failed, and opens it."""
    healthy = tmp_path / "healthy"
    healthy.mkdir()
    a_file_of_format(healthy, 2)
    path = tmp_path / CACHE_FILE
    path.write_bytes(GARBAGE)
    real = lmdsl.cache._identity
    failed: list[tuple[int, int] | None] = []

    def identity(of: Path) -> tuple[int, int] | None:
        failed.append(real(of))
        if len(failed) == 3:  # `_recover`'s look at the file, after the open failed
            path.replace(tmp_path / "set-aside-by-the-other-process")
            path.write_bytes((healthy / CACHE_FILE).read_bytes())
            return real(of)
        return failed[-1]

    monkeypatch.setattr(lmdsl.cache, "_identity", identity)
    store = CacheStore(tmp_path)
    with caught() as messages:
        assert store.get("m", req("x")) == Completion("stored", Usage(1, 1), cached=True)
    assert messages == []
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [CACHE_FILE, "set-aside-by-the-other-process"]
    assert (tmp_path / "set-aside-by-the-other-process").read_bytes() == GARBAGE


# -- opening ---------------------------------------------------------------------------------------------


def test_the_cache_directory_is_created_with_its_parents_and_its_timeout_is_the_lock_wait(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b" / "c"
    store = CacheStore(directory, timeout=0.75)
    with caught() as messages:
        store.put("m", req("x"), Completion("stored", Usage(1, 1)))
    assert messages == []
    handle = store._local.handle
    assert handle is not None and handle.writable is True
    assert handle.identity == ((directory / CACHE_FILE).stat().st_dev, (directory / CACHE_FILE).stat().st_ino)
    assert handle.connection.execute("PRAGMA busy_timeout").fetchone() == (750,)
    assert handle.connection.execute("PRAGMA journal_mode").fetchone() == (b"wal",)
    assert handle.connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    store.close()
    assert stored_keys(directory) == [KEY_OF_X]


def test_a_cache_directory_that_cannot_be_made_is_reported_and_memory_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    caplog.set_level(logging.WARNING)
    store = CacheStore(blocker / "cache")
    with caught() as messages:
        store.put("m", req("x"), Completion("in memory"))
        assert store.get("m", req("x")) == Completion("in memory", cached=True)
        assert store.get("m", req("y")) is None
    message = (
        f"the cache directory {blocker / 'cache'} is not usable "
        f"([Errno 20] Not a directory: '{blocker / 'cache'}'); caching in memory only"
    )
    assert messages == [message]
    assert cache_log(caplog) == []  # said once, as a warning


class ReleasingClock:
    """`time` for lmdsl.cache whose `sleep` (between tries at a lock) lets the holder go: the store
    succeeds if and only if it waits at all."""

    def __init__(self, holder: sqlite3.Connection) -> None:
        self.holder = holder
        self.sleeps = 0

    def time(self) -> float:
        return 1_700_000_000.0

    def monotonic(self) -> float:
        import time

        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.holder.in_transaction:
            self.holder.execute("COMMIT")


def hold_a_new_file(path: Path) -> sqlite3.Connection:
    """A connection writing to a file not yet in WAL mode: switching it to WAL answers "locked" at once."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE other (a)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    return holder


@pytest.mark.parametrize(("timeout", "waits"), [(0.0, False), (30.0, True)])
def test_switching_to_wal_waits_for_a_lock_exactly_as_long_as_the_store_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeout: float, waits: bool
) -> None:
    holder = hold_a_new_file(tmp_path / CACHE_FILE)
    clock = ReleasingClock(holder)
    monkeypatch.setattr(lmdsl.cache, "time", clock)
    store = CacheStore(tmp_path, timeout=timeout)
    try:
        with caught() as messages:
            store.put("m", req("x"), Completion("stored", Usage(1, 1)))
    finally:
        holder.close()
    if waits:
        assert (clock.sleeps, messages) == (1, [])
        store.close()
        assert stored_keys(tmp_path) == [KEY_OF_X]
    else:
        assert (clock.sleeps, messages) == (
            0,
            [
                f"the cache file {tmp_path / CACHE_FILE} stayed locked by another connection for 0 s; "
                "skipped it (a miss), the file is kept"
            ],
        )
        assert tables(tmp_path / CACHE_FILE) == ["other"]
    assert sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name) == []


class StoppedClock:
    """`time` for lmdsl.cache in which no time passes: a deadline of `timeout=0` is exactly now. `sleep`
    records its argument and lets `holder` (if any) go."""

    def __init__(self, holder: sqlite3.Connection | None = None) -> None:
        self.holder = holder
        self.slept: list[float] = []

    def time(self) -> float:
        return 1_700_000_000.0

    def monotonic(self) -> float:
        return 1000.0

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.holder is not None and self.holder.in_transaction:
            self.holder.execute("COMMIT")


def test_switching_to_wal_is_tried_again_until_the_deadline_has_passed_polling_every_10_ms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = hold_a_new_file(tmp_path / CACHE_FILE)
    clock = StoppedClock(holder)
    monkeypatch.setattr(lmdsl.cache, "time", clock)
    store = CacheStore(tmp_path, timeout=0.0)
    try:
        with caught() as messages:
            store.put("m", req("x"), Completion("stored", Usage(1, 1)))
    finally:
        holder.close()
    assert (clock.slept, messages) == ([0.01], [])  # at the deadline, not past it: one more try
    store.close()
    assert stored_keys(tmp_path) == [KEY_OF_X]


def busy() -> sqlite3.Error:
    return error_with(sqlite3.SQLITE_BUSY, "database is locked")


@pytest.mark.parametrize(("timeout", "retried"), [(0.0, False), (30.0, True)])
def test_a_statement_answered_busy_at_once_is_tried_again_only_before_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeout: float, retried: bool
) -> None:
    first = CacheStore(tmp_path)
    first.put("m", req("x"), Completion("stored", Usage(1, 1)))
    first.close()
    clock = StoppedClock()
    monkeypatch.setattr(lmdsl.cache, "time", clock)
    store = CacheStore(tmp_path, timeout=timeout)
    assert store.get("m", req("other")) is None  # opens the file
    handle = store._local.handle
    assert handle is not None
    real: sqlite3.Connection = handle.connection

    class BusyOnce:
        def __init__(self) -> None:
            self.answered = False

        def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
            if not self.answered:
                self.answered = True
                raise busy()
            return real.execute(sql, parameters)

        def close(self) -> None:
            real.close()

    handle.connection = cast(sqlite3.Connection, BusyOnce())
    with caught() as messages:
        hit = store.get("m", req("x"))
    if retried:
        assert (hit, clock.slept, messages) == (Completion("stored", Usage(1, 1), cached=True), [0.01], [])
    else:
        assert (hit, clock.slept) == (None, [])
        assert messages == [
            f"the cache file {tmp_path / CACHE_FILE} stayed locked by another connection for 0 s; "
            "skipped it (a miss), the file is kept"
        ]
    store.close()


class CorruptOnWriting:
    """A connection whose writes are answered "malformed" while `failures` has some left (shared by
    every connection opened, the fresh files included)."""

    def __init__(self, inner: sqlite3.Connection, failures: list[int]) -> None:
        self.inner = inner
        self.failures = failures

    @property
    def text_factory(self) -> Any:
        return self.inner.text_factory

    @text_factory.setter
    def text_factory(self, value: Any) -> None:
        self.inner.text_factory = value

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        if sql.upper().startswith("INSERT") and self.failures:
            self.failures.pop()
            raise error_with(sqlite3.SQLITE_CORRUPT, "database disk image is malformed")
        return self.inner.execute(sql, parameters)

    def close(self) -> None:
        self.inner.close()


def test_a_statement_runs_on_a_fresh_file_once_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write fails as corrupt, the file is set aside, the write fails again on the fresh file: that
    one is set aside too, and the write is given up (not tried on a third file)."""
    monkeypatch.setattr(lmdsl.cache, "time", FrozenClock)
    real_connect = sqlite3.connect
    failures = [1, 1]

    def connect(*args: Any, **kwargs: Any) -> Any:
        return CorruptOnWriting(real_connect(*args, **kwargs), failures)

    store = CacheStore(tmp_path)
    with monkeypatch.context() as patch, caught() as messages:
        patch.setattr(sqlite3, "connect", connect)
        store.put("m", req("x"), Completion("given up", Usage(1, 1)))
        store.close()
    path = tmp_path / CACHE_FILE
    assert messages == [
        f"the cache file {path} is corrupt (database disk image is malformed); moved it to {tmp_path / STAMP} "
        "and started a new one",
        f"the cache file {path} is corrupt (database disk image is malformed); moved it to {tmp_path / STAMP}-1 "
        "and started a new one",
    ]
    assert failures == []
    assert stored_keys(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [CACHE_FILE, STAMP, f"{STAMP}-1"]
