"""Fake provider APIs for tests: just enough of Anthropic's Messages API (`POST /v1/messages`)
and OpenAI's Chat Completions API (`POST /v1/chat/completions`) for the real SDKs to talk
to, served on 127.0.0.1 by the standard library.

Each server answers from a queue of scripted replies, then from a default function of the
request; it records every request (path, headers, JSON body) and the largest number of
requests it was handling at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP answer: a JSON body with a status and headers, sent after `delay`
    seconds; or, with `drop`, the connection closed without any answer. `raw` bytes, when
    given, are sent as the body instead of `body` as JSON, labelled `content_type` (a
    misbehaving server or proxy)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    raw: bytes | None = None
    content_type: str = "application/json"


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any
    raw: bytes


Responder = Callable[[Recorded], Reply]


class FakeServer:
    """A provider API on 127.0.0.1; `url` is its base URL (the SDKs add `/v1/...`)."""

    def __init__(self, default: Responder) -> None:
        self.default = default
        self.requests: list[Recorded] = []
        self.peak = 0
        self._queue: list[Reply] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Hold each request until this many are in flight at once (then let all go): a test that a
        # concurrency bound is reached waits for it to be reached instead of hoping delays overlap.
        self.gather = 0
        server = self
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
        self._http.daemon_threads = True
        self._http.block_on_close = False  # a handler still sleeping past a client's timeout
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order, then with `default`."""
        with self._lock:
            self._queue.extend(replies)

    def reset(self, default: Responder) -> None:
        """Start afresh with this default (a server shared by many tests or examples)."""
        with self._lock:
            self.default = default
            self.gather = 0
            self._queue.clear()
            self.requests.clear()

    def bodies(self) -> list[Any]:
        return [request.body for request in self.requests]

    def answer(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            return self._queue.pop(0) if self._queue else self.default(recorded)

    @contextmanager
    def counted(self) -> Iterator[None]:
        """Count a request as in flight while the server works on it (not while it answers, so
        a client that has its answer and starts the next request is never counted twice)."""
        with self._lock:
            self._in_flight += 1
            self.peak = max(self.peak, self._in_flight)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.peak >= self.gather, timeout=60)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def __enter__(self) -> FakeServer:
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (the standard library's name)
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            recorded = Recorded(
                self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw or b"null"), raw
            )
            reply = server.answer(recorded)
            with server.counted():
                time.sleep(reply.delay)
            if reply.drop:
                self.close_connection = True
                return
            data = json.dumps(reply.body).encode() if reply.raw is None else reply.raw
            try:
                self.send_response(reply.status)
                self.send_header("content-type", reply.content_type)
                self.send_header("content-length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up waiting (a timeout test)
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep test output clean

    return Handler


_ids = count(1)


# -- Anthropic's Messages API -------------------------------------------------------------
def claude_message(
    content: list[dict[str, Any]], *, stop_reason: str = "end_turn", usage: tuple[int, int] = (12, 5)
) -> Reply:
    return Reply(
        body={
            "id": f"msg_{next(_ids)}",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
        }
    )


def claude_tool(data: Any, *, stop_reason: str = "tool_use", name: str = "reply") -> Reply:
    """A forced tool call whose input is `data`."""
    block = {"type": "tool_use", "id": f"toolu_{next(_ids)}", "name": name, "input": data}
    return claude_message([block], stop_reason=stop_reason)


def claude_text(text: str, *, stop_reason: str = "end_turn") -> Reply:
    return claude_message([{"type": "text", "text": text}], stop_reason=stop_reason)


CLAUDE_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def claude_error(status: int, message: str, headers: dict[str, str] | None = None, *, delay: float = 0.0) -> Reply:
    kind = CLAUDE_ERROR_TYPES.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_{next(_ids)}"}
    return Reply(status, body, headers or {}, delay)


# -- OpenAI's Chat Completions API --------------------------------------------------------
def openai_message(content: str, *, finish_reason: str = "stop", usage: tuple[int, int] = (12, 5)) -> Reply:
    return Reply(
        body={
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "test-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
        }
    )


def openai_error(status: int, message: str, headers: dict[str, str] | None = None, *, delay: float = 0.0) -> Reply:
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": None,
            "code": None,
        }
    }
    return Reply(status, body, headers or {}, delay)
