"""`BM25`: a local lexical retriever over a list of passages or a JSONL corpus, with `bm25s`.

bm25s computes every (term, passage) score when the index is built, into a sparse matrix;
a query then only sums the columns of its terms. Words are lower-cased `\\w\\w+` runs without
English stopwords (no stemming: it would need another package), the same for passages and
queries, and a passage's title is indexed with its text.

An index is saved as one JSON file (never pickle, never numpy's own format): the passages,
the vocabulary, the matrix and the settings. Loading reads at most `max_bytes` of a regular
file and checks every part (types, lengths, ranges, finite scores) before using it, so a
damaged or hostile file is an `IndexFileError`, never a crash later at query time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from lmdsl.errors import IndexFileError, RetrievalError
from lmdsl.files import NotReadable, read_regular, write_atomic
from lmdsl.retrieval.base import Passage, check_query, passage_from, retrieve

if TYPE_CHECKING:  # numpy and bm25s load when an index is built or loaded: import lmdsl stays fast
    import numpy as np
    import numpy.typing as npt

INDEX_FORMAT = "lmdsl-bm25"
INDEX_VERSION = 1
MAX_INDEX_BYTES = 2**30
MAX_CORPUS_BYTES = 2**30
_WORD = re.compile(r"\w\w+")


def _bm25s() -> Any:
    """The bm25s package, imported on first use; `RetrievalError` saying how to install it."""
    import importlib

    try:
        return importlib.import_module("bm25s")
    except ImportError as error:
        raise RetrievalError(f"BM25 needs the bm25s package ({error}): pip install 'lmdsl[retrieval]'") from None


def tokenize(text: str, stopwords: frozenset[str]) -> list[str]:
    """The words BM25 indexes and searches for: lower-cased runs of 2+ word characters, stopwords dropped."""
    return [word for word in _WORD.findall(text.lower()) if word not in stopwords]


def read_corpus(path: str | Path, *, max_bytes: int = MAX_CORPUS_BYTES) -> list[Passage]:
    """Passages from a JSONL file: one JSON string, or object with `text` (and maybe `title`,
    `pid`/`id`), per line; blank lines skipped. `RetrievalError` naming the line that is not."""
    try:
        data = read_regular(path, limit=max_bytes)
    except NotReadable as error:
        raise RetrievalError(f"the corpus {os.fspath(path)!s} cannot be read: {error}") from None
    passages = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        where = f"{os.fspath(path)!s}, line {number}"
        try:
            value = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise RetrievalError(f"{where} is not UTF-8 text (byte {error.start}): re-encode the file") from None
        except (ValueError, RecursionError):
            raise RetrievalError(f"{where} is not a JSON value: write one passage per line") from None
        passages.append(passage_from(value, where=where))
    return passages


class BM25:
    """BM25 over a fixed set of passages: `BM25(passages)` (strings, `Passage`s, or mappings with
    `text`), or `BM25("corpus.jsonl")`. Call it as `bm25(query, k)`: the `k` best passages with
    a positive score, best first (fewer when fewer share a word with the query), each with its
    `pid`, its position in the corpus. `save(path)` and `BM25.load(path)` keep the index on disk.
    """

    def __init__(
        self,
        passages: Iterable[str | Passage | Any] | str | Path,
        *,
        k: int = 3,
        k1: float = 1.5,
        b: float = 0.75,
    ) -> None:
        check_query("", k)
        if not (isinstance(k1, (int, float)) and 0 <= k1 < 100 and isinstance(b, (int, float)) and 0 <= b <= 1):
            raise RetrievalError(f"BM25 takes 0 <= k1 < 100 and 0 <= b <= 1, not k1={k1!r}, b={b!r}")
        if isinstance(passages, (str, os.PathLike)):
            corpus = read_corpus(passages)
        else:
            corpus = [passage_from(p, where=f"passage {i}") for i, p in enumerate(passages)]
        if not corpus:
            raise RetrievalError("BM25 needs at least one passage to index")
        self.k = k
        self._passages = tuple(
            Passage(p.text, 0.0, p.title, i if p.pid is None else p.pid) for i, p in enumerate(corpus)
        )
        bm25s = _bm25s()
        self._stopwords = frozenset(bm25s.stopwords.STOPWORDS_EN)
        tokens = [tokenize(_indexed(p), self._stopwords) for p in self._passages]
        if not any(tokens):
            raise RetrievalError("BM25 needs a passage with a word to index: every passage is empty or stopwords")
        model = bm25s.BM25(k1=float(k1), b=float(b), method="lucene")
        model.index(tokens, show_progress=False)
        columns = len(model.scores["indptr"]) - 1
        self._vocabulary = {token: i for token, i in model.vocab_dict.items() if i < columns}
        self._model = model
        self._name = _name(self._passages)

    @property
    def name(self) -> str:
        """`bm25:` and a digest of the passages: what a trace calls this retriever."""
        return self._name

    @property
    def passages(self) -> tuple[Passage, ...]:
        return self._passages

    def __len__(self) -> int:
        return len(self._passages)

    def __repr__(self) -> str:
        return f"BM25({len(self._passages)} passages, k={self.k})"

    def __call__(self, query: str, k: int | None = None) -> list[Passage]:
        query, k = check_query(query, self.k if k is None else k)
        return retrieve(self._name, query, k, self.search, cacheable=False)

    def search(self, query: str, k: int) -> list[Passage]:
        """What a call returns, without the trace: for lookups that are not a program's retrievals
        (choosing demos per call)."""
        import numpy as np

        ids = list(
            dict.fromkeys(self._vocabulary[w] for w in tokenize(query, self._stopwords) if w in self._vocabulary)
        )
        if not ids:
            return []
        scores = self._model.get_scores_from_ids(ids)
        best = np.argsort(-scores, kind="stable")[:k]
        found = []
        for index in best.tolist():
            score = float(scores[index])
            if score <= 0.0:
                break
            passage = self._passages[index]
            found.append(Passage(passage.text, score, passage.title, passage.pid))
        return found

    # -- on disk ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the index to one JSON file, atomically; the path written."""
        scores = self._model.scores
        vocabulary = sorted(self._vocabulary, key=self._vocabulary.__getitem__)
        document = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "k": self.k,
            "k1": float(self._model.k1),
            "b": float(self._model.b),
            "stopwords": sorted(self._stopwords),
            "passages": [[p.text, p.title, p.pid] for p in self._passages],
            "vocabulary": vocabulary,
            "data": [float(x) for x in scores["data"].tolist()],
            "indices": scores["indices"].tolist(),
            "indptr": scores["indptr"].tolist(),
        }
        return write_atomic(path, json.dumps(document, separators=(",", ":")))

    @classmethod
    def load(cls, path: str | Path, *, max_bytes: int = MAX_INDEX_BYTES) -> BM25:
        """The index `save` wrote. `IndexFileError` for a file that is missing, not a regular
        file, larger than `max_bytes`, or not a whole, consistent index of this format."""
        where = os.fspath(path)
        try:
            raw = read_regular(path, limit=max_bytes)
        except NotReadable as error:
            raise IndexFileError(f"the index {where!s} cannot be loaded: {error}") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise IndexFileError(f"the index {where!s} is not UTF-8 text: not an index BM25.save wrote") from None
        except (ValueError, RecursionError):
            raise IndexFileError(f"the index {where!s} is not JSON (damaged?): build it again and save it") from None
        if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
            raise IndexFileError(f"the index {where!s} is not a BM25 index of lmdsl (no format {INDEX_FORMAT!r})")
        if data.get("version") != INDEX_VERSION:
            raise IndexFileError(
                f"the index {where!s} has format version {data.get('version')!r}; this lmdsl reads version "
                f"{INDEX_VERSION}: build the index again with this lmdsl"
            )
        try:
            stored = _StoredIndex.model_validate_json(raw)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            field = ".".join(str(step) for step in first["loc"])
            raise IndexFileError(f"the index {where!s} is damaged: {field}: {first['msg']}") from None
        except RecursionError:
            raise IndexFileError(f"the index {where!s} is nested too deep to be an index") from None
        problem = stored.problem()
        if problem is not None:
            raise IndexFileError(f"the index {where!s} is damaged: {problem}: build it again and save it")
        return cls._restore(stored)

    @classmethod
    def _restore(cls, stored: _StoredIndex) -> BM25:
        import numpy as np

        bm25s = _bm25s()
        self = cls.__new__(cls)
        self.k = stored.k
        self._passages = tuple(Passage(text, 0.0, title, pid) for text, title, pid in stored.passages)
        self._stopwords = frozenset(stored.stopwords)
        self._vocabulary = {token: i for i, token in enumerate(stored.vocabulary)}
        model = bm25s.BM25(k1=stored.k1, b=stored.b, method="lucene")
        model.scores = {
            "data": np.asarray(stored.data, dtype=np.float32),
            "indices": _ints(stored.indices),
            "indptr": _ints(stored.indptr),
            "num_docs": len(stored.passages),
        }
        model.vocab_dict = dict(self._vocabulary)
        model.unique_token_ids_set = set(self._vocabulary.values())
        model.nonoccurrence_array = None
        self._model = model
        self._name = _name(self._passages)
        return self


def _ints(values: Sequence[int]) -> npt.NDArray[np.int64]:
    import numpy as np

    return np.asarray(values, dtype=np.int64)


class _StoredIndex(BaseModel):
    """The parts of a saved index, with their types; `problem` checks how they fit together."""

    model_config = ConfigDict(strict=True, extra="forbid")

    format: str
    version: int
    k: int
    k1: float
    b: float
    stopwords: list[str]
    passages: list[tuple[str, str | None, int | None]]
    vocabulary: list[str]
    data: list[float]
    indices: list[int]
    indptr: list[int]

    def problem(self) -> str | None:
        """What does not fit in a stored index (None when it all does)."""
        if not 1 <= self.k <= 10_000 or not (0 <= self.k1 < 100 and 0 <= self.b <= 1):
            return "k, k1 or b is out of range"
        if not self.passages:
            return "it holds no passages"
        if len(set(self.vocabulary)) != len(self.vocabulary):
            return "a word appears twice in the vocabulary"
        if len(self.indptr) != len(self.vocabulary) + 1 or self.indptr[0] != 0:
            return "the matrix's column pointers do not match the vocabulary"
        if any(later < earlier for earlier, later in zip(self.indptr, self.indptr[1:])):
            return "the matrix's column pointers go backwards"
        if not self.indptr[-1] == len(self.data) == len(self.indices):
            return "the matrix's scores, rows and column pointers differ in length"
        documents = len(self.passages)
        if any(not 0 <= row < documents for row in self.indices):
            return "a score belongs to a passage the index does not hold"
        if any(not math.isfinite(score) for score in self.data):
            return "a score is not a finite number"
        return None


def _indexed(passage: Passage) -> str:
    return passage.text if passage.title is None else f"{passage.title}\n{passage.text}"


def _name(passages: Sequence[Passage]) -> str:
    digest = hashlib.sha256()
    for passage in passages:
        digest.update(json.dumps([passage.text, passage.title, passage.pid]).encode("utf-8", "surrogatepass"))
    return f"bm25:{digest.hexdigest()[:12]}"
