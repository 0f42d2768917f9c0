"""OpenAI and OpenAI-compatible servers (vLLM, llama.cpp's server, Ollama, LM Studio, ...)
through the Chat Completions API, on the official `openai` SDK.

One `Request` becomes one `chat.completions.create` call and one reply text. A JSON schema
is sent as `response_format={"type": "json_schema", ...}` (not strict: strict mode
admits only a subset of JSON Schema, and lmdsl validates the reply anyway). A server that
rejects that format (HTTP 400 naming `response_format` or `json_schema`) is asked again at
once with plain JSON mode, `{"type": "json_object"}`, and this backend object remembers to
use JSON mode from then on; the schema still reaches the model through the prompt. As
with every backend, an invalid reply is re-asked by lmdsl's call loop, not here.

The reply's body is checked against the API's shape (`ChatReply`) before anything reads it:
at least one choice, a message with text (`content`, else a `refusal`, else a tool call's
arguments), whole token counts, a finish reason that is a string. Servers name finish
reasons their own way (TGI's `eos_token`), so any string is taken: `length` means cut off,
anything else a finished reply. `usage` may be absent, as the API allows.

Transient failures, a body that is not a reply, the concurrency bound and the API key: see
`lmdsl.lm.hosted`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import BaseModel, Field, StrictStr, model_validator

from lmdsl.errors import ProviderRequestError
from lmdsl.lm.hosted import HostedModel, read_reply, validated
from lmdsl.lm.types import Completion, Request, Usage

if TYPE_CHECKING:
    from openai import OpenAI

_FORMAT_WORDS = ("response_format", "response format", "json_schema")
NO_KEY = "not-needed"  # sent to a server at a custom base URL when no key is set: local servers ignore it


class OpenAIModel(HostedModel):
    """A model behind the Chat Completions API: `OpenAIModel("gpt-4.1-mini")`, or a local
    server, `OpenAIModel("qwen2.5-7b", base_url="http://127.0.0.1:8000/v1")`; as model
    strings `"openai:gpt-4.1-mini"` and `"openai:qwen2.5-7b@http://127.0.0.1:8000/v1"`.

    `api_key` defaults to `OPENAI_API_KEY`, and may be left out for a server at a custom
    base URL; `base_url` defaults to `OPENAI_BASE_URL`, else OpenAI's API. The other
    options (concurrency, timeout, retries) are `HostedModel`'s.
    """

    provider = "openai"
    key_variable = "OPENAI_API_KEY"
    base_url_variable = "OPENAI_BASE_URL"
    keyless_servers = True

    json_mode_only = False  # set on the object once its server has refused a JSON-schema response format

    def _connect(self, key: str | None, timeout: float) -> None:
        self._client: OpenAI = self._sdk.OpenAI(
            api_key=key or NO_KEY, base_url=self.base_url, timeout=timeout, max_retries=0
        )

    def complete(self, request: Request) -> Completion:
        # OpenAI's own API wants max_completion_tokens; compatible servers know max_tokens
        limit = "max_tokens" if self.base_url else "max_completion_tokens"
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
            "seed": request.rollout,
            limit: request.max_tokens,
        }
        if request.json_schema is not None and not self.json_mode_only:
            schema = json.loads(request.json_schema)
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema, "strict": False},
            }
            try:
                return _completion(self._create(kwargs))
            except ProviderRequestError as error:
                said = error.message.lower()
                if error.status != 400 or not any(word in said for word in _FORMAT_WORDS):
                    raise
                self.json_mode_only = True
        if request.json_schema is not None:
            kwargs["response_format"] = {"type": "json_object"}
        return _completion(self._create(kwargs))

    def _create(self, kwargs: dict[str, Any]) -> ChatReply:
        return self._calls.send(
            lambda: self._client.chat.completions.with_raw_response.create(**kwargs),
            lambda response: read_reply(response, _reply),
        )


Count = Annotated[int, Field(strict=True, ge=0)]


class ChatFunction(BaseModel):
    arguments: StrictStr


class ChatToolCall(BaseModel):
    function: ChatFunction | None = None  # a custom tool's call carries `custom` instead


class ChatMessage(BaseModel):
    content: StrictStr | None = None
    refusal: StrictStr | None = None
    tool_calls: list[ChatToolCall] | None = None

    @model_validator(mode="after")
    def _has_text(self) -> Self:
        if self.text is None:
            raise ValueError("has no content, refusal or function call")
        return self

    @property
    def text(self) -> str | None:
        """What the model wrote: its content, else its refusal, else its first function call's arguments."""
        if self.content is not None:
            return self.content
        if self.refusal is not None:
            return self.refusal
        calls = [call.function.arguments for call in self.tool_calls or () if call.function is not None]
        return calls[0] if calls else None


class ChatChoice(BaseModel):
    message: ChatMessage
    finish_reason: StrictStr | None = None


class ChatUsage(BaseModel):
    prompt_tokens: Count
    completion_tokens: Count


class ChatReply(BaseModel):
    """The part of a Chat Completions reply this backend reads, checked: the SDK does not."""

    choices: Annotated[list[ChatChoice], Field(min_length=1)]
    usage: ChatUsage | None = None


def _reply(status: int, data: Any) -> ChatReply:
    return validated(ChatReply, data, status)


def _completion(reply: ChatReply) -> Completion:
    choice = reply.choices[0]
    usage = reply.usage
    return Completion(
        choice.message.text or "",
        Usage(usage.prompt_tokens, usage.completion_tokens) if usage is not None else Usage(),
        "length" if choice.finish_reason == "length" else "stop",
    )
