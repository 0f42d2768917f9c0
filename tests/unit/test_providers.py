"""The hosted backends, driven through the real `anthropic` and `openai` SDKs against fake
provider servers on 127.0.0.1 (`tests/provider_servers.py`): typed results, re-asking,
transient failures and their retries, errors that are not retried, the API key kept out of
every log, cache row, record and message, and the bound on concurrent requests."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import lmdsl
from lmdsl.lm import resolve_model
from lmdsl.lm.hosted import split_base_url
from lmdsl.lm.types import Message, Request
from tests.provider_servers import (
    FakeServer,
    Recorded,
    Reply,
    claude_error,
    claude_text,
    claude_tool,
    openai_error,
    openai_message,
)

# The real provider backends, talking to fake servers: live backends to lmdsl's pytest plugin.
pytestmark = pytest.mark.lmdsl_live

CLAUDE_KEY = "sk-ant-test-SECRET-1234"
OPENAI_KEY = "sk-proj-test-SECRET-5678"


class Ticket(BaseModel):
    category: Literal["billing", "bug", "other"]
    urgent: bool


@lmdsl.fuzzy
def triage(message: str) -> Ticket:
    """Sort a customer's support message."""


@lmdsl.fuzzy
def sentiment(review: str) -> Literal["positive", "negative"]:
    """Classify the sentiment of a movie review."""


TRIAGED = {"category": "bug", "urgent": True}


class Sleeps:
    """A `RetryPolicy.sleep` that records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


# -- one fixture, both providers ------------------------------------------------------------
@dataclass(frozen=True)
class Provider:
    name: str
    key: str
    key_variable: str
    reply: Callable[[Any], Reply]  # a valid reply carrying this JSON value
    text: Callable[[str], Reply]  # a reply whose text (or tool input) is this raw text
    error: Callable[..., Reply]
    make: Callable[..., lmdsl.Backend]


def _claude_raw(text: str) -> Reply:
    """A reply with this raw output: a tool call when it is a JSON object, else plain text."""
    try:
        data = json.loads(text)
    except ValueError:
        return claude_text(text)
    return claude_tool(data) if isinstance(data, dict) else claude_text(text)


CLAUDE = Provider(
    "anthropic",
    CLAUDE_KEY,
    "ANTHROPIC_API_KEY",
    claude_tool,
    _claude_raw,
    claude_error,
    lambda url, **options: lmdsl.AnthropicModel("claude-test", api_key=CLAUDE_KEY, base_url=url, **options),
)
OPENAI = Provider(
    "openai",
    OPENAI_KEY,
    "OPENAI_API_KEY",
    lambda data: openai_message(json.dumps(data)),
    openai_message,
    openai_error,
    lambda url, **options: lmdsl.OpenAIModel("test-model", api_key=OPENAI_KEY, base_url=f"{url}/v1", **options),
)


@dataclass
class Api:
    """A provider's fake server and a way to make backends that talk to it."""

    provider: Provider
    server: FakeServer
    sleeps: Sleeps

    def backend(self, **options: Any) -> lmdsl.Backend:
        options.setdefault("retry", lmdsl.RetryPolicy(sleep=self.sleeps))
        return self.provider.make(self.server.url, **options)

    @property
    def calls(self) -> int:
        return len(self.server.requests)


@pytest.fixture(params=[CLAUDE, OPENAI], ids=lambda provider: provider.name)
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    provider: Provider = request.param
    with FakeServer(lambda _: provider.reply(TRIAGED)) as server:
        yield Api(provider, server, Sleeps())


@pytest.fixture
def claude() -> Iterator[Api]:
    with FakeServer(lambda _: claude_tool(TRIAGED)) as server:
        yield Api(CLAUDE, server, Sleeps())


@pytest.fixture
def openai() -> Iterator[Api]:
    with FakeServer(lambda _: OPENAI.reply(TRIAGED)) as server:
        yield Api(OPENAI, server, Sleeps())


# -- typed results ------------------------------------------------------------------------
def test_a_pydantic_output_comes_back_typed(api: Api) -> None:
    with lmdsl.using(model=api.backend(), cache=False):
        ticket = triage("The app crashes when I open settings.")
    assert ticket == Ticket(category="bug", urgent=True)
    record = lmdsl.history()[-1]
    assert record.model.startswith(f"{api.provider.name}:") and record.usage.output_tokens == 5
    sent = api.server.requests[0]
    assert sent.headers["authorization"] == f"Bearer {api.provider.key}"
    assert "The app crashes when I open settings." in json.dumps(sent.body)


def test_a_literal_output_comes_back_typed(api: Api) -> None:
    api.server.script(api.provider.reply({"sentiment": "negative"}))
    with lmdsl.using(model=api.backend(), cache=False):
        assert sentiment("A dull, lifeless film.") == "negative"


def test_claude_gets_system_blocks_a_forced_tool_and_the_prefix_marked_for_caching(claude: Api) -> None:
    @lmdsl.fuzzy
    def label(review: str) -> Literal["positive", "negative"]:
        """Classify the sentiment of a movie review."""

    label.params = lmdsl.Params(
        "Classify the review.",
        (lmdsl.Demo({"review": "Loved it."}, "positive"), lmdsl.Demo({"review": "Awful."}, "negative")),
    )
    claude.server.script(claude_tool({"label": "positive"}))
    with lmdsl.using(model=claude.backend(), cache=False):
        assert label("A delight.") == "positive"
    body = claude.server.requests[0].body
    assert body["model"] == "claude-test" and body["max_tokens"] == lmdsl.history()[-1].attempts[0].request.max_tokens
    assert "temperature" not in body  # the Messages API version the SDK speaks has no sampling parameters
    assert body["system"] == [
        {
            "type": "text",
            "text": (
                "Classify the review.\n\nInputs:\n- review (str)\n\n"
                'Reply with one JSON object of this shape.\n{"label": "positive" | "negative"}'
            ),
        }
    ]
    turns = body["messages"]
    assert [turn["role"] for turn in turns] == ["user", "assistant", "user", "assistant", "user"]
    marked = [i for i, turn in enumerate(turns) if "cache_control" in turn["content"][0]]
    assert marked == [3]  # the last demonstration: the end of the static prefix
    assert turns[3]["content"][0] == {
        "type": "text",
        "text": '{"label": "negative"}',
        "cache_control": {"type": "ephemeral"},
    }
    (tool,) = body["tools"]
    assert tool["name"] == "reply" and body["tool_choice"] == {
        "type": "tool",
        "name": "reply",
        "disable_parallel_tool_use": True,
    }
    assert {k: v for k, v in tool["input_schema"].items() if k != "title"} == {
        "type": "object",
        "properties": {"label": {"enum": ["positive", "negative"], "type": "string"}},
        "required": ["label"],
    }


def test_without_demos_the_system_prompt_is_the_cached_prefix(claude: Api) -> None:
    with lmdsl.using(model=claude.backend(), cache=False):
        triage("Refund my last invoice.")
    body = claude.server.requests[0].body
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in body["messages"][0]["content"][0]


def test_openai_gets_a_json_schema_response_format(openai: Api) -> None:
    with lmdsl.using(model=openai.backend(), cache=False, temperature=0.3):
        triage("Refund my last invoice.")
    body = openai.server.requests[0].body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "reply",
            "strict": False,
            "schema": {
                "type": "object",
                "properties": {
                    "category": {"enum": ["billing", "bug", "other"], "type": "string"},
                    "urgent": {"type": "boolean"},
                },
                "required": ["category", "urgent"],
            },
        },
    }
    assert body["temperature"] == 0.3 and body["max_tokens"] > 0 and body["model"] == "test-model"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]


def test_openai_falls_back_to_json_mode_once_and_remembers(openai: Api) -> None:
    def server(request: Recorded) -> Reply:
        if request.body["response_format"]["type"] == "json_schema":
            return openai_error(400, "response_format 'json_schema' is not supported by this server")
        return openai_message(json.dumps(TRIAGED))

    openai.server.default = server
    backend = openai.backend()
    with lmdsl.using(model=backend, cache=False):
        triage("first")
        triage("second")
    formats = [body["response_format"]["type"] for body in openai.server.bodies()]
    assert formats == ["json_schema", "json_object", "json_object"]


def test_claude_native_structured_output(claude: Api) -> None:
    claude.server.script(claude_text(json.dumps(TRIAGED)))
    backend = claude.backend(output="native")
    assert backend.name.endswith("?output=native")  # another way of asking: another cache key
    with lmdsl.using(model=backend, cache=False):
        assert triage("It crashes.") == Ticket(category="bug", urgent=True)
    body = claude.server.requests[0].body
    assert "tools" not in body and body["output_config"]["format"]["type"] == "json_schema"


def test_claude_wraps_a_schema_that_is_not_an_object(claude: Api) -> None:
    claude.server.script(claude_tool({"value": [3, 1, 2]}))
    schema = json.dumps({"type": "array", "items": {"type": "integer"}})
    completion = claude.backend().complete(Request((Message("user", "three numbers"),), json_schema=schema))
    assert json.loads(completion.text) == [3, 1, 2]
    sent = claude.server.requests[0].body["tools"][0]["input_schema"]
    assert sent["properties"] == {"value": {"type": "array", "items": {"type": "integer"}}}


# -- re-asking: lmdsl's one call loop, for every backend ------------------------------------
def test_an_invalid_reply_is_sent_back_with_the_validation_error(api: Api) -> None:
    api.server.script(api.provider.text('{"category": "refund", "urgent": true}'))
    with lmdsl.using(model=api.backend(), cache=False):
        assert triage("Refund my last invoice.") == Ticket(category="bug", urgent=True)
    assert api.calls == 2
    second = json.dumps(api.server.requests[1].body)
    assert "Your reply is invalid: category: Input should be 'billing', 'bug' or 'other'" in second
    first, last = lmdsl.history()[-1].attempts
    assert first.error is not None and "category" in first.error and last.error is None


def test_a_claude_reply_without_the_tool_call_is_reasked(claude: Api) -> None:
    claude.server.script(claude_text("I think this is a bug."))
    with lmdsl.using(model=claude.backend(), cache=False):
        triage("It crashes.")
    first = lmdsl.history()[-1].attempts[0]
    assert first.text == "I think this is a bug." and first.error and "not valid JSON" in first.error


def test_output_error_carries_every_attempt(api: Api) -> None:
    bad = ['{"category": "refund", "urgent": true}', '{"category": "bug"}', "no idea"]
    api.server.script(*(api.provider.text(text) for text in bad))
    with lmdsl.using(model=api.backend(), cache=False), pytest.raises(lmdsl.OutputError) as caught:
        triage("Refund my last invoice.")
    texts = [attempt.text for attempt in caught.value.attempts]
    assert texts == [json.dumps(json.loads(bad[0])), json.dumps(json.loads(bad[1])), "no idea"]
    assert all(attempt.error for attempt in caught.value.attempts) and api.calls == 3


def test_a_reply_cut_off_at_max_tokens_is_retried_with_more_room(claude: Api) -> None:
    claude.server.script(claude_tool({"category": "bu"}, stop_reason="max_tokens"))
    with lmdsl.using(model=claude.backend(), cache=False):
        triage("It crashes.")
    first, second = (body["max_tokens"] for body in claude.server.bodies())
    assert second == 2 * first and lmdsl.history()[-1].attempts[0].finish_reason == "length"


# -- transient failures -------------------------------------------------------------------
@pytest.mark.parametrize("status", [529, 503, 500, 502])
def test_a_transient_failure_is_retried(api: Api, status: int) -> None:
    api.server.script(api.provider.error(status, "Overloaded"))
    with lmdsl.using(model=api.backend(), cache=False):
        assert triage("It crashes.").category == "bug"
    assert api.calls == 2
    (wait,) = api.sleeps.waits
    assert 0.5 * 0.75 <= wait <= 0.5  # the first backoff: initial_delay less up to 25% jitter


@pytest.mark.parametrize(("header", "value", "seconds"), [("retry-after", "7", 7.0), ("retry-after-ms", "1500", 1.5)])
def test_rate_limits_wait_as_long_as_the_provider_asks(api: Api, header: str, value: str, seconds: float) -> None:
    api.server.script(api.provider.error(429, "Rate limited", {header: value}))
    with lmdsl.using(model=api.backend(), cache=False):
        triage("It crashes.")
    assert api.calls == 2
    (wait,) = api.sleeps.waits
    assert seconds <= wait <= seconds + 0.25 * 0.5


def test_retry_after_is_really_waited(claude: Api) -> None:
    claude.server.script(claude_error(429, "Rate limited", {"retry-after": "1"}))
    started = time.monotonic()
    with lmdsl.using(model=claude.backend(retry=lmdsl.RetryPolicy()), cache=False):  # the real time.sleep
        triage("It crashes.")
    assert time.monotonic() - started >= 1.0 and claude.calls == 2


def test_retry_after_as_an_http_date_waits_until_then(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmdsl.lm import hosted

    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    monkeypatch.setattr(time, "time", lambda: now)  # the module hosted reads the clock from
    assert hosted._retry_after({"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}) == 30.0
    assert hosted._retry_after({"retry-after": "Tue, 14 Nov 2023 22:13:00 GMT"}) == 0.0  # already past
    assert hosted._retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25  # the finer one wins
    assert hosted._retry_after({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    assert hosted._retry_after({}) is None


@pytest.mark.parametrize(
    ("status", "header", "retried"), [(400, "true", True), (503, "false", False), (503, "maybe", True)]
)
def test_x_should_retry_overrides_the_status(api: Api, status: int, header: str, retried: bool) -> None:
    api.server.script(api.provider.error(status, "Said so", {"x-should-retry": header}))
    with lmdsl.using(model=api.backend(), cache=False):
        if retried:
            assert triage("It crashes.").category == "bug"
        else:
            with pytest.raises(lmdsl.ProviderError) as caught:
                triage("It crashes.")
            assert caught.value.status == status and caught.value.attempts == 1
    assert api.calls == (2 if retried else 1)


def test_a_longer_wait_than_allowed_fails_at_once(claude: Api) -> None:
    claude.server.script(claude_error(429, "Rate limited", {"retry-after": "3600"}))
    with lmdsl.using(model=claude.backend(), cache=False), pytest.raises(lmdsl.ProviderError) as caught:
        triage("It crashes.")
    assert caught.value.status == 429 and "3600" in str(caught.value) and claude.sleeps.waits == []


def test_retries_are_bounded_then_a_provider_error_says_why(api: Api) -> None:
    api.server.default = lambda _: api.provider.error(529, "Overloaded")
    backend = api.backend(max_retries=3)
    with lmdsl.using(model=backend, cache=False), pytest.raises(lmdsl.ProviderError) as caught:
        triage("It crashes.")
    error = caught.value
    assert type(error) is lmdsl.ProviderError and isinstance(error, lmdsl.BackendError)
    assert (error.status, error.message, error.attempts, error.provider) == (529, "Overloaded", 4, backend.name)
    assert "HTTP 529: Overloaded" in str(error) and "4 attempt" in str(error)
    assert api.calls == 4
    for retry, wait in enumerate(api.sleeps.waits):  # exponential backoff with jitter
        assert 0.5 * 2**retry * 0.75 <= wait <= 0.5 * 2**retry


def test_a_timeout_is_retried(api: Api) -> None:
    api.server.script(Reply(delay=30.0, body={}))  # the reply comes far too late, the retry gets the default
    with lmdsl.using(model=api.backend(timeout=1.0), cache=False):
        assert triage("It crashes.").category == "bug"
    assert api.calls == 2 and len(api.sleeps.waits) == 1


def test_timeouts_end_in_a_provider_error(claude: Api) -> None:
    claude.server.default = lambda _: Reply(delay=1.0, body={})
    with lmdsl.using(model=claude.backend(timeout=0.2, max_retries=1), cache=False):
        with pytest.raises(lmdsl.ProviderError) as caught:
            triage("It crashes.")
    assert caught.value.status is None and "no reply within the timeout of 0.2 s" in str(caught.value)
    assert caught.value.attempts == 2


def test_a_dropped_connection_is_retried(api: Api) -> None:
    api.server.script(Reply(drop=True))
    with lmdsl.using(model=api.backend(), cache=False):
        assert triage("It crashes.").category == "bug"
    assert api.calls == 2


# -- errors that are not retried ----------------------------------------------------------
def test_a_refused_key_is_not_retried_and_says_which_key_to_fix(api: Api) -> None:
    api.server.script(api.provider.error(401, f"invalid x-api-key: {api.provider.key}"))
    with lmdsl.using(model=api.backend(), cache=False), pytest.raises(lmdsl.ProviderAuthError) as caught:
        triage("It crashes.")
    error = caught.value
    assert api.calls == 1 and error.status == 401 and api.provider.key_variable in str(error)
    assert error.message == "invalid x-api-key: [redacted]"
    assert api.provider.key not in str(error) + repr(error) + repr(error.args)


def test_a_forbidden_request_is_an_auth_error(claude: Api) -> None:
    claude.server.script(claude_error(403, "This key may not use this model"))
    with lmdsl.using(model=claude.backend(), cache=False), pytest.raises(lmdsl.ProviderAuthError) as caught:
        triage("It crashes.")
    assert claude.calls == 1 and caught.value.status == 403


def test_a_bad_request_is_not_retried(api: Api) -> None:
    api.server.script(api.provider.error(400, "max_tokens: must be at most 64000"))
    with lmdsl.using(model=api.backend(), cache=False), pytest.raises(lmdsl.ProviderRequestError) as caught:
        triage("It crashes.")
    assert api.calls == 1 and caught.value.status == 400
    assert "max_tokens: must be at most 64000" in str(caught.value) and "not retried" in str(caught.value)


# -- the API key --------------------------------------------------------------------------
def test_the_key_is_absent_from_logs_cache_records_and_errors(
    api: Api, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: lmdsl, the SDK, httpx2, httpcore2
    key = api.provider.key
    backend = api.backend(max_retries=1)
    api.server.script(
        api.provider.error(529, f"Overloaded (key {key})"),
        api.provider.reply(TRIAGED),
        api.provider.text('{"category": "refund", "urgent": false}'),
        api.provider.reply(TRIAGED),
        api.provider.error(401, f"invalid x-api-key: {key}"),
    )
    errors: list[Exception] = []
    with lmdsl.using(model=backend, cache=True, cache_dir=tmp_path):
        triage("It crashes.")  # a retry, then a reply
        triage("Refund me.")  # a re-ask
        try:
            triage("Hello?")
        except lmdsl.ProviderAuthError as error:
            errors.append(error)
    assert len(errors) == 1 and api.calls == 5
    assert all(request.headers["authorization"] == f"Bearer {key}" for request in api.server.requests)

    assert {f"{api.provider.name}._base_client", "httpx2"} <= {r.name for r in caplog.records}  # the SDK logs too
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.__dict__!r}" for r in caplog.records)
    assert "retry 1 of 1" in logged and key not in logged

    stored = b"".join(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())
    assert backend.name.encode() in stored and key.encode() not in stored  # rows were written, without it

    records = lmdsl.history()
    shown = repr(records) + "".join(record.format() for record in records)
    shown += repr(backend) + str(backend) + backend.name + repr(vars(backend))
    shown += "".join(str(e) + repr(e) + repr(vars(e)) for e in errors)
    assert key not in shown


def test_a_missing_key_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(lmdsl.ConfigurationError, match="ANTHROPIC_API_KEY"):
        lmdsl.AnthropicModel("claude-sonnet-4-5")
    with pytest.raises(lmdsl.ConfigurationError, match="OPENAI_API_KEY"):
        lmdsl.OpenAIModel("gpt-4.1-mini")


def test_a_local_server_needs_no_key(openai: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with lmdsl.using(model=lmdsl.OpenAIModel("test-model", base_url=f"{openai.server.url}/v1"), cache=False):
        triage("It crashes.")
    assert openai.server.requests[0].headers["authorization"] == "Bearer not-needed"


# -- concurrency --------------------------------------------------------------------------
def test_concurrent_requests_stay_within_the_bound(api: Api) -> None:
    api.server.default = lambda _: replace(api.provider.reply(TRIAGED), delay=0.01)
    api.server.gather = 3  # the first requests wait until three are in flight: the bound is reached
    items = [{"message": f"message {n}"} for n in range(15)]
    with lmdsl.using(model=api.backend(max_concurrency=3), cache=False):
        outcomes = triage.map(items, threads=12)
    assert all(outcome.ok for outcome in outcomes) and api.calls == 15
    assert api.server.peak == 3  # reached, never passed


def test_an_evaluation_stays_within_the_bound(claude: Api) -> None:
    claude.server.default = lambda _: replace(claude_tool(TRIAGED), delay=0.01)
    claude.server.gather = 2
    devset = [lmdsl.Example(message=f"message {n}", category="bug") for n in range(8)]
    with lmdsl.using(model=claude.backend(max_concurrency=2), cache=False):
        result = lmdsl.evaluate(
            triage, devset, lambda example, ticket: ticket.category == example.category, threads=8, progress=False
        )
    assert result.score == 100.0 and claude.server.peak == 2


# -- model strings ------------------------------------------------------------------------
def test_model_strings_name_the_hosted_backends(claude: Api, openai: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", CLAUDE_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", claude.server.url)
    model = f"anthropic:claude-{claude.server.url.rsplit(':', 1)[1]}"  # a new string: resolve_model caches per string
    backend = resolve_model(model)
    assert isinstance(backend, lmdsl.AnthropicModel) and backend.name == f"{model}@{claude.server.url}"
    with lmdsl.using(model=model, cache=False):
        triage("It crashes.")
    assert claude.server.requests[0].body["model"] == model.split(":")[1]

    compatible = f"openai:org/model@v2@{openai.server.url}/v1"
    backend = resolve_model(compatible)
    assert isinstance(backend, lmdsl.OpenAIModel) and backend.name == compatible
    with lmdsl.using(model=compatible, cache=False):
        triage("It crashes.")
    assert openai.server.requests[0].body["model"] == "org/model@v2"


def test_base_urls_are_split_off_at_the_first_at_http() -> None:
    assert split_base_url("gpt-4.1-mini") == ("gpt-4.1-mini", None)
    assert split_base_url("m@http://127.0.0.1:8000/v1") == ("m", "http://127.0.0.1:8000/v1")
    assert split_base_url("a@b@https://user@host/v1") == ("a@b", "https://user@host/v1")


def test_an_unknown_model_string_lists_every_form() -> None:
    with pytest.raises(lmdsl.ConfigurationError) as caught:
        resolve_model("gemini:pro")
    for form in ("local", "local:/path/model.gguf", "anthropic:MODEL", "openai:MODEL", "openai:MODEL@http"):
        assert form in str(caught.value)


def test_bad_options_are_configuration_errors() -> None:
    with pytest.raises(lmdsl.ConfigurationError, match="max_concurrency"):
        lmdsl.AnthropicModel("claude-test", api_key=CLAUDE_KEY, max_concurrency=0)
    with pytest.raises(lmdsl.ConfigurationError, match="max_retries"):
        lmdsl.RetryPolicy(max_retries=-1)
    with pytest.raises(lmdsl.ConfigurationError, match="name the model"):
        resolve_model("openai:")


def test_import_lmdsl_loads_no_provider_sdk() -> None:
    code = (
        "import sys, lmdsl; print(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('anthropic', 'openai', 'instructor', 'httpx', 'httpx2')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
