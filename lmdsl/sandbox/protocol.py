"""The child's messages as the parent reads them: the schema, and what each outcome means.

The first line comes from the runner; the reply after "ready" could be forged by the code,
so it is trusted no more than the code itself.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from typing import Any, NoReturn

from lmdsl.errors import (
    SandboxCodeError,
    SandboxCrash,
    SandboxError,
    SandboxInputError,
    SandboxMemoryError,
    SandboxOutputError,
    SandboxTimeout,
    SandboxViolation,
)
from lmdsl.sandbox.confinement import debug
from lmdsl.sandbox.limits import SandboxLimits, SandboxResult


@dataclass(frozen=True)
class Outcome:
    """What the parent saw of one child: its stdout bytes and how it ended."""

    stdout: bytes
    stderr: bytes
    returncode: int | None
    cpu_seconds: float
    timed_out: bool
    overflow: bool


# types. Set-up messages come first and only from the runner; a reply comes after "ready".
_Schema = dict[str, tuple[dict[str, Any], dict[str, Any]]]
SETUP_MESSAGES: _Schema = {
    "ready": ({"confined": bool, "note": str}, {}),
    "setup": ({"message": str}, {}),
    "code": ({"type_name": str, "detail": str, "line": (int, type(None)), "message": str, "traceback": str}, {}),
    "violation": ({"message": str}, {}),
    "memory": ({}, {}),
    "internal": ({"message": str}, {}),
}
_REPLY_MESSAGES: _Schema = {
    "ok": ({"value": str, "stdout": str}, {}),
    "code": (
        {"type_name": str, "detail": str, "line": (int, type(None)), "message": str, "traceback": str, "stdout": str},
        {},
    ),
    "violation": ({"message": str, "stdout": str}, {}),
    "memory": ({}, {"stdout": str}),
    "output": ({"message": str, "stdout": str}, {}),
    "internal": ({"message": str}, {}),
}
_TEXT_CAP = 16 * 1024  # characters in a reply's message, detail or traceback; the runner sends far fewer


class _ProtocolError(Exception):
    """The child's stdout broke the protocol (parent-side only; becomes a SandboxViolation)."""


def interpret(outcome: Outcome, limits: SandboxLimits, seconds: float) -> SandboxResult:
    """Turn the child's messages (or its death) into a result or a typed error."""
    if outcome.overflow:
        raise SandboxOutputError("the code wrote far more output than allowed; print less")
    if outcome.timed_out:
        raise SandboxTimeout(
            f"the code did not finish within the {limits.wall_seconds:g} s time limit; "
            "look for an infinite loop or use a faster algorithm",
            limit="wall",
        )
    first, newline, rest = outcome.stdout.partition(b"\n")
    try:
        setup = decode(first, SETUP_MESSAGES) if newline else None
    except _ProtocolError as error:  # written by the runner before the code ran: a bug, not the code
        raise SandboxError(f"the sandbox failed: its runner sent an unreadable message ({error})") from None
    if setup is None:
        _raise_for_death(outcome, limits, started=False)
    if setup["kind"] != "ready":
        _raise_setup_failure(setup)
    if setup["note"]:
        debug("no kernel confinement in the sandbox: %s", setup["note"][:300])
    if outcome.returncode != 0:
        _raise_for_death(outcome, limits, started=True)
    if not rest:
        raise SandboxOutputError(
            "the code's process ended without reporting `result`; assign the answer to `result` and do not exit"
        )
    try:
        if not rest.endswith(b"\n") or rest.count(b"\n") != 1:
            raise _ProtocolError("expected exactly one reply after the code ran")
        reply = decode(rest[:-1], _REPLY_MESSAGES)
        for name in ("message", "detail", "traceback", "type_name"):
            if len(reply.get(name, "")) > _TEXT_CAP:
                raise _ProtocolError(f"the reply's {name} is too long")
    except _ProtocolError as error:
        raise SandboxViolation(
            f"forbidden operation: the code wrote to the sandbox's reply channel ({error})"
        ) from None
    return _reply_result(reply, limits, seconds)


def decode(line: bytes, schema: _Schema) -> dict[str, Any]:
    """One message: an ASCII JSON object whose kind and fields match `schema` exactly."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in items]
        if len(set(keys)) != len(keys):
            raise _ProtocolError("a field is repeated")
        return dict(items)

    def no_constant(name: str) -> NoReturn:
        raise _ProtocolError(f"{name} is not JSON")

    try:
        message: Any = json.loads(line.decode("ascii"), object_pairs_hook=pairs, parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _ProtocolError("the message is not an ASCII JSON line") from None
    kind = message.get("kind") if isinstance(message, dict) else None
    if type(kind) is not str or kind not in schema:
        raise _ProtocolError(f"unexpected message kind {str(kind)[:40]!r}")
    required, optional = schema[kind]
    fields = set(message) - {"kind"}
    if not set(required) <= fields or not fields <= set(required) | set(optional):
        raise _ProtocolError(f"the {kind!r} message has the wrong fields")
    for name in fields:
        expected = required.get(name) or optional[name]
        kinds = expected if isinstance(expected, tuple) else (expected,)
        if type(message[name]) not in kinds:  # exact types: bool is not an int here
            raise _ProtocolError(f"the {kind!r} message's {name!r} has the wrong type")
    checked: dict[str, Any] = message
    return checked


def _code_error(message: dict[str, Any], stdout: str = "") -> SandboxCodeError:
    """The `SandboxCodeError` a checked "code" message describes."""
    return SandboxCodeError(
        message["message"],
        type_name=message["type_name"],
        detail=message["detail"],
        traceback=message["traceback"],
        line=message["line"],
        stdout=stdout,
    )


def _raise_setup_failure(message: dict[str, Any]) -> NoReturn:
    """A verdict the runner reached before the code ran: authentic, so taken as it is."""
    kind = message["kind"]
    if kind == "setup":
        raise SandboxInputError(message["message"])
    if kind == "code":
        raise _code_error(message)
    if kind == "violation":
        raise SandboxViolation(f"forbidden operation: {message['message']}")
    if kind == "memory":
        raise SandboxMemoryError("the sandbox ran out of memory before the code started; raise memory_bytes")
    raise SandboxError(f"the sandbox failed before running the code: {message['message']}")


def _reply_result(reply: dict[str, Any], limits: SandboxLimits, seconds: float) -> SandboxResult:
    """The reply after "ready", already well-formed; the limits are applied here, not trusted."""
    stdout = _capped_stdout(reply.get("stdout", ""), limits.output_bytes)
    kind = reply["kind"]
    if kind == "ok":
        text: str = reply["value"]
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limits.output_bytes:
            raise SandboxOutputError(
                f"`result` is too large ({size} bytes of JSON; the limit is {limits.output_bytes})", stdout=stdout
            )

        def no_constant(name: str) -> NoReturn:
            raise ValueError(name)

        try:
            value = json.loads(text, parse_constant=no_constant)
        except (ValueError, RecursionError):
            raise SandboxOutputError("`result` could not be read back as JSON", stdout=stdout) from None
        return SandboxResult(value, stdout, seconds)
    if kind == "code":
        raise _code_error(reply, stdout)
    if kind == "violation":
        raise SandboxViolation(f"forbidden operation: {reply['message']}", stdout=stdout)
    if kind == "memory":
        raise SandboxMemoryError(_memory_message(limits), stdout=stdout)
    if kind == "output":
        raise SandboxOutputError(reply["message"], stdout=stdout)
    # "internal" after the code ran: the runner broke on state the code can reach.
    raise SandboxViolation(f"forbidden operation: the code broke the sandbox's runner ({reply['message'][:300]})")


def _capped_stdout(text: str, limit: int) -> str:
    """`text` held to `limit` UTF-8 bytes (plus the truncation note), as the child's capture does."""
    note = f"\n[output truncated after {limit} bytes]\n"
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit + len(note):
        return text
    return data[:limit].decode("utf-8", "ignore") + note


def _memory_message(limits: SandboxLimits) -> str:
    return f"the code ran out of memory (limit {limits.memory_bytes // 2**20} MiB); use less memory"


def _raise_for_death(outcome: Outcome, limits: SandboxLimits, *, started: bool) -> NoReturn:
    """The child ended without a usable reply: a limit, memory, a signal, or an early exit."""
    code = outcome.returncode
    cpu_spent = outcome.cpu_seconds >= limits.cpu_seconds - 0.05
    if code is not None and (code == -signal.SIGXCPU or (code == -signal.SIGKILL and cpu_spent)):
        raise SandboxTimeout(
            f"the code used more than its {limits.cpu_seconds} s of CPU time; "
            "look for an infinite loop or use a faster algorithm",
            limit="cpu",
        )
    tail = outcome.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
    if any(word in "".join(tail) for word in ("MemoryError", "Cannot allocate memory", "out of memory")):
        raise SandboxMemoryError(_memory_message(limits))
    detail = f": {tail[0][:300]}" if tail else ""
    if code is None or code < 0:
        number = -code if code is not None else signal.SIGKILL
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        raise SandboxCrash(f"the code's process was killed by {name}{detail}", signal_number=number, signal_name=name)
    if started:
        raise SandboxOutputError(
            f"the code's process exited with status {code} without reporting `result`{detail}; "
            "assign the answer to `result` and do not exit"
        )
    raise SandboxError(f"the sandbox's interpreter exited with status {code} before running the code{detail}")
