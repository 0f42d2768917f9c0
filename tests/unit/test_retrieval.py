"""Retrievers (`lmdsl.retrieval`): BM25 built over a corpus the tests write, saved and loaded
(damaged, hostile and non-regular files refused with typed errors); the ColBERTv2 client
against a search server on 127.0.0.1 (ranking, `k`, error statuses, retries, garbage and
oversized bodies, the cache); retrievals in a program's trace."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmdsl
from lmdsl.calls.records import CallObserver, observing
from lmdsl.errors import (
    ConfigurationError,
    IndexFileError,
    InputError,
    ProviderError,
    ProviderRequestError,
    ProviderResponseError,
    RetrievalError,
)
from lmdsl.lm.hosted import RetryPolicy
from lmdsl.retrieval import BM25, ColBERTv2, Passage, Retriever, read_corpus
from lmdsl.retrieval.bm25 import tokenize

CORPUS = [
    {"title": "Ed Wood", "text": "Edward Davis Wood Jr. was an American filmmaker, actor and author."},
    {"title": "Scott Derrickson", "text": "Scott Derrickson is an American director, screenwriter and producer."},
    {
        "title": "Kiss and Tell",
        "text": "Kiss and Tell is a 1945 comedy film starring Shirley Temple as Corliss Archer.",
    },
    {"title": "Shirley Temple", "text": "Shirley Temple Black was an actress who later served as Chief of Protocol."},
    {"title": "Animorphs", "text": "Animorphs is a science fantasy series of young adult books told in first person."},
]


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in CORPUS) + "\n\n", encoding="utf-8")
    return path


# -- BM25 ---------------------------------------------------------------------------------
def test_bm25_ranks_the_passage_that_shares_the_rare_words_first(corpus_file: Path) -> None:
    bm25 = BM25(corpus_file, k=2)
    found = bm25("Which position did Shirley Temple hold, Chief of Protocol?")
    assert [p.title for p in found] == ["Shirley Temple", "Kiss and Tell"]
    assert found[0].score > found[1].score > 0
    assert found[0].pid == 3 and found[0].text == CORPUS[3]["text"]
    assert [p.title for p in bm25("Animorphs books", k=1)] == ["Animorphs"]


def test_bm25_returns_fewer_than_k_when_fewer_passages_share_a_word() -> None:
    bm25 = BM25(["red apples grow on trees", "blue whales swim in oceans", "green grass"])
    assert [p.text for p in bm25("whales", k=3)] == ["blue whales swim in oceans"]
    assert bm25("the of and", k=3) == []  # stopwords only
    assert bm25("zebra", k=3) == []


def test_bm25_takes_strings_passages_and_mappings_and_checks_its_arguments() -> None:
    bm25 = BM25(["alpha beta", Passage("gamma delta", title="G", pid=40), {"text": "epsilon", "id": 7}])
    assert {(p.pid, p.title) for p in bm25("gamma epsilon alpha", k=3)} == {(0, None), (40, "G"), (7, None)}
    with pytest.raises(InputError, match="k is the number of passages"):
        bm25("alpha", k=0)
    with pytest.raises(InputError, match="query is text"):
        bm25(42, k=1)  # type: ignore[arg-type]
    with pytest.raises(RetrievalError, match="at least one passage"):
        BM25([])
    with pytest.raises(RetrievalError, match="passage 1: a passage is a string"):
        BM25(["fine", 3.5])


def test_bm25_is_a_retriever_and_so_is_a_plain_function() -> None:
    def constant(query: str, k: int = 2) -> list[Passage]:
        return [Passage(query, 1.0)][:k]

    retrievers: list[Retriever] = [BM25(["one two"]), constant]
    assert [len(r("two")) for r in retrievers] == [1, 1]


def test_bm25_saves_and_loads_the_same_index(corpus_file: Path, tmp_path: Path) -> None:
    bm25 = BM25(corpus_file, k=3)
    path = bm25.save(tmp_path / "index" / "bm25.json")
    loaded = BM25.load(path)
    for query in ("American director", "science fantasy books", "comedy film 1945 Shirley"):
        assert loaded(query) == bm25(query)
    assert loaded.name == bm25.name and loaded.k == 3 and len(loaded) == len(CORPUS)


def test_a_corpus_line_that_is_not_utf8_or_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'"fine"\n"caf\xe9"\n')
    with pytest.raises(RetrievalError, match=r"line 2 is not UTF-8 text"):
        BM25(path)
    path.write_bytes(b'"fine"\n{"text": \n')
    with pytest.raises(RetrievalError, match=r"line 2 is not a JSON value"):
        read_corpus(path)
    path.write_bytes(b'{"title": "no text"}\n')
    with pytest.raises(RetrievalError, match=r"line 1: a passage needs a 'text' string"):
        read_corpus(path)


def test_an_index_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IndexFileError, match="cannot be loaded: it is a directory"):
        BM25.load(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(IndexFileError, match="FIFO"):
        BM25.load(fifo)  # refused at once, never blocks waiting for a writer
    with pytest.raises(IndexFileError, match="cannot read it"):
        BM25.load(tmp_path / "missing.json")


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = BM25([row["text"] for row in CORPUS]).save(tmp_path / "bm25.json")
    return path, json.loads(path.read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(indptr=d["indptr"][:-1]), "column pointers do not match"),
        (lambda d: d["indices"].__setitem__(0, 99), "a passage the index does not hold"),
        (lambda d: d["indices"].__setitem__(0, -1), "a passage the index does not hold"),
        (lambda d: d.update(data=d["data"][1:]), "differ in length"),
        (lambda d: d["indptr"].__setitem__(1, 10**6), "go backwards|differ in length"),
        (lambda d: d["data"].__setitem__(0, "1.0"), r"data\.0"),
        (lambda d: d.update(passages=[]), "holds no passages"),
        (lambda d: d.update(vocabulary=d["vocabulary"][:1] * len(d["vocabulary"])), "appears twice"),
        (lambda d: d.update(version=99), "format version 99"),
        (lambda d: d.update(format="pickle"), "not a BM25 index of lmdsl"),
        (lambda d: d.update(code="__import__('os')"), r"code: Extra inputs"),
        (lambda d: d.pop("vocabulary"), r"vocabulary: Field required"),
        (lambda d: d.update(k=0), "out of range"),
    ],
)
def test_a_damaged_index_is_refused_with_what_is_wrong(
    saved: tuple[Path, dict[str, Any]], change: Callable[[dict[str, Any]], None], message: str
) -> None:
    path, document = saved
    change(document)
    path.write_text(json.dumps(document))
    with pytest.raises(IndexFileError, match=message):
        BM25.load(path)


def test_an_index_with_a_nan_score_too_large_or_not_json_is_refused(saved: tuple[Path, dict[str, Any]]) -> None:
    path, document = saved
    path.write_text(json.dumps(document).replace(str(document["data"][0]), "NaN", 1))
    with pytest.raises(IndexFileError, match="damaged"):
        BM25.load(path)
    with pytest.raises(IndexFileError, match="larger than 100 bytes"):
        BM25.load(path, max_bytes=100)
    path.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(IndexFileError, match="not UTF-8"):
        BM25.load(path)
    path.write_text("[" * 100_000)
    with pytest.raises(IndexFileError, match="not JSON|nested"):
        BM25.load(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_as_an_index_load_or_raise_index_file_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.json"
    path.write_bytes(data)
    with pytest.raises(IndexFileError):
        BM25.load(path)


ENGLISH_STOPWORDS = frozenset(importlib.import_module("bm25s.stopwords").STOPWORDS_EN)  # what BM25 drops


@settings(max_examples=25, deadline=None)
@given(
    texts=st.lists(
        st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("ab cd ef"), max_size=40)
        | st.sampled_from(["IF", "the a", "Of, to!"]),  # stopwords only
        min_size=1,
        max_size=6,
    ),
    query=st.text(max_size=30),
)
def test_any_corpus_and_query_give_at_most_k_passages_best_first(texts: list[str], query: str) -> None:
    if not any(tokenize(text, ENGLISH_STOPWORDS) for text in texts):
        with pytest.raises(RetrievalError, match="needs a passage with a word"):
            BM25(texts)
        return
    found = BM25(texts)(query, k=3)
    assert len(found) <= 3
    assert all(p.score > 0 and p.text == texts[p.pid or 0] for p in found)
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)


# -- ColBERTv2 against a local server -----------------------------------------------------
@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class SearchServer:
    """A ColBERTv2-shaped search server on 127.0.0.1: scripted answers first, then `default`."""

    def __init__(self, default: Callable[[str, int], Answer]) -> None:
        self.default = default
        self.script: list[Answer] = []
        self.queries: list[dict[str, list[str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (the standard library's name)
                parameters = parse_qs(urlsplit(self.path).query)
                server.queries.append(parameters)
                answer = (
                    server.script.pop(0)
                    if server.script
                    else server.default(parameters["query"][0], int(parameters["k"][0]))
                )
                self.send_response(answer.status)
                self.send_header("content-length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/api/search"

    def __enter__(self) -> SearchServer:
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


def topk(query: str, k: int) -> Answer:
    """Passages ranked by how many of the query's words they hold, as the server would rank them."""
    words = set(re.findall(r"\w+", query.lower()))
    ranked = sorted(CORPUS, key=lambda row: -len(words & set(re.findall(r"\w+", row["text"].lower()))))
    hits = [
        {
            "text": f"{row['title']} | {row['text']}",
            "pid": CORPUS.index(row),
            "rank": rank + 1,
            "score": 30.0 - rank,
            "prob": 0.1,
        }
        for rank, row in enumerate(ranked[:k])
    ]
    return Answer(body=json.dumps({"query": query, "topk": hits}).encode())


@pytest.fixture
def server() -> Iterator[SearchServer]:
    with SearchServer(topk) as running:
        yield running


def instant(max_retries: int = 2) -> RetryPolicy:
    return RetryPolicy(max_retries=max_retries, sleep=lambda seconds: None)


def test_colbert_returns_the_servers_ranking_and_sends_query_and_k(server: SearchServer) -> None:
    colbert = ColBERTv2(server.url, k=2, retry=instant())
    with lmdsl.using(cache=False):
        found = colbert("American director producer")
        three = colbert("comedy film", k=3)
    assert [p.pid for p in found] == [1, 0]
    assert found[0].text.startswith("Scott Derrickson |") and found[0].score == 30.0
    assert len(three) == 3
    assert server.queries == [
        {"query": ["American director producer"], "k": ["2"]},
        {"query": ["comedy film"], "k": ["3"]},
    ]


def test_colbert_keeps_at_most_k_of_what_the_server_sends(server: SearchServer) -> None:
    server.script.append(topk("film", 5))
    with lmdsl.using(cache=False):
        assert len(ColBERTv2(server.url, retry=instant())("film", k=2)) == 2


def test_colbert_retries_transient_failures_then_succeeds(server: SearchServer) -> None:
    waits: list[float] = []
    policy = RetryPolicy(max_retries=3, initial_delay=0.5, jitter=0.0, sleep=waits.append)
    server.script += [Answer(503, b"busy"), Answer(200, b"<html><title>Bad gateway</title></html>"), Answer(429, b"{}")]
    with lmdsl.using(cache=False):
        found = ColBERTv2(server.url, retry=policy)("Animorphs science fantasy", k=1)
    assert [p.pid for p in found] == [4]
    assert waits == [0.5, 1.0, 2.0] and len(server.queries) == 4


def test_colbert_gives_up_with_typed_errors(server: SearchServer) -> None:
    colbert = ColBERTv2(server.url, retry=instant(max_retries=1))
    server.script += [Answer(500, b'{"error": "index not loaded"}')] * 2
    with (
        lmdsl.using(cache=False),
        pytest.raises(ProviderError, match="index not loaded; gave up after 2 attempt") as error,
    ):
        colbert("anything")
    assert error.value.status == 500 and error.value.attempts == 2
    server.script.append(Answer(404, b"no such route"))
    with (
        lmdsl.using(cache=False),
        pytest.raises(
            ProviderRequestError, match=r"HTTP 404: no such route\); not retried: check the URL \(the search endpoint"
        ) as raised,
    ):
        colbert("anything")
    assert "model" not in str(raised.value)  # a search server has no model name to check
    for body, said in [
        (b"not json at all", "not JSON"),
        (b'{"topk": "none"}', "topk: should be a list"),
        (b'{"topk": [{"pid": 1, "score": 2.0}]}', r"topk\.0\.text: is missing"),
        (b'{"topk": [{"text": "t", "score": NaN}]}', r"topk\.0\.score"),
        (b"", "empty"),
    ]:
        server.script += [Answer(200, body)] * 2
        with lmdsl.using(cache=False), pytest.raises(ProviderResponseError, match=said):
            colbert("anything")


HITS = st.lists(
    st.dictionaries(
        st.sampled_from(["text", "score", "pid", "rank", "long_text"]),
        st.none() | st.integers() | st.floats() | st.text(max_size=5) | st.lists(st.integers(), max_size=2),
    ),
    max_size=3,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=200) | HITS.map(lambda hits: json.dumps({"topk": hits}).encode()))
def test_any_body_gives_checked_passages_or_a_response_error(server: SearchServer, body: bytes) -> None:
    server.script.append(Answer(200, body))
    try:
        with lmdsl.using(cache=False):
            found = ColBERTv2(server.url, retry=instant(max_retries=0))("query", k=2)
    except ProviderResponseError:
        return
    assert len(found) <= 2
    assert all(
        isinstance(p.text, str) and math.isfinite(p.score) and (p.pid is None or type(p.pid) is int) for p in found
    )


def test_colbert_refuses_a_body_past_its_cap(server: SearchServer) -> None:
    big = topk("film", 5)
    server.script += [big, big]
    colbert = ColBERTv2(server.url, retry=instant(max_retries=1), max_body_bytes=len(big.body) - 1)
    with lmdsl.using(cache=False), pytest.raises(ProviderResponseError, match="larger than max_body_bytes"):
        colbert("film", k=5)


def test_colbert_times_out_and_fails_on_a_closed_port() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as silent:  # accepts, never answers
        colbert = ColBERTv2(f"http://127.0.0.1:{silent.server_address[1]}/", timeout=0.2, retry=instant(max_retries=1))
        with lmdsl.using(cache=False), pytest.raises(ProviderError, match="no reply within the timeout of 0.2 s"):
            colbert("anything")
        port = silent.server_address[1]
    with lmdsl.using(cache=False), pytest.raises(ProviderError, match="connection failed"):
        ColBERTv2(f"http://127.0.0.1:{port}/", retry=instant(max_retries=0))("anything")


def test_colbert_checks_its_options() -> None:
    with pytest.raises(ConfigurationError, match="http"):
        ColBERTv2("ftp://example.org/search")
    with pytest.raises(InputError, match="k is the number"):
        ColBERTv2("http://127.0.0.1:1/", k=-1)
    with pytest.raises(ConfigurationError, match="max_body_bytes"):
        ColBERTv2("http://127.0.0.1:1/", max_body_bytes=0)


def test_colbert_answers_are_cached_like_model_calls(server: SearchServer, cache_dir: Path) -> None:
    colbert = ColBERTv2(server.url, retry=instant())
    first = colbert("Shirley Temple protocol", k=2)
    again = ColBERTv2(server.url, retry=instant())("Shirley Temple protocol", k=2)
    assert again == first and len(server.queries) == 1
    colbert("Shirley Temple protocol", k=3)  # another k is another request
    assert len(server.queries) == 2
    with lmdsl.using(cache=False):
        colbert("Shirley Temple protocol", k=2)
    assert len(server.queries) == 3


# -- traces -------------------------------------------------------------------------------
@lmdsl.fuzzy
def next_query(question: str, notes: list[str]) -> str:
    """Write a search query for what the notes do not answer yet."""


def test_a_program_trace_carries_its_retrievals_in_order(server: SearchServer, cache_dir: Path) -> None:
    bm25 = BM25([row["text"] for row in CORPUS])
    colbert = ColBERTv2(server.url, retry=instant())

    @lmdsl.program
    def hops(question: str) -> list[str]:
        notes = [p.text for p in bm25(question, k=1)]
        query = next_query(question=question, notes=notes)
        return notes + [p.text for p in colbert(query, k=2)]

    model = lmdsl.ScriptedModel(['{"next_query": "Shirley Temple protocol"}'])
    with lmdsl.using(model=model):
        result = hops.run(question="Which comedy film starred Shirley Temple?")
    assert [step.function for step in result.trace] == [next_query]
    first, second = result.retrievals
    assert (first.after, second.after) == (0, 1)
    assert first.record.retriever == bm25.name and first.record.query == "Which comedy film starred Shirley Temple?"
    assert first.record.k == 1 and first.record.passages[0].text == CORPUS[2]["text"] and not first.record.cached
    assert second.record.retriever == f"colbertv2:{server.url}" and second.record.query == "Shirley Temple protocol"
    assert [p.pid for p in second.record.passages] == [3, 2] and second.record.seconds > 0
    assert result.output[1:] == [p.text for p in second.record.passages]


def test_a_failed_retrieval_is_traced_with_its_error(server: SearchServer) -> None:
    colbert = ColBERTv2(server.url, retry=instant(max_retries=0))
    server.script.append(Answer(400, b"bad query"))
    seen: list[Any] = []

    class Watch(CallObserver):
        def retrieved(self, record: Any) -> None:
            seen.append(record)

    with lmdsl.using(cache=False), observing(Watch()), pytest.raises(ProviderRequestError):
        colbert("x")
    assert len(seen) == 1 and seen[0].passages == () and "HTTP 400" in seen[0].error
