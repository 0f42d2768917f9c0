"""The completion cache: keys, the memory and SQLite layers, threads, processes, damaged files."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

import lmdsl
from lmdsl.cache import (
    CACHE_FILE,
    CachedBackend,
    CacheStore,
    default_cache_dir,
    open_store,
    request_key,
    row_digest,
)
from lmdsl.lm.types import Completion, Message, Request, Usage
from lmdsl.strategies.base import Generation, Run

# Any CacheWarning a test does not expect (inside `pytest.warns`) fails it.
pytestmark = pytest.mark.filterwarnings("error::lmdsl.CacheWarning")


# -- helpers -------------------------------------------------------------------------------


def req(text: str = "hello", **changes: Any) -> Request:
    """A request with one user message; keyword arguments override the other fields."""
    return Request(messages=(Message("user", text),), **changes)


class CountingBackend:
    """A deterministic backend that records every request it answers."""

    def __init__(self, name: str = "counting") -> None:
        self._name = name
        self._lock = threading.Lock()
        self.calls: list[Request] = []

    @property
    def name(self) -> str:
        return self._name

    def complete(self, request: Request) -> Completion:
        with self._lock:
            self.calls.append(request)
        return Completion(text=f"echo {request.messages[-1].content}", usage=Usage(10, 2))


class FailingBackend:
    @property
    def name(self) -> str:
        return "failing"

    def complete(self, request: Request) -> Completion:
        raise lmdsl.BackendError("the prompt is too long")


def rows(directory: Path) -> list[tuple[str, str, str]]:
    """The (key, model, value) rows of the cache file in `directory`; none if there is no file."""
    path = directory / CACHE_FILE
    if not path.exists():
        return []
    connection = sqlite3.connect(path)
    try:
        return list(connection.execute("SELECT key, model, value FROM entries ORDER BY key"))
    finally:
        connection.close()


def corrupt_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{CACHE_FILE}.corrupt-*"))


@lmdsl.fuzzy
def classify(review: str) -> Literal["positive", "negative"]:
    """Classify the sentiment of a movie review."""
    raise NotImplementedError


def classify_model(*, cacheable: bool = True, key: str = "classify") -> lmdsl.ScriptedModel:
    """Replies to `classify` (or the function named by `key`) by looking for the word "good"."""

    def reply(request: Request) -> dict[str, str]:
        good = "good" in request.messages[-1].content
        return {key: "positive" if good else "negative"}

    return lmdsl.ScriptedModel(reply, cacheable=cacheable)


@dataclass(frozen=True)
class TwoRollouts(lmdsl.Strategy):
    """Samples the same request twice (rollouts 0 and 1) and keeps the second."""

    def run(self, run: Run) -> Generation:
        first = run.generate(rollout=0)
        second = run.generate(rollout=1)
        return Generation(second.output, second.reasoning, first.attempts + second.attempts)


@lmdsl.fuzzy(strategy=TwoRollouts())
def classify_twice(review: str) -> Literal["positive", "negative"]:
    """Classify the sentiment of a movie review."""
    raise NotImplementedError


# -- request_key ------------------------------------------------------------------------------

BASE = Request(
    messages=(Message("system", "Classify."), Message("user", "review: good")),
    json_schema='{"type":"object"}',
    max_tokens=64,
    temperature=0.0,
    rollout=0,
    prefix_length=1,
)


def test_request_key_is_stable_and_hex() -> None:
    twin = Request(
        messages=(Message("system", "Classify."), Message("user", "review: good")),
        json_schema='{"type":"object"}',
        max_tokens=64,
        temperature=0.0,
        rollout=0,
        prefix_length=1,
    )
    key = request_key("m", BASE)
    assert key == request_key("m", BASE) == request_key("m", twin)
    assert len(key) == 64 and int(key, 16) >= 0


@pytest.mark.parametrize(
    ("model", "changed"),
    [
        pytest.param("other-model", BASE, id="model"),
        pytest.param(
            "m",
            Request(
                BASE.messages[:1] + (Message("user", "review: bad"),),
                BASE.json_schema,
                BASE.max_tokens,
                prefix_length=1,
            ),
            id="message-content",
        ),
        pytest.param(
            "m",
            Request(
                (Message("user", "Classify."), BASE.messages[1]), BASE.json_schema, BASE.max_tokens, prefix_length=1
            ),
            id="message-role",
        ),
        pytest.param(
            "m",
            Request(BASE.messages + (Message("assistant", "{}"),), BASE.json_schema, BASE.max_tokens, prefix_length=1),
            id="extra-message",
        ),
        pytest.param("m", Request(BASE.messages, '{"type":"string"}', BASE.max_tokens, prefix_length=1), id="schema"),
        pytest.param("m", Request(BASE.messages, None, BASE.max_tokens, prefix_length=1), id="no-schema"),
        pytest.param("m", Request(BASE.messages, BASE.json_schema, 65, prefix_length=1), id="max_tokens"),
        pytest.param(
            "m", Request(BASE.messages, BASE.json_schema, 64, temperature=0.7, prefix_length=1), id="temperature"
        ),
        pytest.param("m", Request(BASE.messages, BASE.json_schema, 64, rollout=1, prefix_length=1), id="rollout"),
    ],
)
def test_request_key_differs_when_anything_sent_differs(model: str, changed: Request) -> None:
    assert request_key(model, changed) != request_key("m", BASE)


def test_request_key_ignores_prefix_length() -> None:
    shifted = Request(BASE.messages, BASE.json_schema, BASE.max_tokens, BASE.temperature, BASE.rollout, 0)
    assert shifted != BASE
    assert request_key("m", shifted) == request_key("m", BASE)


def test_prefix_length_alone_still_hits_the_disk_layer(tmp_path: Path) -> None:
    CacheStore(tmp_path).put("m", BASE, Completion("stored"))
    shifted = Request(BASE.messages, BASE.json_schema, BASE.max_tokens, BASE.temperature, BASE.rollout, 0)
    hit = CacheStore(tmp_path).get("m", shifted)
    assert hit is not None and hit.text == "stored" and hit.cached


# -- CacheStore and CachedBackend -------------------------------------------------------------


def test_store_miss_then_hit_is_marked_cached(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    assert store.get("m", req()) is None
    store.put("m", req(), Completion("hi", Usage(7, 3)))
    hit = store.get("m", req())
    assert hit == Completion("hi", Usage(7, 3), "stop", cached=True)
    assert store.get("other-model", req()) is None
    assert store.get("m", req("something else")) is None


def test_cached_backend_calls_the_backend_once(tmp_path: Path) -> None:
    backend = CountingBackend()
    cached = CachedBackend(backend, CacheStore(tmp_path))
    assert cached.name == "counting"
    first = cached.complete(req())
    second = cached.complete(req())
    assert len(backend.calls) == 1
    assert (first.cached, second.cached) == (False, True)
    assert (first.text, first.usage) == (second.text, second.usage) == ("echo hello", Usage(10, 2))
    ((key, model, _value),) = rows(tmp_path)
    assert (key, model) == (request_key("counting", req()), "counting")


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(req("goodbye"), id="input"),
        pytest.param(req(rollout=1), id="rollout"),
        pytest.param(req(temperature=0.5), id="temperature"),
        pytest.param(req(max_tokens=512), id="max_tokens"),
        pytest.param(req(json_schema='{"type":"object"}'), id="schema"),
    ],
)
def test_cached_backend_misses_on_a_different_request(tmp_path: Path, other: Request) -> None:
    backend = CountingBackend()
    cached = CachedBackend(backend, CacheStore(tmp_path))
    cached.complete(req())
    miss = cached.complete(other)
    assert not miss.cached
    assert backend.calls == [req(), other]
    assert cached.complete(other).cached
    assert len(backend.calls) == 2
    assert len(rows(tmp_path)) == 2


def test_two_backends_with_different_names_do_not_share_replies(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    a, b = CountingBackend("a"), CountingBackend("b")
    CachedBackend(a, store).complete(req())
    assert not CachedBackend(b, store).complete(req()).cached
    assert (len(a.calls), len(b.calls)) == (1, 1)


def test_a_backend_error_is_raised_and_nothing_is_cached(tmp_path: Path) -> None:
    cached = CachedBackend(FailingBackend(), CacheStore(tmp_path))
    with pytest.raises(lmdsl.BackendError, match="too long"):
        cached.complete(req())
    assert rows(tmp_path) == []
    assert cached.store.get("failing", req()) is None


def test_open_store_is_one_store_per_directory(tmp_path: Path) -> None:
    store = open_store(tmp_path / "a")
    assert isinstance(store, CacheStore)
    assert store.directory == tmp_path / "a"
    assert open_store(tmp_path / "a") is store
    assert open_store(tmp_path / "b") is not store


# -- persistence, WAL, the memory layer ----------------------------------------------------------


def test_completions_persist_across_store_instances(tmp_path: Path) -> None:
    completion = Completion('{"x": "café ☕"}', Usage(12, 5), "length")
    CacheStore(tmp_path).put("counting", req(), completion)

    fresh = CacheStore(tmp_path)  # what a new process starts with
    assert len(fresh._memory) == 0
    hit = fresh.get("counting", req())
    assert hit is not None
    assert (hit.text, hit.usage, hit.finish_reason, hit.cached) == ('{"x": "café ☕"}', Usage(12, 5), "length", True)

    backend = CountingBackend()
    served = CachedBackend(backend, CacheStore(tmp_path)).complete(req())
    assert served.cached and served.text == completion.text and backend.calls == []


def test_the_cache_file_is_in_wal_mode(tmp_path: Path) -> None:
    CacheStore(tmp_path).put("m", req(), Completion("x"))
    connection = sqlite3.connect(tmp_path / CACHE_FILE)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        connection.close()


def test_the_memory_layer_is_a_bounded_lru(tmp_path: Path) -> None:
    store = CacheStore(tmp_path, memory_size=2)
    store.put("m", req("a"), Completion("A"))
    store.put("m", req("b"), Completion("B"))
    assert store.get("m", req("a")) is not None  # a is now the most recently used
    store.put("m", req("c"), Completion("C"))  # evicts b, the least recently used
    assert len(store._memory) == 2

    connection = sqlite3.connect(tmp_path / CACHE_FILE)
    connection.execute("DELETE FROM entries")
    connection.commit()
    connection.close()

    # With the disk layer emptied, only what the memory layer kept can still hit.
    hit_a, hit_b, hit_c = (store.get("m", req(t)) for t in "abc")
    assert hit_a is not None and hit_a.text == "A" and hit_a.cached
    assert hit_c is not None and hit_c.text == "C" and hit_c.cached
    assert hit_b is None

    for i in range(50):
        store.put("m", req(f"n{i}"), Completion(str(i)))
    assert len(store._memory) == 2


def test_clear_memory_falls_back_to_disk(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    store.put("m", req(), Completion("x"))
    store.clear_memory()
    assert len(store._memory) == 0
    hit = store.get("m", req())
    assert hit is not None and hit.text == "x" and hit.cached
    assert len(store._memory) == 1  # a disk hit is remembered


# -- concurrency ---------------------------------------------------------------------------------------


def _write_entries(directory: str, tag: str, count: int, barrier: Any) -> None:
    """A worker process: open the shared cache at the same moment as its peer and write `count` entries."""
    warnings.simplefilter("error", lmdsl.CacheWarning)  # a warning in the worker is a crash (nonzero exit)
    barrier.wait(timeout=60)
    store = CacheStore(Path(directory))
    for i in range(count):
        store.put(f"model-{tag}", req(f"{tag}-{i}"), Completion(f"reply {tag}-{i}", Usage(i, 1)))


def test_two_processes_write_to_one_cache_at_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_write_entries, args=(str(tmp_path), tag, 200, barrier)) for tag in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]

    assert corrupt_files(tmp_path) == []
    assert len(rows(tmp_path)) == 400
    fresh = CacheStore(tmp_path)
    for tag in ("a", "b"):
        for i in range(200):
            hit = fresh.get(f"model-{tag}", req(f"{tag}-{i}"))
            assert hit is not None, f"{tag}-{i} was lost"
            assert (hit.text, hit.usage, hit.cached) == (f"reply {tag}-{i}", Usage(i, 1), True)


def test_a_file_locked_by_another_writer_is_waited_for_not_set_aside(tmp_path: Path) -> None:
    """A writer holding the (not yet WAL) file makes `journal_mode=WAL` fail at once with
    "database is locked"; that is contention, not corruption, and must not cost the file."""
    holder = sqlite3.connect(tmp_path / CACHE_FILE, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (a)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        store = CacheStore(tmp_path)
        store.put("m", req(), Completion("x"))
    finally:
        release.join()
        holder.close()
    assert corrupt_files(tmp_path) == []
    hit = CacheStore(tmp_path).get("m", req())
    assert hit is not None and hit.text == "x"
    connection = sqlite3.connect(tmp_path / CACHE_FILE)
    assert connection.execute("SELECT a FROM other").fetchall() == [(1,)]  # the other writer's data survived
    connection.close()


def test_many_threads_share_one_store(tmp_path: Path) -> None:
    store = CacheStore(tmp_path, memory_size=64)
    backend = CountingBackend()
    cached = CachedBackend(backend, store)

    def work(thread: int) -> list[str]:
        texts = []
        for i in range(50):
            own = req(f"t{thread}-{i}")
            store.put("direct", own, Completion(f"direct {thread}-{i}"))
            hit = store.get("direct", own)
            assert hit is not None and hit.text == f"direct {thread}-{i}"
            texts.append(cached.complete(req(f"shared-{i % 10}")).text)  # every thread asks the same 10
        return texts

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(8)))

    assert all(texts == [f"echo shared-{i % 10}" for i in range(50)] for texts in results)
    assert len({r.messages[0].content for r in backend.calls}) == 10
    assert len(rows(tmp_path)) == 8 * 50 + 10
    fresh = CacheStore(tmp_path)
    assert all(fresh.get("direct", req(f"t{t}-{i}")) is not None for t in range(8) for i in range(50))
    assert corrupt_files(tmp_path) == []


# -- damaged files and unusable directories ---------------------------------------------------------

GARBAGE = b"this is not a SQLite database \x00\xff" * 128


def test_a_corrupt_cache_file_is_set_aside_and_replaced(tmp_path: Path) -> None:
    (tmp_path / CACHE_FILE).write_bytes(GARBAGE)
    backend = CountingBackend()
    cached = CachedBackend(backend, CacheStore(tmp_path))
    with pytest.warns(lmdsl.CacheWarning, match="corrupt") as caught:
        first = cached.complete(req())
    assert first.text == "echo hello" and not first.cached
    assert len(caught) == 1
    (aside,) = corrupt_files(tmp_path)
    assert aside.read_bytes() == GARBAGE  # kept for inspection
    assert str(aside) in str(caught[0].message)

    assert cached.complete(req()).cached
    assert CacheStore(tmp_path).get("counting", req()) is not None  # the new file works and persists
    assert len(backend.calls) == 1


def test_a_corrupt_cache_file_never_breaks_a_fuzzy_call(tmp_path: Path) -> None:
    (tmp_path / CACHE_FILE).write_bytes(GARBAGE)
    model = classify_model()
    with lmdsl.using(model=model, cache=True, cache_dir=tmp_path):
        with pytest.warns(lmdsl.CacheWarning, match="corrupt"):
            assert classify("a good film") == "positive"
        assert classify("a good film") == "positive"
    assert len(model.requests) == 1
    assert len(corrupt_files(tmp_path)) == 1
    assert len(rows(tmp_path)) == 1


UNREADABLE_VALUES = [
    "not json {",
    "null",
    "[]",
    '"just a string"',
    '{"text": "x"}',
    '{"text": "x", "usage": [1], "finish_reason": "stop"}',
    '{"text": "x", "usage": ["a", "b"], "finish_reason": "stop"}',
    '{"text": "x", "usage": [1, 2]}',
    '{"text": "x", "usage": [1, 2], "finish_reason": "maybe"}',
    '{"text": "x", "usage": [true, 2], "finish_reason": "stop"}',
    '{"text": "x", "usage": [-1, 2], "finish_reason": "stop"}',
    '{"text": 5, "usage": [1, 2], "finish_reason": "stop"}',
]


def rewrite_row(directory: Path, value: str, *, resign: bool) -> None:
    """Replace the value of every row; with `resign`, also store the matching digest (a forged row)."""
    connection = sqlite3.connect(directory / CACHE_FILE)
    connection.text_factory = bytes
    for key, model in list(connection.execute("SELECT key, model FROM entries")):
        digest = row_digest(key, model, value.encode()) if resign else b"0" * 64
        connection.execute(
            "UPDATE entries SET value = ?, digest = ? WHERE key = ?", (value, digest.decode(), key.decode())
        )
    connection.commit()
    connection.close()


@pytest.mark.parametrize("resign", [False, True], ids=["digest-mismatch", "forged-digest"])
@pytest.mark.parametrize("value", UNREADABLE_VALUES)
def test_an_unreadable_row_is_a_miss_and_is_overwritten(tmp_path: Path, value: str, resign: bool) -> None:
    CacheStore(tmp_path).put("counting", req(), Completion("original"))
    rewrite_row(tmp_path, value, resign=resign)

    backend = CountingBackend()
    cached = CachedBackend(backend, CacheStore(tmp_path))
    with pytest.warns(lmdsl.CacheWarning, match="failed its check.*miss"):
        miss = cached.complete(req())
    assert not miss.cached and miss.text == "echo hello"
    assert len(backend.calls) == 1
    assert corrupt_files(tmp_path) == []  # a bad row is not a bad file

    hit = CacheStore(tmp_path).get("counting", req())
    assert hit is not None and hit.text == "echo hello"


def test_an_unusable_cache_directory_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    store = CacheStore(blocker / "cache")
    backend = CountingBackend()
    cached = CachedBackend(backend, store)
    with pytest.warns(lmdsl.CacheWarning, match="not usable.*memory only"):
        first = cached.complete(req())
    assert not first.cached
    second = cached.complete(req())  # no second warning: the disk layer stays off
    assert second.cached and second.text == first.text
    assert len(backend.calls) == 1
    assert blocker.read_text() == "not a directory"


def test_an_unusable_cache_directory_does_not_break_fuzzy_calls(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    model = classify_model()
    with lmdsl.using(model=model, cache=True, cache_dir=blocker / "cache"):
        with pytest.warns(lmdsl.CacheWarning, match="memory only"):
            assert classify("a bad film") == "negative"
        assert classify("a bad film") == "negative"
    assert len(model.requests) == 1
    assert lmdsl.history()[-1].cached


# -- caching through fuzzy functions --------------------------------------------------------------


def test_a_fuzzy_call_is_cached_the_second_time(tmp_path: Path) -> None:
    model = classify_model()
    before = classify.usage
    with lmdsl.using(model=model, cache=True, cache_dir=tmp_path):
        assert classify("a good film") == "positive"
        assert classify("a good film") == "positive"
    assert len(model.requests) == 1

    first, second = lmdsl.history(2)
    assert not first.cached and [a.cached for a in first.attempts] == [False]
    assert second.cached and [a.cached for a in second.attempts] == [True]
    assert second.usage == lmdsl.Usage()  # a cached reply costs nothing
    assert first.usage.output_tokens > 0

    after = classify.usage
    assert after.calls - before.calls == 2
    assert after.cached_calls - before.cached_calls == 1
    assert after.lm_calls - before.lm_calls == 1

    ((_key, model_name, _value),) = rows(tmp_path)
    assert model_name == "scripted"


def test_a_fuzzy_call_hits_the_cache_of_an_earlier_process(tmp_path: Path) -> None:
    with lmdsl.using(model=classify_model(), cache=True, cache_dir=tmp_path):
        classify("a good film")
    open_store(tmp_path).clear_memory()  # as if the process had restarted
    model = classify_model()
    with lmdsl.using(model=model, cache=True, cache_dir=tmp_path):
        assert classify("a good film") == "positive"
    assert model.requests == []
    assert lmdsl.history()[-1].cached


def test_a_fuzzy_call_with_different_input_or_temperature_misses(tmp_path: Path) -> None:
    model = classify_model()
    with lmdsl.using(model=model, cache=True, cache_dir=tmp_path):
        classify("a good film")
        assert classify("a bad film") == "negative"
        assert not lmdsl.history()[-1].cached
    with lmdsl.using(model=model, cache=True, cache_dir=tmp_path, temperature=0.5):
        classify("a good film")
        assert not lmdsl.history()[-1].cached
        classify("a good film")
        assert lmdsl.history()[-1].cached
    assert [r.temperature for r in model.requests] == [0.0, 0.0, 0.5]
    assert len(rows(tmp_path)) == 3


def test_each_rollout_is_cached_separately(tmp_path: Path) -> None:
    model = classify_model(key="classify_twice")
    with lmdsl.using(model=model, cache=True, cache_dir=tmp_path):
        assert classify_twice("a good film") == "positive"
        assert [r.rollout for r in model.requests] == [0, 1]
        assert [a.cached for a in lmdsl.history()[-1].attempts] == [False, False]
        assert classify_twice("a good film") == "positive"
    assert len(model.requests) == 2
    assert [a.cached for a in lmdsl.history()[-1].attempts] == [True, True]
    assert len(rows(tmp_path)) == 2


def test_scripted_models_are_not_cached_unless_cacheable(tmp_path: Path) -> None:
    model = classify_model(cacheable=False)
    with lmdsl.using(model=model, cache=True, cache_dir=tmp_path):
        assert not isinstance(lmdsl.settings().backend(model), CachedBackend)
        classify("a good film")
        classify("a good film")
    assert len(model.requests) == 2
    assert not any(record.cached for record in lmdsl.history(2))
    assert rows(tmp_path) == []

    cacheable = classify_model(cacheable=True)
    with lmdsl.using(model=cacheable, cache=True, cache_dir=tmp_path):
        assert isinstance(lmdsl.settings().backend(cacheable), CachedBackend)


def test_cache_false_never_writes(tmp_path: Path) -> None:
    model = classify_model()
    with lmdsl.using(model=model, cache=False, cache_dir=tmp_path):
        assert not isinstance(lmdsl.settings().backend(model), CachedBackend)
        classify("a good film")
        classify("a good film")
    assert len(model.requests) == 2
    assert not any(record.cached for record in lmdsl.history(2))
    assert rows(tmp_path) == []


def test_cache_false_never_reads(tmp_path: Path) -> None:
    model = classify_model()
    with lmdsl.using(model=model, cache=True, cache_dir=tmp_path):
        classify("a good film")
    (stored,) = rows(tmp_path)
    with lmdsl.using(model=model, cache=False, cache_dir=tmp_path):
        classify("a good film")
    assert len(model.requests) == 2
    assert not lmdsl.history()[-1].cached
    assert rows(tmp_path) == [stored]


# -- where the cache lives -----------------------------------------------------------------------------


def test_lmdsl_cache_dir_is_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LMDSL_CACHE_DIR", str(tmp_path / "from-env"))
    assert default_cache_dir() == tmp_path / "from-env"

    model = classify_model()
    with lmdsl.using(model=model, cache=True, cache_dir=None):
        classify("a good film")
        classify("a good film")
    assert len(model.requests) == 1
    assert len(rows(tmp_path / "from-env")) == 1


def test_lmdsl_cache_dir_expands_the_home_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LMDSL_CACHE_DIR", "~/lmdsl-cache")
    assert default_cache_dir() == tmp_path / "lmdsl-cache"


def test_without_lmdsl_cache_dir_the_user_cache_directory_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from platformdirs import user_cache_dir

    monkeypatch.delenv("LMDSL_CACHE_DIR", raising=False)
    assert default_cache_dir() == Path(user_cache_dir("lmdsl"))
    monkeypatch.setenv("LMDSL_CACHE_DIR", "")  # empty means unset
    assert default_cache_dir() == Path(user_cache_dir("lmdsl"))


def test_stores_do_not_leak_between_directories(tmp_path: Path) -> None:
    CacheStore(tmp_path / "one").put("m", req(), Completion("x"))
    assert CacheStore(tmp_path / "two").get("m", req()) is None


def test_a_file_that_goes_bad_while_open_is_replaced(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    for i in range(20):
        store.put("m", req(str(i)), Completion("x" * 500))
    store.clear_memory()
    connection = sqlite3.connect(tmp_path / CACHE_FILE)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    (tmp_path / CACHE_FILE).write_bytes(GARBAGE)

    with pytest.warns(lmdsl.CacheWarning, match="corrupt"):
        assert store.get("m", req("0")) is None
    assert len(corrupt_files(tmp_path)) == 1
    store.put("m", req("new"), Completion("n"))
    hit = CacheStore(tmp_path).get("m", req("new"))
    assert hit is not None and hit.text == "n"
