"""The hosted backends' shared policy (`lmdsl.lm.hosted`), driven directly with stand-ins for an
SDK's exception classes: the retry policy and its backoff (waits recorded, never slept), which
failures are retried, the typed error each final failure becomes and its whole message, the
`retry-after` headers, the API key kept out of every message, and `HostedModel`'s options
(over a fake SDK module: no provider SDK is imported, so the file stays fast)."""

from __future__ import annotations

import json
import logging
import random
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from lmdsl.errors import (
    ConfigurationError,
    ModelUnavailableError,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderResponseError,
)
from lmdsl.lm import hosted
from lmdsl.lm.hosted import HostedModel, MalformedReply, ProviderCalls, RetryPolicy, SDKErrors, Secret, resolve_key

KEY = "sk-fake-KEY-0042"
NAME = "fake:model"


# -- stand-ins for an SDK's exceptions ----------------------------------------------------
class StatusError(Exception):
    """The SDK's class for an HTTP error status (a bare one has none of the usual attributes)."""


class ApiStatus(StatusError):
    """Like a Stainless SDK's `APIStatusError`: `status_code`, `response.headers`, `body`, `message`."""

    def __init__(
        self, status: int, body: object = None, headers: dict[str, str] | None = None, message: str = ""
    ) -> None:
        super().__init__(message or f"Error code: {status}")
        self.status_code = status
        self.response = types.SimpleNamespace(headers=headers)
        self.body = body
        self.message = message


class Connection(Exception):
    """The SDK's `APIConnectionError`."""


class Timeout(Connection):
    """The SDK's `APITimeoutError` (a connection error, as in the SDKs)."""


ERRORS = SDKErrors(StatusError, Timeout, Connection)


def said(status: int, message: str, headers: dict[str, str] | None = None) -> ApiStatus:
    """An error status whose JSON body carries `message`, in the shape both APIs use."""
    return ApiStatus(status, {"type": "error", "error": {"type": "some_error", "message": message}}, headers)


class Sleeps:
    """A `RetryPolicy.sleep` that records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Script:
    """A request function answering from a list: an exception is raised, anything else returned."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def calls(
    sleeps: Sleeps, *, secret: Secret | None = Secret(KEY), timeout: float = 30.0, **policy: Any
) -> ProviderCalls:
    return ProviderCalls(
        NAME,
        errors=ERRORS,
        policy=RetryPolicy(sleep=sleeps, **policy),
        max_concurrency=2,
        timeout=timeout,
        secret=secret,
        key_hint="check the key in FAKE_API_KEY",
    )


def identity(response: object) -> object:
    return response


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture(autouse=True)
def _half_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """`random.random()` is 0.5: the jitter is half of its bound, so every wait is known."""
    monkeypatch.setattr(random, "random", lambda: 0.5)


def fail(call: Callable[[], object]) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call()
    return caught.value


def fields(error: ProviderError) -> tuple[str, int | None, str, int]:
    return error.provider, error.status, error.message, error.attempts


# -- RetryPolicy ----------------------------------------------------------------------------
def test_the_default_policy() -> None:
    policy = RetryPolicy()
    assert (policy.max_retries, policy.initial_delay, policy.max_delay, policy.jitter, policy.max_retry_after) == (
        4,
        0.5,
        20.0,
        0.25,
        60.0,
    )
    assert policy.sleep is time.sleep
    assert (
        repr(policy)
        == "RetryPolicy(max_retries=4, initial_delay=0.5, max_delay=20.0, jitter=0.25, max_retry_after=60.0)"
    )
    assert RetryPolicy(sleep=Sleeps()) == policy  # how it sleeps is not part of what it is
    with pytest.raises(FrozenInstanceError):
        policy.max_retries = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_retries": -1}, "max_retries must be a whole number >= 0, not -1"),
        ({"max_retries": 1.5}, "max_retries must be a whole number >= 0, not 1.5"),
        ({"initial_delay": -0.5}, "retry delays must be >= 0 seconds"),
        ({"max_delay": -1.0}, "retry delays must be >= 0 seconds"),
        ({"max_retry_after": -0.1}, "retry delays must be >= 0 seconds"),
        ({"jitter": -0.01}, "jitter must be between 0 and 1, not -0.01"),
        ({"jitter": 1.01}, "jitter must be between 0 and 1, not 1.01"),
    ],
)
def test_a_bad_policy_is_a_configuration_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RetryPolicy(**options)
    assert str(caught.value) == message


def test_the_edges_of_a_policy_are_allowed() -> None:
    lowest = RetryPolicy(max_retries=0, initial_delay=0.0, max_delay=0.0, jitter=0.0, max_retry_after=0.0)
    assert (lowest.max_retries, lowest.initial_delay, lowest.max_delay, lowest.jitter, lowest.max_retry_after) == (
        0,
        0.0,
        0.0,
        0.0,
        0.0,
    )
    assert RetryPolicy(jitter=1.0, initial_delay=0.9, max_delay=0.9, max_retry_after=0.9).jitter == 1.0


def test_the_backoff_doubles_up_to_its_cap_less_the_jitter() -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=10.0, jitter=0.5)  # the jitter takes 0.5 * 0.5 off
    assert [policy.delay(retry) for retry in range(6)] == [0.75, 1.5, 3.0, 6.0, 7.5, 7.5]
    assert RetryPolicy(jitter=0.0).delay(2) == 2.0


def test_a_wait_the_provider_asks_for_is_kept_and_a_little_added() -> None:
    policy = RetryPolicy(initial_delay=2.0, jitter=0.5)  # adds 0.5 * 0.5 * 2.0
    assert policy.delay(0, 7.0) == 7.5
    assert policy.delay(3, 0.0) == 0.5
    assert RetryPolicy(jitter=0.0).delay(1, 3.0) == 3.0


# -- the API key ----------------------------------------------------------------------------
def test_a_secret_never_shows_and_is_redacted_from_text() -> None:
    secret = Secret(KEY)
    assert secret.reveal() == KEY
    assert secret.redact(f"key {KEY}, again {KEY}.") == "key [redacted], again [redacted]."
    assert repr(secret) == str(secret) == "Secret('[redacted]')"
    assert f"{[secret]}" == "[Secret('[redacted]')]"
    assert Secret("").redact("an empty key removes nothing") == "an empty key removes nothing"


def test_the_key_comes_from_the_option_else_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_API_KEY", "key-from-env")
    from_option = resolve_key("key-from-option", "FAKE_API_KEY", provider=NAME, required=True)
    from_env = resolve_key(None, "FAKE_API_KEY", provider=NAME, required=True)
    assert from_option is not None and from_option.reveal() == "key-from-option"
    assert from_env is not None and from_env.reveal() == "key-from-env"
    assert resolve_key("", "FAKE_API_KEY", provider=NAME, required=False) is None  # an empty option: no key
    monkeypatch.delenv("FAKE_API_KEY")
    assert resolve_key(None, "FAKE_API_KEY", provider=NAME, required=False) is None
    with pytest.raises(ConfigurationError) as caught:
        resolve_key(None, "FAKE_API_KEY", provider=NAME, required=True)
    assert str(caught.value) == (
        "fake:model: no API key: set the environment variable FAKE_API_KEY, "
        "or pass api_key= to the backend (lmdsl never logs or stores it)"
    )


def test_a_missing_sdk_says_what_to_install() -> None:
    assert hosted.import_sdk("json", "unused") is json
    with pytest.raises(ModelUnavailableError) as caught:
        hosted.import_sdk("lmdsl_no_such_sdk", "extra")
    assert str(caught.value) == (
        "the lmdsl_no_such_sdk SDK is not installed (No module named 'lmdsl_no_such_sdk'): pip install 'lmdsl[extra]'"
    )
    assert caught.value.__cause__ is None


def test_the_sdk_error_classes_are_read_from_the_sdk() -> None:
    sdk = types.SimpleNamespace(APIStatusError=StatusError, APITimeoutError=Timeout, APIConnectionError=Connection)
    errors = SDKErrors.of(sdk)
    assert (errors.status, errors.timeout, errors.connection) == (StatusError, Timeout, Connection)


def test_a_malformed_reply_carries_its_status_description_and_excerpt() -> None:
    error = MalformedReply(200, "the body is empty")
    assert (error.status, error.description, error.excerpt, str(error)) == (
        200,
        "the body is empty",
        "",
        "the body is empty",
    )
    error = MalformedReply(201, "the body is not JSON", "<oops>")
    assert (error.status, error.description, error.excerpt, str(error)) == (
        201,
        "the body is not JSON",
        "<oops>",
        "the body is not JSON",
    )


# -- ProviderCalls: options ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_concurrency": 0}, "max_concurrency must be a whole number >= 1, not 0"),
        ({"max_concurrency": -3}, "max_concurrency must be a whole number >= 1, not -3"),
        ({"max_concurrency": True}, "max_concurrency must be a whole number >= 1, not True"),
        ({"max_concurrency": 2.0}, "max_concurrency must be a whole number >= 1, not 2.0"),
        ({"timeout": 0}, "timeout must be a positive number of seconds, not 0"),
        ({"timeout": -1.5}, "timeout must be a positive number of seconds, not -1.5"),
        ({"timeout": float("nan")}, "timeout must be a positive number of seconds, not nan"),
    ],
)
def test_bad_call_options_are_configuration_errors(options: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"max_concurrency": 1, "timeout": 1.0, **options}
    with pytest.raises(ConfigurationError) as caught:
        ProviderCalls(NAME, errors=ERRORS, policy=RetryPolicy(), secret=None, key_hint="", **settings)
    assert str(caught.value) == message


def test_the_smallest_call_options_are_allowed() -> None:
    policy = RetryPolicy(max_retries=1)
    provider = ProviderCalls(
        NAME, errors=ERRORS, policy=policy, max_concurrency=1, timeout=0.25, secret=None, key_hint=""
    )
    assert (provider.name, provider.errors, provider.policy, provider.max_concurrency, provider.timeout) == (
        NAME,
        ERRORS,
        policy,
        1,
        0.25,
    )


# -- ProviderCalls: sending and retrying ----------------------------------------------------
def test_a_reply_is_read_and_returned(sleeps: Sleeps) -> None:
    request = Script("raw reply")
    assert calls(sleeps).send(request, lambda response: ("read", response)) == ("read", "raw reply")
    assert request.calls == 1 and sleeps.waits == []


def test_transient_failures_back_off_then_end_in_a_provider_error(
    sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lmdsl.lm")
    request = Script(said(503, f"busy (key {KEY})"))
    error = fail(lambda: calls(sleeps, max_retries=2, initial_delay=1.0, jitter=0.5).send(request, identity))
    assert type(error) is ProviderError
    assert str(error) == "fake:model: HTTP 503: busy (key [redacted]); gave up after 3 attempt(s)"
    assert fields(error) == (NAME, 503, "busy (key [redacted])", 3)
    assert error.__cause__ is None and request.calls == 3 and sleeps.waits == [0.75, 1.5]
    logged = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert logged == [
        ("lmdsl.lm", logging.INFO, "fake:model: HTTP 503: busy (key [redacted]); retry 1 of 2 in 0.75 s"),
        ("lmdsl.lm", logging.INFO, "fake:model: HTTP 503: busy (key [redacted]); retry 2 of 2 in 1.50 s"),
    ]


def test_without_retries_a_transient_failure_is_raised_at_once(sleeps: Sleeps) -> None:
    request = Script(said(529, "Overloaded"))
    error = fail(lambda: calls(sleeps, max_retries=0).send(request, identity))
    assert str(error) == "fake:model: HTTP 529: Overloaded; gave up after 1 attempt(s)"
    assert request.calls == 1 and sleeps.waits == []


def test_a_retry_that_succeeds_returns_the_reply(sleeps: Sleeps) -> None:
    request = Script(said(429, "slow down"), Timeout("timed out"), "finally")
    assert calls(sleeps).send(request, identity) == "finally"
    assert request.calls == 3 and sleeps.waits == [0.4375, 0.875]  # 0.5 * 2**n less 12.5%


@pytest.mark.parametrize(
    ("status", "kind", "text"),
    [
        (
            401,
            ProviderAuthError,
            "the provider refused the API key (HTTP 401: no [redacted]); not retried: check the key in FAKE_API_KEY",
        ),
        (
            403,
            ProviderAuthError,
            "the provider does not allow this key to do that (HTTP 403: no [redacted]); not retried: check the key in FAKE_API_KEY",
        ),
        (
            400,
            ProviderRequestError,
            "the provider rejected the request (HTTP 400: no [redacted]); not retried: check the model name and the options (max_tokens, the output schema)",
        ),
        (
            402,
            ProviderRequestError,
            "the provider rejected the request (HTTP 402: no [redacted]); not retried: check the model name and the options (max_tokens, the output schema)",
        ),
        (
            404,
            ProviderRequestError,
            "the provider rejected the request (HTTP 404: no [redacted]); not retried: check the model name and the base URL",
        ),
        (
            405,
            ProviderRequestError,
            "the provider rejected the request (HTTP 405: no [redacted]); not retried: check the model name and the options (max_tokens, the output schema)",
        ),
        (
            413,
            ProviderRequestError,
            "the provider rejected the request (HTTP 413: no [redacted]); not retried: the prompt is too large for this model",
        ),
        (
            414,
            ProviderRequestError,
            "the provider rejected the request (HTTP 414: no [redacted]); not retried: check the model name and the options (max_tokens, the output schema)",
        ),
        (
            422,
            ProviderRequestError,
            "the provider rejected the request (HTTP 422: no [redacted]); not retried: check the model name and the options (max_tokens, the output schema)",
        ),
        (
            499,
            ProviderRequestError,
            "the provider rejected the request (HTTP 499: no [redacted]); not retried: check the model name and the options (max_tokens, the output schema)",
        ),
        (501, ProviderError, "HTTP 501: no [redacted]; gave up after 1 attempt(s)"),
        (399, ProviderError, "HTTP 399: no [redacted]; gave up after 1 attempt(s)"),
    ],
)
def test_a_failure_that_is_not_transient_is_not_retried(
    sleeps: Sleeps, status: int, kind: type[ProviderError], text: str
) -> None:
    request = Script(said(status, f"no {KEY}"))
    error = fail(lambda: calls(sleeps).send(request, identity))
    assert type(error) is kind and str(error) == f"fake:model: {text}"
    assert fields(error) == (NAME, status, "no [redacted]", 1)
    assert request.calls == 1 and sleeps.waits == []


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 505, 529, 599])
def test_transient_statuses_are_marked_for_a_retry(sleeps: Sleeps, status: int) -> None:
    assert calls(sleeps).classify(said(status, "wait")) == (status, "wait", True, None, False)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422, 499, 501])
def test_other_statuses_are_not_marked_for_a_retry(sleeps: Sleeps, status: int) -> None:
    assert calls(sleeps).classify(said(status, "no")) == (status, "no", False, None, False)


@pytest.mark.parametrize(
    ("status", "header", "transient"),
    [(400, "true", True), (503, "false", False), (503, "TRUE", True), (400, "yes", False), (503, "maybe", True)],
)
def test_x_should_retry_decides_when_it_says_true_or_false(
    sleeps: Sleeps, status: int, header: str, transient: bool
) -> None:
    failure = calls(sleeps).classify(said(status, "said so", {"x-should-retry": header}))
    assert failure == (status, "said so", transient, None, False)


def test_a_status_error_carries_the_wait_the_provider_asks_for(sleeps: Sleeps) -> None:
    failure = calls(sleeps).classify(said(429, "slow down", {"retry-after": "7", "x-should-retry": "true"}))
    assert failure == (429, "slow down", True, 7.0, False)
    failure = calls(sleeps).classify(said(429, "slow down", {"retry-after-ms": "1500"}))
    assert failure == (429, "slow down", True, 1.5, False)


def test_a_bare_status_error_is_read_as_well_as_it_can_be(sleeps: Sleeps) -> None:
    """No `status_code`, no `response`, no `body`, no `message`: status 0, and the exception's text."""
    assert calls(sleeps).classify(StatusError(f"odd failure {KEY}")) == (
        0,
        "odd failure [redacted]",
        False,
        None,
        False,
    )
    error = fail(lambda: calls(sleeps).send(Script(StatusError("odd")), identity))
    assert str(error) == "fake:model: HTTP 0: odd; gave up after 1 attempt(s)" and fields(error) == (NAME, 0, "odd", 1)


def test_a_timeout_is_transient_and_names_the_timeout(sleeps: Sleeps) -> None:
    assert calls(sleeps, timeout=2.5).classify(Timeout("Request timed out.")) == (
        None,
        "no reply within the timeout of 2.5 s",
        True,
        None,
        False,
    )
    error = fail(lambda: calls(sleeps, timeout=30.0, max_retries=1).send(Script(Timeout("late")), identity))
    assert type(error) is ProviderError
    assert str(error) == "fake:model: no reply within the timeout of 30 s; gave up after 2 attempt(s)"
    assert fields(error) == (NAME, None, "no reply within the timeout of 30 s", 2) and sleeps.waits == [0.4375]


def test_a_lost_connection_is_transient_and_says_why(sleeps: Sleeps) -> None:
    provider = calls(sleeps)
    caused = Connection("Connection error.")
    caused.__cause__ = OSError(f"refused by 127.0.0.1 ({KEY})")
    assert provider.classify(caused) == (
        None,
        "connection failed: refused by 127.0.0.1 ([redacted])",
        True,
        None,
        False,
    )
    assert provider.classify(Connection("Connection error.")) == (
        None,
        "connection failed: Connection error.",
        True,
        None,
        False,
    )
    assert provider.classify(Connection("")) == (None, "connection failed: Connection", True, None, False)
    silent = Connection("outer")
    silent.__cause__ = OSError("")
    assert provider.classify(silent) == (None, "connection failed: OSError", True, None, False)
    error = fail(lambda: calls(sleeps, max_retries=1).send(Script(Connection("reset")), identity))
    assert str(error) == "fake:model: connection failed: reset; gave up after 2 attempt(s)"
    assert fields(error) == (NAME, None, "connection failed: reset", 2)


def test_a_bad_body_is_retried_then_a_provider_response_error(sleeps: Sleeps) -> None:
    def read(response: object) -> object:
        raise MalformedReply(200, f"the body is not JSON ({KEY})", f"<<{KEY}>>")

    request = Script("garbage")
    error = fail(lambda: calls(sleeps, max_retries=2).send(request, read))
    assert type(error) is ProviderResponseError
    assert str(error) == (
        "fake:model: the provider's reply is not a valid response of its API "
        "(HTTP 200: the body is not JSON ([redacted]): <<[redacted]>>); gave up after 3 attempt(s)"
    )
    assert fields(error) == (NAME, 200, "the body is not JSON ([redacted]): <<[redacted]>>", 3)
    assert request.calls == 3 and sleeps.waits == [0.4375, 0.875]


def test_a_bad_body_shows_at_most_120_characters_of_the_excerpt(sleeps: Sleeps) -> None:
    provider = calls(sleeps)
    assert provider.classify(MalformedReply(200, "choices: is empty", "x" * 200)) == (
        200,
        "choices: is empty: " + "x" * 119 + "\u2026",
        True,
        None,
        True,
    )
    key_at_the_cut = "y" * 110 + KEY  # the key is removed before the cut: nothing of it is left
    assert provider.classify(MalformedReply(201, "the body is an error", key_at_the_cut)) == (
        201,
        "the body is an error: " + "y" * 110 + "[redacted]",
        True,
        None,
        True,
    )
    assert provider.classify(MalformedReply(200, "the body is empty")) == (200, "the body is empty", True, None, True)


def test_an_exception_of_the_client_library_is_not_retried(sleeps: Sleeps) -> None:
    provider = calls(sleeps)
    assert provider.classify(ValueError("not an API failure")) is None
    request = Script(ValueError(f"cannot send this with key {KEY}"))
    error = fail(lambda: provider.send(request, identity))
    assert type(error) is ProviderError
    assert str(error) == (
        "fake:model: the client library failed: ValueError: cannot send this with key [redacted]; gave up after 1 attempt(s)"
    )
    assert fields(error) == (
        NAME,
        None,
        "the client library failed: ValueError: cannot send this with key [redacted]",
        1,
    )
    assert request.calls == 1 and sleeps.waits == []
    error = fail(lambda: provider.send(Script(KeyError()), identity))
    assert error.message == "the client library failed: KeyError: no message"


def test_the_provider_may_ask_for_a_wait_up_to_the_limit(sleeps: Sleeps) -> None:
    request = Script(said(429, "slow down", {"retry-after": "60"}), "ok")
    assert calls(sleeps).send(request, identity) == "ok"
    assert sleeps.waits == [60.0625]  # 60 s, and 0.5 * 0.25 * 0.5 more


def test_a_longer_wait_than_allowed_fails_at_once(sleeps: Sleeps) -> None:
    request = Script(said(429, "slow down", {"retry-after": "60.5"}))
    error = fail(lambda: calls(sleeps).send(request, identity))
    assert type(error) is ProviderError
    assert str(error) == (
        "fake:model: HTTP 429: slow down; the provider asks to wait 60.5 s, longer than RetryPolicy.max_retry_after=60 s"
    )
    assert fields(error) == (NAME, 429, "slow down", 1) and request.calls == 1 and sleeps.waits == []
    error = fail(
        lambda: calls(sleeps, max_retry_after=2.5).send(Script(said(503, "down", {"retry-after": "3"})), identity)
    )
    assert str(error) == (
        "fake:model: HTTP 503: down; the provider asks to wait 3 s, longer than RetryPolicy.max_retry_after=2.5 s"
    )


def test_on_the_last_attempt_a_long_wait_is_a_plain_give_up(sleeps: Sleeps) -> None:
    error = fail(
        lambda: calls(sleeps, max_retries=0).send(Script(said(429, "later", {"retry-after": "3600"})), identity)
    )
    assert str(error) == "fake:model: HTTP 429: later; gave up after 1 attempt(s)"


def test_the_waits_follow_what_the_provider_asks(sleeps: Sleeps) -> None:
    request = Script(
        said(503, "a", {"retry-after": "2"}), said(503, "b", {"retry-after-ms": "250"}), said(503, "c"), "ok"
    )
    assert calls(sleeps).send(request, identity) == "ok"
    assert sleeps.waits == [
        2.0625,
        0.3125,
        1.75,
    ]  # as asked, plus 0.0625; then the third backoff, 0.5 * 2**2 less 12.5%


def test_without_a_key_nothing_is_redacted(sleeps: Sleeps) -> None:
    error = fail(lambda: calls(sleeps, secret=None).send(Script(said(401, f"bad key {KEY}")), identity))
    assert error.message == f"bad key {KEY}"


# -- retry-after ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": ""}, None),
        ({"retry-after-ms": ""}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "500"}, 0.5),
        ({"retry-after-ms": "-20"}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}, 30.0),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:00 GMT"}, 0.0),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:20 GMT"}, 0.0),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:21 GMT"}, 1.0),
    ],
)
def test_retry_after_in_seconds_milliseconds_or_a_date(
    monkeypatch: pytest.MonkeyPatch, headers: dict[str, str], seconds: float | None
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)  # Tue, 14 Nov 2023 22:13:20 GMT
    assert hosted._retry_after(headers) == seconds


# -- HostedModel ----------------------------------------------------------------------------
SDK = "lmdsl_fake_sdk"


class FakeModel(HostedModel):
    """A hosted backend over a fake SDK module: it records how it was connected, and sends through
    its `ProviderCalls` whatever the test scripts."""

    provider = SDK
    key_variable = "LMDSL_FAKE_KEY"
    base_url_variable = "LMDSL_FAKE_BASE_URL"
    connected: tuple[str | None, float]

    def _connect(self, key: str | None, timeout: float) -> None:
        self.connected = (key, timeout)

    def send(self, *outcomes: object) -> object:
        return self._calls.send(Script(*outcomes), identity)


class KeylessModel(FakeModel):
    keyless_servers = True
    variant = "?mode=x"


@pytest.fixture
def fake_sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = types.ModuleType(SDK)
    module.APIStatusError = StatusError  # type: ignore[attr-defined]
    module.APITimeoutError = Timeout  # type: ignore[attr-defined]
    module.APIConnectionError = Connection  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, SDK, module)
    monkeypatch.delenv("LMDSL_FAKE_KEY", raising=False)
    monkeypatch.delenv("LMDSL_FAKE_BASE_URL", raising=False)
    yield


@pytest.mark.usefixtures("fake_sdk")
def test_a_hosted_model_with_its_defaults() -> None:
    model = FakeModel("m1", api_key=KEY)
    assert (model.model, model.name, model.base_url, model.max_concurrency) == ("m1", "lmdsl_fake_sdk:m1", None, 8)
    assert model.connected == (KEY, 120.0) and model.retry == RetryPolicy() and model.cacheable is True
    assert repr(model) == "FakeModel('lmdsl_fake_sdk:m1', max_concurrency=8)"
    error = fail(lambda: model.send(said(401, f"invalid key {KEY}")))  # the SDK's classes, the key, the hint
    assert type(error) is ProviderAuthError and str(error) == (
        "lmdsl_fake_sdk:m1: the provider refused the API key (HTTP 401: invalid key [redacted]); "
        "not retried: check the key in LMDSL_FAKE_KEY (or the api_key= option)"
    )
    error = fail(lambda: FakeModel("m1", api_key=KEY, max_retries=0).send(Timeout("late")))
    assert str(error) == "lmdsl_fake_sdk:m1: no reply within the timeout of 120 s; gave up after 1 attempt(s)"


@pytest.mark.usefixtures("fake_sdk")
def test_a_hosted_model_with_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = Sleeps()
    model = FakeModel(
        "m2",
        api_key=KEY,
        base_url="http://127.0.0.1:9/v1",
        max_concurrency=3,
        timeout=4.5,
        retry=RetryPolicy(max_retries=1, initial_delay=2.0, sleep=sleeps),
        max_retries=2,
    )
    assert (model.name, model.base_url, model.max_concurrency, model.connected) == (
        "lmdsl_fake_sdk:m2@http://127.0.0.1:9/v1",
        "http://127.0.0.1:9/v1",
        3,
        (KEY, 4.5),
    )
    assert model.retry == RetryPolicy(max_retries=2, initial_delay=2.0) and model.retry.sleep is sleeps
    assert repr(model) == "FakeModel('lmdsl_fake_sdk:m2@http://127.0.0.1:9/v1', max_concurrency=3)"
    error = fail(lambda: model.send(Timeout("late")))
    assert str(error) == (
        "lmdsl_fake_sdk:m2@http://127.0.0.1:9/v1: no reply within the timeout of 4.5 s; gave up after 3 attempt(s)"
    )
    assert sleeps.waits == [1.75, 3.5]
    assert FakeModel("m", api_key=KEY, retry=RetryPolicy(max_retries=1)).retry == RetryPolicy(max_retries=1)
    assert FakeModel("m", api_key=KEY, max_retries=0).retry == RetryPolicy(max_retries=0)


@pytest.mark.usefixtures("fake_sdk")
def test_the_key_and_base_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMDSL_FAKE_KEY", "key-from-env")
    monkeypatch.setenv("LMDSL_FAKE_BASE_URL", "http://env.example/v1")
    model = FakeModel("m")
    assert (model.name, model.base_url, model.connected) == (
        "lmdsl_fake_sdk:m@http://env.example/v1",
        "http://env.example/v1",
        ("key-from-env", 120.0),
    )
    model = FakeModel("m", api_key="key-from-option", base_url="http://option.example")
    assert (model.name, model.base_url, model.connected[0]) == (
        "lmdsl_fake_sdk:m@http://option.example",
        "http://option.example",
        "key-from-option",
    )
    monkeypatch.setenv("LMDSL_FAKE_BASE_URL", "")
    model = FakeModel("m")
    assert model.base_url is None and model.name == "lmdsl_fake_sdk:m"


@pytest.mark.usefixtures("fake_sdk")
def test_a_key_is_required_unless_a_keyless_server_has_its_own_url() -> None:
    model = KeylessModel("m", base_url="http://127.0.0.1:9/v1")
    assert (model.name, model.connected) == ("lmdsl_fake_sdk:m@http://127.0.0.1:9/v1?mode=x", (None, 120.0))
    error = fail(lambda: model.send(said(401, f"who are you {KEY}")))
    assert error.message == f"who are you {KEY}"  # no key of ours to remove
    makers: list[tuple[Callable[[], HostedModel], str]] = [
        (lambda: KeylessModel("m"), "lmdsl_fake_sdk:m?mode=x"),  # the provider's own API needs one
        (lambda: FakeModel("m", base_url="http://127.0.0.1:9/v1"), "lmdsl_fake_sdk:m@http://127.0.0.1:9/v1"),
    ]
    for make, name in makers:
        with pytest.raises(ConfigurationError) as caught:
            make()
        assert str(caught.value) == (
            f"{name}: no API key: set the environment variable LMDSL_FAKE_KEY, "
            "or pass api_key= to the backend (lmdsl never logs or stores it)"
        )


@pytest.mark.usefixtures("fake_sdk")
def test_a_hosted_model_needs_a_model_name_and_its_sdk() -> None:
    with pytest.raises(ConfigurationError) as caught:
        FakeModel("", api_key=KEY)
    assert str(caught.value) == "name the model, as in 'lmdsl_fake_sdk:MODEL'"

    class Missing(FakeModel):
        provider = "lmdsl_no_such_sdk"

    with pytest.raises(ModelUnavailableError) as missing:
        Missing("m", api_key=KEY)
    assert str(missing.value) == (
        "the lmdsl_no_such_sdk SDK is not installed (No module named 'lmdsl_no_such_sdk'): "
        "pip install 'lmdsl[lmdsl_no_such_sdk]'"
    )
