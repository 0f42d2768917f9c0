"""From (signature, parameters, inputs) to a `Request`, and from a reply back to a typed value.

A prompt is: a system message with the instructions, the fields and a sketch of the
output's shape; each demonstration as a user turn (its inputs) and an assistant turn
(its output as JSON); then the call's inputs. The exact JSON schema travels in the
request, for constrained decoding. Everything but the last turn
depends only on the parameters, so `Prompt` builds it once per parameter set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pydantic_core
from pydantic import ValidationError

from lmdsl.lm.types import Message, Request
from lmdsl.params import Params
from lmdsl.serializable import type_name
from lmdsl.signature import OutputSpec, Signature, input_error
from lmdsl.unicode import printable, surrogate_problem

REASONING_KEY = "reasoning"
MAX_TOKENS_CAP = 4096
_REASONING_SCHEMA = {"type": "string"}


class InvalidOutput(ValueError):
    """A reply that does not parse or validate; the message is fed back to the model."""


class OutputFormat:
    """The JSON object the model must produce: the output (under its key, or flat), after an
    optional reasoning field. Holds the schema text sent to the model and parses replies."""

    def __init__(self, spec: OutputSpec, *, reasoning: bool) -> None:
        self.spec = spec
        self.reasoning = reasoning
        schema = _without_titles(spec.schema)
        defs = schema.pop("$defs", None)
        if spec.key is None:
            properties = dict(schema.get("properties", {}))
            required = list(schema.get("required", []))
            if reasoning and REASONING_KEY in properties:
                raise ValueError(
                    f"the output model already has a field named {REASONING_KEY!r}, "
                    "which chain_of_thought adds; rename that field"
                )
            envelope: dict[str, Any] = {**schema}
        else:
            properties = {spec.key: schema}
            required = [spec.key]
            envelope = {"type": "object"}
        if reasoning:
            properties = {REASONING_KEY: _REASONING_SCHEMA, **properties}
            required = [REASONING_KEY, *required]
        envelope.update(type="object", properties=properties, required=required)
        if defs:
            envelope["$defs"] = defs
        self.schema: dict[str, Any] = envelope
        self.schema_text = json.dumps(envelope, separators=(",", ":"))
        self.shape = describe_shape(envelope, defs or {})
        self.max_tokens = min(MAX_TOKENS_CAP, int(_estimate_tokens(envelope, defs or {}, 0) * 1.5) + 16)

    def parse(self, text: str, inputs: Mapping[str, Any] | None = None) -> tuple[Any, str | None]:
        """The typed value and the reasoning in a reply, or `InvalidOutput` saying what is wrong.

        The call's inputs are the validation context, so pydantic validators can read
        them (`info.context["question"]`).
        """
        problem = surrogate_problem(text)
        if problem is not None:
            raise InvalidOutput(f"the reply is not valid JSON: {problem}")
        try:
            data = pydantic_core.from_json(text)
        except ValueError as error:  # jiter also refuses "\ud800" escapes that decode to lone surrogates
            raise InvalidOutput(f"the reply is not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise InvalidOutput(f"the reply must be a JSON object, not {type(data).__name__}")
        reasoning = None
        if self.reasoning:
            reasoning = data.pop(REASONING_KEY, None)
            if not isinstance(reasoning, str):
                raise InvalidOutput(f'the reply must start with a "{REASONING_KEY}" string')
        key = self.spec.key
        if key is not None:
            if key not in data:
                raise InvalidOutput(f'the reply must have the key "{key}"')
            data = data[key]
        try:
            return self.spec.adapter.validate_python(data, context=inputs), reasoning
        except ValidationError as error:
            raise InvalidOutput(_describe(error, key)) from None

    def render(self, value: Any, reasoning: str | None = None) -> str:
        """The reply a model should give for `value`: used for demonstrations."""
        dumped = self.spec.adapter.dump_python(value, mode="json")
        data: dict[str, Any] = dumped if self.spec.key is None else {self.spec.key: dumped}
        if self.reasoning:
            data = {REASONING_KEY: reasoning or "", **data}
        return json.dumps(data, ensure_ascii=False)


def _without_titles(schema: Any) -> Any:
    """The schema without pydantic's generated titles: tokens a model reads and never needs."""
    if isinstance(schema, dict):
        return {
            k: (
                {name: _without_titles(s) for name, s in v.items()}
                if k in ("properties", "$defs")
                else _without_titles(v)
            )
            for k, v in schema.items()
            if k != "title"
        }
    if isinstance(schema, list):
        return [_without_titles(s) for s in schema]
    return schema


def _describe(error: ValidationError, key: str | None) -> str:
    parts = []
    for item in error.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in ((key,) if key else ()) + tuple(item["loc"]))
        parts.append(f"{loc}: {item['msg']}" if loc else item["msg"])
    return "; ".join(parts)


class Prompt:
    """The prompt of one fuzzy function under one parameter set, with its static prefix built."""

    def __init__(self, signature: Signature, output: OutputFormat, params: Params) -> None:
        self.signature = signature
        self.output = output
        self.params = params
        self._renderers = tuple((f.name, f"{f.name}: ", f.render) for f in signature.inputs)
        messages = [Message("system", self._system_text())]
        for demo in params.demos:
            messages.append(Message("user", self.render_inputs(demo.inputs)))
            messages.append(Message("assistant", output.render(demo.output, demo.reasoning)))
        self.prefix: tuple[Message, ...] = tuple(messages)

    def _system_text(self) -> str:
        sig = self.signature
        lines = [self.params.instructions.strip(), "", "Inputs:"]
        for f in sig.inputs:
            about = f" - {f.description}" if f.description else ""
            lines.append(f"- {f.name} ({type_name(f.annotation)}){about}")
        spec = self.output.spec
        about = f" Output: {spec.description}." if spec.description else ""
        lines += ["", f"Reply with one JSON object of this shape.{about}"]
        if self.output.reasoning:
            lines.append(f'First think step by step in "{REASONING_KEY}", then give the answer.')
        lines.append(self.output.shape)
        return "\n".join(lines)

    def render_inputs(self, values: Mapping[str, Any]) -> str:
        """One `name: value` line per input, in the signature's order. A value with no JSON form
        (a cycle, too deep, text that is not valid Unicode) is an `InputError` naming it."""
        try:
            return "\n".join(
                [label + render(values[name]) for name, label, render in self._renderers if name in values]
            )
        except (ValueError, RecursionError):
            for name, _, render in self._renderers:
                if name in values:
                    try:
                        render(values[name])
                    except (ValueError, RecursionError) as error:
                        raise input_error(name, values[name], error) from None
            raise

    def request(
        self,
        inputs: Mapping[str, Any],
        *,
        temperature: float,
        max_tokens: int | None,
        rollout: int = 0,
        feedback: tuple[Message, ...] = (),
    ) -> Request:
        """The request for one call; `feedback` turns (an earlier answer and a critique) follow the input."""
        prefix = self.prefix
        return Request(
            (*prefix, Message("user", self.render_inputs(inputs)), *feedback),
            self.output.schema_text,
            max_tokens or self.output.max_tokens,
            temperature,
            rollout,
            len(prefix),
        )


def retry_request(request: Request, reply: str, error: str, *, truncated: bool) -> Request:
    """The same request followed by the failed reply and what was wrong with it.

    A reply cut off at `max_tokens` gets twice the room: repeating the same limit
    would almost surely cut it off again.
    """
    feedback = (
        f"Your reply is invalid: {error}. Reply again with only a JSON object that follows the schema, fixing that."
    )
    return Request(
        messages=(*request.messages, Message("assistant", printable(reply)), Message("user", feedback)),
        json_schema=request.json_schema,
        max_tokens=min(MAX_TOKENS_CAP, request.max_tokens * 2) if truncated else request.max_tokens,
        temperature=request.temperature,
        rollout=request.rollout,
        prefix_length=request.prefix_length,
    )


def describe_shape(schema: Mapping[str, Any], defs: Mapping[str, Any], indent: int = 0, depth: int = 0) -> str:
    """A compact, readable sketch of the JSON a schema admits, such as
    `{"label": "yes" | "no", "score": number}`. Models follow it more easily than
    JSON Schema, and it costs a fraction of the tokens; field descriptions become
    `//` comments."""
    if depth > 8:
        return "any"
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return describe_shape(defs.get(name, {}), defs, indent, depth + 1)
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return " | ".join(describe_shape(s, defs, indent, depth + 1) for s in schema[combinator])
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return describe_shape(schema["allOf"][0], defs, indent, depth + 1)
    if "enum" in schema:
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False)
    kind = schema.get("type")
    if kind == "array":
        if "prefixItems" in schema:
            return "[" + ", ".join(describe_shape(s, defs, indent, depth + 1) for s in schema["prefixItems"]) + "]"
        return f"[{describe_shape(schema.get('items', {}), defs, indent, depth + 1)}, ...]"
    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        if not properties:
            if isinstance(extra, dict):
                return f'{{"<key>": {describe_shape(extra, defs, indent, depth + 1)}, ...}}'
            return "{...}"
        required = set(schema.get("required", ()))
        fields = []
        for name, sub in properties.items():
            text = f"{json.dumps(name)}: {describe_shape(sub, defs, indent + 2, depth + 1)}"
            note = sub.get("description") or ("" if name in required else "optional")
            fields.append((text, note))
        if not any(note for _, note in fields):
            return "{" + ", ".join(text for text, _ in fields) + "}"
        pad = " " * (indent + 2)
        lines = []
        for number, (text, note) in enumerate(fields):
            comma = "," if number < len(fields) - 1 else ""
            lines.append(f"{pad}{text}{comma}{f' // {note}' if note else ''}")
        return "{\n" + "\n".join(lines) + "\n" + " " * indent + "}"
    if isinstance(kind, list):
        return " | ".join(kind)
    return str(kind) if kind else "any"


def _estimate_tokens(schema: Mapping[str, Any], defs: Mapping[str, Any], depth: int) -> float:
    """A generous guess at how many tokens a JSON value of this schema takes, to size `max_tokens`."""
    if depth > 6:
        return 20
    if "$ref" in schema:
        target = defs.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
        return _estimate_tokens(target, defs, depth + 1)
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            return max(_estimate_tokens(s, defs, depth + 1) for s in schema[combinator])
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return 2 + max(len(json.dumps(v)) for v in values) / 2
    kind = schema.get("type")
    if kind == "string":
        return 2 + float(schema.get("maxLength", 300)) / 3
    if kind in ("integer", "number"):
        return 8
    if kind in ("boolean", "null"):
        return 2
    if kind == "array":
        count = schema.get("maxItems", 8)
        items = schema.get("prefixItems") or [schema.get("items", {})] * count
        return 2 + sum(_estimate_tokens(s, defs, depth + 1) + 1 for s in items)
    if kind == "object":
        properties = schema.get("properties", {})
        total = 2 + sum(len(k) / 2 + 2 + _estimate_tokens(s, defs, depth + 1) for k, s in properties.items())
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            total += 5 * (6 + _estimate_tokens(extra, defs, depth + 1))
        return total
    return 30
