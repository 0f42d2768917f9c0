"""Demos chosen per call (`Params.nearest`): the `k` demos of a fixed pool whose inputs are
nearest to the call's, found with BM25 over the values of each demo's inputs (not their names,
which every demo shares).

Small models copy what they are shown; a demo like the input at hand helps more than a fixed
one (DSPy's `KNNFewShot` idea). The pool is fixed when compiling and stored in the artifact;
choosing costs a BM25 lookup (well under a millisecond for a few hundred demos), no LM call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from lmdsl.errors import RetrievalError
from lmdsl.params import Demo
from lmdsl.retrieval.bm25 import BM25


class NearestDemos:
    """A pool of demos indexed by their inputs' values; `pick(inputs, k)` is the positions of
    the `k` nearest to `inputs`, topped up in pool order when fewer share a word, the nearest
    last (shown right before the input, where a small model looks most)."""

    def __init__(self, pool: Sequence[Demo]) -> None:
        self.pool = tuple(pool)
        try:
            self._index: BM25 | None = BM25([input_text(demo.inputs) for demo in self.pool])
        except RetrievalError as error:
            if "bm25s" in str(error):  # not installed: say so rather than show demos that were not chosen
                raise
            self._index = None  # no demo has a word to index: every input is as near as any other

    def pick(self, inputs: Mapping[str, Any], k: int) -> tuple[int, ...]:
        k = min(k, len(self.pool))
        found = [p.pid for p in self._index.search(input_text(inputs), k)] if self._index is not None else []
        chosen = [pid for pid in found if pid is not None]
        for position in range(len(self.pool)):
            if len(chosen) >= k:
                break
            if position not in chosen:
                chosen.append(position)
        return tuple(reversed(chosen))


def input_text(inputs: Mapping[str, Any]) -> str:
    """The words of a call's inputs: text as it is, other values as JSON."""
    return "\n".join(
        v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str) for v in inputs.values()
    )
