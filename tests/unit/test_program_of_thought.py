"""program_of_thought on the scripted backend: the model's code runs in the sandbox."""

from __future__ import annotations

import pytest

import lmdsl
from lmdsl import program_of_thought
from lmdsl.sandbox import SandboxLimits

LIMITS = SandboxLimits(wall_seconds=3.0, cpu_seconds=2)


@lmdsl.fuzzy(strategy=program_of_thought(attempts=3, limits=LIMITS))
def total_cost(prices: list[float], tax_rate: float) -> float:
    """Compute the total cost of the items including tax."""


def code(text: str) -> dict[str, str]:
    return {"code": text}


def test_the_code_result_becomes_the_typed_output() -> None:
    model = lmdsl.ScriptedModel([code("result = round(sum(prices) * (1 + tax_rate), 2)")])
    with lmdsl.using(model=model):
        record = total_cost.invoke({"prices": [10.0, 5.5], "tax_rate": 0.2})
    assert record.output == 18.6 and isinstance(record.output, float)
    assert record.details["code"].startswith("result = round(")
    system = model.requests[0].messages[0].content
    assert "Assign the final answer, a float, to a variable named `result`" in system
    assert "prices, tax_rate" in system


def test_a_failing_program_is_shown_to_the_model_and_rewritten() -> None:
    model = lmdsl.ScriptedModel(
        [
            code("result = sum(prices) / 0"),
            code("import os\nresult = 1.0"),
            code("result = sum(prices) * (1 + tax_rate)"),
        ]
    )
    with lmdsl.using(model=model):
        record = total_cost.invoke({"prices": [1.0, 2.0], "tax_rate": 0.5})
    assert record.output == 4.5
    second, third = model.requests[1].messages[-1].content, model.requests[2].messages[-1].content
    assert "ZeroDivisionError" in second
    assert "os" in third and "Running that code failed" in third
    assert [t["error"] is None for t in record.details["tries"]] == [False, False, True]


def test_a_result_of_the_wrong_type_is_fed_back() -> None:
    model = lmdsl.ScriptedModel([code("result = 'lots'"), code("result = 3")])
    with lmdsl.using(model=model):
        assert total_cost([1.0, 2.0], 0.0) == 3.0
    assert "`result` is not a float" in model.requests[1].messages[-1].content


def test_when_every_attempt_fails_output_error_carries_the_code_and_errors() -> None:
    model = lmdsl.ScriptedModel([code("while True: pass")] * 3)
    with lmdsl.using(model=model), pytest.raises(lmdsl.OutputError) as caught:
        total_cost([1.0], 0.1)
    failures = [a for a in caught.value.attempts if a.error]
    assert len(failures) == 3
    assert all(a.text == "while True: pass" for a in failures)
    assert all("time" in (a.error or "").lower() for a in failures)
