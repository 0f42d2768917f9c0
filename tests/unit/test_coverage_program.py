"""`@program` corners the main suite leaves out: nested programs, argument checking of unusual
parameters, functions found through closures and wrappers, and option and parameter errors."""

from __future__ import annotations

import functools
import json
import warnings
from typing import Any

import pytest
from pydantic import BaseModel

import lmdsl
from lmdsl.program import Program, output_adapter


@lmdsl.fuzzy
def shout(text: str) -> str:
    """Rewrite the text in capitals."""


@lmdsl.fuzzy
def whisper(text: str) -> str:
    """Rewrite the text in lower case."""


@lmdsl.program
def loud(text: str) -> str:
    return shout(text=text)


@lmdsl.program
def both(text: str) -> str:
    return whisper(text=shout(text=text))


def replies(*texts: str) -> lmdsl.ScriptedModel:
    """A model that answers `shout` or `whisper`, whichever is asked, with the next text."""
    queue = list(texts)

    def respond(request: lmdsl.Request) -> str:
        schema = request.json_schema or ""
        key = "shout" if '"shout"' in schema else "whisper"
        return json.dumps({key: queue.pop(0)})

    return lmdsl.ScriptedModel(respond)


# -- nested programs ----------------------------------------------------------------------------------------


def test_a_nested_program_is_traced_by_the_outer_one() -> None:
    """Inside another program, `run` returns an empty trace: the calls belong to the outer run."""

    @lmdsl.program
    def outer(text: str) -> int:
        return len(loud.run(text).trace)

    with lmdsl.using(model=replies("HI")):
        result = outer.run("hi")
    assert result.output == 0
    assert [step.function for step in result.trace] == [shout]
    assert result.trace[0].record.output == "HI"


def test_an_assertion_in_the_outer_program_retries_a_call_made_by_a_nested_one() -> None:
    @lmdsl.program(max_backtracks=1)
    def checked(text: str) -> str:
        reply = loud(text)
        lmdsl.require(reply.isupper(), "Use capitals only.")
        return reply

    model = replies("Hello", "HELLO")
    with lmdsl.using(model=model):
        result = checked.run("hello")
    assert result.output == "HELLO"
    assert result.backtracks == 1
    assert [step.function for step in result.trace] == [shout]
    assert model.requests[1].messages[-1].content == (
        "That answer was rejected: Use capitals only. Answer again, fixing that."
    )


def test_a_require_or_suggest_that_holds_neither_backtracks_nor_warns() -> None:
    @lmdsl.program
    def confident(text: str) -> str:
        reply = shout(text=text)
        lmdsl.suggest(reply.endswith("K"), "End with K.")
        lmdsl.require(reply == "OK", "Say OK.")
        return reply

    model = replies("OK")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with lmdsl.using(model=model):
            result = confident.run("ok")
        lmdsl.suggest(True, "never warned outside a program either")
        lmdsl.require(True, "never raised outside a program either")
    assert (result.output, result.backtracks) == ("OK", 0)
    assert len(model.requests) == 1


# -- the fuzzy functions a program uses ---------------------------------------------------------------------


def test_a_function_reached_directly_and_through_a_nested_program_is_listed_once() -> None:
    """Named after the first mention: here `shout` itself, so `both.shout` is not listed again."""

    @lmdsl.program
    def combined(text: str) -> str:
        first = shout(text=text)
        return both(first)

    assert dict(combined.functions) == {"shout": shout, "both.whisper": whisper}


def test_a_closure_variable_not_yet_bound_is_skipped() -> None:
    """`functions` read before a closure variable is assigned sees an empty cell; it is left out,
    not an error, and the functions already known are still found."""

    @lmdsl.program
    def later_bound(text: str) -> str:
        return shout(text=late(text=text))

    found = dict(later_bound.functions)

    @lmdsl.fuzzy
    def late(text: str) -> str:
        """Answer late."""

    assert found == {"shout": shout}


def test_a_wrapped_callable_without_code_has_no_functions_but_runs() -> None:
    """A `functools.partial` has no `__code__` to read names from, so no functions are found."""

    def greet(text: str, greeting: str) -> str:
        return f"{greeting} {shout(text=text)}"

    wrapped = lmdsl.program(functools.partial(greet, greeting="hey"))
    assert dict(wrapped.functions) == {}
    with lmdsl.using(model=replies("YOU")):
        assert wrapped("you") == "hey YOU"


# -- options and parameters ---------------------------------------------------------------------------------


def test_a_negative_max_backtracks_is_refused() -> None:
    def plain(text: str) -> str:
        return text

    with pytest.raises(TypeError, match="max_backtracks must be a whole number >= 0, not -1"):
        lmdsl.program(max_backtracks=-1)(plain)


def test_repr_names_the_module_and_the_function() -> None:
    assert repr(loud) == f"<program {__name__}.loud>"


def test_setting_params_of_an_unknown_function_is_a_key_error_and_changes_nothing() -> None:
    with pytest.raises(KeyError, match=r"both has no fuzzy function 'scream'; it has \['whisper', 'shout'\]"):
        both.params = {"shout": lmdsl.Params("Changed."), "scream": lmdsl.Params("Loudly.")}
    assert shout.params.instructions == "Rewrite the text in capitals."


def test_reloading_the_artifact_of_a_program_without_one_runs_from_the_docstrings() -> None:
    shout.params = lmdsl.Params("Shout it.")
    try:
        loud.reset_params(reload_artifact=True)
        model = replies("HI")
        with lmdsl.using(model=model):
            assert loud("hi") == "HI"
        assert model.requests[0].messages[0].content.startswith("Rewrite the text in capitals.")
    finally:
        shout.reset_params()


# -- checking arguments against annotations -----------------------------------------------------------------


class Query(BaseModel):
    text: str


class Box:
    """A class pydantic has no schema for: not checked."""


def test_arguments_are_coerced_to_their_annotation_and_defaults_left_alone() -> None:
    seen: list[tuple[Query, int]] = []

    @lmdsl.program
    def search(query: Query, limit: int = 5) -> str:
        seen.append((query, limit))
        return query.text

    assert search.invoke({"query": {"text": "paris"}}).output == "paris"
    query = Query(text="rome")
    assert search(query, limit=2) == "rome"
    assert seen[0] == (Query(text="paris"), 5)
    assert seen[1][0] is query and seen[1][1] == 2


def test_star_parameters_any_and_unknown_classes_are_not_checked() -> None:
    seen: list[tuple[Any, ...]] = []

    @lmdsl.program
    def loose(count: int, *rest: str, extra: Any = None, box: Box | None = None, **more: str) -> int:
        seen.append((count, rest, extra, box, more))
        return count

    box = Box()
    marker = object()
    assert loose.invoke({"count": "3", "extra": marker, "box": box}).output == 3
    assert loose.run(1, 2, 3, box=box, x=4).output == 1  # type: ignore[arg-type]
    first, second = seen
    assert first == (3, (), marker, box, {})
    assert second == (1, (2, 3), None, box, {"x": 4})
    with pytest.raises(lmdsl.InputError, match="input field 'count'"):
        loose.invoke({"count": "three"})


def test_unresolvable_annotations_leave_arguments_unchecked() -> None:
    def echo(text: str) -> str:
        return repr(text)

    echo.__annotations__["text"] = "NoSuchType"
    unchecked = lmdsl.program(echo)
    assert unchecked.invoke({"text": 12}).output == "12"


class Touchy(str):
    """A str whose comparison fails, as some proxies' does."""

    def __eq__(self, other: object) -> bool:
        raise TypeError("cannot compare")

    __hash__ = str.__hash__


def test_a_value_whose_comparison_fails_is_passed_as_validated() -> None:
    types_seen: list[type] = []

    @lmdsl.program
    def kind(text: str) -> str:
        types_seen.append(type(text))
        return text.upper()

    assert kind(Touchy("abc")) == "ABC"
    assert types_seen == [str]


# -- output_adapter -----------------------------------------------------------------------------------------


def test_output_adapter_reads_the_return_annotation() -> None:
    @lmdsl.program
    def count(text: str) -> list[int]:
        return [len(text)]

    adapter = output_adapter(count)
    assert adapter.dump_json([1, 2]) == b"[1,2]"
    assert adapter.validate_python(["3"]) == [3]


def test_output_adapter_of_an_unresolvable_return_annotation_takes_anything() -> None:
    def vague(text: str) -> str:
        return text

    vague.__annotations__["return"] = "NoSuchType"
    adapter = output_adapter(Program(vague))
    marker = ["3"]
    assert adapter.validate_python(marker) is marker
