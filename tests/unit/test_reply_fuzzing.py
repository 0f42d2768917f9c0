"""The parse path under hostile replies: whatever a model sends (truncated JSON, wrong types,
missing and extra keys, thousands of levels of nesting, megabyte strings, NaN, lone
surrogates, invalid escapes, empty text, prose), a fuzzy function ends in a value of its
return type or `lmdsl.OutputError`: never another exception, never a hang.

The bulk goes straight through `OutputFormat.parse` (a value, or `InvalidOutput`); a smaller
share goes through a whole call on a `ScriptedModel` (retries, the retry prompt, the error).
`LMDSL_FUZZ_EXAMPLES` sets the examples per return type for the parse path (200 by default;
10000 for a long run); the whole-call tests run a twentieth of that, some replies marked as cut off at max_tokens.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmdsl
from lmdsl.lm.types import Completion, Request
from lmdsl.prompt import InvalidOutput
from lmdsl.testing import inputs, replies
from tests.unit.fuzz_types import FUNCTIONS, THINKING, TYPES, is_typed

EXAMPLES = int(os.environ.get("LMDSL_FUZZ_EXAMPLES", "200"))
CALL_EXAMPLES = max(10, EXAMPLES // 20)
SLOW = 5.0  # seconds for one reply: far beyond a megabyte reply's parse; a hang trips it

FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,  # timed below instead: a deadline re-runs a slow example and calls it flaky
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
ALL = {**{name: FUNCTIONS[name] for name in TYPES}, **{f"{name}, reasoning": fn for name, fn in THINKING.items()}}


def _annotation(name: str) -> Any:
    return TYPES[name.split(",")[0]]


@pytest.mark.parametrize("name", list(ALL))
def test_a_reply_parses_to_a_typed_value_or_is_invalid_output(name: str) -> None:
    fn = ALL[name]
    annotation = _annotation(name)
    parse = fn.output_format.parse

    @FUZZ
    @given(replies(fn))
    def check(text: str) -> None:
        started = time.perf_counter()
        try:
            value, reasoning = parse(text, {"value": None})
        except InvalidOutput as invalid:
            str(invalid).encode("utf-8")  # what goes back to the model is valid Unicode
        else:
            assert is_typed(value, annotation)
            assert (reasoning is not None) is fn.output_format.reasoning
        assert time.perf_counter() - started < SLOW

    check()


@pytest.mark.parametrize("name", list(ALL))
def test_a_call_on_hostile_replies_returns_a_typed_value_or_raises_output_error(name: str) -> None:
    fn = ALL[name]
    annotation = _annotation(name)

    @settings(FUZZ, max_examples=CALL_EXAMPLES)
    @given(inputs(fn), st.data())
    def check(values: dict[str, Any], data: st.DataObject) -> None:
        def reply(request: Request) -> Completion:
            text = data.draw(replies(fn), label="reply")
            return Completion(text, finish_reason=data.draw(st.sampled_from(["stop", "length"]), label="finish"))

        started = time.perf_counter()
        with lmdsl.using(model=lmdsl.ScriptedModel(reply), cache=False):
            try:
                record = fn.invoke(values)
            except lmdsl.OutputError as error:
                assert len(error.attempts) == fn.retries + 1
                str(error).encode("utf-8")
            else:
                assert is_typed(record.output, annotation)
        assert time.perf_counter() - started < SLOW * (fn.retries + 1)

    check()


@pytest.mark.parametrize(
    "text",
    [
        '{"answer_int": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"answer_int": ' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "}",
        "[" * 1_000_000,
        '{"answer_int": "' + "x" * 20_000_000 + '"}',
        '{"answer_int": ' + "9" * 1_000_000 + "}",
        '{"answer_int": 1e999999}',
        '{"answer_int": NaN}',
    ],
    ids=[
        "deep arrays",
        "deep objects",
        "a megabyte of brackets",
        "a 20 MB string",
        "a million digits",
        "1e999999",
        "NaN",
    ],
)
def test_the_extremes_are_invalid_output_quickly(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidOutput):
        FUNCTIONS["int"].output_format.parse(text)
    assert time.perf_counter() - started < SLOW
