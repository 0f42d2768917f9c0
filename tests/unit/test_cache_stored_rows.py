"""What exactly the cache file holds and how a request is keyed: the row's five columns, the request
key and row digest as literal SHA-256s, the stored JSON, and which stored values read back."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

import lmdsl
import lmdsl.cache
from lmdsl.cache import CACHE_FILE, CachedBackend, CacheStore, decode_completion, request_key, row_digest
from lmdsl.lm.types import Completion, Message, Request, Usage
from tests.unit.test_cache import req
from tests.unit.test_cache_fault_reports import FrozenClock, W, cache_log, caught, texts

pytestmark = pytest.mark.filterwarnings("error::lmdsl.CacheWarning")

KEY_OF_HELLO = "edff6dcf78e63760cb9453bc3983a55e0a6237af40df5a15e56f41a3dc42436d"  # "m", [["user", "hello"]], defaults


def all_rows(directory: Path) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(directory / CACHE_FILE)
    try:
        return list(
            connection.execute(
                "SELECT key, model, value, digest, created, typeof(key), typeof(model), typeof(value), typeof(digest) "
                "FROM entries ORDER BY key"
            )
        )
    finally:
        connection.close()


# -- a row -------------------------------------------------------------------------------------------------


def test_a_stored_reply_is_one_row_of_key_model_json_digest_and_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lmdsl.cache, "time", FrozenClock)
    store = CacheStore(tmp_path)
    store.put("m", Request((Message("user", "hello"),)), Completion("hi", Usage(7, 3), "length"))
    store.close()
    assert all_rows(tmp_path) == [
        (
            KEY_OF_HELLO,
            "m",
            '{"text":"hi","usage":[7,3],"finish_reason":"length"}',
            "e4c43b8009825ed9ad8ba6844f0fdf54cb03382636c99eff7ea57e352a9e80aa",
            1_700_000_000.0,
            "text",
            "text",
            "text",
            "text",
        )
    ]


def test_a_model_name_that_is_not_utf8_is_stored_escaped_and_signed_as_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lmdsl.cache, "time", FrozenClock)
    store = CacheStore(tmp_path)
    store.put("m\ud800", Request((Message("user", "hello"),)), Completion("hi", Usage(7, 3), "length"))
    store.close()
    assert all_rows(tmp_path) == [
        (
            "53debb604e6c8860f670045ca7806e478d6040aabdc9e6282abda843d70ee3f8",
            "m\\ud800",
            '{"text":"hi","usage":[7,3],"finish_reason":"length"}',
            "886aba982e46639775c9a790fbb227df0f222ba79e2d0acb6b753e9e31f6202b",
            1_700_000_000.0,
            "text",
            "text",
            "text",
            "text",
        )
    ]
    hit = CacheStore(tmp_path).get("m\ud800", Request((Message("user", "hello"),)))
    assert hit == Completion("hi", Usage(7, 3), "length", cached=True)


def test_reply_text_is_stored_as_ascii_json_with_escapes(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    store.put("m", req("hello"), Completion('café "☕"\n\ud800', Usage(0, 0), "stop"))
    store.close()
    ((_key, _model, value, *_rest),) = all_rows(tmp_path)
    assert value == '{"text":"caf\\u00e9 \\"\\u2615\\"\\n\\ud800","usage":[0,0],"finish_reason":"stop"}'
    hit = CacheStore(tmp_path).get("m", req("hello"))
    assert hit == Completion('café "☕"\n\ud800', Usage(0, 0), "stop", cached=True)


def test_the_row_digest_is_sha256_of_key_value_and_model_joined_by_nul() -> None:
    assert row_digest(b"k", b"m", b"v") == b"2e56d653c76a8cc7ba6b092b3315689d9a75b315e864186d75c5f94c61b3e481"


# -- keys --------------------------------------------------------------------------------------------------


def test_request_keys_are_sha256_of_the_canonical_request() -> None:
    full = Request((Message("system", "S"), Message("user", "U")), '{"type":"object"}', 64, 0.5, 2, prefix_length=1)
    assert request_key("gpt", full) == "61af386d3f25b3a1a2b0ce4d2b7542fafaa3efcd0ebf326035f6a6f5e460cee8"
    assert request_key("m", Request((Message("user", "hello"),))) == KEY_OF_HELLO
    # an integer temperature is keyed as the float it is
    one = Request((Message("user", "hello"),), temperature=1)
    assert request_key("m", one) == "e090f992c0c2939a7145c4ebe99ee25d172e6d82e071649a01d829eac1b43b5d"
    # a lone surrogate is keyed by its surrogatepass bytes (ED A0 80)
    lone = Request((Message("user", "\ud800"),))
    assert request_key("m", lone) == "348f704cecb45085043cb0e100b91dc86c9be7b28ef2c4ebc91e8d99127e56e1"


# -- what reads back ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            b'{"text":"t","usage":[0,0],"finish_reason":"length"}',
            Completion("t", Usage(0, 0), "length", cached=True),
            id="zero-tokens",
        ),
        pytest.param(
            b'{"finish_reason":"stop","usage":[5,6],"text":"","extra":1}',
            Completion("", Usage(5, 6), "stop", cached=True),
            id="any-order-extra-key",
        ),
        pytest.param(b'{"text":"t","usage":[1,2],"finish_reason":"STOP"}', None, id="finish-case"),
        pytest.param(b'{"text":"t","usage":[1,2],"finish_reason":null}', None, id="no-finish"),
        pytest.param(b'{"text":null,"usage":[1,2],"finish_reason":"stop"}', None, id="no-text"),
        pytest.param(b'{"text":"t","usage":[1,false],"finish_reason":"stop"}', None, id="bool-tokens"),
        pytest.param(b'{"text":"t","usage":[1.0,2],"finish_reason":"stop"}', None, id="float-tokens"),
        pytest.param(b'{"text":"t","usage":[1,-2],"finish_reason":"length"}', None, id="negative-output"),
        pytest.param(b'{"text":"t","usage":[1,2,3],"finish_reason":"stop"}', None, id="three-counts"),
        pytest.param(b'{"text":"t","usage":null,"finish_reason":"stop"}', None, id="null-usage"),
        pytest.param(b'{"Text":"t","usage":[1,2],"finish_reason":"stop"}', None, id="key-case"),
        pytest.param(b"[" * 100_000, None, id="deep"),
        pytest.param(b"\xff", None, id="not-utf8"),
    ],
)
def test_only_what_the_cache_writes_decodes(value: bytes, expected: Completion | None) -> None:
    assert decode_completion(value) == expected


def test_a_row_that_fails_its_check_is_logged_and_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CacheStore(tmp_path)
    store.put("m", req("hello"), Completion("hi"))
    store.put("m", req("other"), Completion("there"))
    store.close()
    connection = sqlite3.connect(tmp_path / CACHE_FILE)
    connection.execute("UPDATE entries SET value = replace(value, 'hi', 'ho')")
    connection.execute("UPDATE entries SET digest = '0' WHERE key != ?", (KEY_OF_HELLO,))
    connection.commit()
    connection.close()

    caplog.set_level(logging.WARNING)
    backend_store = CacheStore(tmp_path)
    with caught() as records:
        assert backend_store.get("m", req("hello")) is None
        assert backend_store.get("m", req("other")) is None
    message = (
        f"a row of the cache file {tmp_path / CACHE_FILE} failed its check (damaged or altered); "
        "treated it as a miss, and it is replaced when the reply is stored again"
    )
    assert texts(records) == [(lmdsl.CacheWarning, message)]
    assert cache_log(caplog) == [
        ("lmdsl.cache", W, f"cache row {KEY_OF_HELLO} failed its check; treated as a miss"),
        (
            "lmdsl.cache",
            W,
            "cache row d03a1ddbbf79bf7fdb1797c9b5faa119e517d98c5ac30beb1d9164dee441dd3c failed its check; treated as a miss",
        ),
    ]


# -- the memory layer in front -----------------------------------------------------------------------------


def test_a_reply_is_served_from_memory_after_the_file_lost_it_and_marked_cached(tmp_path: Path) -> None:
    store = CacheStore(tmp_path, memory_size=2)
    fresh = Completion("a", Usage(1, 1))
    store.put("m", req("a"), fresh)
    assert fresh.cached is False  # the caller's completion is not changed
    store.put("m", req("b"), Completion("b", Usage(1, 1), cached=True))
    assert store.get("m", req("a")) == Completion("a", Usage(1, 1), cached=True)  # now the most recent
    store.put("m", req("c"), Completion("c", Usage(1, 1)))  # evicts "b"
    store.close()
    (tmp_path / CACHE_FILE).unlink()
    store_dir_files = sorted(p.name for p in tmp_path.iterdir())
    assert store_dir_files == []
    with caught() as records:
        assert store.get("m", req("a")) == Completion("a", Usage(1, 1), cached=True)
        assert store.get("m", req("c")) == Completion("c", Usage(1, 1), cached=True)
        assert store.get("m", req("b")) is None
    assert records == []


def test_a_cached_backend_stores_under_its_own_name_and_serves_without_calling(tmp_path: Path) -> None:
    model = lmdsl.ScriptedModel([{"answer": "first"}], cacheable=True)
    cached = CachedBackend(model, CacheStore(tmp_path))
    request = req("question")
    first = cached.complete(request)
    assert first.text == '{"answer": "first"}' and not first.cached
    again = cached.complete(request)
    assert again == Completion(first.text, first.usage, first.finish_reason, cached=True)
    assert len(model.requests) == 1
    cached.store.close()
    ((_key, stored_model, *_rest),) = all_rows(tmp_path)
    assert stored_model == "scripted"


def test_a_reply_read_from_the_file_is_remembered_in_memory(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    store.put("m", req("a"), Completion("a", Usage(1, 2), "length"))
    store.clear_memory()
    assert store.get("m", req("a")) == Completion("a", Usage(1, 2), "length", cached=True)  # from the file
    store.close()
    (tmp_path / CACHE_FILE).unlink()
    with caught() as records:
        assert store.get("m", req("a")) == Completion("a", Usage(1, 2), "length", cached=True)  # from memory
        assert store.get("other-model", req("a")) is None
    assert records == []


def test_the_memory_layer_holds_8192_replies_by_default(tmp_path: Path) -> None:
    """With the file out of the way (its directory is a file), only the memory layer answers."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    store = CacheStore(blocker / "cache")
    with caught() as records:
        for i in range(8193):
            store.put("m", req(str(i)), Completion(str(i)))
    assert len(records) == 1 and "caching in memory only" in str(records[0].message)
    assert store.get("m", req("0")) is None  # the oldest of 8193 went
    assert store.get("m", req("1")) == Completion("1", cached=True)
    assert store.get("m", req("8192")) == Completion("8192", cached=True)
