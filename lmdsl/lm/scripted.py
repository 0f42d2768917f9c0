"""A model whose replies are scripted: for unit tests, users' tests and benchmarks."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from lmdsl.lm.types import Completion, Request, Usage

Reply = str | Completion | dict[str, Any] | list[Any]


def _to_completion(reply: Reply) -> Completion:
    if isinstance(reply, Completion):
        return reply
    text = reply if isinstance(reply, str) else json.dumps(reply)
    return Completion(text=text, usage=Usage(0, max(1, len(text) // 4)))


class ScriptedModel:
    """Answers each request from a function, or from a list of replies in order.

    A reply is the raw text the model would produce, a `Completion`, or a dict or
    list that is sent as its JSON text. Every request is kept in `requests` so a
    test can assert on the exact prompt. Scripted replies bypass the cache unless
    `cacheable=True`: two scripts must never see each other's answers. It calls no model
    (`live = False`), so lmdsl's pytest plugin lets it run where live calls are refused.
    """

    live = False

    def __init__(
        self,
        replies: Callable[[Request], Reply] | Iterable[Reply],
        *,
        name: str = "scripted",
        cacheable: bool = False,
    ) -> None:
        self._name = name
        self.cacheable = cacheable
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        self._queued = not callable(replies)
        if callable(replies):
            self._respond = replies
        else:
            queue = list(replies)
            self._respond = self._from_queue(queue)

    def _from_queue(self, queue: list[Reply]) -> Callable[[Request], Reply]:
        def respond(request: Request) -> Reply:
            if not queue:
                raise AssertionError(
                    f"ScriptedModel {self._name!r} ran out of replies after {len(self.requests) - 1} request(s)"
                )
            return queue.pop(0)

        return respond

    @property
    def name(self) -> str:
        return self._name

    def complete(self, request: Request) -> Completion:
        """A queue of replies is taken in request order; a function is called concurrently,
        as a real server would answer (so a test can hold one call while another runs)."""
        with self._lock:
            self.requests.append(request)
            if self._queued:
                return _to_completion(self._respond(request))
        return _to_completion(self._respond(request))
