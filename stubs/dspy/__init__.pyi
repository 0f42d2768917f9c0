# Stubs for the part of DSPy 3.4.1 that benchmarks/compile_vs_dspy.py uses (DSPy ships no
# type information). Signatures follow dspy 3.4.1's sources; only what the benchmark calls.
from collections.abc import Callable, Sequence
from typing import Any, Literal

__version__: str

class Example:
    def __init__(self, base: Example | dict[str, Any] | None = None, **kwargs: Any) -> None: ...
    def with_inputs(self, *keys: str) -> Example: ...
    def __getattr__(self, key: str) -> Any: ...

class Prediction(Example): ...

class Signature:
    instructions: str
    def __new__(cls, signature: str | dict[str, Any], instructions: str | None = None) -> type[Signature]: ...  # type: ignore[misc]

class Predict(Module):
    signature: type[Signature]
    demos: list[Example]
    def __init__(self, signature: str | type[Signature], **config: Any) -> None: ...
    def __call__(self, **kwargs: Any) -> Prediction: ...

class Module:
    def predictors(self) -> list[Predict]: ...
    def __getattr__(self, name: str) -> Any: ...  # optimizers attach results (score, candidate_programs)
    def __call__(self, *args: Any, **kwargs: Any) -> Prediction: ...

class LM:
    def __init__(
        self,
        model: str,
        model_type: Literal["chat", "text", "responses"] = "chat",
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        num_retries: int = 3,
        engine: Any = "auto",
        **kwargs: Any,
    ) -> None: ...

class EvaluationResult:
    score: float
    results: list[tuple[Example, Prediction, Any]]

class Evaluate:
    def __init__(
        self,
        *,
        devset: Sequence[Example],
        metric: Callable[..., Any] | None = None,
        num_threads: int | None = None,
        display_progress: bool = False,
        max_errors: int | None = None,
        failure_score: float = 0.0,
        **kwargs: Any,
    ) -> None: ...
    def __call__(self, program: Module) -> EvaluationResult: ...

class BootstrapFewShotWithRandomSearch:
    def __init__(
        self,
        metric: Callable[..., Any],
        teacher_settings: dict[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        num_candidate_programs: int = 16,
        num_threads: int | None = None,
        max_errors: int | None = None,
        stop_at_score: float | None = None,
        metric_threshold: float | None = None,
    ) -> None: ...
    def compile(
        self, student: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None
    ) -> Module: ...

class MIPROv2:
    def __init__(
        self,
        metric: Callable[..., Any],
        prompt_model: LM | None = None,
        task_model: LM | None = None,
        teacher_settings: dict[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 4,
        auto: Literal["light", "medium", "heavy"] | None = "light",
        num_candidates: int | None = None,
        num_threads: int | None = None,
        max_errors: int | None = None,
        seed: int = 9,
        **kwargs: Any,
    ) -> None: ...
    def compile(
        self, student: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None, **kwargs: Any
    ) -> Module: ...

class GEPA:
    def __init__(
        self,
        metric: Callable[[Example, Prediction, Any, str | None, Any], float | Prediction],
        *,
        max_metric_calls: int | None = None,
        reflection_minibatch_size: int = 3,
        reflection_lm: LM | None = None,
        add_format_failure_as_feedback: bool = False,
        num_threads: int | None = None,
        seed: int | None = 0,
        **kwargs: Any,
    ) -> None: ...
    def compile(
        self, student: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None
    ) -> Module: ...

def configure(**kwargs: Any) -> None: ...
def configure_cache(
    enable_disk_cache: bool | None = True, enable_memory_cache: bool | None = True, **kwargs: Any
) -> None: ...
