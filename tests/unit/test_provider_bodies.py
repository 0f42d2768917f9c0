"""Provider replies that are not what the API promises, served to the real `openai` and
`anthropic` SDKs from the fake servers (`tests/provider_servers.py`): every one ends in a
`Completion` or an lmdsl error, never another exception. A success status with a body that
is not a valid reply (not JSON, bytes that are not UTF-8, HTML, missing or mistyped fields)
is a `ProviderResponseError`, retried like a proxy's hiccup; an error status with a garbage
body is a `ProviderError` whose message is readable. A lone surrogate escaped in valid JSON
is the model's text: it comes through unchanged, for the call loop's parser to reject."""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import lmdsl
from lmdsl.lm.types import Completion, Message, Request
from tests.provider_servers import (
    FakeServer,
    Reply,
    claude_error,
    claude_message,
    claude_text,
    claude_tool,
    openai_error,
    openai_message,
)

# The real provider backends, talking to fake servers: live backends to lmdsl's pytest plugin.
pytestmark = pytest.mark.lmdsl_live

KEY = "sk-test-SECRET-4242"
RETRIES = 2


class Ticket(BaseModel):
    category: Literal["billing", "bug", "other"]
    urgent: bool


@lmdsl.fuzzy
def triage(message: str) -> Ticket:
    """Sort a customer's support message."""


TRIAGED = {"category": "bug", "urgent": True}
PLAIN = Request((Message("user", "Is it a bug?"),))
SCHEMA = Request((Message("user", "Is it a bug?"),), json_schema=json.dumps(Ticket.model_json_schema()))


class Sleeps:
    """A `RetryPolicy.sleep` that records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@dataclass
class Api:
    """A provider's fake server, shared by the tests of this module, and its backends."""

    name: str
    server: FakeServer
    make: Callable[..., lmdsl.Backend]
    valid: Reply
    sleeps: Sleeps = field(default_factory=Sleeps)
    made: dict[tuple[Any, ...], lmdsl.Backend] = field(default_factory=dict)

    def backend(self, *, retries: int = RETRIES, **options: Any) -> lmdsl.Backend:
        """A backend of this server, made once per set of options (making one takes tens of ms);
        its waits are recorded in `sleeps`."""
        key = (retries, *sorted(options.items()))
        if key not in self.made:
            policy = lmdsl.RetryPolicy(max_retries=retries, sleep=self.sleeps)
            self.made[key] = self.make(self.server.url, retry=policy, timeout=5.0, **options)
        return self.made[key]

    def serve(self, reply: Reply, *then: Reply) -> None:
        """Answer every request with `reply`, after the scripted replies `then`; forget past waits."""
        self.server.reset(lambda _: reply)
        self.server.script(*then)
        self.sleeps.waits.clear()

    @property
    def calls(self) -> int:
        return len(self.server.requests)


def _openai(url: str, **options: Any) -> lmdsl.Backend:
    return lmdsl.OpenAIModel("test-model", api_key=KEY, base_url=f"{url}/v1", **options)


def _claude(url: str, **options: Any) -> lmdsl.Backend:
    return lmdsl.AnthropicModel("claude-test", api_key=KEY, base_url=url, **options)


@pytest.fixture(scope="module")
def openai() -> Iterator[Api]:
    valid = openai_message(json.dumps(TRIAGED))
    with FakeServer(lambda _: valid) as server:
        yield Api("openai", server, _openai, valid)


@pytest.fixture(scope="module")
def claude() -> Iterator[Api]:
    valid = claude_tool(TRIAGED)
    with FakeServer(lambda _: valid) as server:
        yield Api("anthropic", server, _claude, valid)


@pytest.fixture(params=["openai", "anthropic"])
def api(request: pytest.FixtureRequest) -> Api:
    fixture: Api = request.getfixturevalue("openai" if request.param == "openai" else "claude")
    return fixture


# -- building bad bodies --------------------------------------------------------------------
Path = tuple[str | int, ...]


def changed(reply: Reply, path: Path, value: Any = ..., *, status: int = 200) -> Reply:
    """`reply` with the value at `path` replaced by `value`, or removed when no value is given."""
    body = copy.deepcopy(reply.body)
    *parents, last = path
    node = body
    for step in parents:
        node = node[step]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return Reply(status, body)


OPENAI_OK = openai_message('{"category": "bug", "urgent": true}')
CLAUDE_OK = claude_tool(TRIAGED)
CLAUDE_TEXT = claude_text('{"category": "bug", "urgent": true}')

HTML = b"<!DOCTYPE html><html><head><title>Welcome to the proxy</title></head><body><h1>Hello</h1></body></html>"
GARBAGE_200: dict[str, Reply] = {
    "malformed JSON": Reply(raw=b'{"id": "x", "choices": [{"message": '),
    "an empty body": Reply(raw=b""),
    "an HTML page": Reply(raw=HTML, content_type="text/html"),
    "an HTML page labelled JSON": Reply(raw=HTML),
    "bytes that are not UTF-8": Reply(raw=b'{"content": "\xff\xfe\xfd"}'),
    "JSON nested too deep": Reply(raw=b"[" * 100_000),
    "JSON null": Reply(raw=b"null"),
    "a JSON list": Reply(body=[1, 2, 3]),
    "a JSON string": Reply(body="OK"),
    "a JSON number": Reply(body=200),
    "an empty object": Reply(body={}),
    "an error sent as a success": Reply(body={"error": {"message": "upstream overloaded", "type": "server_error"}}),
}

OPENAI_BAD: dict[str, Reply] = {
    **GARBAGE_200,
    "choices empty": changed(OPENAI_OK, ("choices",), []),
    "choices missing": changed(OPENAI_OK, ("choices",)),
    "choices an object": changed(OPENAI_OK, ("choices",), {"0": OPENAI_OK.body["choices"][0]}),
    "a choice that is a string": changed(OPENAI_OK, ("choices", 0), "hello"),
    "a choice without a message": changed(OPENAI_OK, ("choices", 0, "message")),
    "a message that is a string": changed(OPENAI_OK, ("choices", 0, "message"), "hello"),
    "content null without a tool call": changed(OPENAI_OK, ("choices", 0, "message", "content"), None),
    "content missing": changed(OPENAI_OK, ("choices", 0, "message", "content")),
    "content a number": changed(OPENAI_OK, ("choices", 0, "message", "content"), 42),
    "content a list": changed(OPENAI_OK, ("choices", 0, "message", "content"), [{"type": "text", "text": "x"}]),
    "usage not an object": changed(OPENAI_OK, ("usage",), "lots"),
    "usage tokens as text": changed(OPENAI_OK, ("usage", "prompt_tokens"), "12"),
    "usage tokens negative": changed(OPENAI_OK, ("usage", "completion_tokens"), -5),
    "usage tokens fractional": changed(OPENAI_OK, ("usage", "completion_tokens"), 2.5),
    "usage tokens missing": changed(OPENAI_OK, ("usage", "prompt_tokens")),
    "finish_reason a number": changed(OPENAI_OK, ("choices", 0, "finish_reason"), 3),
    "tool call arguments not text": changed(
        OPENAI_OK,
        ("choices", 0, "message"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "reply", "arguments": {"a": 1}}}],
        },
    ),
}

CLAUDE_BAD: dict[str, Reply] = {
    **GARBAGE_200,
    "content missing": changed(CLAUDE_OK, ("content",)),
    "content null": changed(CLAUDE_OK, ("content",), None),
    "content a string": changed(CLAUDE_OK, ("content",), "hello"),
    "a block that is a string": changed(CLAUDE_OK, ("content", 0), "hello"),
    "a block without a type": changed(CLAUDE_OK, ("content", 0, "type")),
    "a block of an unknown type": changed(CLAUDE_OK, ("content", 0, "type"), "banana"),
    "a text block without text": changed(CLAUDE_TEXT, ("content", 0, "text")),
    "a text block whose text is a number": changed(CLAUDE_TEXT, ("content", 0, "text"), 5),
    "a tool_use block without input": changed(CLAUDE_OK, ("content", 0, "input")),
    "a tool_use block whose input is a list": changed(CLAUDE_OK, ("content", 0, "input"), [1, 2]),
    "a tool_use block whose input is text": changed(CLAUDE_OK, ("content", 0, "input"), json.dumps(TRIAGED)),
    "a tool_use block whose input is null": changed(CLAUDE_OK, ("content", 0, "input"), None),
    "usage missing": changed(CLAUDE_OK, ("usage",)),
    "usage null": changed(CLAUDE_OK, ("usage",), None),
    "usage tokens as text": changed(CLAUDE_OK, ("usage", "input_tokens"), "12"),
    "usage tokens missing": changed(CLAUDE_OK, ("usage", "output_tokens")),
    "cache tokens as text": changed(CLAUDE_OK, ("usage", "cache_read_input_tokens"), "many"),
    "usage tokens true": changed(CLAUDE_OK, ("usage", "output_tokens"), True),
    "stop_reason unknown": changed(CLAUDE_OK, ("stop_reason",), "banana"),
    "stop_reason a list": changed(CLAUDE_OK, ("stop_reason",), ["end_turn"]),
}


def _expect_response_error(api: Api, request: Request, **options: Any) -> lmdsl.ProviderResponseError:
    backend = api.backend(**options)
    with pytest.raises(lmdsl.ProviderResponseError) as caught:
        backend.complete(request)
    error = caught.value
    assert error.status == 200 and error.provider == backend.name
    assert error.attempts == RETRIES + 1 and api.calls == RETRIES + 1 and len(api.sleeps.waits) == RETRIES
    assert "HTTP 200" in str(error) and f"{RETRIES + 1} attempt" in str(error) and error.message in str(error)
    assert KEY not in str(error) + repr(vars(error))
    return error


# -- each case ------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(OPENAI_BAD))
@pytest.mark.parametrize("request_", [PLAIN, SCHEMA], ids=["plain", "schema"])
def test_openai_a_bad_200_is_a_provider_response_error(openai: Api, case: str, request_: Request) -> None:
    openai.serve(OPENAI_BAD[case])
    _expect_response_error(openai, request_)


@pytest.mark.parametrize("case", list(CLAUDE_BAD))
@pytest.mark.parametrize(
    ("request_", "output"), [(PLAIN, "tool"), (SCHEMA, "tool"), (SCHEMA, "native")], ids=["plain", "tool", "native"]
)
def test_claude_a_bad_200_is_a_provider_response_error(
    claude: Api, case: str, request_: Request, output: Literal["tool", "native"]
) -> None:
    claude.serve(CLAUDE_BAD[case])
    _expect_response_error(claude, request_, output=output)


def test_the_error_says_what_is_wrong(api: Api) -> None:
    api.serve(Reply(raw=HTML, content_type="text/html"))
    error = _expect_response_error(api, PLAIN)
    assert "not JSON" in error.message and "Welcome to the proxy" in error.message
    bad = OPENAI_BAD["choices empty"] if api.name == "openai" else CLAUDE_BAD["a block of an unknown type"]
    api.serve(bad)
    error = _expect_response_error(api, PLAIN)
    assert ("choices" if api.name == "openai" else "banana") in error.message


def test_a_bad_200_then_a_good_one_is_a_retry(api: Api) -> None:
    api.serve(api.valid, Reply(raw=b"<html>upstream hiccup</html>", content_type="text/html"))
    completion = api.backend().complete(SCHEMA)
    assert json.loads(completion.text) == TRIAGED and api.calls == 2 and len(api.sleeps.waits) == 1


def test_a_typed_call_retries_a_bad_200_and_does_not_reask(api: Api) -> None:
    api.serve(api.valid, Reply(raw=b""), Reply(body={"choices": []}))
    with lmdsl.using(model=api.backend(), cache=False):
        assert triage("It crashes.") == Ticket(category="bug", urgent=True)
    assert api.calls == 3 and len(lmdsl.history()[-1].attempts) == 1  # the retries are the backend's


def test_the_key_echoed_in_a_bad_body_is_redacted(api: Api) -> None:
    api.serve(Reply(raw=f"<html>Authorization: Bearer {KEY}</html>".encode(), content_type="text/html"))
    error = _expect_response_error(api, PLAIN)
    assert "[redacted]" in error.message


@pytest.mark.parametrize("at", [0, 50, 110, 115, 190, 290, 295, 990])
def test_no_part_of_the_key_is_left_where_a_message_is_cut(api: Api, at: int) -> None:
    filler = "x" * at
    bodies = [
        Reply(raw=f"<html><title>{filler}{KEY} and more</title></html>".encode(), content_type="text/html"),
        Reply(raw=f"{filler}{KEY} and more".encode(), content_type="text/plain"),
        Reply(body={"error": {"message": f"{filler}{KEY} and more"}}),
        Reply(500, raw=f"{filler}{KEY} and more".encode(), content_type="text/plain"),
        Reply(500, body={"error": {"message": f"{filler}{KEY} and more " * 50}}),
    ]
    if api.name == "anthropic":
        bodies.append(changed(CLAUDE_OK, ("content", 0, "type"), f"{filler}{KEY} and more"))
        bodies.append(changed(CLAUDE_OK, ("stop_reason",), f"{filler}{KEY} and more"))
    for body in bodies:
        api.serve(body)
        with pytest.raises(lmdsl.ProviderError) as caught:
            api.backend(retries=0).complete(PLAIN)
        shown = str(caught.value) + repr(vars(caught.value))
        assert "sk-test" not in shown and "SECRET" not in shown


def test_an_error_sent_as_a_success_says_so(api: Api) -> None:
    api.serve(GARBAGE_200["an error sent as a success"])
    assert _expect_response_error(api, PLAIN).message == "the body is an error: upstream overloaded"


# -- text that is not valid Unicode: the model's output, for the call loop's parser ----------
def test_a_lone_surrogate_comes_through_unchanged(api: Api) -> None:
    """A JSON `\\ud800` escape is valid JSON: the text is what the model (or its server) wrote.
    The backend passes it on; the call loop's parser rejects it and re-asks."""
    backend = api.backend()
    if api.name == "openai":
        api.serve(openai_message('{"category": "b\ud800ug"}'))
        assert backend.complete(SCHEMA).text == '{"category": "b\ud800ug"}'
    else:
        api.serve(claude_text("bug \udfff"))
        assert backend.complete(PLAIN).text == "bug \udfff"
        api.serve(claude_tool({"category": "b\ud800ug", "\udc00": 1}))
        assert json.loads(backend.complete(SCHEMA).text) == {"category": "b\ud800ug", "\udc00": 1}
    assert api.calls == 1


def test_a_lone_surrogate_is_reasked_by_the_call_loop(api: Api, tmp_path: Any) -> None:
    bad = {"category": "b\ud800ug", "urgent": True}
    api.serve(
        api.valid, openai_message(json.dumps(bad, ensure_ascii=False)) if api.name == "openai" else claude_tool(bad)
    )
    with lmdsl.using(model=api.backend(), cache=True, cache_dir=tmp_path):  # the cache stores it on the way
        assert triage("It crashes.") == Ticket(category="bug", urgent=True)
    first, second = lmdsl.history()[-1].attempts
    assert "\ud800" in first.text or "\\ud800" in first.text  # the record may escape it
    assert first.error and second.error is None and api.calls == 2


def test_garbled_compression_is_a_transient_failure(api: Api) -> None:
    api.serve(Reply(raw=b"not gzip at all", headers={"content-encoding": "gzip"}))
    with pytest.raises(lmdsl.ProviderError) as caught:
        api.backend().complete(PLAIN)
    assert caught.value.attempts == RETRIES + 1 and api.calls == RETRIES + 1


def test_a_compressed_valid_reply_is_read(api: Api) -> None:
    data = gzip.compress(json.dumps(api.valid.body).encode())
    api.serve(Reply(raw=data, headers={"content-encoding": "gzip"}))
    assert json.loads(api.backend().complete(SCHEMA).text) == TRIAGED


# -- valid replies that look odd stay valid -------------------------------------------------
def test_openai_valid_variants(openai: Api) -> None:
    backend = openai.backend()
    openai.serve(changed(OPENAI_OK, ("usage",)))  # usage is optional in the API
    assert backend.complete(PLAIN).usage == lmdsl.Usage()
    openai.serve(changed(OPENAI_OK, ("usage",), None))
    assert backend.complete(PLAIN).usage == lmdsl.Usage()
    openai.serve(openai_message("cut", finish_reason="length"))
    assert backend.complete(PLAIN).finish_reason == "length"
    for reason in (None, "eos_token", "content_filter", "banana"):  # servers name their own reasons (TGI: eos_token)
        openai.serve(changed(OPENAI_OK, ("choices", 0, "finish_reason"), reason))
        assert backend.complete(PLAIN).finish_reason == "stop"
    refusal = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    openai.serve(changed(OPENAI_OK, ("choices", 0, "message"), refusal))
    assert backend.complete(PLAIN).text == "I can't help with that."
    call = {"id": "c1", "type": "function", "function": {"name": "reply", "arguments": '{"category": "bug"}'}}
    tool = {"role": "assistant", "content": None, "tool_calls": [call]}
    openai.serve(
        changed(changed(OPENAI_OK, ("choices", 0, "message"), tool), ("choices", 0, "finish_reason"), "tool_calls")
    )
    assert backend.complete(PLAIN).text == '{"category": "bug"}'
    openai.serve(changed(OPENAI_OK, ("choices", 0, "message", "content"), "emoji \U0001f600 and \u00e9"))
    assert backend.complete(PLAIN).text == "emoji \U0001f600 and \u00e9"
    extra = changed(OPENAI_OK, ("choices", 0, "message", "reasoning_content"), "thinking...")
    openai.serve(changed(extra, ("system_fingerprint",), {"anything": [1]}))
    assert json.loads(backend.complete(PLAIN).text) == TRIAGED


def test_claude_valid_variants(claude: Api) -> None:
    backend = claude.backend()
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    claude.serve(claude_message([thinking, {"type": "text", "text": "a bug"}]))
    assert backend.complete(PLAIN).text == "a bug"
    claude.serve(claude_message([]))  # the model said nothing: the call loop re-asks
    assert backend.complete(PLAIN).text == ""
    claude.serve(changed(CLAUDE_TEXT, ("usage", "cache_read_input_tokens"), 100))
    assert backend.complete(PLAIN).usage.input_tokens == 112
    claude.serve(changed(CLAUDE_TEXT, ("usage", "cache_creation_input_tokens"), None))
    assert backend.complete(PLAIN).usage.input_tokens == 12
    claude.serve(claude_text("cut", stop_reason="max_tokens"))
    assert backend.complete(PLAIN).finish_reason == "length"
    claude.serve(changed(CLAUDE_TEXT, ("stop_reason",), None))
    assert backend.complete(PLAIN).finish_reason == "stop"
    claude.serve(claude_tool({"category": "bug \U0001f41e", "urgent": True}))
    assert json.loads(backend.complete(SCHEMA).text) == {"category": "bug \U0001f41e", "urgent": True}


# -- error statuses with garbage bodies -----------------------------------------------------
NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def test_an_html_502_is_retried_and_reads_well(api: Api) -> None:
    api.serve(Reply(502, raw=NGINX_502, content_type="text/html"))
    with pytest.raises(lmdsl.ProviderError) as caught:
        api.backend().complete(PLAIN)
    error = caught.value
    assert type(error) is lmdsl.ProviderError and error.status == 502 and error.attempts == RETRIES + 1
    assert error.message == "502 Bad Gateway" and "<" not in str(error)


@pytest.mark.parametrize(
    ("status", "raw", "said"),
    [
        (503, b"", "(an empty body)"),
        (500, b"Internal Server Error\n", "Internal Server Error"),
        (500, b'{"error": "model \'x\' crashed"}', "model 'x' crashed"),  # Ollama's shape
        (500, b'{"detail": "worker died"}', "worker died"),  # FastAPI's shape
        (500, b'{"object": "error", "message": "out of memory", "code": 500}', "out of memory"),  # vLLM's
        (500, b'{"error": {"message": 42}}', "{'message': 42}"),
        (500, b"\xff\xfe garbage \x00", "garbage"),
        (500, b"[" * 100_000, "[[["),
    ],
)
def test_an_error_status_with_an_odd_body_reads_well(api: Api, status: int, raw: bytes, said: str) -> None:
    api.serve(Reply(status, raw=raw, content_type="text/plain"))
    with pytest.raises(lmdsl.ProviderError) as caught:
        api.backend(retries=0).complete(PLAIN)
    error = caught.value
    assert error.status == status and said in error.message and len(error.message) <= 300


def test_an_html_401_echoing_the_key_is_redacted(api: Api) -> None:
    page = f"<html><body><h1>401 Unauthorized</h1><p>bad key {KEY}</p></body></html>".encode()
    api.serve(Reply(401, raw=page, content_type="text/html"))
    with pytest.raises(lmdsl.ProviderAuthError) as caught:
        api.backend().complete(PLAIN)
    assert api.calls == 1 and KEY not in str(caught.value) + repr(vars(caught.value))
    assert "401 Unauthorized" in caught.value.message and "[redacted]" in caught.value.message


def test_an_html_400_is_a_request_error(api: Api) -> None:
    api.serve(Reply(400, raw=b"<html><title>400 Bad Request</title></html>", content_type="text/html"))
    with pytest.raises(lmdsl.ProviderRequestError) as caught:
        api.backend().complete(PLAIN)
    assert api.calls == 1 and caught.value.message == "400 Bad Request"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "soon",
        "-5",
        "nan",
        "inf",
        "1e309",
        "Mon, 01 Jan 99999 00:00:00 GMT",
        "Mon, 01 Jan 0001 00:00:00 -0000",
        "Mon, 01 Jan 2001 00:00:00 +9999",
        "Mon, 01 Jan 2001 00:00:00 GMT",
    ],
)
def test_an_odd_retry_after_is_a_wait_or_a_provider_error(api: Api, value: str) -> None:
    error = openai_error if api.name == "openai" else claude_error
    api.serve(api.valid, error(429, "Rate limited", {"retry-after": value, "retry-after-ms": value}))
    try:
        assert json.loads(api.backend().complete(SCHEMA).text) == TRIAGED
    except lmdsl.ProviderError as failed:
        assert failed.status == 429 and "longer than RetryPolicy.max_retry_after" in str(failed)
    else:
        assert len(api.sleeps.waits) == 1 and 0 <= api.sleeps.waits[0] <= 60.5


# -- any body at all: the property ----------------------------------------------------------
def _json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    leaves = st.none() | st.booleans() | st.integers() | st.floats() | text
    return st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
        max_leaves=12,
    )


TEXT = st.text(st.characters(exclude_categories=()) | st.characters(categories=["Cs"]), max_size=12)
JSON_VALUES = _json_values(TEXT)
VALID_BODIES = {
    "openai": [OPENAI_OK.body, openai_message("plain words", finish_reason="length").body],
    "anthropic": [
        CLAUDE_OK.body,
        CLAUDE_TEXT.body,
        claude_message([{"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "x"}]).body,
    ],
}


def _paths(value: Any, prefix: Path = ()) -> list[Path]:
    """Every place in a JSON value, the root excepted."""
    found: list[Path] = []
    children: list[tuple[str | int, Any]] = (
        list(value.items()) if isinstance(value, dict) else list(enumerate(value)) if isinstance(value, list) else []
    )
    for step, child in children:
        found.append((*prefix, step))
        found.extend(_paths(child, (*prefix, step)))
    return found


@st.composite
def _mutated(draw: st.DrawFn, provider: str) -> Reply:
    """A valid reply of `provider` with a few fields removed, retyped or replaced."""
    body = copy.deepcopy(draw(st.sampled_from(VALID_BODIES[provider])))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(body)
        if not paths:
            break
        *parents, last = draw(st.sampled_from(paths))
        node = body
        for step in parents:
            node = node[step]
        action = draw(st.sampled_from(["remove", "replace", "wrap", "stringify"]))
        if action == "remove":
            del node[last]
        elif action == "replace":
            node[last] = draw(JSON_VALUES)
        elif action == "wrap":
            node[last] = [node[last]]
        else:
            node[last] = json.dumps(node[last])
    return Reply(body=body)


def _bodies(provider: str) -> st.SearchStrategy[Reply]:
    raw = st.binary(max_size=64).map(lambda data: Reply(raw=data))
    any_json = JSON_VALUES.map(lambda value: Reply(raw=json.dumps(value).encode()))
    truncated = st.builds(
        lambda body, cut: Reply(raw=json.dumps(body).encode()[:cut]),
        st.sampled_from(VALID_BODIES[provider]),
        st.integers(0, 400),
    )
    bodies = st.one_of(raw, any_json, truncated, _mutated(provider), _mutated(provider))
    return st.builds(lambda reply, status: replace(reply, status=status), bodies, STATUSES)


STATUSES = st.sampled_from([200] * 6 + [201, 400, 404, 429, 500, 502, 529])  # mostly success: the case at issue


def _check_completion(completion: Completion) -> None:
    assert isinstance(completion, Completion) and isinstance(completion.text, str)
    completion.text.encode("utf-8")  # valid Unicode: the cache, the parser and the next prompt can take it
    usage = completion.usage
    assert all(type(n) is int and n >= 0 for n in (usage.input_tokens, usage.output_tokens))
    assert completion.finish_reason in ("stop", "length")


def _run(api: Api, reply: Reply, request: Request, typed: bool, **options: Any) -> None:
    api.serve(reply)
    backend = api.backend(retries=1, **options)
    try:
        if typed:
            with lmdsl.using(model=backend, cache=False):
                assert isinstance(triage("It crashes."), Ticket)
        else:
            _check_completion(backend.complete(request))
        event("a typed value" if typed else "a completion")
    except lmdsl.LMDSLError as error:
        event(type(error).__name__)
        if isinstance(error, lmdsl.ProviderError):
            assert error.provider == backend.name and 1 <= error.attempts <= 2
            assert isinstance(error.message, str) and KEY not in str(error)
    assert 1 <= api.calls <= (triage.retries + 1) * 3  # OpenAI's fallback to JSON mode is one more


PROPERTY = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(reply=_bodies("openai"), request_=st.sampled_from([PLAIN, SCHEMA]), typed=st.booleans())
def test_openai_any_body_is_a_completion_or_an_lmdsl_error(
    openai: Api, reply: Reply, request_: Request, typed: bool
) -> None:
    _run(openai, reply, request_, typed)


@PROPERTY
@given(
    reply=_bodies("anthropic"),
    request_=st.sampled_from([PLAIN, SCHEMA]),
    output=st.sampled_from(["tool", "native"]),
    typed=st.booleans(),
)
def test_claude_any_body_is_a_completion_or_an_lmdsl_error(
    claude: Api, reply: Reply, request_: Request, output: str, typed: bool
) -> None:
    _run(claude, reply, request_, typed, output=output)


def test_an_sdk_that_refuses_before_sending_is_a_provider_error(openai: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client library that raises something of its own before any request (as anthropic's
    does for a non-streaming request it expects to outlast its timeout): an lmdsl error naming
    it, with the key removed, not retried."""
    openai.serve(openai.valid)
    backend = _openai(openai.server.url, retry=lmdsl.RetryPolicy(max_retries=2, sleep=openai.sleeps))

    def refuse(**options: Any) -> Any:
        raise ValueError(f"cannot send this with key {KEY}")

    monkeypatch.setattr(backend._client.chat.completions.with_raw_response, "create", refuse)  # type: ignore[attr-defined]
    with pytest.raises(lmdsl.ProviderError, match="the client library failed: ValueError") as caught:
        backend.complete(PLAIN)
    assert KEY not in str(caught.value)
    assert caught.value.attempts == 1 and openai.calls == 0 and openai.sleeps.waits == []
