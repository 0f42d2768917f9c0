"""What react and program_of_thought refuse when they are defined, each with its message."""

from __future__ import annotations

from typing import Any

import pytest

import lmdsl
from lmdsl import program_of_thought, react


def look(city: str) -> str:
    """Look a city up."""
    return city


def done(x: str) -> str:
    """Named like the finishing action."""
    return x


def varargs(*cities: str) -> str:
    return ""


def untyped(city) -> str:  # type: ignore[no-untyped-def]
    return str(city)


def no_return(city: str):  # type: ignore[no-untyped-def]
    return city


def unsupported(city: set[str]) -> str:
    return ""


def unresolvable(city: Missing) -> str:  # type: ignore[name-defined]  # noqa: F821
    return ""


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        (done, "react: a tool needs a plain function name other than 'done', not 'done'"),
        (lambda city: city, "react: a tool needs a plain function name other than 'done', not '<lambda>'"),
        (varargs, "react: tool varargs: *cities is not supported; name each argument"),
        (untyped, "react: tool untyped: parameter 'city' has no type annotation; the model needs its type"),
        (no_return, "react: tool no_return: annotate its return type"),
        (unsupported, "react: tool unsupported: parameter 'city': "),
        (unresolvable, "react: tool unresolvable: its annotations cannot be resolved: name 'Missing' is not defined"),
    ],
)
def test_a_tool_that_cannot_be_described_is_refused(tool: Any, message: str) -> None:
    with pytest.raises(lmdsl.SignatureError) as caught:
        react([tool])
    assert str(caught.value).startswith(message)


def test_react_needs_tools_with_distinct_names_and_a_whole_number_of_steps() -> None:
    with pytest.raises(lmdsl.SignatureError, match="^react needs at least one tool$"):
        react([])
    with pytest.raises(lmdsl.SignatureError, match=r"^react: tool names must be distinct, got \['look', 'look'\]$"):
        react([look, look])
    for steps in (0, 1.5):
        with pytest.raises(lmdsl.SignatureError, match=r"^react: max_steps must be a whole number >= 1, not "):
            react([look], max_steps=steps)  # type: ignore[arg-type]


def test_react_refuses_a_function_with_its_own_trajectory_input() -> None:
    with pytest.raises(lmdsl.SignatureError, match="react adds an input named 'trajectory'; rename yours"):

        @lmdsl.fuzzy(strategy=react([look]))
        def answer(question: str, trajectory: str) -> str:
            """Answer."""


@pytest.mark.parametrize("attempts", [0, -1, 2.0, True])
def test_program_of_thought_needs_a_whole_number_of_attempts(attempts: Any) -> None:
    if attempts is True:
        assert program_of_thought(attempts=attempts).attempts is True  # bool is an int: one attempt
        return
    with pytest.raises(ValueError, match=r"^program_of_thought: attempts must be a whole number >= 1, not "):
        program_of_thought(attempts=attempts)
