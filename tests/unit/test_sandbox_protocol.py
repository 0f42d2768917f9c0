"""The parent's side of the sandbox's reply protocol, as properties.

The first line on the child's stdout is the runner's, written before the code runs; after
"ready", anything may follow, since the code runs in the same process and can write there.
Whatever it writes, and however the process ends, the parent returns a `SandboxResult`
within the output limit or raises one of the typed `SandboxError` subclasses: never the bare
base class, never `SandboxInputError` (the caller's error), never anything else. How long
that takes is bounded by the wall-clock limit, which the parent enforces itself.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmdsl.errors import (
    SandboxCodeError,
    SandboxCrash,
    SandboxError,
    SandboxMemoryError,
    SandboxOutputError,
    SandboxTimeout,
    SandboxViolation,
)
from lmdsl.sandbox import SandboxLimits, SandboxResult
from lmdsl.sandbox.parent import _run_code
from lmdsl.sandbox.protocol import Outcome, interpret

# healthy_parent: the autouse fixture that checks no child or temporary directory is left behind
from tests.unit.test_sandbox import OS_GLOBALS, healthy_parent  # noqa: F401

READY = b'{"kind":"ready","confined":true,"note":""}\n'
LIMITS = SandboxLimits(output_bytes=256)
NOTE = f"\n[output truncated after {LIMITS.output_bytes} bytes]\n"
TYPED = (SandboxCodeError, SandboxViolation, SandboxOutputError, SandboxMemoryError, SandboxTimeout, SandboxCrash)
RETURNCODES = st.sampled_from([0, 0, 0, 1, 3, -signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT, -signal.SIGSYS, None])
FIELDS = ("value", "stdout", "message", "type_name", "detail", "traceback", "line", "confined", "note", "extra")
KINDS = ("ok", "code", "violation", "memory", "output", "internal", "setup", "ready", "bogus")

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40)
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=8)
field_values = st.one_of(
    st.text(max_size=300),
    st.integers(),
    st.none(),
    st.booleans(),
    json_values.map(lambda value: json.dumps(value)),  # a JSON text, as the value of "ok" is
    st.integers(0, 3000).map(lambda size: json.dumps("x" * size)),  # around the output limit
)


@st.composite
def messages(draw: Any) -> bytes:
    """One line the code might write: mostly close to the schema, sometimes not."""
    message = {"kind": draw(st.sampled_from(KINDS))}
    for name in draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=7)):
        message[name] = draw(field_values)
    text = json.dumps(message, ensure_ascii=draw(st.booleans()))
    end: bytes = draw(st.sampled_from([b"\n", b"\n", b"", b"\r\n"]))
    return text.encode("utf-8", "surrogatepass") + end


def outcome(stdout: bytes, returncode: int | None = 0, stderr: bytes = b"") -> Outcome:
    return Outcome(stdout, stderr, returncode, 0.0, False, False)


def assert_typed(stdout: bytes, returncode: int | None, limits: SandboxLimits = LIMITS) -> SandboxResult | None:
    """The property: a result within the limit, or a typed SandboxError subclass."""
    try:
        result = interpret(outcome(stdout, returncode), limits, 0.01)
    except SandboxError as error:
        assert isinstance(error, TYPED), repr(error)
        assert type(error) is not SandboxError
        return None
    assert isinstance(result, SandboxResult)
    assert len(result.stdout.encode("utf-8", "surrogatepass")) <= limits.output_bytes + len(NOTE)
    assert len(json.dumps(result.value, ensure_ascii=False, separators=(",", ":")).encode()) <= limits.output_bytes
    return result


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048), returncode=RETURNCODES)
def test_any_bytes_after_ready_give_a_result_or_a_typed_error(data: bytes, returncode: int | None) -> None:
    assert_typed(READY + data, returncode)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(messages(), max_size=3), returncode=RETURNCODES)
def test_any_messages_after_ready_give_a_result_or_a_typed_error(lines: list[bytes], returncode: int | None) -> None:
    assert_typed(READY + b"".join(lines), returncode)


@settings(max_examples=100, deadline=None)
@given(value=json_values, stdout=st.text(max_size=600))
def test_a_well_formed_reply_is_taken_only_within_the_output_limit(value: Any, stdout: str) -> None:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    line = json.dumps({"kind": "ok", "value": text, "stdout": stdout}).encode() + b"\n"
    result = assert_typed(READY + line, 0)
    fits = len(text.encode()) <= LIMITS.output_bytes
    assert (result is not None) == fits
    if result is not None:
        assert result.value == json.loads(text)
        assert result.stdout == stdout or result.stdout.endswith(NOTE)


@pytest.mark.parametrize(
    ("stdout", "returncode", "stderr", "expected", "signal_name"),
    [
        (READY, -signal.SIGSEGV, b"", SandboxCrash, "SIGSEGV"),
        (READY, -signal.SIGABRT, b"", SandboxCrash, "SIGABRT"),
        (b"", -signal.SIGSEGV, b"", SandboxCrash, "SIGSEGV"),  # before the code ran: a crash all the same
        (READY, -77, b"", SandboxCrash, "signal 77"),
        (READY, -signal.SIGXCPU, b"", SandboxTimeout, None),
        (READY, -signal.SIGABRT, b"MemoryError\n", SandboxMemoryError, None),
        (READY + b'{"kind":"ok","value":"1","stdout":""}\n', -signal.SIGSEGV, b"", SandboxCrash, "SIGSEGV"),
    ],
)
def test_a_process_killed_by_a_signal_is_a_typed_error(
    stdout: bytes, returncode: int, stderr: bytes, expected: type[SandboxError], signal_name: str | None
) -> None:
    with pytest.raises(SandboxError) as caught:
        interpret(outcome(stdout, returncode, stderr), LIMITS, 0.01)
    assert type(caught.value) is expected
    if isinstance(caught.value, SandboxCrash):
        assert caught.value.signal_name == signal_name and caught.value.signal_number == -returncode
        assert signal_name in str(caught.value)


def test_a_genuine_reply_is_read_as_before() -> None:
    line = b'{"kind":"ok","value":"{\\"a\\":[1,2]}","stdout":"hi\\n"}\n'
    result = interpret(outcome(READY + line), LIMITS, 0.5)
    assert (result.value, result.stdout, result.seconds) == ({"a": [1, 2]}, "hi\n", 0.5)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.binary(max_size=300) | messages(), then=st.sampled_from(["leave(0)", "leave(1)", "result = 1"]))
def test_whatever_a_compromised_child_writes_the_parent_gives_a_typed_answer(data: bytes, then: str) -> None:
    code = (
        OS_GLOBALS
        + (
            "for fd in range(3, 16):\n"
            "    try:\n"
            "        g['write'](fd, bytes(data))\n"
            "    except OSError:\n"
            "        pass\n"
            "def leave(status):\n"
            "    g['_exit'](status)\n"
        )
        + then
    )
    limits = SandboxLimits(wall_seconds=5.0, cpu_seconds=2, memory_bytes=128 * 2**20, output_bytes=256)
    try:
        result = _run_code(code, {"data": list(data)}, limits, name_checks=False)
    except SandboxError as error:
        assert isinstance(error, TYPED), repr(error)
        return
    assert isinstance(result, SandboxResult)
