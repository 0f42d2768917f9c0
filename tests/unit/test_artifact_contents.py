"""What a compiled artifact holds, key by key, and how its JSON text is laid out."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

import lmdsl
from lmdsl.compiler.artifact import artifact_data, write_artifact
from lmdsl.compiler.base import Candidate, Compiled


@lmdsl.fuzzy
def tag(message: str) -> Literal["spam", "ham"]:
    """Tag the message as spam or ham."""


@lmdsl.program
def triage(message: str) -> str:
    return tag(message)


class Threshold:
    """A setting that JSON cannot hold: the artifact keeps its repr."""

    def __repr__(self) -> str:
        return "Threshold(0.5)"


CHOSEN = {"tag": lmdsl.Params("Tag it, café owner.", (lmdsl.Demo({"message": "win a prize"}, "spam"),))}


def compiled_record() -> Compiled:
    return Compiled(
        params=CHOSEN,
        score=87.5,
        baseline=50.0,
        candidates=(
            Candidate("zero-shot", {"tag": lmdsl.Params("Tag the message as spam or ham.", ())}, 50.0),
            Candidate("labelled", CHOSEN, 87.5),
            Candidate("not scored", CHOSEN, None),
        ),
        lm_calls=12,
        tokens=345,
        seconds=1.23456,
        settings={"optimizer": "Handmade", "seed": 3, "storage": None, "threshold": Threshold()},
        cached_calls=5,
    )


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    tag.reset_params()


def test_artifact_data_holds_the_parameters_scores_cost_settings_and_candidates() -> None:
    data = artifact_data(triage, compiled_record(), model="scripted-7")
    assert data == {
        "format": "lmdsl-params/1",
        "lmdsl": lmdsl.__version__,
        "program": "triage",
        "functions": {
            "tag": {
                "signature": tag.signature.fingerprint,
                "instructions": "Tag it, café owner.",
                "demos": [{"inputs": {"message": "win a prize"}, "output": "spam", "reasoning": None}],
            }
        },
        "model": "scripted-7",
        "scores": {"uncompiled": 50.0, "compiled": 87.5},
        "cost": {"lm_calls": 12, "tokens": 345, "seconds": 1.23, "cached_calls": 5},
        "optimizer": {"optimizer": "Handmade", "seed": 3, "storage": None, "threshold": "Threshold(0.5)"},
        "candidates": [
            {"label": "zero-shot", "score": 50.0},
            {"label": "labelled", "score": 87.5},
            {"label": "not scored", "score": None},
        ],
    }
    assert isinstance(data["cost"]["seconds"], float)
    assert tag.params.instructions == "Tag the message as spam or ham."  # the program's own parameters are untouched


def test_the_artifact_file_is_indented_json_that_keeps_non_ascii_text(tmp_path: Path) -> None:
    path = tmp_path / "triage.lmdsl.json"
    written = write_artifact(path, triage, compiled_record(), model="scripted-7")
    assert written == path
    fingerprint = tag.signature.fingerprint
    assert path.read_text(encoding="utf-8") == (
        "{\n"
        '  "format": "lmdsl-params/1",\n'
        f'  "lmdsl": "{lmdsl.__version__}",\n'
        '  "program": "triage",\n'
        '  "functions": {\n'
        '    "tag": {\n'
        f'      "signature": "{fingerprint}",\n'
        '      "instructions": "Tag it, café owner.",\n'
        '      "demos": [\n'
        "        {\n"
        '          "inputs": {\n'
        '            "message": "win a prize"\n'
        "          },\n"
        '          "output": "spam",\n'
        '          "reasoning": null\n'
        "        }\n"
        "      ]\n"
        "    }\n"
        "  },\n"
        '  "model": "scripted-7",\n'
        '  "scores": {\n'
        '    "uncompiled": 50.0,\n'
        '    "compiled": 87.5\n'
        "  },\n"
        '  "cost": {\n'
        '    "lm_calls": 12,\n'
        '    "tokens": 345,\n'
        '    "seconds": 1.23,\n'
        '    "cached_calls": 5\n'
        "  },\n"
        '  "optimizer": {\n'
        '    "optimizer": "Handmade",\n'
        '    "seed": 3,\n'
        '    "storage": null,\n'
        '    "threshold": "Threshold(0.5)"\n'
        "  },\n"
        '  "candidates": [\n'
        "    {\n"
        '      "label": "zero-shot",\n'
        '      "score": 50.0\n'
        "    },\n"
        "    {\n"
        '      "label": "labelled",\n'
        '      "score": 87.5\n'
        "    },\n"
        "    {\n"
        '      "label": "not scored",\n'
        '      "score": null\n'
        "    }\n"
        "  ]\n"
        "}"
    )


def test_an_artifact_loads_back_as_the_compiled_parameters(tmp_path: Path) -> None:
    path = write_artifact(tmp_path / "a.json", triage, compiled_record(), model="scripted-7")
    triage.load(path)
    assert tag.params == CHOSEN["tag"]
    assert json.loads(path.read_text(encoding="utf-8"))["cost"]["seconds"] == 1.23


# -- the recorded cost of a compile the cache answered (issue 16) ------------------------------------


def from_cache(seconds: float = 0.02) -> Compiled:
    """A re-run of the same compile on a warm cache: no LM call, every call cached."""
    return dataclasses.replace(compiled_record(), lm_calls=0, tokens=0, seconds=seconds, cached_calls=40)


def test_a_compile_the_cache_answered_keeps_the_cost_the_artifact_recorded_and_adds_its_cached_calls(
    tmp_path: Path,
) -> None:
    path = write_artifact(tmp_path / "a.json", triage, compiled_record(), model="scripted-7")
    write_artifact(path, triage, from_cache(), model="scripted-7")
    assert json.loads(path.read_text(encoding="utf-8"))["cost"] == {
        "lm_calls": 12,
        "tokens": 345,
        "seconds": 1.23,
        "cached_calls": 40,
    }
    write_artifact(path, triage, from_cache(0.5), model="scripted-7")  # and again: still the cost that was paid
    assert json.loads(path.read_text(encoding="utf-8"))["cost"]["lm_calls"] == 12


def test_a_compile_that_reached_a_model_records_its_own_cost_even_over_a_larger_one(tmp_path: Path) -> None:
    path = write_artifact(tmp_path / "a.json", triage, compiled_record(), model="scripted-7")
    cheaper = dataclasses.replace(compiled_record(), lm_calls=3, tokens=30, seconds=0.5, cached_calls=9)
    write_artifact(path, triage, cheaper, model="scripted-7")
    assert json.loads(path.read_text(encoding="utf-8"))["cost"] == {
        "lm_calls": 3,
        "tokens": 30,
        "seconds": 0.5,
        "cached_calls": 9,
    }


@pytest.mark.parametrize(
    "earlier",
    [
        pytest.param(None, id="no-artifact-yet"),
        pytest.param('{"format": "lmdsl-params/1", "progr', id="not-json"),
        pytest.param("other-program", id="another-programs-artifact"),
        pytest.param({"lm_calls": 0, "tokens": 0, "seconds": 0.1}, id="a-zero-cost"),
        pytest.param({"lm_calls": "12", "tokens": -1}, id="not-counts"),
    ],
)
def test_a_compile_the_cache_answered_records_zero_when_there_is_no_earlier_cost_to_keep(
    tmp_path: Path, earlier: object
) -> None:
    path = tmp_path / "a.json"
    if isinstance(earlier, str) and earlier != "other-program":
        path.write_text(earlier, encoding="utf-8")
    elif earlier is not None:
        data = artifact_data(triage, compiled_record(), model="scripted-7")
        if earlier == "other-program":
            data["program"] = "another"
        else:
            data["cost"] = earlier
        path.write_text(json.dumps(data), encoding="utf-8")
    write_artifact(path, triage, from_cache(), model="scripted-7")
    assert json.loads(path.read_text(encoding="utf-8"))["cost"] == {
        "lm_calls": 0,
        "tokens": 0,
        "seconds": 0.02,
        "cached_calls": 40,
    }
