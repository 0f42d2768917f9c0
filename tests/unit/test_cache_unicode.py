"""Any text, lone surrogates included, in requests and replies: keyed, stored and read back exactly."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmdsl.cache import CachedBackend, CacheStore, request_key
from lmdsl.lm.types import Completion, Message, Request, Usage
from tests.unit.test_cache import CountingBackend, req, rows

pytestmark = pytest.mark.filterwarnings("error::lmdsl.CacheWarning")

SURROGATES = ["\ud800", "\udfff", "\udc80", "\ud83d", "\ude00", "x\ud800y", "\udcff\udcfe"]

# Any code point, with lone surrogates (category Cs, which hypothesis leaves out by default) made common.
TEXT = st.text(st.one_of(st.characters(exclude_categories=()), st.characters(categories=["Cs"])), max_size=40)


def persisted(directory: Path, model: str, request: Request) -> Completion | None:
    """What a new process reads from the file (the memory layer of the writer is not involved)."""
    store = CacheStore(directory)
    try:
        return store.get(model, request)
    finally:
        store.close()


@pytest.mark.parametrize("text", SURROGATES)
def test_a_reply_with_a_lone_surrogate_is_stored_and_read_back_exactly(tmp_path: Path, text: str) -> None:
    completion = Completion(f"reply {text}", Usage(3, 4), "length")
    store = CacheStore(tmp_path)
    store.put("m", req(), completion)
    store.close()
    assert persisted(tmp_path, "m", req()) == Completion(completion.text, Usage(3, 4), "length", cached=True)


@pytest.mark.parametrize("text", SURROGATES)
@pytest.mark.parametrize("where", ["message", "system", "schema", "model"])
def test_a_lone_surrogate_anywhere_in_a_request_is_keyed(tmp_path: Path, text: str, where: str) -> None:
    model = f"model {text}" if where == "model" else "m"
    request = Request(
        messages=(
            Message("system", text if where == "system" else "Classify."),
            Message("user", text if where == "message" else "hi"),
        ),
        json_schema=json.dumps({"const": text}) if where == "schema" else None,
    )
    backend = CountingBackend(model)
    cached = CachedBackend(backend, CacheStore(tmp_path))
    first = cached.complete(request)
    assert cached.complete(request).cached and len(backend.calls) == 1
    cached.store.close()
    hit = persisted(tmp_path, model, request)
    assert hit is not None and hit.text == first.text
    ((_key, stored_model, _value),) = rows(tmp_path)
    assert stored_model == model.encode("utf-8", "backslashreplace").decode()  # readable, never an error


def test_different_surrogates_give_different_keys() -> None:
    keys = {request_key("m", req(text)) for text in SURROGATES}
    keys |= {request_key(f"m{text}", req()) for text in SURROGATES}
    assert len(keys) == 2 * len(SURROGATES)
    # a surrogate pair is not the character it would encode in UTF-16
    assert request_key("m", req("\ud83d\ude00")) != request_key("m", req("\U0001f600"))


@pytest.mark.parametrize("text", ["hello", "café ☕", "日本語", "\U0001f600", "tab\tnew\nline\x00"])
def test_keys_of_ordinary_text_did_not_change(text: str) -> None:
    """The key is the one the first format computed, so a text without surrogates keys as before."""
    request = Request((Message("user", text),), '{"type":"object"}', 64, 0.5, 2)
    canonical = json.dumps(
        ["m", [["user", text]], '{"type":"object"}', 64, 0.5, 2], ensure_ascii=False, separators=(",", ":")
    )
    assert request_key("m", request) == hashlib.sha256(canonical.encode()).hexdigest()


@settings(max_examples=150, deadline=None)
@given(model=TEXT, system=TEXT, user=TEXT, schema=st.none() | TEXT, reply=TEXT, tokens=st.integers(0, 2**40))
def test_any_text_round_trips_through_the_file(
    model: str, system: str, user: str, schema: str | None, reply: str, tokens: int
) -> None:
    request = Request((Message("system", system), Message("user", user)), schema)
    completion = Completion(reply, Usage(tokens, 1), "stop")
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        store = CacheStore(directory)
        store.put(model, request, completion)
        store.close()
        assert persisted(directory, model, request) == Completion(reply, Usage(tokens, 1), "stop", cached=True)
        other = Request((Message("system", system), Message("user", user + "\ud800")), schema)
        assert persisted(directory, model, other) is None


@settings(max_examples=300, deadline=None)
@given(a=TEXT, b=TEXT)
def test_different_texts_give_different_keys(a: str, b: str) -> None:
    assert (request_key("m", req(a)) == request_key("m", req(b))) == (a == b)
