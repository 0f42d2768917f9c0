"""LoRA fine-tuning of a GGUF model on CPU, written as a GGUF adapter llama.cpp loads.

transformers reads (and dequantizes) the GGUF's weights and its tokenizer, peft adds the
low-rank adapters, torch's AdamW trains them on the completion tokens only. The adapter is
written in llama.cpp's adapter format (`general.type = adapter`, `adapter.type = lora`,
`adapter.lora.alpha`, tensors `blk.N.<name>.weight.lora_a` / `.lora_b`), so the engine applies it
over the very quantized weights the model was trained from.

The attention's query and key projections are not adapted: llama.cpp stores them with their
rows permuted (rotary layout), so an adapter for them would need the same permutation.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lmdsl.errors import TrainingError
from lmdsl.files import sha256_file
from lmdsl.lm.types import Message

log = logging.getLogger("lmdsl.training")
T = TypeVar("T")
INSTALL_HINT = "install the fine-tuning extra with: pip install 'lmdsl[finetune]' (torch, transformers, peft, gguf)"
DEFAULT_TARGETS = ("v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ChatExample:
    """One training example: the exact messages lmdsl sends, and the reply the model should give."""

    messages: tuple[Message, ...]
    reply: str


@dataclass(frozen=True)
class LoraSettings:
    """How to train: the adapter's rank and alpha, the optimiser, and the budget (steps and seconds)."""

    rank: int = 8
    alpha: float = 16.0
    learning_rate: float = 1e-3
    epochs: int = 3
    batch_size: int = 4
    max_steps: int | None = None
    max_seconds: float | None = 600.0
    threads: int | None = None
    seed: int = 0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    layers: int | None = None  # adapt only the last N layers: the backward pass stops there, so steps are cheaper

    def __post_init__(self) -> None:
        for name in ("rank", "epochs", "batch_size"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise TrainingError(f"LoraSettings.{name} must be a whole number >= 1, not {value!r}")
        if self.max_steps is not None and (type(self.max_steps) is not int or self.max_steps < 1):
            raise TrainingError(f"LoraSettings.max_steps must be None or a whole number >= 1, not {self.max_steps!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise TrainingError(f"LoraSettings.max_seconds must be None or > 0, not {self.max_seconds!r}")
        if not self.learning_rate > 0 or not self.alpha > 0:
            raise TrainingError("LoraSettings.learning_rate and alpha must be > 0")
        if self.layers is not None and (type(self.layers) is not int or self.layers < 1):
            raise TrainingError(f"LoraSettings.layers must be None or a whole number >= 1, not {self.layers!r}")
        if not self.targets or not set(self.targets) <= set(DEFAULT_TARGETS):
            raise TrainingError(f"LoraSettings.targets must be some of {', '.join(DEFAULT_TARGETS)}")


@dataclass(frozen=True)
class Step:
    """Progress after one optimiser step."""

    step: int
    total: int
    loss: float
    elapsed: float

    @property
    def remaining(self) -> float:
        """Seconds left at this step's pace."""
        return self.elapsed / self.step * (self.total - self.step) if self.step else math.inf


@dataclass(frozen=True)
class TrainedAdapter:
    """What training produced: the adapter file, its SHA-256, and how training went."""

    path: Path
    sha256: str
    examples: int
    tokens: int
    steps: int
    planned_steps: int
    first_loss: float
    last_loss: float
    seconds: float
    stopped_by_time: bool


def _module(name: str) -> Any:
    try:  # by name: torch, transformers, peft and gguf are an optional extra and ship no usable types
        return importlib.import_module(name)
    except ImportError as error:
        raise TrainingError(f"fine-tuning needs {name}, which is not installed ({error}): {INSTALL_HINT}") from None


def render_prompt(template: str, messages: Sequence[Message]) -> str:
    """The text the model reads before replying: the chat template with the generation prompt."""
    return _render(template, messages, generation_prompt=True)


def _render(template: str, messages: Sequence[Message], *, generation_prompt: bool) -> str:
    sandbox = _module("jinja2.sandbox")
    environment = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    compiled = environment.from_string(template)
    rendered: str = compiled.render(
        messages=[{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=generation_prompt
    )
    return rendered


@dataclass(frozen=True)
class _BaseFacts:
    """What lmdsl reads from a base GGUF itself: the gguf package parses every field of the file
    (its 49k-token vocabulary included) in Python, several seconds each time, so once per file."""

    template: str | None
    architecture: str | None
    tensors: frozenset[str]


def _facts(base: Path) -> _BaseFacts:
    stat = base.stat()
    return _read_facts(base.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_facts(base: Path, size: int, modified: int) -> _BaseFacts:
    reader = _module("gguf").GGUFReader(str(base))
    template = reader.get_field("tokenizer.chat_template")
    architecture = reader.get_field("general.architecture")
    return _BaseFacts(
        None if template is None else str(template.contents()),
        None if architecture is None else str(architecture.contents()),
        frozenset(tensor.name for tensor in reader.tensors),
    )


def chat_template(base: Path) -> str:
    """The chat template stored in a GGUF file: the one llama.cpp renders prompts with."""
    template = _facts(base).template
    if template is None:
        raise TrainingError(f"{base} has no chat template; lmdsl fine-tunes chat models only")
    return template


def train_lora(
    base: Path,
    examples: Sequence[ChatExample],
    settings: LoraSettings,
    out: Path,
    on_step: Callable[[Step], None] = lambda step: None,
) -> TrainedAdapter:
    """Train a LoRA adapter for the GGUF model `base` on `examples`; write it to `out` (a GGUF adapter)."""
    if not examples:
        raise TrainingError("no training examples: no run of the program passed the metric")
    torch = _module("torch")
    transformers = _module("transformers")
    peft = _module("peft")
    started = time.perf_counter()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    transformers.logging.set_verbosity_error()
    loading = time.perf_counter()
    tokenizer = transformers.AutoTokenizer.from_pretrained(base.parent, gguf_file=base.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(base.parent, gguf_file=base.name, dtype=torch.float32)
    log.info("loaded %s for training in %.1f s", base.name, time.perf_counter() - loading)
    template = chat_template(base)
    eos = tokenizer.eos_token_id
    sequences = [_tokenized(tokenizer, template, example, eos) for example in examples]
    depth = int(model.config.num_hidden_layers)
    config = peft.LoraConfig(
        layers_to_transform=None if settings.layers is None else list(range(max(0, depth - settings.layers), depth)),
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=0.0,
        target_modules=list(settings.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for a user to do
        warnings.simplefilter("ignore", FutureWarning)
        model = peft.get_peft_model(model, config)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    order = torch.Generator().manual_seed(settings.seed)
    per_epoch = math.ceil(len(sequences) / settings.batch_size)
    planned = per_epoch * settings.epochs
    if settings.max_steps is not None:
        planned = min(planned, settings.max_steps)

    def batches() -> Iterator[Any]:
        while True:  # one shuffled pass over the examples per epoch
            yield from torch.randperm(len(sequences), generator=order).split(settings.batch_size)

    def learn(batch: Any) -> float:
        inputs, labels, mask = _batch(torch, [sequences[i] for i in batch.tolist()], eos)
        loss = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return float(loss.item())

    step, first, last, stopped_by_time = run_steps(batches(), planned, settings.max_seconds, learn, on_step)
    write_adapter(model, base, settings.alpha, out)
    return TrainedAdapter(
        out,
        sha256_file(out),
        len(sequences),
        sum(len(tokens) for tokens, _ in sequences),
        step,
        planned,
        first,
        last,
        time.perf_counter() - started,
        stopped_by_time,
    )


def run_steps(
    batches: Iterator[T],
    planned: int,
    max_seconds: float | None,
    learn: Callable[[T], float],
    on_step: Callable[[Step], None],
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, float, float, bool]:
    """Up to `planned` steps, none started that would end past `max_seconds` at the pace so far
    (the first always runs): the steps taken, the first and last loss, and whether time stopped it."""
    started = clock()
    done = 0
    first = last = math.nan
    for batch in batches:
        if done >= planned:
            break
        elapsed = clock() - started
        if max_seconds is not None and done and elapsed + elapsed / done > max_seconds:
            return done, first, last, True
        last = learn(batch)
        done += 1
        first = last if done == 1 else first
        on_step(Step(done, planned, last, clock() - started))
    return done, first, last, False


def _tokenized(tokenizer: Any, template: str, example: ChatExample, eos: int) -> tuple[list[int], int]:
    """The tokens of prompt + reply + end of turn, and where the reply starts (only it is learned)."""
    prompt = render_prompt(template, example.messages)
    whole = _render(template, (*example.messages, Message("assistant", example.reply)), generation_prompt=False)
    if not whole.startswith(prompt + example.reply + tokenizer.eos_token):
        raise TrainingError("the model's chat template does not end a reply with its end-of-turn token")
    prompt_ids: list[int] = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids: list[int] = tokenizer(example.reply, add_special_tokens=False)["input_ids"]
    return [*prompt_ids, *reply_ids, eos], len(prompt_ids)


def _batch(torch: Any, sequences: Sequence[tuple[list[int], int]], pad: int) -> tuple[Any, Any, Any]:
    """Right-padded token ids, labels (-100: not learned: the prompt and the padding) and the attention mask."""
    width = max(len(tokens) for tokens, _ in sequences)
    inputs = torch.full((len(sequences), width), pad, dtype=torch.long)
    labels = torch.full((len(sequences), width), -100, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (tokens, start) in enumerate(sequences):
        inputs[row, : len(tokens)] = torch.tensor(tokens)
        labels[row, start : len(tokens)] = torch.tensor(tokens[start:])
        mask[row, : len(tokens)] = 1
    return inputs, labels, mask


def write_adapter(model: Any, base: Path, alpha: float, out: Path) -> None:
    """Write the peft model's LoRA matrices as a llama.cpp adapter GGUF, named as the base model's tensors."""
    gguf = _module("gguf")
    facts = _facts(base)
    arch = facts.architecture
    if arch is None:
        raise TrainingError(f"{base} names no architecture")
    by_name = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in by_name:
        raise TrainingError(f"{base}: architecture {arch!r} is unknown to the gguf package")
    known = facts.tensors
    layers = max(int(name.split(".")[1]) for name in known if name.startswith("blk.")) + 1
    names = gguf.get_tensor_name_map(by_name[arch], layers)
    matrices: dict[str, dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if ".lora_A." not in name and ".lora_B." not in name:
            continue
        module = name.split(".lora_")[0].removeprefix("base_model.model.")
        target = names.get_name(module)
        if target is None or f"{target}.weight" not in known:
            raise TrainingError(f"no tensor of {base.name} matches the adapted module {module}")
        matrices.setdefault(target, {})["a" if ".lora_A." in name else "b"] = parameter.detach().float().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for target, pair in sorted(matrices.items()):
        writer.add_tensor(f"{target}.weight.lora_a", pair["a"])  # (rank, n_in): ggml reads it as [n_in, rank]
        writer.add_tensor(f"{target}.weight.lora_b", pair["b"])  # (n_out, rank): ggml reads it as [rank, n_out]
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
