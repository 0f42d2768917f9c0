"""The cache does not trust its bytes: damaged rows and files are misses or fresh files, never wrong answers."""

from __future__ import annotations

import sqlite3
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmdsl
from lmdsl.cache import CACHE_FILE, SCHEMA_VERSION, CachedBackend, CacheStore, encode_completion
from lmdsl.lm.types import Completion, Usage
from tests.unit.test_cache import CountingBackend, corrupt_files, req, rows

pytestmark = pytest.mark.filterwarnings("error::lmdsl.CacheWarning")

STORED = [
    (f"input {i}", Completion(f"reply number {i} " + "abcdefgh" * i, Usage(10 + i, i), "stop" if i % 2 else "length"))
    for i in range(4)
]


def write_cache(directory: Path) -> None:
    """A cache holding `STORED`, closed, so everything is in the database file (no WAL left)."""
    store = CacheStore(directory)
    for text, completion in STORED:
        store.put("m", req(text), completion)
    store.close()
    assert not Path(f"{directory / CACHE_FILE}-wal").exists()


def row_span(data: bytes, text: str, completion: Completion) -> tuple[int, int]:
    """Where the stored row of (text, completion) sits in the file: the record header before the key
    (a few bytes) to the end of its digest."""
    value = encode_completion(completion).encode()
    start = data.index(value)
    key_start = data.rindex(b"m", 0, start) - 64  # key (64 hex digits), then model "m", then value
    return key_start - 4, start + len(value) + 64


@contextmanager
def caught() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield records


def lookups(directory: Path) -> tuple[list[Completion | None], list[str]]:
    """What a new process gets for every stored request, and the messages of the warnings on the way."""
    with caught() as records:
        store = CacheStore(directory)
        found = [store.get("m", req(text)) for text, _ in STORED]
        store.close()
    assert all(issubclass(r.category, lmdsl.CacheWarning) for r in records), [str(r.message) for r in records]
    return found, [str(r.message) for r in records]


# -- the reproductions --------------------------------------------------------------------------


def test_one_changed_byte_in_a_row_is_a_miss_with_a_warning_not_a_wrong_answer(tmp_path: Path) -> None:
    write_cache(tmp_path)
    path = tmp_path / CACHE_FILE
    data = path.read_bytes()
    at = data.index(b"reply number 2")
    path.write_bytes(data[:at] + b"R" + data[at + 1 :])  # "Reply number 2": still valid JSON, valid UTF-8

    backend = CountingBackend("m")
    cached = CachedBackend(backend, CacheStore(tmp_path))
    with pytest.warns(lmdsl.CacheWarning, match="failed its check"):
        fresh = cached.complete(req("input 2"))
    assert fresh.text == "echo input 2" and not fresh.cached
    assert corrupt_files(tmp_path) == []  # one bad row does not cost the file
    for text, completion in STORED[:2]:  # the other rows are still served
        assert cached.complete(req(text)).text == completion.text
    assert len(backend.calls) == 1

    cached.store.close()
    replaced = CacheStore(tmp_path).get("m", req("input 2"))  # the bad row was overwritten
    assert replaced is not None and replaced.text == "echo input 2"


def test_a_non_utf8_byte_in_a_row_is_a_miss_not_a_unicode_error(tmp_path: Path) -> None:
    write_cache(tmp_path)
    path = tmp_path / CACHE_FILE
    data = path.read_bytes()
    at = data.index(b"reply number 1")
    path.write_bytes(data[:at] + b"\xff" + data[at + 1 :])

    found, messages = lookups(tmp_path)
    assert found[1] is None
    expected = [None if i == 1 else completion.text for i, (_, completion) in enumerate(STORED)]
    assert [hit.text if hit else None for hit in found] == expected
    assert len(messages) == 1 and "failed its check" in messages[0]


def test_a_non_utf8_byte_in_the_schema_is_corruption_not_a_unicode_error(tmp_path: Path) -> None:
    """SQLite names the damaged table in its error message; Python cannot decode that message and
    raises `UnicodeDecodeError`, which is corruption like any other."""
    write_cache(tmp_path)
    path = tmp_path / CACHE_FILE
    data = path.read_bytes()
    at = data.index(b"entries") + 2  # the table's name in sqlite_master
    path.write_bytes(data[:at] + b"\xff" + data[at + 1 :])

    backend = CountingBackend()
    cached = CachedBackend(backend, CacheStore(tmp_path))
    with pytest.warns(lmdsl.CacheWarning, match="corrupt") as records:
        assert cached.complete(req("input 0")).text == "echo input 0"
    assert len(records) == 1
    assert len(corrupt_files(tmp_path)) == 1
    assert cached.complete(req("input 0")).cached
    cached.store.close()
    assert [model for _key, model, _value in rows(tmp_path)] == ["counting"]  # the fresh file works


@pytest.mark.parametrize(
    "completion",
    [
        pytest.param(Completion("x", Usage(-1, 2)), id="negative-usage"),
        pytest.param(Completion("x", Usage(None, 2)), id="no-usage"),  # type: ignore[arg-type]
        pytest.param(Completion("x", finish_reason="stopped"), id="unknown-finish"),  # type: ignore[arg-type]
        pytest.param(Completion(b"bytes"), id="bytes-text"),  # type: ignore[arg-type]
        pytest.param(Completion("x", Usage(object(), 2)), id="object-usage"),  # type: ignore[arg-type]
    ],
)
def test_a_reply_that_is_not_plain_data_is_kept_in_memory_only(tmp_path: Path, completion: Any) -> None:
    """Backends are typed, but a wrong one must not break the cache or leave a row that reads as damage."""
    store = CacheStore(tmp_path)
    store.put("m", req(), completion)
    assert store.get("m", req()) == Completion(completion.text, completion.usage, completion.finish_reason, True)
    store.close()
    assert rows(tmp_path) == []


# -- the format: old and new files ------------------------------------------------------------------------


def write_first_format(directory: Path, entries: int) -> None:
    """A cache file as the first lmdsl wrote it: table `completions`, no digests, user_version 0."""
    connection = sqlite3.connect(directory / CACHE_FILE, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(
        "CREATE TABLE completions ("
        "key TEXT PRIMARY KEY, model TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL)"
    )
    for i in range(entries):
        connection.execute(
            "INSERT INTO completions VALUES (?, 'm', ?, 0)",
            (f"{i:064x}", '{"text": "unverifiable", "usage": [1, 1], "finish_reason": "stop"}'),
        )
    connection.close()


def test_a_first_format_cache_is_dropped_once_with_a_warning(tmp_path: Path) -> None:
    write_first_format(tmp_path, entries=3)
    backend = CountingBackend()
    cached = CachedBackend(backend, CacheStore(tmp_path))
    with pytest.warns(lmdsl.CacheWarning, match="earlier lmdsl.*3 entries were dropped"):
        assert not cached.complete(req()).cached
    assert cached.complete(req()).cached
    cached.store.close()
    assert corrupt_files(tmp_path) == []

    again = CacheStore(tmp_path)  # the next process: no warning, the new entry is there
    hit = again.get("counting", req())
    assert hit is not None and hit.text == "echo hello"
    again.close()
    connection = sqlite3.connect(tmp_path / CACHE_FILE)
    tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    connection.close()
    assert tables == {"entries"}


def test_an_empty_first_format_cache_is_upgraded_silently(tmp_path: Path) -> None:
    write_first_format(tmp_path, entries=0)
    store = CacheStore(tmp_path)
    store.put("m", req(), Completion("x"))
    assert store.get("m", req()) is not None


def test_a_cache_from_a_newer_lmdsl_is_left_alone(tmp_path: Path) -> None:
    write_cache(tmp_path)
    connection = sqlite3.connect(tmp_path / CACHE_FILE)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    before = (tmp_path / CACHE_FILE).read_bytes()

    backend = CountingBackend()
    cached = CachedBackend(backend, CacheStore(tmp_path))
    with pytest.warns(lmdsl.CacheWarning, match="newer lmdsl.*memory only"):
        assert not cached.complete(req("input 0")).cached
    assert cached.complete(req("input 0")).cached  # the memory layer still works
    assert (tmp_path / CACHE_FILE).read_bytes() == before
    assert corrupt_files(tmp_path) == []


def test_a_cache_whose_table_is_missing_is_replaced(tmp_path: Path) -> None:
    write_cache(tmp_path)
    connection = sqlite3.connect(tmp_path / CACHE_FILE)
    connection.execute("DROP TABLE entries")
    connection.close()
    store = CacheStore(tmp_path)
    with pytest.warns(lmdsl.CacheWarning, match="corrupt.*no such table"):
        assert store.get("m", req("input 0")) is None
    store.put("m", req(), Completion("x"))
    assert len(corrupt_files(tmp_path)) == 1


def test_a_file_replaced_by_another_process_is_reopened_not_set_aside_again(tmp_path: Path) -> None:
    """Two processes find the file corrupt: the first sets it aside; the second, whose connection
    still points at the old file, must use the new one rather than set that aside as well."""
    write_cache(tmp_path)
    late = CacheStore(tmp_path)  # opened while the file was healthy
    assert late.get("m", req("input 0")) is not None
    late.clear_memory()
    (tmp_path / CACHE_FILE).write_bytes(b"this is not a SQLite database" * 256)

    early = CacheStore(tmp_path)
    with pytest.warns(lmdsl.CacheWarning, match="corrupt"):
        assert early.get("m", req("input 0")) is None
    early.put("m", req("shared"), Completion("written by the first"))

    with caught() as records:
        hit = late.get("m", req("shared"))
    assert hit is not None and hit.text == "written by the first"
    assert all("moved it" not in str(r.message) for r in records)
    assert len([p for p in corrupt_files(tmp_path) if not p.name.endswith(("-wal", "-shm"))]) == 1


# -- properties ---------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(STORED) - 1),
    position=st.floats(0, 1, exclude_max=True),
    junk=st.binary(min_size=1, max_size=8),
)
def test_bytes_written_into_a_row_never_give_a_wrong_answer(which: int, position: float, junk: bytes) -> None:
    """Anywhere in a row (record header, key, model, value, digest): the stored completion or a miss,
    and a miss of a row whose bytes changed is reported."""
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        write_cache(directory)
        path = directory / CACHE_FILE
        data = path.read_bytes()
        start, end = row_span(data, *STORED[which])
        at = start + int(position * (end - start))
        damaged = data[:at] + junk + data[at + len(junk) :]
        path.write_bytes(damaged[: len(data)])

        found, messages = lookups(directory)
        for hit, (_, completion) in zip(found, STORED, strict=True):
            assert hit is None or hit == Completion(completion.text, completion.usage, completion.finish_reason, True)
        content_changed = data[start + 4 : end] != damaged[start + 4 : end]
        if found[which] is None and content_changed:
            assert messages, "a damaged row was dropped silently"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=16)), min_size=1, max_size=4)
)
def test_bytes_written_anywhere_in_the_file_never_give_a_wrong_answer(damage: list[tuple[float, bytes]]) -> None:
    """Header, schema, b-tree pages, free space: every lookup is the stored completion or a miss, the only
    exceptions are none (warnings only), and the cache still stores afterwards."""
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        write_cache(directory)
        path = directory / CACHE_FILE
        data = bytearray(path.read_bytes())
        size = len(data)
        for position, junk in damage:
            at = int(position * size)
            data[at : at + len(junk)] = junk
        path.write_bytes(bytes(data[:size]))

        found, _messages = lookups(directory)
        for hit, (_, completion) in zip(found, STORED, strict=True):
            assert hit is None or hit == Completion(completion.text, completion.usage, completion.finish_reason, True)

        with caught():
            store = CacheStore(directory)
            store.put("m", req("after"), Completion("stored after the damage"))
            store.clear_memory()
            after = store.get("m", req("after"))
            store.close()
        assert after is None or after.text == "stored after the damage"
