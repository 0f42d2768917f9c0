"""Claude through Anthropic's Messages API, on the official `anthropic` SDK.

One `Request` becomes one `messages.create` call and one reply text:

- the system message goes to `system=`; the other turns follow as text blocks (an empty
  turn, which the API refuses, is left out);
- the last message of the static prefix (instructions and demonstrations,
  `Request.prefix_length`) is marked `cache_control={"type": "ephemeral"}`, so Anthropic
  caches the tools, the system prompt and the demonstrations across calls;
- `max_tokens` comes from the request. The temperature does not: the Messages API version
  this SDK speaks (2026-10-21) has no sampling parameters;
- a JSON schema is enforced by a forced tool call (the default, `output="tool"`) or by
  Claude's native structured output (`output="native"`, `output_config.format`).

What instructor does here, precisely: in tool mode, its Anthropic `TOOLS` handler
(`instructor.v2.mode_registry`, the same code behind `instructor.from_anthropic`) turns
the request's schema into the tool definition and the forced `tool_choice` (with parallel
tool use disabled), and parses the reply: exactly one `tool_use` block, whose input
becomes the completion text as JSON. Its handlers take a pydantic model, so the schema
travels in a permissive model class that reports the request's schema and accepts any
object. instructor does not validate the output and does not re-ask: lmdsl's call loop
(`lmdsl.fuzzy`) does both, for every backend alike, so a reply that fails validation is
sent back with the error exactly as with the embedded model, counts against the same
`retries`, and ends in the same `OutputError` carrying every attempt. instructor's own
re-ask would hide the failed attempts from that record and spend requests outside the
function's budget. Native mode is built with the SDK alone: instructor 1.17's handler
for it targets an older SDK (`output_format` and a beta header).

The reply's body is checked against the API's shape (`ClaudeReply`) before anything reads it:
content blocks of types the SDK knows, a text block's text a string, a tool_use block's
input an object, whole token counts, a stop reason the SDK knows. instructor reads that
checked reply, not the SDK's unvalidated model.

Transient failures, a body that is not a reply, the concurrency bound and the API key: see
`lmdsl.lm.hosted`.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, Unpack

from pydantic import BaseModel, Field, StrictStr, field_validator, model_validator

from lmdsl.errors import ConfigurationError, ModelUnavailableError
from lmdsl.lm.hosted import HostedModel, HostedOptions, json_type, read_reply, validated
from lmdsl.lm.types import Completion, Request, Usage

if TYPE_CHECKING:
    from anthropic import Anthropic

TOOL_NAME = "reply"
WRAP_KEY = "value"  # a tool's input must be an object: any other schema travels under this key

OutputMode = Literal["tool", "native"]


class AnthropicModel(HostedModel):
    """A Claude model: `AnthropicModel("claude-sonnet-4-5")`, or the model string
    `"anthropic:claude-sonnet-4-5"`.

    `api_key` defaults to `ANTHROPIC_API_KEY`; `base_url` to `ANTHROPIC_BASE_URL`, else
    Anthropic's API; the other options (concurrency, timeout, retries) are `HostedModel`'s.
    `output` chooses how a JSON schema is enforced: a forced tool call, or native
    structured output.
    """

    provider = "anthropic"
    key_variable = "ANTHROPIC_API_KEY"
    base_url_variable = "ANTHROPIC_BASE_URL"

    def __init__(self, model: str, *, output: OutputMode = "tool", **options: Unpack[HostedOptions]) -> None:
        if output not in ("tool", "native"):
            raise ConfigurationError(f"output must be 'tool' or 'native', not {output!r}")
        self.output: OutputMode = output
        self.variant = "" if output == "tool" else "?output=native"  # another way of asking: another cache key
        super().__init__(model, **options)

    def _connect(self, key: str | None, timeout: float) -> None:
        self._client: Anthropic = self._sdk.Anthropic(
            api_key=key, base_url=self.base_url, timeout=timeout, max_retries=0
        )

    def complete(self, request: Request) -> Completion:
        system, messages = _turns(request)
        kwargs: dict[str, Any] = {"model": self.model, "max_tokens": request.max_tokens, "messages": messages}
        if system:
            kwargs["system"] = system
        if request.json_schema is None:
            return self._create(kwargs, _text)
        schema = _schema(request.json_schema)
        if self.output == "native":
            kwargs["output_config"] = {"format": {"type": "json_schema", "schema": schema.native}}
            return self._create(kwargs, schema.unwrap_text)
        _, kwargs = _instructor_tools().request_handler(schema.reply_model, kwargs)
        return self._create(kwargs, schema.tool_input)

    def _create(self, kwargs: dict[str, Any], text: Callable[[ClaudeReply, bool], str]) -> Completion:
        """The reply's completion, its text read by `text` (a reply that is not one is retried)."""
        return self._calls.send(
            lambda: self._client.messages.with_raw_response.create(**kwargs),
            lambda response: read_reply(response, lambda status, data: _completion(_reply(status, data), text)),
        )


Count = Annotated[int, Field(strict=True, ge=0)]


@functools.cache
def _known() -> tuple[frozenset[str], frozenset[str]]:
    """The content block types and the stop reasons the installed SDK knows."""
    import typing

    from anthropic import types

    blocks = {"text", "tool_use", "thinking", "redacted_thinking"}
    union = typing.get_args(types.ContentBlock)  # Annotated[Union[...], discriminator]
    for member in typing.get_args(union[0]) if union else ():
        kind = getattr(member, "model_fields", {}).get("type")
        if kind is not None:
            blocks.update(typing.get_args(kind.annotation))
    reasons = {"end_turn", "max_tokens", "stop_sequence", "tool_use", *typing.get_args(types.StopReason)}
    return frozenset(blocks), frozenset(reasons)


class ClaudeBlock(BaseModel):
    """A content block; only text and tool_use blocks are read, the other known types skipped."""

    type: StrictStr
    text: Any = None
    input: Any = None

    @model_validator(mode="after")
    def _checked(self) -> Self:
        if self.type not in _known()[0]:
            raise ValueError(f"{self.type!r} is not a content block type the SDK knows")
        if self.type == "text" and not isinstance(self.text, str):
            raise ValueError(f"a text block's text should be a string, not {json_type(self.text)}")
        if self.type == "tool_use" and not isinstance(self.input, dict):
            raise ValueError(f"a tool_use block's input should be an object, not {json_type(self.input)}")
        return self


class ClaudeUsage(BaseModel):
    input_tokens: Count
    output_tokens: Count
    cache_creation_input_tokens: Count | None = None
    cache_read_input_tokens: Count | None = None


class ClaudeReply(BaseModel):
    """The part of a Messages API reply this backend (and instructor) reads, checked: the SDK does not."""

    content: list[ClaudeBlock]
    stop_reason: StrictStr | None = None
    usage: ClaudeUsage

    @field_validator("stop_reason")
    @classmethod
    def _known_stop_reason(cls, reason: str | None) -> str | None:
        if reason is not None and reason not in _known()[1]:
            raise ValueError(f"{reason!r} is not a stop reason the SDK knows")
        return reason


def _reply(status: int, data: Any) -> ClaudeReply:
    return validated(ClaudeReply, data, status)


def _completion(reply: ClaudeReply, text: Callable[[ClaudeReply, bool], str]) -> Completion:
    usage = reply.usage
    read = usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
    truncated = reply.stop_reason == "max_tokens"
    return Completion(text(reply, truncated), Usage(read, usage.output_tokens), "length" if truncated else "stop")


def _text(reply: ClaudeReply, truncated: bool = False) -> str:
    return "".join(block.text for block in reply.content if block.type == "text")


def _turns(request: Request) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System blocks and message turns, the end of the static prefix marked for prompt caching."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    last_static = request.prefix_length - 1
    for index, message in enumerate(request.messages):
        if not message.content:
            continue  # the API refuses empty text; consecutive turns of one role are merged anyway
        block: dict[str, Any] = {"type": "text", "text": message.content}
        if index == last_static:
            block["cache_control"] = {"type": "ephemeral"}
        if message.role == "system":
            system.append(block)
        else:
            turns.append({"role": message.role, "content": [block]})
    return system, turns


class _Schema:
    """A request's output schema as Anthropic takes it: an object (a tool's input must be
    one), a pydantic model class carrying it for instructor's tool handler, and the
    conversion of a reply back to the request's schema."""

    def __init__(self, schema_text: str) -> None:
        from pydantic import ConfigDict

        schema: dict[str, Any] = json.loads(schema_text)
        self.wrapped = schema.get("type") != "object"
        if self.wrapped:
            defs = schema.pop("$defs", None)
            schema = {"type": "object", "properties": {WRAP_KEY: schema}, "required": [WRAP_KEY]}
            if defs is not None:
                schema["$defs"] = defs  # `#/$defs/...` references still resolve from the top
        self.schema = schema
        reported = {**schema, "title": TOOL_NAME}  # instructor names the tool after the title

        class reply(BaseModel):  # noqa: N801  (the class name is the tool's name)
            """Give your reply as this tool's input, following its schema exactly."""

            model_config = ConfigDict(extra="allow")

            @classmethod
            def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
                return copy.deepcopy(reported)

        self.reply_model: type[BaseModel] = reply

    @functools.cached_property
    def native(self) -> dict[str, Any]:
        """The schema for native structured output, in the subset the API accepts (the SDK's
        `transform_schema` moves other constraints into descriptions; lmdsl still checks them)."""
        from anthropic import transform_schema

        return transform_schema(self.schema)

    def tool_input(self, reply: ClaudeReply, truncated: bool) -> str:
        """The forced tool call's input as JSON text. A reply without exactly one tool call
        comes back as whatever the model wrote, for lmdsl's call loop to reject and re-ask."""
        calls = [block.input for block in reply.content if block.type == "tool_use"]
        if truncated:  # instructor refuses a cut-off reply; the call loop retries it with more room
            return self._unwrapped(calls[0]) if calls and calls[0] else _text(reply)
        try:
            parsed = _instructor_tools().response_parser(
                response=reply, response_model=self.reply_model, validation_context=None, strict=None
            )
        except ValueError:  # pydantic's ValidationError included: no tool call, or several
            # one call whose input instructor's JSON parser refuses (a lone surrogate) is the
            # model's output all the same: the call loop's parser says what is wrong with it
            return self._unwrapped(calls[0]) if len(calls) == 1 else _text(reply)
        return self._unwrapped(dict(parsed.model_extra or {}))

    def unwrap_text(self, reply: ClaudeReply, truncated: bool) -> str:
        text = _text(reply)
        if not self.wrapped:
            return text
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return text
        return self._unwrapped(data) if isinstance(data, dict) else text

    def _unwrapped(self, data: Any) -> str:
        if self.wrapped and isinstance(data, dict) and WRAP_KEY in data:
            data = data[WRAP_KEY]
        return json.dumps(data, ensure_ascii=False)


@functools.lru_cache(maxsize=256)
def _schema(schema_text: str) -> _Schema:
    return _Schema(schema_text)


@functools.cache
def _instructor_tools() -> Any:
    """instructor's handlers for Anthropic tool mode, imported on first use."""
    try:
        from instructor.v2 import Mode, Provider, mode_registry
    except ImportError as error:
        raise ModelUnavailableError(f"instructor is not installed ({error}): pip install 'lmdsl[anthropic]'") from None
    return mode_registry.get_handlers(Provider.ANTHROPIC, Mode.TOOLS)
