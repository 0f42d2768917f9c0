"""`ColBERTv2`: a client of a ColBERTv2 search server, as DSPy's `ColBERTv2(url)` talks to one.

The server answers `GET url?query=...&k=...` with `{"topk": [{"text", "pid", "rank", "score",
...}, ...]}`, best first. Requests go through the hosted models' `ProviderCalls`, so a search
server gets the providers' policy: a timeout per request, transient failures (timeouts, lost
connections, 408/429/5xx, a success whose body is not a reply) retried with backoff under a
`RetryPolicy`, a bound on requests in flight, and typed `ProviderError`s at the end. A body
is read up to `max_body_bytes` and validated before any passage is made from it. Answers are
kept in the completion cache like a model's, so a compile asks each query once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from lmdsl.errors import ConfigurationError
from lmdsl.lm.hosted import MalformedReply, ProviderCalls, RetryPolicy, SDKErrors, validated
from lmdsl.retrieval.base import Passage, check_query, retrieve

MAX_BODY_BYTES = 8 * 2**20
_ERROR_BODY_BYTES = 64 * 2**10


class _Hit(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    text: str
    score: float
    pid: int | None = None
    rank: int | None = Field(default=None, ge=0)


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")

    topk: list[_Hit]


@dataclass(frozen=True)
class _Headers:
    headers: Mapping[str, str] = field(default_factory=dict)


class _StatusError(Exception):
    """An HTTP error status, shaped as `ProviderCalls` reads an SDK's (`status_code`, `response.headers`, `body`)."""

    def __init__(self, status: int, headers: Mapping[str, str], body: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.response = _Headers(headers)
        self.body = body


class _Timeout(Exception):
    pass


class _Connection(Exception):
    pass


_ERRORS = SDKErrors(_StatusError, _Timeout, _Connection)


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes


class ColBERTv2:
    """A ColBERTv2 server at `url` as a retriever: `colbert(query, k)` returns its `k` best
    passages (`pid` and `score` as the server gives them). Each request may take `timeout`
    seconds; failures are retried under `retry` (`max_retries` overrides its bound)."""

    def __init__(
        self,
        url: str,
        *,
        k: int = 3,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
        max_concurrency: int = 8,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"ColBERTv2 takes the server's http(s) URL, as 'http://host:8893/api/search', not {url!r}"
            )
        check_query("", k)
        if type(max_body_bytes) is not int or max_body_bytes < 1:
            raise ConfigurationError(f"max_body_bytes must be a whole number >= 1, not {max_body_bytes!r}")
        self.url = url
        self.k = k
        self.max_body_bytes = max_body_bytes
        policy = retry or RetryPolicy()
        if max_retries is not None:
            policy = replace(policy, max_retries=max_retries)
        self._name = f"colbertv2:{url}"
        self._calls = ProviderCalls(
            self._name,
            errors=_ERRORS,
            policy=policy,
            max_concurrency=max_concurrency,
            timeout=timeout,
            secret=None,
            key_hint="the server needs no key from lmdsl: check the URL and who may reach the server",
            request_hint="check the URL (the search endpoint itself, which takes ?query=...&k=...) and the query",
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def retry(self) -> RetryPolicy:
        return self._calls.policy

    def __repr__(self) -> str:
        return f"ColBERTv2({self.url!r}, k={self.k})"

    def __call__(self, query: str, k: int | None = None) -> list[Passage]:
        query, k = check_query(query, self.k if k is None else k)
        return retrieve(self._name, query, k, self._search, cacheable=True)

    def _search(self, query: str, k: int) -> list[Passage]:
        separator = "&" if urlsplit(self.url).query else "?"
        address = f"{self.url}{separator}{urlencode({'query': query, 'k': k})}"
        return self._calls.send(lambda: self._get(address), lambda response: self._read(response, k))

    def _get(self, address: str) -> _Response:
        """One GET; the standard library's errors turned into what the retry policy reads."""
        import http.client
        import urllib.error
        import urllib.request

        request = urllib.request.Request(address, headers={"Accept": "application/json", "User-Agent": "lmdsl"})
        try:
            with urllib.request.urlopen(request, timeout=self._calls.timeout) as response:
                return _Response(int(response.status), response.read(self.max_body_bytes + 1))
        except urllib.error.HTTPError as error:
            raw = error.read(_ERROR_BODY_BYTES) if error.fp is not None else b""
            headers = {name.lower(): value for name, value in (error.headers or {}).items()}
            raise _StatusError(error.code, headers, _error_body(raw)) from None
        except TimeoutError as error:
            raise _Timeout() from error
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise _Timeout() from error
            raise _Connection() from (error.reason if isinstance(error.reason, BaseException) else error)
        except (http.client.HTTPException, OSError) as error:
            raise _Connection() from error

    def _read(self, response: _Response, k: int) -> list[Passage]:
        """The passages of a success response: `MalformedReply` for a body that is too large, not
        JSON or not a `topk` list of hits."""
        status, body = response.status, response.body
        if len(body) > self.max_body_bytes:
            raise MalformedReply(status, f"the body is larger than max_body_bytes={self.max_body_bytes}")
        if not body.strip():
            raise MalformedReply(status, "the body is empty")
        try:
            data = json.loads(body)
        except RecursionError:
            raise MalformedReply(status, "the body is JSON nested too deep to read") from None
        except ValueError:
            raise MalformedReply(status, "the body is not JSON", body[:2000].decode("utf-8", "replace")) from None
        try:
            reply = validated(_Reply, data, status)
        except RecursionError:
            raise MalformedReply(status, "the reply is nested too deep to read") from None
        return [Passage(hit.text, hit.score, None, hit.pid) for hit in reply.topk[:k]]


def _error_body(raw: bytes) -> Any:
    """An error response's body as `ProviderCalls` reads it: JSON when it is, else text."""
    text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text
