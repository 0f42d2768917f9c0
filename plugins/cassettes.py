"""Cassettes and the live-call guard: what lmdsl's pytest plugin puts at the LM boundary.

A cassette is one JSON file per test holding each model call the test made: the request,
legible (the messages as a role/content list, the JSON schema as JSON, the sampling settings),
and the completion (text, finish reason, usage). Replaying answers each request from the
file; recording calls the real model and writes what it said. A request is matched on its
content, never on the model's name (the embedded model's name holds a path of the machine
that recorded it); identical requests recorded several times are answered in order.

A cassette stands in for the model and the completion cache together: a recording calls
the model behind the cache, and a replay never reaches the cache. Replayed completions are
`cached=False`, as they were when recorded, so usage counters, compile budgets and
evaluation rows count them as the recorded run did: a replayed test takes the path the
recorded one took.

The guard wraps every live backend in a stand-in that refuses to be asked
(`LiveModelCallError`): every backend but those that say they call no model (`live = False`:
`ScriptedModel`, and any test double that says so). Both are installed with `lmdsl.config.intercepting`; the
pytest plugin (`lmdsl.plugins.pytest`) decides which, per test.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmdsl.cache import CachedBackend
from lmdsl.errors import ArtifactError, CassetteMismatch, LiveModelCallError, LMDSLError
from lmdsl.files import NotReadable, read_regular, write_atomic
from lmdsl.lm.hosted import REDACTED
from lmdsl.lm.types import Backend, Completion, Request, Usage
from lmdsl.unicode import first_surrogate

__all__ = ["Boundary", "Cassette", "RecordMode", "describe_difference", "legible_request"]

RecordMode = Literal["none", "new", "all"]
FORMAT_VERSION = 1
_MAX_BYTES = 64 * 1024 * 1024
_MAX_DIFF_LINES = 60
# Strings shaped like provider API keys (OpenAI `sk-...`, `sk-proj-...`; Anthropic `sk-ant-...`).
_KEY_SHAPE = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")
_KEY_VARIABLES = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")
_SETTINGS = ("temperature", "max_tokens", "rollout")


def innermost(backend: Backend) -> Backend:
    """The model behind any completion cache."""
    while isinstance(backend, CachedBackend):
        backend = backend.backend
    return backend


# -- the file's form of a request -----------------------------------------------------------
def legible_request(request: Request) -> dict[str, Any]:
    """A request as a cassette shows it: the JSON schema as JSON, not as the text sent."""
    schema: Any = request.json_schema
    if schema is not None:
        try:
            schema = json.loads(schema)
        except ValueError:
            pass  # not JSON: kept as the text it is
    return {
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "json_schema": schema,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "rollout": request.rollout,
    }


def _match_key(request: dict[str, Any]) -> str:
    """What a request is matched on: its content and settings (never the model's name)."""
    return json.dumps(
        [
            [[m["role"], m["content"]] for m in request["messages"]],
            request["json_schema"],
            float(request["temperature"]),
            int(request["max_tokens"]),
            int(request["rollout"]),
        ],
        sort_keys=True,
        ensure_ascii=False,
    )


def _scrubbed(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [_scrubbed(item, scrub) for item in value]
    if isinstance(value, dict):
        return {key: _scrubbed(item, scrub) for key, item in value.items()}
    return value


def _scrubber(backend: Backend) -> Callable[[str], str]:
    """Removes API keys from text: the backend's own (hosted backends know theirs), the keys in
    the providers' environment variables, and anything shaped like a provider's key."""
    redact: Callable[[str], str] | None = getattr(innermost(backend), "redact", None)
    keys = [value for name in _KEY_VARIABLES if len(value := os.environ.get(name, "")) >= 8]

    def scrub(text: str) -> str:
        if redact is not None:
            text = redact(text)
        for key in keys:
            text = text.replace(key, REDACTED)
        return _KEY_SHAPE.sub(REDACTED, text)

    return scrub


# -- reading and checking a file ------------------------------------------------------------
def _checked_request(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: 'request' must be an object")
    messages = value.get("messages")
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        raise ValueError(f"{where}: 'request.messages' must be a list of {{role, content}} strings")
    temperature = value.get("temperature", 0.0)
    if not isinstance(temperature, int | float) or isinstance(temperature, bool):
        raise ValueError(f"{where}: 'request.temperature' must be a number")
    for name, default in (("max_tokens", 256), ("rollout", 0)):
        number = value.get(name, default)
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValueError(f"{where}: 'request.{name}' must be a whole number")
    return {
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "json_schema": value.get("json_schema"),
        "temperature": temperature,
        "max_tokens": value.get("max_tokens", 256),
        "rollout": value.get("rollout", 0),
    }


def _checked_completion(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        raise ValueError(f"{where}: 'completion' must be an object with a 'text' string")
    reason = value.get("finish_reason", "stop")
    if reason not in ("stop", "length"):
        raise ValueError(f"{where}: 'completion.finish_reason' must be 'stop' or 'length'")
    usage = value.get("usage") or {}
    tokens = [usage.get(name, 0) if isinstance(usage, dict) else None for name in ("input_tokens", "output_tokens")]
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens):
        raise ValueError(f"{where}: 'completion.usage' must hold whole numbers input_tokens and output_tokens")
    return {
        "text": value["text"],
        "finish_reason": reason,
        "usage": dict(zip(("input_tokens", "output_tokens"), tokens)),
    }


def read_cassette(path: Path) -> list[dict[str, Any]]:
    """The interactions a cassette file holds (none if there is no file); `ArtifactError` if it is not one."""
    if not path.exists():
        return []
    try:
        document = json.loads(read_regular(path, limit=_MAX_BYTES).decode("utf-8"))
        if not isinstance(document, dict) or not isinstance(document.get("interactions"), list):
            raise ValueError("it holds no 'interactions' list")
        interactions = []
        for number, entry in enumerate(document["interactions"], 1):
            where = f"interaction {number}"
            if not isinstance(entry, dict):
                raise ValueError(f"{where} is not an object")
            interactions.append(
                {
                    "function": str(entry.get("function", "")),
                    "model": str(entry.get("model", "")),
                    "request": _checked_request(entry.get("request"), where),
                    "completion": _checked_completion(entry.get("completion"), where),
                }
            )
    except (NotReadable, UnicodeDecodeError, ValueError) as error:
        raise ArtifactError(
            f"the cassette {path} cannot be used: {error}; fix it, or delete it and record it again "
            f"(pytest --lmdsl-record=all)"
        ) from None
    return interactions


def _completion(entry: dict[str, Any]) -> Completion:
    completion = entry["completion"]
    usage = completion["usage"]
    return Completion(
        completion["text"], Usage(usage["input_tokens"], usage["output_tokens"]), completion["finish_reason"]
    )


# -- telling a request from the closest recorded one ----------------------------------------
def _diff(recorded: str, now: str) -> list[str]:
    return list(difflib.unified_diff(recorded.splitlines(), now.splitlines(), "recorded", "this request", lineterm=""))


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def describe_difference(recorded: dict[str, Any], now: dict[str, Any]) -> str:
    """Which setting differs, and which message changed (its index and role, and a unified diff
    of its content), between a recorded request and this one, both in the file's form."""
    lines: list[str] = []
    for name in _SETTINGS:
        if recorded[name] != now[name]:
            lines.append(f"{name}: recorded {recorded[name]!r}, this request {now[name]!r}")
    if recorded["json_schema"] != now["json_schema"]:
        lines.append("json_schema changed:")
        lines.extend(
            _diff(
                json.dumps(recorded["json_schema"], indent=2, sort_keys=True, ensure_ascii=False),
                json.dumps(now["json_schema"], indent=2, sort_keys=True, ensure_ascii=False),
            )
        )
    before, after = recorded["messages"], now["messages"]
    if len(before) != len(after):
        lines.append(f"the recorded request has {len(before)} message(s), this one {len(after)}")
    for index in range(max(len(before), len(after))):
        if index >= len(before):
            lines.append(f"message {index} ({after[index]['role']}) is new: {_short(after[index]['content'])!r}")
        elif index >= len(after):
            lines.append(f"message {index} ({before[index]['role']}) is missing: {_short(before[index]['content'])!r}")
        elif before[index] != after[index]:
            old, new = before[index], after[index]
            if old["role"] != new["role"]:
                lines.append(f"message {index}: role recorded {old['role']!r}, this request {new['role']!r}")
            if old["content"] != new["content"]:
                lines.append(f"message {index} ({new['role']}) changed:")
                lines.extend(_diff(old["content"], new["content"]))
    if len(lines) > _MAX_DIFF_LINES:
        lines = [*lines[:_MAX_DIFF_LINES], f"... ({len(lines) - _MAX_DIFF_LINES} more line(s))"]
    return "\n".join(lines) or "no difference in content (the model's name is not compared)"


# -- the cassette ---------------------------------------------------------------------------
class Cassette:
    """One test's recorded model calls, answered from and added to while the test runs.

    `mode`: `none` replays only (an unmatched request raises `CassetteMismatch`); `new` replays
    what matches and records the rest; `all` records every request and rewrites the file.
    Thread-safe: a recording calls the model outside the lock, so calls in `map` threads run
    at once as they would live. `save` writes the file (atomically) when anything was recorded.
    """

    def __init__(self, path: Path, mode: RecordMode, test: str) -> None:
        self.path = path
        self.mode: RecordMode = mode
        self.test = test
        self._lock = threading.Lock()
        self._existed = path.exists()
        self.interactions: list[dict[str, Any]] = [] if mode == "all" else read_cassette(path)
        self._waiting: dict[str, deque[dict[str, Any]]] = {}
        for entry in self.interactions:
            self._waiting.setdefault(_match_key(entry["request"]), deque()).append(entry)
        self.played = 0
        self.recorded = 0

    def answer(self, backend: Backend, function: str, request: Request) -> Completion:
        """The recorded completion for this request, the next one if it was recorded several
        times; else, when recording, the real model's (recorded); else `CassetteMismatch`."""
        scrub = _scrubber(backend)
        shown = _scrubbed(legible_request(request), scrub)
        key = _match_key(shown)
        with self._lock:
            waiting = self._waiting.get(key)
            if waiting:
                self.played += 1
                return _completion(waiting.popleft())
        if self.mode == "none":
            raise self._mismatch(function, shown, key)
        completion = innermost(backend).complete(request)
        entry = {  # the request is scrubbed already (`shown`); the rest of its strings here
            "function": scrub(function),
            "model": scrub(backend.name),
            "request": shown,
            "completion": {
                "text": scrub(completion.text),
                "finish_reason": completion.finish_reason,
                "usage": {
                    "input_tokens": completion.usage.input_tokens,
                    "output_tokens": completion.usage.output_tokens,
                },
            },
        }
        with self._lock:
            self.interactions.append(entry)
            self.recorded += 1
        return Completion(completion.text, completion.usage, completion.finish_reason)

    def _mismatch(self, function: str, shown: dict[str, Any], key: str) -> CassetteMismatch:
        with self._lock:
            recorded = list(self.interactions)
        same = sum(_match_key(entry["request"]) == key for entry in recorded)
        if same:
            difference = (
                f"this request was recorded {same} time(s), and the test has made it more often: "
                f"each recorded call is replayed once"
            )
        elif not recorded:
            difference = "the cassette holds no interactions" if self._existed else "there is no cassette file yet"
        else:
            closest = max(
                recorded,
                key=lambda entry: (
                    entry["function"] == function,
                    difflib.SequenceMatcher(None, _match_key(entry["request"]), key, autojunk=False).quick_ratio(),
                ),
            )
            number = recorded.index(closest) + 1
            difference = (
                f"the closest recorded request (interaction {number} of {len(recorded)}, made by "
                f"{closest['function'] or 'an unnamed function'}) differs:\n"
                + describe_difference(closest["request"], shown)
            )
        message = (
            f"{self.test}: {function} made a request that is not in the cassette {self.path} "
            f"(--lmdsl-record={self.mode}: replay only).\n{difference}\n"
            f"If the change is intended, record it: pytest --lmdsl-record=new (adds the requests that are "
            f"missing) or --lmdsl-record=all (records the test again)."
        )
        return CassetteMismatch(
            message, test=self.test, function=function, cassette=str(self.path), difference=difference
        )

    def document(self) -> dict[str, Any]:
        return {"lmdsl_cassette": FORMAT_VERSION, "test": self.test, "interactions": self.interactions}

    def save(self) -> bool:
        """Write the file if this run recorded anything (`all` also rewrites a file the test no
        longer adds to). Returns whether it wrote."""
        if self.mode == "none" or (self.recorded == 0 and not (self.mode == "all" and self._existed)):
            return False
        document = self.document()
        text = json.dumps(document, indent=2, ensure_ascii=False)
        if first_surrogate(text) is not None:  # a lone surrogate: written escaped, still valid JSON
            text = json.dumps(document, indent=2, ensure_ascii=True)
        write_atomic(self.path, text + "\n")
        return True


# -- the boundary of one test ---------------------------------------------------------------
class _Wrapped:
    """A backend seen through a test's boundary; an error it raises is also kept for the test."""

    cacheable = False

    def __init__(self, boundary: Boundary, backend: Backend, function: str) -> None:
        self._boundary = boundary
        self.backend = backend
        self._function = function

    @property
    def name(self) -> str:
        return self.backend.name

    def _kept(self, error: LMDSLError) -> LMDSLError:
        self._boundary.errors.append(error)
        return error


class _Taped(_Wrapped):
    """A backend answered by the test's cassette."""

    def complete(self, request: Request) -> Completion:
        cassette = self._boundary.cassette
        assert cassette is not None  # only made when the boundary has one
        try:
            return cassette.answer(self.backend, self._function, request)
        except CassetteMismatch as error:
            self._kept(error)
            raise


class _Refused(_Wrapped):
    """A live backend in a test that may not call one."""

    def complete(self, request: Request) -> Completion:
        model = self.backend.name
        kind = type(innermost(self.backend)).__name__
        raise self._kept(
            LiveModelCallError(
                f"{self._boundary.test}: {self._function} called the model {model!r} (a {kind}), but this test may "
                f"not make model requests (lmdsl_allow_model_requests = false). Use a ScriptedModel "
                f"(lmdsl.using(model=...) or the lmdsl_scripted fixture), replay a cassette "
                f"(@pytest.mark.lmdsl_cassette), or mark the test @pytest.mark.lmdsl_live.",
                test=self._boundary.test,
                function=self._function,
                model=model,
            )
        )


@dataclass
class Boundary:
    """What one test puts between its fuzzy calls and the models: its cassette, or the guard,
    or both (a cassette answers first; its recordings may call a live model)."""

    test: str
    cassette: Cassette | None = None
    guarded: bool = False
    errors: list[LMDSLError] = field(default_factory=list)

    def wrap(self, backend: Backend, function: str) -> Backend:
        if self.cassette is not None:
            return _Taped(self, backend, function)
        if self.guarded and getattr(innermost(backend), "live", True):
            return _Refused(self, backend, function)
        return backend
