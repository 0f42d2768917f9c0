"""Bad input gets a typed error and nothing reaches the model: replies that are not valid
Unicode, inputs that do not fit (on every call path), deep and cyclic values, parameter
files and data files that are not regular files or hold text that is not valid Unicode."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import lmdsl
import lmdsl.params
from lmdsl.errors import ArtifactError, InputError, LMDSLError, OutputError
from lmdsl.lm.types import Request

LONE_SURROGATES = st.integers(min_value=0xD800, max_value=0xDFFF).map(chr)
# Text as a sloppy backend might hand it over: any code point, lone surrogates included.
ANY_TEXT = st.text(alphabet=st.one_of(st.characters(), LONE_SURROGATES), max_size=40)


@lmdsl.fuzzy(retries=1)
def route(message: str, priority: int = 1) -> Literal["billing", "tech"]:
    """Route the support message to a team."""


class Node(BaseModel):
    label: str
    child: Node | None = None


@lmdsl.fuzzy(retries=0)
def summarise(tree: Node, notes: dict[str, list[str]]) -> str:
    """Summarise the tree."""


def _scripted(*replies: Any) -> lmdsl.ScriptedModel:
    return lmdsl.ScriptedModel(list(replies))


def _never_called() -> lmdsl.ScriptedModel:
    def refuse(request: Request) -> str:
        raise AssertionError("an invalid input reached the model")

    return lmdsl.ScriptedModel(refuse)


# -- 1. replies that are not valid Unicode -------------------------------------------------------
@pytest.mark.parametrize(
    "reply",
    [
        '{"route": "bill\ud800ing"}',  # a raw lone surrogate, as a loose decoder leaves it
        '{"route": "\\ud800"}',  # a JSON escape that decodes to one
        '{"route": "tech"}\udfff',
        '{"ro\udc80ute": "tech"}',
    ],
)
def test_a_reply_that_is_not_valid_unicode_is_retried_then_an_output_error(reply: str) -> None:
    model = _scripted(reply, reply)
    with lmdsl.using(model=model), pytest.raises(OutputError) as caught:
        route("my card was charged twice")
    assert len(caught.value.attempts) == 2
    for attempt in caught.value.attempts:
        assert attempt.error is not None and ("Unicode" in attempt.error or "JSON" in attempt.error)
    # the retry shows the model its reply, escaped: the request itself is valid Unicode
    retry = model.requests[1]
    for message in retry.messages:
        message.content.encode("utf-8")
    str(caught.value).encode("utf-8")
    for attempt in caught.value.attempts:
        attempt.text.encode("utf-8")


@pytest.mark.parametrize(
    "reply",
    ["[" * 100_000 + "]" * 100_000, '{"route": "' + "x" * 10_000_000 + '"}', '{"route": "tech"' + " " * 1000],
    ids=["nested-100000", "10-MB", "cut-off"],
)
def test_huge_deep_and_cut_off_replies_are_output_errors(reply: str) -> None:
    with lmdsl.using(model=_scripted(reply, reply)), pytest.raises(OutputError) as caught:
        route("hello")
    assert len(caught.value.attempts) == 2


def test_a_bad_reply_then_a_good_one_returns_the_good_value() -> None:
    model = _scripted('{"route": "\ud83d"}', '{"route": "tech"}')
    with lmdsl.using(model=model):
        assert route("the app crashes") == "tech"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reply=ANY_TEXT, value=ANY_TEXT)
def test_any_reply_text_is_a_typed_value_or_an_output_error(reply: str, value: str) -> None:
    replies = [reply, json.dumps({"route": value}, ensure_ascii=False)]
    with lmdsl.using(model=_scripted(*replies)):
        try:
            result = route("hello")
        except OutputError:
            return
    assert result in ("billing", "tech")


# -- 2. inputs are validated on every path --------------------------------------------------------
BAD_INPUTS: list[dict[str, Any]] = [
    {"message": None},
    {"message": "x", "priority": "high"},
    {"message": ["a list"]},
    {"message": "bad \ud800 text"},
    {"message": "ok", "priority": object()},
]


@pytest.mark.parametrize("inputs", BAD_INPUTS)
def test_a_direct_call_validates_its_inputs(inputs: dict[str, Any]) -> None:
    with lmdsl.using(model=_never_called()):
        with pytest.raises(InputError) as caught:
            route(**inputs)
        assert caught.value.field in ("message", "priority")
        outcomes = route.map([inputs])
        assert isinstance(outcomes[0].error, InputError)
        with pytest.raises(InputError):
            asyncio.run(route.acall(**inputs))
        with pytest.raises(InputError):
            route.invoke(inputs)


@pytest.mark.parametrize("item", [None, ["message"], "message", 3])
def test_map_items_that_are_not_mappings_are_input_errors(item: Any) -> None:
    with lmdsl.using(model=_never_called()):
        [outcome] = route.map([item])
    assert isinstance(outcome.error, InputError)


def test_wrong_arity_is_an_input_error_and_still_a_type_error() -> None:
    with lmdsl.using(model=_never_called()):
        calls: list[Callable[[], object]] = [
            lambda: route(),  # type: ignore[call-arg]
            lambda: route("a", 1, 2),  # type: ignore[call-arg]
            lambda: route("a", mesage="b"),  # type: ignore[call-arg]
            lambda: route("a", message="b"),  # type: ignore[misc]
        ]
        for call in calls:
            with pytest.raises(InputError) as caught:
                call()
            assert isinstance(caught.value, TypeError)


def test_direct_calls_coerce_as_map_does() -> None:
    model = lmdsl.ScriptedModel(lambda request: {"route": "tech"})
    with lmdsl.using(model=model):
        assert route("it broke", priority="3") == "tech"  # type: ignore[arg-type]
    assert model.requests[0].messages[-1].content == "message: it broke\npriority: 3"
    assert lmdsl.history()[-1].inputs["priority"] == 3  # the int, not the string: the prompt alone cannot tell


def _deep(depth: int) -> Node:
    node = Node(label="leaf")
    for number in range(depth):
        node = Node(label=str(number), child=node)
    return node


def test_deep_and_cyclic_inputs_are_input_errors() -> None:
    cyclic = Node(label="loop")
    cyclic.child = cyclic
    with lmdsl.using(model=_never_called()):
        with pytest.raises(InputError, match="tree"):
            summarise(tree=_deep(10_000), notes={})
        with pytest.raises(InputError, match="tree"):
            summarise(tree=cyclic, notes={})
        with pytest.raises(InputError, match="notes"):
            summarise(tree=Node(label="a"), notes={"k": ["fine", "not \udcff fine"]})
        with pytest.raises(InputError, match="tree"):
            summarise(tree=Node(label="bad \ud800"), notes={})


@lmdsl.program
def triage(message: str, priority: int = 1) -> str:
    return route(message, priority)


def test_programs_validate_their_inputs_on_every_path() -> None:
    with lmdsl.using(model=_never_called()):
        with pytest.raises(InputError, match="priority"):
            triage("x", priority="high")  # type: ignore[arg-type]
        with pytest.raises(InputError, match="message"):
            triage.invoke({"message": None})
        assert isinstance(triage.map([{"message": "\udc00"}])[0].error, InputError)


def test_a_program_gets_the_same_object_when_it_already_fits() -> None:
    seen: list[object] = []

    @lmdsl.program
    def collect(items: list[str]) -> int:
        seen.append(items)
        return len(items)

    given_list = ["a", "b"]
    assert collect(given_list) == 2
    assert seen[0] is given_list


@settings(max_examples=150, deadline=None)
@given(
    value=st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), ANY_TEXT),
        lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(ANY_TEXT, children, max_size=3)),
        max_leaves=12,
    )
)
def test_any_json_shaped_input_is_accepted_or_an_input_error(value: Any) -> None:
    model = lmdsl.ScriptedModel(lambda request: {"route": "tech"})
    with lmdsl.using(model=model):
        try:
            route(message=value)
        except InputError:
            assert not model.requests
            return
    for message in model.requests[0].messages:
        message.content.encode("utf-8")


# -- 3. files that are not regular files ----------------------------------------------------------
@lmdsl.program
def routed(message: str) -> str:
    return route(message)


def _params_file(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "params.json"
    routed.save(path)
    data = json.loads(path.read_text())
    data["functions"]["route"].update(changes)
    path.write_text(json.dumps(data))
    return path


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "artifact.json"
    os.mkfifo(path)
    return path


def _device_link(tmp_path: Path) -> Path:
    path = tmp_path / "artifact.json"
    path.symlink_to("/dev/zero")
    return path


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "artifact.json"
    path.mkdir()
    return path


@pytest.mark.parametrize("make", [_fifo, _device_link, _directory], ids=["fifo", "dev-zero-link", "directory"])
def test_load_refuses_what_is_not_a_regular_file_without_blocking(make: Any, tmp_path: Path) -> None:
    path = make(tmp_path)
    finished = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        try:
            routed.load(path)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)
        finished.set()

    threading.Thread(target=load, daemon=True).start()
    assert finished.wait(30), "load blocked"
    assert len(errors) == 1 and isinstance(errors[0], ArtifactError)
    assert "not a regular file" in str(errors[0])


def test_an_oversized_parameter_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lmdsl.params, "MAX_PARAMS_BYTES", 100)
    path = _params_file(tmp_path)
    with pytest.raises(ArtifactError, match="larger than 100 bytes"):
        routed.load(path)


def test_a_dangling_artifact_link_is_an_error_when_stale_artifacts_raise(tmp_path: Path) -> None:
    @lmdsl.program
    def strict(message: str) -> str:
        return route(message)

    link = tmp_path / "gone.json"
    link.symlink_to(tmp_path / "missing.json")
    strict.use_artifact(link, on_stale="raise")
    with lmdsl.using(model=_never_called()), pytest.raises(ArtifactError, match="cannot read"):
        strict("hi")


@pytest.mark.parametrize(
    "changes",
    [
        {"instructions": "Route \ud800 it."},
        {"demos": [{"inputs": {"message": "hi \udc00"}, "output": "tech"}]},
        {"demos": [{"inputs": {"message": "hi"}, "output": "te\udfffch"}]},
        {"demos": [{"inputs": {"message": "hi"}, "output": "tech", "reasoning": "\ud800"}]},
    ],
)
def test_parameter_files_with_text_that_is_not_unicode_are_artifact_errors(tmp_path: Path, changes: Any) -> None:
    path = _params_file(tmp_path, **changes)
    before = routed.params
    with pytest.raises(ArtifactError, match="Unicode"):
        routed.load(path)
    assert routed.params == before  # nothing half-applied


def test_params_set_in_code_with_lone_surrogates_are_input_errors() -> None:
    with pytest.raises(InputError, match="Unicode"):
        route.params = lmdsl.Params("Route \ud800")
    with pytest.raises(InputError, match="Unicode"):
        route.params = lmdsl.Params("Route", (lmdsl.Demo({"message": "\udc00"}, "tech"),))


@pytest.mark.parametrize("make", [_fifo, _device_link, _directory], ids=["fifo", "dev-zero-link", "directory"])
def test_load_examples_refuses_what_is_not_a_regular_file(make: Any, tmp_path: Path) -> None:
    path = make(tmp_path)
    target = path.with_suffix(".jsonl")
    path.rename(target)
    with pytest.raises(InputError, match="not a regular file"):
        lmdsl.load_examples(target)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), text=ANY_TEXT)
def test_any_parameter_file_bytes_load_or_raise_an_artifact_error(tmp_path: Path, data: bytes, text: str) -> None:
    path = tmp_path / "hostile.json"
    valid = json.loads(_params_file(tmp_path).read_text())
    valid["functions"]["route"]["instructions"] = text
    for content in (
        data,
        json.dumps(valid).encode(),
        json.dumps(valid, ensure_ascii=False).encode("utf-8", "surrogatepass"),
    ):
        path.write_bytes(content)
        try:
            routed.load(path)
        except LMDSLError as error:
            assert isinstance(error, ArtifactError)
    routed.reset_params()


def test_save_replaces_a_fifo_instead_of_blocking_on_it(tmp_path: Path) -> None:
    path = _fifo(tmp_path)
    routed.save(path)  # a plain write would wait for a reader forever
    assert path.is_file() and json.loads(path.read_text())["program"] == "routed"


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _params_file(tmp_path)
    before = path.read_bytes()

    def full_disk(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        routed.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.json"]


def test_a_positional_only_input_is_validated_and_can_be_checked() -> None:
    @lmdsl.fuzzy(retries=0)
    def echo(text: str, /) -> str:
        """Repeat the text."""

    @echo.ensure
    def not_empty(out: str, *, text: str) -> None:
        if not out:
            raise lmdsl.Retry(f"say something about {text}")

    model = lmdsl.ScriptedModel(lambda request: {"echo": "hi"})
    with lmdsl.using(model=model):
        assert echo("hello") == "hi"
        assert echo.map([{"text": "hello"}])[0].value == "hi"
        with pytest.raises(InputError, match="text"):
            echo(None)  # type: ignore[arg-type]


def _validation_error() -> Exception:
    from pydantic import TypeAdapter

    try:
        TypeAdapter(list[int]).validate_python([1, "x"])
    except ValueError as error:
        return error
    raise AssertionError("pydantic accepted 'x' as an int")


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (
            [1, "x"],
            _validation_error(),
            "input field 'xs.1': Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            [],
            RecursionError("maximum recursion depth exceeded"),
            "input field 'xs' is nested too deeply to send to a model",
        ),
        (
            [],
            ValueError("Recursion error - cyclic reference detected"),
            "input field 'xs' contains itself (a cycle), which has no JSON form",
        ),
        ([], RecursionError("cyclic? no: too deep"), "input field 'xs' is nested too deeply to send to a model"),
        (
            [],
            ValueError("Error serializing to JSON: ValueError: Circular reference detected (id repeated)"),
            "input field 'xs' contains itself (a cycle), which has no JSON form",
        ),
        ([], ValueError("a Cyclic structure"), "input field 'xs' contains itself (a cycle), which has no JSON form"),
        (
            ["ok", ["\udc80"]],
            ValueError("anything"),
            "input field 'xs[1][0]': it is not valid Unicode (a lone surrogate U+DC80 at position 0)",
        ),
        (
            [],
            UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
            "input field 'xs': it is not valid Unicode",
        ),
        (
            [],
            ValueError("'utf-8' codec can't encode: surrogates not allowed"),
            "input field 'xs': it is not valid Unicode",
        ),
        ([], ValueError("something else \udc00"), "input field 'xs': something else \\udc00"),
    ],
    ids=[
        "validation",
        "recursion",
        "pydantic-cycle",
        "recursion-error-saying-cyclic",
        "circular",
        "cyclic",
        "surrogate-path",
        "unicode-error",
        "surrogate-message",
        "other",
    ],
)
def test_each_kind_of_input_failure_gets_its_own_message(value: Any, error: Exception, message: str) -> None:
    from lmdsl.signature import input_error

    made = input_error("xs", value, error)
    assert (str(made), made.field) == (message, "xs")
