"""lmdsl: typed Python functions that language models implement, composed and compiled.

import lmdsl

@lmdsl.fuzzy
def sentiment(review: str) -> Literal["positive", "negative"]:
    \"\"\"Classify the sentiment of a movie review.\"\"\"
"""

from __future__ import annotations

from lmdsl._version import __version__ as __version__
from lmdsl.cache import CacheWarning
from lmdsl.calls.function import AssertionWarning, FuzzyFunction, fuzzy
from lmdsl.calls.records import CallRecord, FunctionUsage, capture
from lmdsl.compiler import (
    GEPA,
    MIPRO,
    BetterTogether,
    BootstrapFewShot,
    BootstrapFinetune,
    BudgetWarning,
    Compiled,
    KNNFewShot,
    LabeledFewShot,
    RandomSearch,
    UnusedLabelsWarning,
    compile_program,
    optimize,
)
from lmdsl.config import Settings, configure, settings, using
from lmdsl.config import history as _history
from lmdsl.data import Example, load_examples
from lmdsl.errors import (
    ArtifactError,
    AssertionFailed,
    BackendError,
    CassetteMismatch,
    ConfigurationError,
    EvaluationError,
    IndexFileError,
    InputError,
    LiveModelCallError,
    LMDSLError,
    ModelUnavailableError,
    OutputError,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderResponseError,
    ReportError,
    RetrievalError,
    Retry,
    SandboxCodeError,
    SandboxCrash,
    SandboxError,
    SandboxMemoryError,
    SandboxOutputError,
    SandboxTimeout,
    SandboxViolation,
    SignatureError,
    TrainingError,
)
from lmdsl.evaluation import EvaluationResult, evaluate
from lmdsl.lm import (
    AnthropicModel,
    Backend,
    Completion,
    Message,
    OpenAIModel,
    Request,
    RetryPolicy,
    ScriptedModel,
    Usage,
)
from lmdsl.lm.types import Attempt
from lmdsl.parallel import Outcome
from lmdsl.params import Demo, Params
from lmdsl.program import (
    Program,
    ProgramResult,
    RetrievalStep,
    StaleArtifactWarning,
    TraceStep,
    current_trace,
    program,
    require,
    suggest,
)
from lmdsl.retrieval import BM25, ColBERTv2, Passage, RetrievalRecord, Retriever
from lmdsl.sandbox import SandboxLimits
from lmdsl.scores import Score
from lmdsl.signature import Signature
from lmdsl.strategies.base import ChainOfThought, Generation, Predict, Run, Strategy, chain_of_thought, predict
from lmdsl.strategies.program_of_thought import ProgramOfThought, program_of_thought
from lmdsl.strategies.react import React, Tool, react
from lmdsl.strategies.sampling import BestOf, Majority, Refine, best_of, majority, refine

__all__ = [
    "AnthropicModel",
    "ArtifactError",
    "AssertionFailed",
    "AssertionWarning",
    "BM25",
    "Attempt",
    "Backend",
    "BackendError",
    "BestOf",
    "BetterTogether",
    "BootstrapFewShot",
    "BootstrapFinetune",
    "CacheWarning",
    "CallRecord",
    "CassetteMismatch",
    "ChainOfThought",
    "ColBERTv2",
    "Compiled",
    "Completion",
    "ConfigurationError",
    "Demo",
    "EvaluationError",
    "EvaluationResult",
    "Example",
    "FunctionUsage",
    "FuzzyFunction",
    "GEPA",
    "IndexFileError",
    "Generation",
    "InputError",
    "KNNFewShot",
    "LMDSLError",
    "LabeledFewShot",
    "LiveModelCallError",
    "MIPRO",
    "Majority",
    "Message",
    "ModelUnavailableError",
    "OpenAIModel",
    "Outcome",
    "OutputError",
    "Params",
    "Passage",
    "Predict",
    "Program",
    "ProgramOfThought",
    "ProgramResult",
    "ProviderAuthError",
    "ProviderError",
    "ProviderRequestError",
    "ProviderResponseError",
    "ReportError",
    "RandomSearch",
    "React",
    "Refine",
    "Request",
    "RetrievalError",
    "RetrievalRecord",
    "RetrievalStep",
    "Retriever",
    "Retry",
    "RetryPolicy",
    "Run",
    "SandboxCodeError",
    "SandboxCrash",
    "SandboxError",
    "SandboxLimits",
    "SandboxMemoryError",
    "SandboxOutputError",
    "SandboxTimeout",
    "SandboxViolation",
    "Score",
    "ScriptedModel",
    "Settings",
    "Signature",
    "SignatureError",
    "StaleArtifactWarning",
    "TrainingError",
    "Strategy",
    "Tool",
    "TraceStep",
    "UnusedLabelsWarning",
    "BudgetWarning",
    "Usage",
    "best_of",
    "capture",
    "chain_of_thought",
    "compile_program",
    "configure",
    "current_trace",
    "evaluate",
    "fuzzy",
    "history",
    "last_prompt",
    "load_examples",
    "majority",
    "optimize",
    "predict",
    "program",
    "program_of_thought",
    "react",
    "refine",
    "require",
    "settings",
    "suggest",
    "using",
]


def history(n: int | None = None) -> list[CallRecord]:
    """The records of the last `n` fuzzy calls in this process (all kept ones if None), oldest first."""
    return _history().last(n)


def last_prompt() -> tuple[Message, ...]:
    """The exact messages sent for the most recent fuzzy call (its last attempt)."""
    records = _history().last(1)
    return records[0].messages if records else ()
