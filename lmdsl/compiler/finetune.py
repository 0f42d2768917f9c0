"""Weight optimizers: fine-tune the embedded model on the program's own successful runs.

`BootstrapFinetune` runs the program on the training set (rejection sampling, as
`BootstrapFewShot` does: a run counts when the metric accepts it), turns every call of every
kept run into a chat example in exactly the prompt lmdsl sends (the same `Prompt.request`,
the reply rendered as a demo's is: the compact JSON the engine's grammar writes), and trains
a LoRA adapter on CPU (`lmdsl.training`, the `finetune` extra). `BetterTogether` alternates
prompt and weight steps ("demos, then weights, then demos"), keeping a step only when it
raises the dev score.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmdsl.cache import default_cache_dir
from lmdsl.compiler.base import Budget, Candidate, Compiled, Optimizer, score_candidate
from lmdsl.compiler.few_shot import RandomSearch, metric_passes
from lmdsl.config import settings, using
from lmdsl.errors import TrainingError
from lmdsl.lm.local import LocalModel, embedded_model_path
from lmdsl.params import Params
from lmdsl.prompt import Prompt
from lmdsl.scores import Metric
from lmdsl.training.lora import ChatExample, LoraSettings, Step, train_lora
from lmdsl.weights import Weights, entry_for

if TYPE_CHECKING:
    from rich.progress import Progress

    from lmdsl.data import Example
    from lmdsl.program import Program, TraceStep

log = logging.getLogger("lmdsl.compiler")
_progress_log = logging.getLogger("lmdsl.compiler.progress")


def chat_example(step: TraceStep, params: Params) -> ChatExample:
    """A traced call as a training example: the request the function sends under `params`
    (what the program sends at inference), and the call's output as the model's reply."""
    function = step.function
    record = step.record
    prompt = Prompt(function.signature, function.output_format, params)
    request = prompt.request(record.inputs, temperature=0.0, max_tokens=None)
    return ChatExample(request.messages, function.output_format.render(record.output, record.reasoning))


def data_digest(examples: Sequence[ChatExample]) -> str:
    """The SHA-256 of the training data: every message and reply, in order."""
    text = json.dumps(
        [[[m.role, m.content] for m in e.messages] + [["assistant", e.reply]] for e in examples], ensure_ascii=False
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def bootstrap_traces(
    program: Program[..., Any],
    trainset: Sequence[Example],
    metric: Metric,
    *,
    rounds: int,
    threshold: float | None,
    budget: Budget,
) -> list[TraceStep]:
    """Every successful call of every run the metric accepts, with the parameters in force
    (less any demo made from the example being run, which would give its answer away)."""
    kept: list[TraceStep] = []
    log.info("bootstrapping training examples: running %s on %d training examples", program.name, len(trainset))
    for example in trainset:
        if budget.exhausted:
            break
        inputs = example.inputs_for(program)
        hidden = {
            name: Params(
                p.instructions,
                tuple(d for d in p.demos if not all(k in inputs and inputs[k] == v for k, v in d.inputs.items())),
            )
            for name, p in program.params.items()
        }
        with program.with_params(hidden):
            for round_number in range(rounds):
                sampling = {"temperature": 1.0, "rollout": round_number} if round_number else {}
                try:
                    with using(**sampling):
                        result = program.invoke(inputs)
                    if not metric_passes(metric, example, result.output, result.trace, threshold):
                        continue
                except Exception:  # a run (or its metric) that fails is a run the metric does not accept
                    continue
                kept.extend(step for step in result.trace if step.record.error is None)
                break
    return kept


class _TrainingProgress:
    """Training steps, loss and time left: a rich bar on a terminal, else a line on the log every ~10%."""

    def __init__(self, examples: int) -> None:
        self.examples = examples
        self.bar: Progress | None = None
        self.task: Any = None
        self.shown = _progress_log.isEnabledFor(logging.INFO) or log.isEnabledFor(logging.INFO)

    def __call__(self, step: Step) -> None:
        if not self.shown:
            return
        left = f"{step.remaining:.0f} s left" if math.isfinite(step.remaining) else ""
        if self.bar is None and getattr(sys.stderr, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn(f"fine-tune on {self.examples} examples"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.3f}, {task.fields[left]}"),
                TimeElapsedColumn(),
                console=Console(file=sys.stderr),
            )
            self.task = self.bar.add_task("train", total=step.total, loss=step.loss, left=left)
            self.bar.start()
        if self.bar is not None:
            self.bar.update(self.task, completed=step.step, loss=step.loss, left=left)
        elif step.step == 1 or step.step == step.total or step.step % max(1, math.ceil(step.total / 10)) == 0:
            _progress_log.info(
                "fine-tune: step %d/%d, loss %.3f, %.0f s, %s", step.step, step.total, step.loss, step.elapsed, left
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _require_embedded(program: Program[..., Any]) -> None:
    """Fine-tuning trains the embedded model: refuse a compile whose calls would go elsewhere."""
    model = settings().model_for(None)
    if not (model == "local" or (isinstance(model, LocalModel) and model.name.startswith("local?lora="))):
        raise TrainingError(
            f"{program.name}: BootstrapFinetune trains the embedded model ('local'), but calls go to "
            f"{model if isinstance(model, str) else model.name}; compile with the model 'local'"
        )


@dataclass(frozen=True)
class BootstrapFinetune:
    """Fine-tune the embedded model (LoRA, on CPU) on the program's runs that pass the metric.

    Every call of every kept run (intermediate steps included) becomes a training example in
    the exact prompt the program sends with its parameters in force. The adapter is scored on
    the dev set against the weights the program ran on; the artifact records it (written beside
    it, with its hash). `max_lm_calls` bounds the bootstrap; `training.max_seconds` the training.
    Needs the `finetune` extra.
    """

    training: LoraSettings = field(default_factory=LoraSettings)
    rounds: int = 1
    threshold: float | None = None
    max_lm_calls: int | None = None
    threads: int = 1
    folder: Path | None = None  # where adapters are trained to; by default the cache's `adapters` folder

    def compile(
        self,
        program: Program[..., Any],
        trainset: Sequence[Example],
        metric: Metric,
        *,
        devset: Sequence[Example] | None = None,
    ) -> Compiled:
        started = time.perf_counter()
        _require_embedded(program)
        dev = list(devset if devset is not None else trainset)
        budget = Budget(self.max_lm_calls)
        params = program.params
        with budget.counting():
            baseline = score_candidate(program, dev, metric, threads=self.threads, title="before fine-tuning").score
            weights = self.train(program, trainset, metric, budget=budget)
            with using(model=weights.model):
                score = score_candidate(program, dev, metric, threads=self.threads, title="fine-tuned").score
        log.info("fine-tuned: %.1f on the dev set (before: %.1f)", score, baseline)
        return Compiled(
            params,
            score,
            baseline,
            (Candidate("as given", params, baseline), Candidate("fine-tuned", params, score)),
            budget.lm_calls,
            budget.tokens,
            time.perf_counter() - started,
            {"optimizer": "BootstrapFinetune", **asdict(self)},
            budget.cached_calls,
            weights,
        )

    def train(
        self, program: Program[..., Any], trainset: Sequence[Example], metric: Metric, *, budget: Budget
    ) -> Weights:
        """Bootstrap training examples with the parameters in force, train, and return the checked weights."""
        steps = bootstrap_traces(program, trainset, metric, rounds=self.rounds, threshold=self.threshold, budget=budget)
        functions = program.functions
        by_function = {fn: name for name, fn in functions.items()}
        examples = [chat_example(step, functions[by_function[step.function]].params) for step in steps]
        if not examples:
            raise TrainingError(
                f"{program.name}: no run on the {len(trainset)} training examples passed the metric, "
                "so there is nothing to train on; check the metric, or add examples the program can solve"
            )
        digest = data_digest(examples)
        folder = self.folder or (settings().cache_dir or default_cache_dir()) / "adapters"
        out = folder / f"{digest[:16]}-{_settings_digest(self.training)}.lora.gguf"
        log.info("fine-tuning on %d examples from %d training runs", len(examples), len({id(s) for s in steps}))
        progress = _TrainingProgress(len(examples))
        try:
            trained = train_lora(embedded_model_path(), examples, self.training, out, on_step=progress)
        finally:
            progress.close()
        record = {
            **asdict(self.training),
            "steps": trained.steps,
            "planned_steps": trained.planned_steps,
            "stopped_by_time": trained.stopped_by_time,
            "first_loss": round(trained.first_loss, 4),
            "last_loss": round(trained.last_loss, 4),
            "seconds": round(trained.seconds, 1),
            "tokens": trained.tokens,
        }
        entry = entry_for(out, training=record, examples=len(examples), data_sha256=digest)
        return Weights(entry, out, LocalModel(lora=out))


def _settings_digest(training: LoraSettings) -> str:
    return hashlib.sha256(json.dumps(asdict(training), sort_keys=True).encode()).hexdigest()[:8]


StepName = Literal["demos", "weights"]


@dataclass(frozen=True)
class BetterTogether:
    """Prompts and weights together: a sequence of steps such as demos, then weights, then demos
    again (DSPy's BetterTogether), each scored on the dev set and kept only when it beats the best so far.

    A demos step runs `demos` (an optimizer of demonstrations) on the weights kept so far; a weights
    step runs `finetune` with the demos kept so far in the prompts. `max_lm_calls` bounds the LM
    calls of all steps together; each weights step trains for at most `finetune.training.max_seconds`.
    """

    steps: tuple[StepName, ...] = ("demos", "weights", "demos")
    demos: Optimizer = field(default_factory=lambda: RandomSearch(candidates=4))
    finetune: BootstrapFinetune = field(default_factory=BootstrapFinetune)
    max_lm_calls: int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        unknown = [s for s in self.steps if s not in ("demos", "weights")]
        if unknown or not self.steps:
            raise TrainingError(
                f"BetterTogether: {f'unknown step {unknown[0]!r}' if unknown else 'no steps'}; "
                "the steps are 'demos' and 'weights', for example ('demos', 'weights', 'demos')"
            )

    def compile(
        self,
        program: Program[..., Any],
        trainset: Sequence[Example],
        metric: Metric,
        *,
        devset: Sequence[Example] | None = None,
    ) -> Compiled:
        started = time.perf_counter()
        _require_embedded(program)
        dev = list(devset if devset is not None else trainset)
        budget = Budget(self.max_lm_calls)
        params: Mapping[str, Params] = program.params
        weights: Weights | None = None
        tried: list[Candidate] = []
        with budget.counting():
            baseline = score_candidate(program, dev, metric, threads=self.threads, title="as given").score
            best = baseline
            tried.append(Candidate("as given", params, baseline))
            for number, step in enumerate(self.steps, 1):
                if budget.exhausted:
                    log.info("BetterTogether: the LM-call budget is spent after %d step(s)", number - 1)
                    break
                left = None if self.max_lm_calls is None else self.max_lm_calls - budget.lm_calls
                with program.with_params(params), using(**({"model": weights.model} if weights else {})):
                    if step == "demos":
                        optimizer = _with_budget(self.demos, left)
                        compiled = optimizer.compile(program, trainset, metric, devset=dev)
                        new_params, new_weights = compiled.params, weights
                    else:
                        new_weights = replace(self.finetune, max_lm_calls=left).train(
                            program, trainset, metric, budget=budget
                        )
                        new_params = params
                with program.with_params(new_params), using(**({"model": new_weights.model} if new_weights else {})):
                    score = score_candidate(program, dev, metric, threads=self.threads, title=f"step {number}").score
                label = f"step {number}: {step}"
                tried.append(Candidate(label, new_params, score))
                log.info("BetterTogether %s: %.1f on the dev set (best so far %.1f)", label, score, best)
                if score > best:
                    best, params, weights = score, new_params, new_weights
        return Compiled(
            params,
            best,
            baseline,
            tuple(tried),
            budget.lm_calls,
            budget.tokens,
            time.perf_counter() - started,
            {"optimizer": "BetterTogether", **asdict(self)},
            budget.cached_calls,
            weights,
        )


def _with_budget(optimizer: Optimizer, left: int | None) -> Optimizer:
    """The demo optimizer, its LM-call budget cut to what is left of the whole compile's."""
    if left is None or not hasattr(optimizer, "max_lm_calls"):
        return optimizer
    own = getattr(optimizer, "max_lm_calls")
    return replace(optimizer, max_lm_calls=left if own is None else min(own, left))  # type: ignore[type-var]
