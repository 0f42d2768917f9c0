"""The backend boundary: plain, immutable data in and out.

Every model (embedded, hosted, scripted) is a function from a `Request` to a
`Completion`. Requests and messages are named tuples: hashable, so the in-memory
cache keys on them directly, and hashed and compared in C, so a hit stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length"]


class Message(NamedTuple):
    role: Role
    content: str


class Request(NamedTuple):
    """One call to a model.

    `json_schema` is the canonical JSON text of the schema the reply must follow
    (text, not a dict, so the request stays hashable). `prefix_length` counts the
    leading messages that are the same for every call with the same parameters
    (instructions and demonstrations); providers may cache them. `rollout`
    distinguishes deliberate resamples of the same request, in the cache and in
    the sampler's seed.
    """

    messages: tuple[Message, ...]
    json_schema: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    rollout: int = 0
    prefix_length: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's reply. `cached` is set by the cache when no model ran."""

    text: str
    usage: Usage = Usage()
    finish_reason: FinishReason = "stop"
    cached: bool = False


@runtime_checkable
class Backend(Protocol):
    """A language model. `name` identifies it in cache keys and records.

    A backend may set `cacheable = False` to keep its replies out of the cache, and
    `live = False` to say it calls no model (a test double, like `ScriptedModel`): lmdsl's
    pytest plugin refuses the calls of every other backend in a test that may not call a model.
    """

    @property
    def name(self) -> str: ...

    def complete(self, request: Request) -> Completion: ...


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at producing a valid output: what was sent, what came back, why it failed
    (`check` names the `ensure` check that rejected it, when one did)."""

    request: Request
    text: str
    error: str | None
    usage: Usage
    finish_reason: FinishReason
    cached: bool
    check: str | None = None
