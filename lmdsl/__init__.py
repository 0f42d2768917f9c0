"""lmdsl: typed Python functions that language models implement, composed and compiled.

    import lmdsl

    @lmdsl.fuzzy
    def sentiment(review: str) -> Literal["positive", "negative"]:
        \"\"\"Classify the sentiment of a movie review.\"\"\"
"""

from __future__ import annotations

from lmdsl.cache import CacheWarning
from lmdsl.config import Settings, configure, settings, using
from lmdsl.config import history as _history
from lmdsl.errors import (
    Attempt,
    BackendError,
    ConfigurationError,
    InputError,
    LMDSLError,
    ModelUnavailableError,
    OutputError,
    SignatureError,
)
from lmdsl.fuzzy import FuzzyFunction, fuzzy
from lmdsl.lm import Backend, Completion, Message, Request, ScriptedModel, Usage
from lmdsl.prompt import Demo, Params
from lmdsl.records import CallRecord, FunctionUsage, capture
from lmdsl.signature import Signature
from lmdsl.strategies import ChainOfThought, Predict, Strategy, chain_of_thought, predict

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "Backend",
    "BackendError",
    "CacheWarning",
    "CallRecord",
    "ChainOfThought",
    "Completion",
    "ConfigurationError",
    "Demo",
    "FunctionUsage",
    "FuzzyFunction",
    "InputError",
    "LMDSLError",
    "Message",
    "ModelUnavailableError",
    "OutputError",
    "Params",
    "Predict",
    "Request",
    "ScriptedModel",
    "Settings",
    "Signature",
    "SignatureError",
    "Strategy",
    "Usage",
    "capture",
    "chain_of_thought",
    "configure",
    "fuzzy",
    "history",
    "last_prompt",
    "predict",
    "settings",
    "using",
]


def history(n: int | None = None) -> list[CallRecord]:
    """The records of the last `n` fuzzy calls in this process (all kept ones if None), oldest first."""
    return _history().last(n)


def last_prompt() -> tuple[Message, ...]:
    """The exact messages sent for the most recent fuzzy call (its last attempt)."""
    records = _history().last(1)
    return records[0].messages if records else ()
