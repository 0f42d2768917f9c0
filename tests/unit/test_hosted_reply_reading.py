"""How the hosted backends read what a provider sends (`lmdsl.lm.hosted`), called directly: the
provider's message in an error body (`_provider_message`), text made fit for an error message
(`readable`), a success body read and checked (`read_reply`, `validated`) with the words that
say what is wrong with it (`_problem`, `json_type`), and model strings split from a base URL.
Every expected text is written out in full."""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Self

import pytest
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from lmdsl.lm import hosted
from lmdsl.lm.hosted import MalformedReply, Secret, json_type, read_reply, readable, split_base_url, validated

KEY = "sk-fake-KEY-0042"
redact = Secret(KEY).redact


# -- what the provider said -----------------------------------------------------------------
class Said(Exception):
    """An SDK's status error as `_provider_message` reads it: the parsed `body` and the SDK's `message`."""

    def __init__(self, text: str, *, body: object = None, message: str | None = None) -> None:
        super().__init__(text)
        self.body = body
        self.message = message


class Bare(Exception):
    """An error with neither a `body` nor a `message` attribute."""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": {"message": "m1", "detail": "d1"}, "message": "m2", "detail": "d2"}, "m1"),
        ({"error": {"detail": "d1"}, "message": "m2", "detail": "d2"}, "d1"),
        ({"error": {"message": " \n "}, "message": "m2", "detail": "d2"}, "m2"),
        ({"error": {"message": 42}, "detail": "d2"}, "d2"),
        ({"error": {"message": ""}, "message": None, "detail": "  d2 \n"}, "d2"),
        ({"error": "model 'x' crashed"}, "model 'x' crashed"),  # Ollama's shape
        ({"error": 42, "message": "m2"}, "m2"),
        ({"error": None, "detail": "d2"}, "d2"),
        ({"object": "error", "message": "out of memory", "code": 500}, "out of memory"),  # vLLM's
        ({"detail": "worker died"}, "worker died"),  # FastAPI's
        ({"error": {"message": f"invalid x-api-key: {KEY}"}}, "invalid x-api-key: [redacted]"),
        ({"error": {"message": "Bad\n\tgateway\x00 now"}}, "Bad gateway now"),
        ({"error": {"message": "x" * 1500}}, "x" * 999 + "\u2026"),  # at most 1000 characters
        ({"error": {"message": "y" * 995 + KEY}}, "y" * 995 + "[red\u2026"),  # the key goes before the cut
    ],
)
def test_the_providers_message_is_found_in_its_json_body(body: dict[str, Any], expected: str) -> None:
    assert hosted._provider_message(Said("Error code: 500", body=body, message="the SDK's text"), redact) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", "(an empty body)"),
        (" \n\t ", "(an empty body)"),
        ("  Internal Server Error\n", "Internal Server Error"),
        ("<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>", "502 Bad Gateway"),
        (f"bad key {KEY}", "bad key [redacted]"),
        ("z" * 400, "z" * 299 + "\u2026"),  # a text body: at most 300 characters
    ],
)
def test_a_text_body_is_made_readable(body: str, expected: str) -> None:
    assert hosted._provider_message(Said("Error code: 500", body=body, message="the SDK's text"), redact) == expected


def test_without_a_usable_body_the_sdks_text_is_used() -> None:
    message = hosted._provider_message
    assert message(Said("Error code: 500", body={"error": {"message": 42}}, message=f"the SDK's {KEY}"), redact) == (
        "the SDK's [redacted]"
    )
    assert message(Said("Error code: 500", body=None, message="the SDK's text"), redact) == "the SDK's text"
    assert message(Said("Error code: 500", body=[1, 2], message="the SDK's text"), redact) == "the SDK's text"
    assert message(Said("Error code: 502", body=None, message=None), redact) == "Error code: 502"
    assert message(Said("Error code: 503", body=None, message=""), redact) == "Error code: 503"
    assert message(Said("", body=None, message=""), redact) == "(an empty body)"
    assert message(Said(" ", body={}, message=None), redact) == "(an empty body)"
    assert message(Bare(f"no attributes {KEY}"), redact) == "no attributes [redacted]"
    assert message(Bare(), redact) == "(an empty body)"


# -- readable text ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  hello \n\t world  ", "hello world"),
        ("a\x00b\x08c\x0bd\x1fe\x7ff", "a b c d e f"),
        ("bad \ud800 text", "bad \\ud800 text"),
        ("caf\u00e9 \U0001f600", "caf\u00e9 \U0001f600"),
        ("<!DOCTYPE html><html><head><title> 502 Bad Gateway </title></head><body>x</body></html>", "502 Bad Gateway"),
        ('<html><TITLE lang="en">Multi\nline</TITLE></html>', "Multi line"),
        ("<html><title>  </title><body><h1>Oops</h1><p>try later</p></body></html>", "Oops try later"),
        ("<div>a</div><div>b</div>", "a b"),
        ("< p>hello</p>", "hello"),
        ("   <center>moved</center>", "moved"),
        ("<pre>raw</pre>", "raw"),
        ("<preface> is not a tag of a page", "<preface> is not a tag of a page"),
        ("x <html><title>T</title></html>", "x <html><title>T</title></html>"),
        ("<x" + " " * 1997 + "<p>text", "<x <p>text"),  # a page's tag is looked for in the first 2000 characters
        ("<x" + " " * 1996 + "<p>text", "text"),
    ],
)
def test_readable(text: str, expected: str) -> None:
    assert readable(text) == expected


def test_readable_cuts_at_the_limit_with_an_ellipsis() -> None:
    assert readable("abcdef", 6) == "abcdef"
    assert readable("abcdefg", 6) == "abcde\u2026"
    assert readable("x" * 300) == "x" * 300
    assert readable("x" * 301) == "x" * 299 + "\u2026"
    assert readable("a" * 20_000 + "b", 30_000) == "a" * 20_000  # only the first 20,000 characters are read


# -- reading a success body -----------------------------------------------------------------------
def response(content: bytes, status: int = 201) -> Any:
    """An SDK's raw response, as `read_reply` reads it."""
    return types.SimpleNamespace(http_response=types.SimpleNamespace(status_code=status, content=content))


def unread(content: bytes, parse: Any = None) -> MalformedReply:
    with pytest.raises(MalformedReply) as caught:
        read_reply(response(content), parse or (lambda status, data: data))
    return caught.value


def malformed(error: MalformedReply) -> tuple[int, str, str]:
    return error.status, error.description, error.excerpt


def test_a_json_body_is_parsed_with_its_status() -> None:
    assert read_reply(response(b'{"a": [1, "two"]}'), lambda status, data: (status, data)) == (201, {"a": [1, "two"]})


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", (201, "the body is empty", "")),
        (b" \r\n\t ", (201, "the body is empty", "")),
        (b"not json", (201, "the body is not JSON", "not json")),
        (b'{"id": "x", "choices": [', (201, "the body is not JSON", '{"id": "x", "choices": [')),
        (b'{"a": "\xff"}', (201, "the body is not JSON", '{"a": "\ufffd"}')),
        (
            b"<html><title>Proxy</title></html>",
            (201, "the body is an HTML page, not JSON", "<html><title>Proxy</title></html>"),
        ),
        (b"[" * 100_000, (201, "the body is JSON nested too deep to read", "")),
    ],
)
def test_a_body_that_is_not_json_is_a_malformed_reply(content: bytes, expected: tuple[int, str, str]) -> None:
    assert malformed(unread(content)) == expected


def test_a_reply_too_deep_to_check_is_a_malformed_reply() -> None:
    def parse(status: int, data: Any) -> Any:
        raise RecursionError

    assert malformed(unread(b"[[1]]", parse)) == (201, "the reply is nested too deep to read", "")


# -- checking a success body ----------------------------------------------------------------------
class Part(BaseModel):
    text: StrictStr
    count: Annotated[int, Field(strict=True, ge=0)]
    kind: Literal["a", "b"] = "a"

    @model_validator(mode="after")
    def _sensible(self) -> Self:
        if self.text == "bad":
            raise ValueError("has a bad text")
        return self


class Reply(BaseModel):
    parts: Annotated[list[Part], Field(min_length=1)]
    meta: dict[str, int] | None = None

    @model_validator(mode="after")
    def _counted(self) -> Self:
        if self.meta == {"none": 0}:
            raise ValueError("has nothing that counts")
        return self


GOOD_PART = {"text": "a", "count": 1}


def test_a_valid_body_becomes_the_model() -> None:
    assert validated(Reply, {"parts": [GOOD_PART], "meta": {"n": 2}}, 200) == Reply(
        parts=[Part(text="a", count=1)], meta={"n": 2}
    )


@pytest.mark.parametrize(
    ("data", "description"),
    [
        ([], "the body should be an object, not an empty list"),
        (None, "the body should be an object, not null"),
        ("OK", "the body should be an object, not a string"),
        ({}, "parts: is missing"),
        ({"parts": []}, "parts: is empty"),
        ({"parts": [], "meta": "x"}, "parts: is empty"),  # the first thing wrong
        ({"parts": "x"}, "parts: should be a list, not a string"),
        ({"parts": {"0": GOOD_PART}}, "parts: should be a list, not an object"),
        ({"parts": [5]}, "parts.0: should be an object, not 5"),
        ({"parts": [{"text": 3, "count": 1}]}, "parts.0.text: should be a string, not 3"),
        ({"parts": [{"text": "a", "count": "1"}]}, "parts.0.count: should be a whole number, not a string"),
        ({"parts": [{"text": "a", "count": 2.5}]}, "parts.0.count: should be a whole number, not 2.5"),
        ({"parts": [{"text": "a", "count": -1}]}, "parts.0.count: should be a whole number >= 0, not -1"),
        ({"parts": [GOOD_PART], "meta": [1]}, "meta: should be an object, not a list"),
        ({"parts": [{"text": "bad", "count": 1}]}, "parts.0: has a bad text"),
        ({"parts": [{"text": "a", "count": 1, "kind": "c"}]}, "parts.0.kind: Input should be 'a' or 'b'"),
        ({"parts": [GOOD_PART], "meta": {"none": 0}}, "the body has nothing that counts"),
        ({"parts": [GOOD_PART, GOOD_PART, {"count": 0}]}, "parts.2.text: is missing"),
        ({"error": "", "parts": []}, "parts: is empty"),  # an empty error is no error
    ],
)
def test_a_body_that_is_not_a_reply_says_what_is_wrong(data: Any, description: str) -> None:
    with pytest.raises(MalformedReply) as caught:
        validated(Reply, data, 203)
    assert malformed(caught.value) == (203, description, "")


@pytest.mark.parametrize(
    ("error", "excerpt"),
    [
        ({"message": "upstream overloaded", "type": "server_error"}, "upstream overloaded"),
        ({"type": "server_error"}, "{'type': 'server_error'}"),
        ("upstream down", "upstream down"),
        (["a", 1], "['a', 1]"),
    ],
)
def test_an_error_sent_with_a_success_status_is_named_so(error: Any, excerpt: str) -> None:
    with pytest.raises(MalformedReply) as caught:
        validated(Reply, {"error": error}, 200)
    assert malformed(caught.value) == (200, "the body is an error", excerpt)


@pytest.mark.parametrize(
    ("kind", "message", "value", "expected"),
    [
        ("missing", "Field required", {}, "is missing"),
        ("too_short", "List should have at least 1 item after validation, not 0", [], "is empty"),
        (
            "value_error",
            "Value error, has no content, refusal or function call",
            {},
            "has no content, refusal or function call",
        ),
        ("value_error", "kept as it is, Value error, ", {}, "kept as it is, Value error, "),
        ("model_type", "Input should be a valid dictionary", "x", "should be an object, not a string"),
        ("model_attributes_type", "Input should be a valid dictionary or object", 1, "should be an object, not 1"),
        ("dict_type", "Input should be a valid dictionary", [], "should be an object, not an empty list"),
        ("list_type", "Input should be a valid list", {}, "should be a list, not an object"),
        ("string_type", "Input should be a valid string", True, "should be a string, not true"),
        ("int_type", "Input should be a valid integer", None, "should be a whole number, not null"),
        (
            "greater_than_equal",
            "Input should be greater than or equal to 0",
            -5,
            "should be a whole number >= 0, not -5",
        ),
        ("literal_error", "Input should be 'stop' or 'length'", "x", "Input should be 'stop' or 'length'"),
        ("union_tag_invalid", "Input tag 'x' found does not match", "x", "Input tag 'x' found does not match"),
    ],
)
def test_each_kind_of_problem_in_words(kind: str, message: str, value: Any, expected: str) -> None:
    assert hosted._problem(kind, message, value) == expected


def test_pydantics_own_kinds_read_the_same() -> None:
    class Loaded(BaseModel):
        model_config = ConfigDict(from_attributes=True)
        x: int

    with pytest.raises(MalformedReply) as caught:
        validated(Loaded, "text", 200)
    assert caught.value.description == "the body should be an object, not a string"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (200, "200"),
        (-7, "-7"),
        (2.5, "2.5"),
        (10**15 - 1, "999999999999999"),
        (-(10**15) + 1, "-999999999999999"),
        (10**15, "a number"),
        (-(10**15), "a number"),
        (1e300, "a number"),
        ("", "a string"),
        ("text", "a string"),
        ([], "an empty list"),
        ([0], "a list"),
        ({}, "an object"),
        ({"a": 1}, "an object"),
        ((1, 2), "tuple"),
        (b"x", "bytes"),
    ],
)
def test_json_type_in_words(value: Any, words: str) -> None:
    assert json_type(value) == words


# -- model strings ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rest", "parts"),
    [
        ("gpt-4.1-mini", ("gpt-4.1-mini", None)),
        ("m@http://127.0.0.1:8000/v1", ("m", "http://127.0.0.1:8000/v1")),
        ("m@https://api.example/v1", ("m", "https://api.example/v1")),
        ("a@http://h", ("a", "http://h")),
        ("org/m@v2@https://user@host/v1", ("org/m@v2", "https://user@host/v1")),
        ("m@http://a@http://b", ("m", "http://a@http://b")),
        ("m@https://a@https://b", ("m", "https://a@https://b")),
        ("m@https://a@http://b", ("m", "https://a@http://b")),
        ("m@http://a@https://b", ("m", "http://a@https://b")),
        ("@http://host", ("@http://host", None)),  # no model name: not a base URL
        ("m@ftp://host", ("m@ftp://host", None)),
        ("m@HTTP://host", ("m@HTTP://host", None)),
    ],
)
def test_a_base_url_is_split_off_at_the_first_at_http(rest: str, parts: tuple[str, str | None]) -> None:
    assert split_base_url(rest) == parts
