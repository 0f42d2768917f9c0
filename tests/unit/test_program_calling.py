"""Calling a program every way (call, `run`, `invoke`, `acall`, `map`): arguments checked and
coerced against annotations with exact errors, names of programs built from odd callables, and
which fuzzy functions a program finds (closures, modules, nested code, clashing names)."""

from __future__ import annotations

import asyncio
import importlib
import json
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

import lmdsl
from lmdsl.lm.types import Request
from lmdsl.program import Program, output_adapter


@lmdsl.fuzzy
def tidy(text: str) -> str:
    """Tidy the text."""


@lmdsl.fuzzy
def rhyme(text: str) -> str:
    """Find a word that rhymes with the text."""


def _other_tidy() -> lmdsl.FuzzyFunction[..., str]:
    @lmdsl.fuzzy
    def tidy(text: str) -> str:
        """Tidy the text another way."""

    return tidy


OTHER_TIDY = _other_tidy()

TOOLS = types.ModuleType("tools")
TOOLS.rhymer = rhyme  # type: ignore[attr-defined]


def echo_model(request: Request) -> dict[str, str]:
    """Answers any function with its own name and the first input line."""
    name = next(iter(json.loads(request.json_schema or "{}")["properties"]))
    return {name: f"{name}:{request.messages[-1].content.split(': ', 1)[1]}"}


@pytest.fixture(autouse=True)
def _model() -> Iterator[lmdsl.ScriptedModel]:
    model = lmdsl.ScriptedModel(echo_model)
    with lmdsl.using(model=model):
        yield model


# -- arguments ------------------------------------------------------------------------------------------------


def test_invoke_passes_positional_and_keyword_only_parameters() -> None:
    seen: list[tuple[str, int, str]] = []

    @lmdsl.program
    def shaped(text: str, count: int = 1, *, suffix: str) -> str:
        seen.append((text, count, suffix))
        return tidy(text=text * count + suffix)

    assert shaped.invoke({"text": "ab", "suffix": "!", "count": "2"}).output == "tidy:abab!"
    assert shaped("x", suffix="?") == "tidy:x?"
    assert seen == [("ab", 2, "!"), ("x", 1, "?")]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "missing a required argument: 'text'"),
        ({"text": "a", "colour": "red"}, "got an unexpected keyword argument 'colour'"),
    ],
)
def test_invoke_with_the_wrong_names_is_an_input_error_naming_the_program(inputs: dict[str, Any], message: str) -> None:
    @lmdsl.program
    def named(text: str) -> str:
        return text

    with pytest.raises(lmdsl.InputError) as caught:
        named.invoke(inputs)
    assert (
        str(caught.value)
        == f"test_invoke_with_the_wrong_names_is_an_input_error_naming_the_program.<locals>.named: {message}"
    )


def test_a_parameter_left_to_its_default_does_not_stop_the_others_being_checked() -> None:
    seen: list[tuple[int, int]] = []

    @lmdsl.program
    def sized(first: int = 1, *, second: int) -> int:
        seen.append((first, second))
        return first + second

    assert sized.invoke({"second": "41"}).output == 42
    assert sized(second="2") == 3  # type: ignore[arg-type]
    assert seen == [(1, 41), (1, 2)]
    assert [type(second) for _, second in seen] == [int, int]


def test_a_value_that_already_fits_is_passed_as_the_same_object() -> None:
    received: list[object] = []

    @lmdsl.program
    def collect(words: list[str], table: dict[str, int]) -> int:
        received.extend([words, table])
        return len(words) + len(table)

    words = ["a", "b"]
    table = {"x": 1}
    assert collect(words, table) == 3
    assert received[0] is words and received[1] is table
    assert collect.invoke({"words": ("c",), "table": {"y": "2"}}).output == 2
    assert received[2:] == [["c"], {"y": 2}]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("many", "input field 'count': Input should be a valid integer, unable to parse string as an integer"),
        ([1], "input field 'count': Input should be a valid integer"),
    ],
)
def test_a_value_that_does_not_fit_is_an_input_error_naming_the_field(value: object, message: str) -> None:
    @lmdsl.program
    def counted(text: str, count: int) -> str:
        return text * count

    with pytest.raises(lmdsl.InputError) as caught:
        counted.invoke({"text": "a", "count": value})
    assert str(caught.value) == message
    assert caught.value.field == "count"


def test_text_that_is_not_valid_unicode_is_an_input_error_saying_where() -> None:
    @lmdsl.program
    def spoken(text: str) -> str:
        return text

    with pytest.raises(lmdsl.InputError) as caught:
        spoken("ab\ud800")
    assert str(caught.value) == "input field 'text': it is not valid Unicode (a lone surrogate U+D800 at position 2)"


def test_acall_passes_keyword_arguments() -> None:
    @lmdsl.program
    def joined(first: str, second: str = "-") -> str:
        return tidy(text=first + second)

    async def both() -> list[str]:
        return list(await asyncio.gather(joined.acall("a", second="b"), joined.acall(first="c")))

    assert asyncio.run(both()) == ["tidy:ab", "tidy:c-"]


def test_map_runs_on_four_threads_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    module = importlib.import_module("lmdsl.program")
    real = module.run_each

    def counting(function: Callable[[Any], Any], items: Iterable[Any], *, threads: int) -> Any:
        asked.append(threads)
        return real(function, items, threads=threads)

    monkeypatch.setattr(module, "run_each", counting)

    @lmdsl.program
    def tidied(text: str) -> str:
        return tidy(text=text)

    assert [o.value for o in tidied.map([{"text": "a"}, {"text": "b"}])] == ["tidy:a", "tidy:b"]
    assert [o.value for o in tidied.map([{"text": "c"}], threads=2)] == ["tidy:c"]
    assert asked == [4, 2]


# -- names ---------------------------------------------------------------------------------------------------


class Greeter:
    """A callable object: it has no `__qualname__` of its own."""

    def __call__(self, text: str) -> str:
        return tidy(text=text)

    def __repr__(self) -> str:
        return "<greeter>"


def test_a_program_of_a_callable_object_is_named_by_its_repr() -> None:
    program = Program(Greeter())
    assert program.name == "<greeter>"
    assert repr(program) == f"<program {__name__}.<greeter>>"
    assert program("hi") == "tidy:hi"

    def refuse(text: str) -> str:
        lmdsl.require(False, "No.")
        return text

    class Refuser(Greeter):
        def __call__(self, text: str) -> str:
            return refuse(text)

    with pytest.raises(lmdsl.AssertionFailed) as caught:
        Program(Refuser())("t")
    assert str(caught.value) == "<greeter>: an assertion still failed after 0 attempt(s): No."


# -- which fuzzy functions -----------------------------------------------------------------------------------


def _uses_tidy(text: str) -> str:
    return tidy(text=text)


class CodeOnly:
    """Callable, with a function's code but none of a function's other attributes."""

    __code__ = _uses_tidy.__code__

    def __call__(self, text: str) -> str:
        return _uses_tidy(text)


def test_a_callable_with_code_but_no_globals_or_closure_finds_nothing_and_still_runs() -> None:
    program = Program(CodeOnly())
    assert dict(program.functions) == {}
    assert program("a") == "tidy:a"
    assert dict(program.functions) == {"tidy": tidy}  # found calling


def test_an_unbound_closure_variable_does_not_hide_the_ones_after_it() -> None:
    @lmdsl.fuzzy
    def b_bound(text: str) -> str:
        """Bound before the program is looked at."""

    @lmdsl.program
    def closing(text: str) -> str:
        return b_bound(text=a_late(text=text))

    found = dict(closing.functions)  # `a_late` (first of the free variables) is still unbound here

    @lmdsl.fuzzy
    def a_late(text: str) -> str:
        """Bound after."""

    assert closing.__wrapped__.__code__.co_freevars == ("a_late", "b_bound")
    assert found == {"b_bound": b_bound}


def test_functions_in_a_module_lambdas_and_inner_functions_are_found() -> None:
    @lmdsl.program
    def layered(text: str) -> str:
        def inner(value: str) -> str:
            return OTHER_TIDY(text=value)

        first = (lambda value: TOOLS.rhymer(text=value))(text)
        return inner(first)

    assert dict(layered.functions) == {"rhymer": rhyme, "OTHER_TIDY": OTHER_TIDY}


def test_functions_sharing_a_name_are_numbered_in_order_of_discovery() -> None:
    third = _other_tidy()

    @lmdsl.program(functions=[OTHER_TIDY, tidy])
    def passing(text: str, step: Any) -> str:
        result: str = step(text=tidy(text=text))
        return result

    assert dict(passing.functions) == {"tidy": tidy, "tidy#2": OTHER_TIDY}
    assert passing("a", third) == "tidy:tidy:a"
    assert dict(passing.functions) == {"tidy": tidy, "tidy#2": OTHER_TIDY, "tidy#3": third}
    passing("b", rhyme)
    passing("c", third)
    assert list(passing.functions) == ["tidy", "tidy#2", "tidy#3", "rhyme"]
    with pytest.raises(TypeError):
        passing.functions["other"] = rhyme  # type: ignore[index]


def test_functions_listed_with_the_function_itself_are_kept() -> None:
    def applying(text: str, step: Any) -> str:
        result: str = step(text=text)
        return result

    direct = lmdsl.program(applying, functions=[rhyme], max_backtracks=1)  # type: ignore[call-overload]
    assert dict(direct.functions) == {"rhyme": rhyme}
    assert direct.max_backtracks == 1
    decorated = lmdsl.program(functions=(rhyme, OTHER_TIDY))(applying)
    assert dict(decorated.functions) == {"rhyme": rhyme, "tidy": OTHER_TIDY}
    assert decorated.max_backtracks == 2


def test_a_program_that_calls_itself_lists_only_its_own_functions() -> None:
    @lmdsl.program
    def countdown(text: str) -> str:
        return text if len(text) > 3 else countdown(tidy(text=text))

    assert dict(countdown.functions) == {"tidy": tidy}
    assert countdown("a") == "tidy:a"


# -- output adapter ------------------------------------------------------------------------------------------


def test_an_unannotated_return_is_printed_as_anything() -> None:
    def anything(text):  # type: ignore[no-untyped-def]
        return [text]

    adapter = output_adapter(Program(anything))
    value = ["3", {"k": 1}]
    assert adapter.validate_python(value) is value
    assert adapter.dump_json({"a": [1]}) == b'{"a":[1]}'
