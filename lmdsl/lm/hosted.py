"""What the hosted backends (Anthropic, OpenAI-compatible servers) share: the API key, the
retry policy for transient failures, and the bound on concurrent requests.

Both SDKs can retry on their own (`max_retries`, honouring `retry-after`). The backends
turn that off (`max_retries=0`) and retry here instead, so that:

- one policy, with one set of options, covers every provider, and a test can make its
  waits instant (`RetryPolicy(sleep=...)`);
- a concurrency slot is held only while a request is in flight, not while backing off;
- a failure that will not go away ends in a typed `ProviderError` carrying the status and
  the provider's message, with the API key removed, and saying what to fix;
- a success status whose body is not a reply of the API is caught here too. The backends
  read the raw body themselves (`read_reply`) instead of trusting the SDK's parse: the SDKs
  build their models with `construct`, unvalidated, so garbage from a proxy would surface
  later as a `JSONDecodeError`, an `AttributeError` or an `IndexError`.

Retried: HTTP 408, 409, 429, 500, 502, 503, 504 and 529 (overloaded), timeouts and dropped
connections, unless the provider says `x-should-retry: false`; and a success whose body is
not a valid reply (not JSON, an HTML page, missing or mistyped fields), most likely a
proxy's hiccup, which ends in `ProviderResponseError`. Never retried: 401 and 403
(`ProviderAuthError`), 400, 404, 413, 422 and other client errors (`ProviderRequestError`).

Text that is valid JSON but not valid Unicode (a `\\ud800` escape) is the model's output,
not a broken body: it reaches the call loop unchanged, whose parser rejects it and re-asks.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, TypedDict, TypeVar

from pydantic import BaseModel, ValidationError

from lmdsl.errors import (
    ConfigurationError,
    ModelUnavailableError,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderResponseError,
)

T = TypeVar("T")
R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)

REDACTED = "[redacted]"  # what an API key becomes in any text lmdsl shows or stores
TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class RetryPolicy:
    """How a hosted backend retries transient failures.

    Up to `max_retries` more requests after the first. Before retry `n` (from 0) it waits
    what the provider asked for in `retry-after-ms` or `retry-after`, else
    `initial_delay * 2**n` seconds capped at `max_delay`, less a random part of up to
    `jitter` of it (so that concurrent callers do not return in step). A provider asking
    for a longer wait than `max_retry_after` seconds fails the call at once.
    """

    max_retries: int = 4
    initial_delay: float = 0.5
    max_delay: float = 20.0
    jitter: float = 0.25
    max_retry_after: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigurationError(f"max_retries must be a whole number >= 0, not {self.max_retries!r}")
        if self.initial_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ConfigurationError("retry delays must be >= 0 seconds")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigurationError(f"jitter must be between 0 and 1, not {self.jitter!r}")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (0 for the first)."""
        import random

        if retry_after is not None:  # what the provider asked for, and a little more, never less
            return retry_after + random.random() * self.jitter * self.initial_delay
        base = min(self.max_delay, self.initial_delay * 2.0**retry)
        return base * (1.0 - self.jitter * random.random())


class Secret:
    """An API key that never shows in a `repr`, a log line or an error message."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        return text.replace(self._value, REDACTED) if self._value else text

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    __str__ = __repr__


def resolve_key(option: str | None, variable: str, *, provider: str, required: bool) -> Secret | None:
    """The key passed as an option, else the one in the environment `variable`; a missing
    key that is `required` is a `ConfigurationError` saying how to set it."""
    value = option if option is not None else os.environ.get(variable)
    if value:
        return Secret(value)
    if required:
        raise ConfigurationError(
            f"{provider}: no API key: set the environment variable {variable}, "
            f"or pass api_key= to the backend (lmdsl never logs or stores it)"
        )
    return None


def import_sdk(module: str, extra: str) -> Any:
    """The provider's SDK, imported on first use so that `import lmdsl` stays light."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ModelUnavailableError(
            f"the {module} SDK is not installed ({error}): pip install 'lmdsl[{extra}]'"
        ) from None


class Failure(NamedTuple):
    """One failed HTTP request, as the retry policy sees it. `malformed`: a success status
    whose body is not a reply of the API."""

    status: int | None
    message: str
    transient: bool
    retry_after: float | None = None
    malformed: bool = False


class MalformedReply(Exception):
    """A success response whose body is not a valid reply of the provider's API. Raised
    while reading a reply; `ProviderCalls` retries it and ends it in `ProviderResponseError`.

    `description` says what is wrong and `excerpt` is the provider's text that shows it, both
    whole: `ProviderCalls` removes the API key before it shortens them, so that no cut can
    leave part of a key in a message.
    """

    def __init__(self, status: int, description: str, excerpt: str = "") -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.excerpt = excerpt


class SDKErrors(NamedTuple):
    """The exception classes a Stainless-generated SDK (anthropic, openai) raises for a
    status (with `status_code`, `response.headers`, `body`), a timeout and a lost connection."""

    status: type[Exception]
    timeout: type[Exception]
    connection: type[Exception]

    @classmethod
    def of(cls, sdk: Any) -> SDKErrors:
        return cls(sdk.APIStatusError, sdk.APITimeoutError, sdk.APIConnectionError)


class ProviderCalls:
    """Sends a backend's HTTP requests: at most `max_concurrency` in flight at once, each
    transient failure retried under the policy, the final failure raised as a typed error."""

    def __init__(
        self,
        name: str,
        *,
        errors: SDKErrors,
        policy: RetryPolicy,
        max_concurrency: int,
        timeout: float,
        secret: Secret | None,
        key_hint: str,
        request_hint: str | None = None,
    ) -> None:
        if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool) or max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be a whole number >= 1, not {max_concurrency!r}")
        if not timeout > 0:
            raise ConfigurationError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.name = name
        self.errors = errors
        self.policy = policy
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._secret = secret
        self._key_hint = key_hint
        self._request_hint = request_hint  # for a rejected request; None: a model provider's hints

    def send(self, request: Callable[[], R], read: Callable[[R], T]) -> T:
        """`request()` within the concurrency bound, its response turned into a result by
        `read` (outside the bound), retried while its failures are transient."""
        policy = self.policy
        for attempt in range(1, policy.max_retries + 2):
            try:
                with self._slots:
                    response = request()
                return read(response)
            except Exception as error:
                failure = self.classify(error)
                if failure is None:  # the SDK refused before sending (an option it rejects): not retried
                    said = readable(self.redact(str(error))) or "no message"
                    failure = Failure(
                        None, f"the client library failed: {type(error).__name__}: {said}", transient=False
                    )
            if not failure.transient or attempt > policy.max_retries:
                raise self.error(failure, attempt) from None
            if failure.retry_after is not None and failure.retry_after > policy.max_retry_after:
                raise self.error(failure, attempt, waited_too_long=True) from None
            wait = policy.delay(attempt - 1, failure.retry_after)
            import logging

            logging.getLogger("lmdsl.lm").info(
                "%s: %s; retry %d of %d in %.2f s",
                self.name,
                self._describe(failure),
                attempt,
                policy.max_retries,
                wait,
            )
            policy.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def classify(self, error: Exception) -> Failure | None:
        """What an SDK exception means for the policy; None for anything that is not an API failure."""
        if isinstance(error, MalformedReply):
            said = readable(self.redact(error.description))
            shown = readable(self.redact(error.excerpt), 120)
            return Failure(error.status, f"{said}: {shown}" if shown else said, transient=True, malformed=True)
        if isinstance(error, self.errors.timeout):
            return Failure(None, f"no reply within the timeout of {self.timeout:g} s", transient=True)
        if isinstance(error, self.errors.connection):
            cause = error.__cause__ or error
            said = readable(self.redact(str(cause))) or type(cause).__name__
            return Failure(None, f"connection failed: {said}", transient=True)
        if not isinstance(error, self.errors.status):
            return None
        status = int(getattr(error, "status_code", 0))
        response = getattr(error, "response", None)
        headers: Mapping[str, str] = getattr(response, "headers", None) or {}
        transient = status in TRANSIENT_STATUSES or (status >= 500 and status != 501)
        should_retry = headers.get("x-should-retry")
        if should_retry in ("true", "false"):
            transient = should_retry == "true"
        return Failure(status, _provider_message(error, self.redact), transient, _retry_after(headers))

    def error(self, failure: Failure, attempts: int, *, waited_too_long: bool = False) -> ProviderError:
        """The typed error for a failure that is not retried (any more)."""
        status, said = failure.status, failure.message
        fields: dict[str, Any] = {"provider": self.name, "status": status, "message": said, "attempts": attempts}
        if status in (401, 403):
            what = "refused the API key" if status == 401 else "does not allow this key to do that"
            return ProviderAuthError(
                f"{self.name}: the provider {what} (HTTP {status}: {said}); not retried: {self._key_hint}", **fields
            )
        if status is not None and 400 <= status < 500 and status not in TRANSIENT_STATUSES:
            fix = self._request_hint or {
                404: "check the model name and the base URL",
                413: "the prompt is too large for this model",
            }.get(status, "check the model name and the options (max_tokens, the output schema)")
            return ProviderRequestError(
                f"{self.name}: the provider rejected the request (HTTP {status}: {said}); not retried: {fix}", **fields
            )
        if failure.malformed:
            return ProviderResponseError(
                f"{self.name}: the provider's reply is not a valid response of its API "
                f"({self._describe(failure)}); gave up after {attempts} attempt(s)",
                **fields,
            )
        if waited_too_long:
            return ProviderError(
                f"{self.name}: {self._describe(failure)}; the provider asks to wait {failure.retry_after:g} s, "
                f"longer than RetryPolicy.max_retry_after={self.policy.max_retry_after:g} s",
                **fields,
            )
        return ProviderError(f"{self.name}: {self._describe(failure)}; gave up after {attempts} attempt(s)", **fields)

    def redact(self, text: str) -> str:
        """`text` with the API key replaced by `[redacted]`."""
        return self._secret.redact(text) if self._secret is not None else text

    @staticmethod
    def _describe(failure: Failure) -> str:
        return failure.message if failure.status is None else f"HTTP {failure.status}: {failure.message}"


def _provider_message(error: Exception, redact: Callable[[str], str]) -> str:
    """What the provider said, its key removed by `redact`: `error.message` of its JSON error
    body (both APIs use that shape; `error` as text and FastAPI's `detail` are other
    servers'), else the body as readable text (an HTML page's title), else the SDK's text."""
    body = getattr(error, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        said = (inner.get("message"), inner.get("detail")) if isinstance(inner, Mapping) else (inner,)
        for candidate in (*said, body.get("message"), body.get("detail")):
            if isinstance(candidate, str) and readable(candidate):
                return readable(redact(candidate), 1000)
    elif isinstance(body, str):
        return readable(redact(body)) or "(an empty body)"
    return readable(redact(str(getattr(error, "message", None) or error))) or "(an empty body)"


_TITLE = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_HTML = re.compile(r"<\s*(?:!doctype|html|head|body|title|h1|p|div|center|pre)\b", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def readable(text: str, limit: int = 300) -> str:
    """`text` from a provider or proxy made fit for an error message: an HTML page's title
    (else its text without tags), whitespace collapsed, control characters and lone
    surrogates escaped out, at most `limit` characters. Remove the API key first."""
    text = text[:20_000]
    if _is_html(text):
        title = _TITLE.search(text)
        text = title.group(1) if title and title.group(1).strip() else _TAG.sub(" ", text)
    text = " ".join(_UNPRINTABLE.sub(" ", text).split())
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _is_html(text: str) -> bool:
    return text.lstrip().startswith("<") and _HTML.search(text[:2000]) is not None


def read_reply(response: Any, parse: Callable[[int, Any], T]) -> T:
    """`parse(status, data)` of a success response's JSON body (`response` is an SDK's raw
    response, `.with_raw_response`): `MalformedReply` when the body is not JSON, and when
    `parse` finds it is not a reply of the API. `parse` validates with `validated`."""
    status = int(response.http_response.status_code)
    content: bytes = response.http_response.content
    if not content.strip():
        raise MalformedReply(status, "the body is empty")
    try:
        data = json.loads(content)
    except RecursionError:
        raise MalformedReply(status, "the body is JSON nested too deep to read") from None
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes that are no text
        text = content.decode("utf-8", "replace")
        raise MalformedReply(
            status, "the body is an HTML page, not JSON" if _is_html(text) else "the body is not JSON", text
        ) from None
    try:
        return parse(status, data)
    except RecursionError:
        raise MalformedReply(status, "the reply is nested too deep to read") from None


def validated(model: type[M], data: Any, status: int) -> M:
    """`data` as `model`, the shape of the API's reply; `MalformedReply` naming the first thing wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        said = data.get("error") if isinstance(data, Mapping) else None
        if said:  # an error sent with a success status
            said = said.get("message", said) if isinstance(said, Mapping) else said
            raise MalformedReply(status, "the body is an error", str(said)) from None
        problem = error.errors(include_url=False)[0]
        where = ".".join(str(step) for step in problem["loc"])
        said = _problem(problem["type"], problem["msg"], problem.get("input"))
        raise MalformedReply(status, f"{where}: {said}" if where else f"the body {said}") from None


_EXPECTED = {
    "model_type": "should be an object",
    "model_attributes_type": "should be an object",
    "dict_type": "should be an object",
    "list_type": "should be a list",
    "string_type": "should be a string",
    "int_type": "should be a whole number",
    "greater_than_equal": "should be a whole number >= 0",
}


def _problem(kind: str, message: str, value: Any) -> str:
    if kind == "missing":
        return "is missing"
    if kind == "too_short":
        return "is empty"
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    expected = _EXPECTED.get(kind, message)
    return f"{expected}, not {json_type(value)}" if kind in _EXPECTED else expected


def json_type(value: Any) -> str:
    """What a JSON value is, in the words of an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if abs(value) < 10**15 else "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the provider asks us to wait: `retry-after-ms`, else `retry-after` (seconds or an HTTP date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    seconds = headers.get("retry-after")
    if not seconds:
        return None
    try:
        return max(0.0, float(seconds))
    except ValueError:
        pass
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(seconds)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError, IndexError, OSError):  # a date Python cannot place
        return None


class HostedOptions(TypedDict, total=False):
    """The options every hosted backend takes (see `HostedModel`)."""

    api_key: str | None
    base_url: str | None
    max_concurrency: int
    timeout: float
    retry: RetryPolicy | None
    max_retries: int | None


class HostedModel:
    """The common part of the hosted backends: the name (the provider, the model and any
    base URL: never the key), the API key, and the `ProviderCalls` that send requests.

    `api_key` defaults to the provider's variable (`key_variable`), `base_url` to its
    `base_url_variable`, else the provider's API. At most `max_concurrency` requests are in
    flight at once from one backend object; each may take `timeout` seconds; transient
    failures are retried under `retry` (a `RetryPolicy`; `max_retries` overrides its bound).
    """

    cacheable = True
    provider = ""  # the model-string prefix: "anthropic", "openai"
    key_variable = ""  # where the key comes from when no api_key= is given
    base_url_variable = ""  # where the SDK reads a base URL from when no base_url= is given
    keyless_servers = False  # True: a server at a custom base URL may need no key (a local one)
    variant = ""  # appended to the name when an option changes what the model is asked

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_concurrency: int = 8,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
    ) -> None:
        if not model:
            raise ConfigurationError(f"name the model, as in '{self.provider}:MODEL'")
        self._sdk: Any = import_sdk(self.provider, self.provider)
        self.model = model
        self.base_url = base_url or os.environ.get(self.base_url_variable) or None
        self._name = f"{self.provider}:{model}" + (f"@{self.base_url}" if self.base_url else "") + self.variant
        self._secret = resolve_key(
            api_key, self.key_variable, provider=self._name, required=not (self.base_url and self.keyless_servers)
        )
        policy = retry or RetryPolicy()
        if max_retries is not None:
            policy = replace(policy, max_retries=max_retries)
        self._calls = ProviderCalls(
            self._name,
            errors=SDKErrors.of(self._sdk),
            policy=policy,
            max_concurrency=max_concurrency,
            timeout=timeout,
            secret=self._secret,
            key_hint=f"check the key in {self.key_variable} (or the api_key= option)",
        )
        self._connect(self._secret.reveal() if self._secret is not None else None, timeout)

    def _connect(self, key: str | None, timeout: float) -> None:
        """Make the SDK's client, with its own retries off (`ProviderCalls` retries)."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self._name

    def redact(self, text: str) -> str:
        """`text` with this backend's API key replaced by `[redacted]` (what a test's cassette is scrubbed with)."""
        return self._calls.redact(text)

    @property
    def max_concurrency(self) -> int:
        return self._calls.max_concurrency

    @property
    def retry(self) -> RetryPolicy:
        return self._calls.policy

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, max_concurrency={self._calls.max_concurrency})"


def split_base_url(rest: str) -> tuple[str, str | None]:
    """`MODEL` or `MODEL@URL` from a model string: the URL starts at the first `@http://` or
    `@https://`, so a model name may itself contain `@`."""
    starts = [at for at in (rest.find("@http://"), rest.find("@https://")) if at > 0]
    if not starts:
        return rest, None
    at = min(starts)
    return rest[:at], rest[at + 1 :]
