"""Choosing the embedded model's engine, and the grammar the server engine decodes with (no model runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lmdsl
from lmdsl.lm.local import ENGINES, LocalModel, _compact_json_grammar, _engine_choice, _threads


def test_the_engine_asked_for_wins_and_an_unknown_one_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LMDSL_LOCAL_ENGINE", raising=False)
    assert _engine_choice("llama-cpp-python") == "llama-cpp-python"
    monkeypatch.setenv("LMDSL_LOCAL_ENGINE", "llama-cpp-python")
    assert _engine_choice(None) == "llama-cpp-python"
    assert _engine_choice("xllamacpp") == "xllamacpp"  # the argument beats the environment
    with pytest.raises(lmdsl.ModelUnavailableError) as caught:
        _engine_choice("vllm")
    assert str(caught.value) == "unknown local engine 'vllm'; the engines are xllamacpp, llama-cpp-python"


def test_with_nothing_asked_the_first_installed_engine_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LMDSL_LOCAL_ENGINE", raising=False)
    installed = {"llama_cpp"}
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if name in installed else None)
    assert _engine_choice(None) == "llama-cpp-python"
    installed.add("xllamacpp")
    assert _engine_choice(None) == "xllamacpp"
    installed.clear()
    with pytest.raises(lmdsl.ModelUnavailableError, match="no llama.cpp engine is installed"):
        _engine_choice(None)


def test_llama_cpp_threads_are_the_environment_s_else_the_cores_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LMDSL_LOCAL_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 3, 5})
    assert _threads() == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    assert _threads() == 8  # past 8, llama.cpp's threads wait on each other more than they gain
    monkeypatch.setenv("LMDSL_LOCAL_THREADS", " 2 ")
    assert _threads() == 2
    for wrong in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv("LMDSL_LOCAL_THREADS", wrong)
        with pytest.raises(lmdsl.ModelUnavailableError) as caught:
            _threads()
        assert str(caught.value) == (
            f"LMDSL_LOCAL_THREADS must be a whole number of threads, 1 or more (it is {wrong!r})"
        )


def test_the_other_engine_and_another_sampler_are_other_cache_keys(tmp_path: Path) -> None:
    model_file = tmp_path / "tiny.gguf"
    model_file.write_bytes(b"GGUF")
    path = model_file.resolve()
    assert LocalModel(model_file, engine=ENGINES[0]).name == f"local:{path}"
    assert LocalModel(model_file, engine="llama-cpp-python").name == f"local:{path}?engine=llama-cpp-python"
    assert (
        LocalModel(model_file, engine="llama-cpp-python", repeat_penalty=1.0).name
        == f"local:{path}?engine=llama-cpp-python&repeat_penalty=1.0"
    )
    assert LocalModel(model_file, engine=ENGINES[0], repeat_penalty=1.0).name == f"local:{path}?repeat_penalty=1.0"


def test_the_server_grammar_writes_compact_json_and_closes_every_object() -> None:
    schema = {
        "type": "object",
        "properties": {
            "person": {"$ref": "#/$defs/Person"},
            "tags": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
            "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
        "required": ["person"],
        "$defs": {"Person": {"type": "object", "properties": {"name": {"type": "string"}}}},
    }
    grammar = _compact_json_grammar(json.dumps(schema))
    header, _, body = grammar.partition("\nstart: %json ")
    assert header == "%llguidance {}"
    written = json.loads(body)
    assert written["x-guidance"] == {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    assert written["additionalProperties"] is False
    assert written["$defs"]["Person"]["additionalProperties"] is False
    assert written["properties"]["tags"]["items"]["additionalProperties"] is False
    assert written["properties"]["extra"]["additionalProperties"] == {
        "type": "integer"
    }  # the schema's own choice stays
