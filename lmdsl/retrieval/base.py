"""What every retriever shares: the `Passage` it returns, the `Retriever` shape, and the one
path a retrieval takes (checked arguments, the cache, the record a program's trace keeps).

A retriever is any callable `retriever(query, k) -> list[Passage]`: `BM25`, `ColBERTv2`, or
a plain function. The built-in ones go through `retrieve`, so a program run sees each
retrieval (query, passages, time) as it sees each fuzzy call, and a remote one is answered
from the completion cache when the same query was asked before.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from lmdsl.cache import default_cache_dir, open_store
from lmdsl.calls.records import observers
from lmdsl.config import settings
from lmdsl.errors import InputError, RetrievalError
from lmdsl.lm.types import Completion, Message, Request

# What a cached retrieval's request carries instead of a JSON schema: the format of the stored passages.
_CACHE_FORMAT = "lmdsl-retrieval-v1"
MAX_K = 10_000


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved passage: its text, its score under the retriever that found it (higher is
    better), and, where the corpus has them, its title and its id in the corpus."""

    text: str
    score: float = 0.0
    title: str | None = None
    pid: int | None = None

    def __str__(self) -> str:
        return self.text if self.title is None else f"{self.title} | {self.text}"


class Retriever(Protocol):
    """The shape of a retriever: the `k` best passages for `query`, best first (maybe fewer)."""

    def __call__(self, query: str, k: int = ...) -> list[Passage]: ...


@dataclass(frozen=True, slots=True)
class RetrievalRecord:
    """One retrieval in a program run: which retriever, the query and `k`, what came back,
    how long it took, whether the cache answered, and the error if it failed."""

    retriever: str
    query: str
    k: int
    passages: tuple[Passage, ...]
    seconds: float
    cached: bool = False
    error: str | None = None


def check_query(query: object, k: object) -> tuple[str, int]:
    """The arguments of a retrieval, checked: `InputError` saying what to pass instead."""
    if not isinstance(query, str):
        raise InputError(f"a retriever's query is text (str), not {type(query).__name__}", field="query")
    if type(k) is not int or not 1 <= k <= MAX_K:
        raise InputError(f"k is the number of passages to return, a whole number in 1..{MAX_K}, not {k!r}", field="k")
    return query, k


def retrieve(
    name: str, query: str, k: int, search: Callable[[str, int], list[Passage]], *, cacheable: bool
) -> list[Passage]:
    """Run `search(query, k)` as a traced retrieval named `name`: served from the completion
    cache when `cacheable` and caching is on, and told to the observers in force (a program's
    trace) with its time, whether it succeeded or not."""
    started = time.perf_counter()
    store = request = None
    config = settings()
    if cacheable and config.cache:
        store = open_store(config.cache_dir or default_cache_dir())
        request = Request((Message("user", json.dumps([query, k], ensure_ascii=False)),), _CACHE_FORMAT)
        hit = store.get(name, request)
        found = decode_passages(hit.text) if hit is not None else None
        if found is not None:
            _tell(RetrievalRecord(name, query, k, tuple(found), time.perf_counter() - started, cached=True))
            return found
    try:
        passages = search(query, k)
    except Exception as error:
        _tell(
            RetrievalRecord(name, query, k, (), time.perf_counter() - started, error=f"{type(error).__name__}: {error}")
        )
        raise
    if store is not None and request is not None:
        store.put(name, request, Completion(encode_passages(passages)))
    _tell(RetrievalRecord(name, query, k, tuple(passages), time.perf_counter() - started))
    return passages


def _tell(record: RetrievalRecord) -> None:
    for observer in observers():
        observer.retrieved(record)


def encode_passages(passages: list[Passage]) -> str:
    """Passages as ASCII JSON (how the cache stores a retrieval)."""
    return json.dumps([[p.text, p.score, p.title, p.pid] for p in passages], ensure_ascii=True, separators=(",", ":"))


def decode_passages(text: str) -> list[Passage] | None:
    """The passages `encode_passages` wrote; None for anything else (a stale or altered cache row)."""
    try:
        rows = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(rows, list):
        return None
    passages = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 4):
            return None
        text_, score, title, pid = row
        if not isinstance(text_, str) or type(score) not in (int, float) or not math.isfinite(score):
            return None
        if not (title is None or isinstance(title, str)) or not (pid is None or type(pid) is int):
            return None
        passages.append(Passage(text_, float(score), title, pid))
    return passages


def passage_from(value: object, *, where: str) -> Passage:
    """A corpus entry as a passage: a string, a `Passage`, or a mapping with `text` (and maybe
    `title`, `pid` or `id`); `RetrievalError` naming `where` for anything else."""
    if isinstance(value, Passage):
        return value
    if isinstance(value, str):
        return Passage(value)
    if isinstance(value, Mapping):
        text = value.get("text")
        title = value.get("title")
        pid = value.get("pid", value.get("id"))
        if isinstance(text, str) and (title is None or isinstance(title, str)):
            return Passage(text, title=title, pid=pid if type(pid) is int else None)
        raise RetrievalError(f"{where}: a passage needs a 'text' string (and 'title', if any, a string)")
    raise RetrievalError(
        f"{where}: a passage is a string, a Passage or an object with 'text', not {type(value).__name__}"
    )
