"""Every error lmdsl raises derives from `LMDSLError` and says what to do next."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmdsl.evaluation.results import EvaluationResult
    from lmdsl.lm.types import Attempt


class LMDSLError(Exception):
    """Base class of all lmdsl errors."""


class SignatureError(LMDSLError, TypeError):
    """A fuzzy function cannot be built from this Python function (raised at decoration time).

    `code` names the static rule it breaks (`lmdsl-docstring`, `lmdsl-signature`,
    `lmdsl-serializable`, `lmdsl-wiring`; see `lmdsl.rules`), the same code the mypy
    plugin reports, or None for a bad option such as a negative `retries`.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.problems: tuple[SignatureError, ...] = (self,)

    def with_problems(self, problems: Sequence[SignatureError]) -> SignatureError:
        """This error, carrying every other rule the same definition breaks (for `lmdsl check`)."""
        self.problems = (self, *(p for p in problems if p is not self))
        return self


class InputError(LMDSLError, TypeError):
    """Inputs to a fuzzy function do not match its signature. `field` names the culprit."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigurationError(LMDSLError):
    """lmdsl is configured with something it cannot use (an unknown model string, a bad option)."""


class ModelUnavailableError(ConfigurationError):
    """The model's runtime or weights are not installed; the message says how to install them."""


class BackendError(LMDSLError):
    """The model could not answer the request at all (for example, the prompt is too long)."""


class ProviderError(BackendError):
    """A hosted model's API failed, after retrying what was worth retrying.

    `provider` is the backend's name (`anthropic:claude-sonnet-4-5`), `status` the HTTP
    status (None for a timeout or a dropped connection), `message` what the provider
    said, with any API key removed, and `attempts` how many HTTP requests were made.
    """

    def __init__(self, text: str, *, provider: str, status: int | None, message: str, attempts: int = 1) -> None:
        super().__init__(text)
        self.provider = provider
        self.status = status
        self.message = message
        self.attempts = attempts


class ProviderAuthError(ProviderError):
    """The provider refused the credentials (HTTP 401 or 403): never retried; the message says which key to fix."""


class ProviderRequestError(ProviderError):
    """The provider rejected the request itself (HTTP 400, 404, 413, 422): never retried."""


class ProviderResponseError(ProviderError):
    """The provider answered with success (HTTP 200) but a body that is not a valid reply of its
    API: not JSON, not UTF-8, an HTML page, missing or mistyped fields; `message` says what is
    wrong with it. Retried like a transient failure (a proxy's hiccup is the likely cause),
    then raised.
    """


class OutputError(LMDSLError):
    """The model's output still failed to parse or validate after every retry.

    `attempts` holds each try in order: raw text, the validation message, usage.
    """

    def __init__(self, function: str, attempts: Sequence[Attempt]) -> None:
        self.function = function
        self.attempts = tuple(attempts)
        last = self.attempts[-1].error if self.attempts else "no attempt was made"
        super().__init__(
            f"{function}: the model's output failed validation after "
            f"{len(self.attempts)} attempt(s); last error: {last}"
        )


class Retry(ValueError):
    """Raised by a check (`fn.ensure`, a pydantic validator) to reject an output.

    The message is shown to the model, which tries again. A `ValueError`, so pydantic
    validators may raise it too.
    """


class AssertionFailed(OutputError):
    """A hard check still rejected the output after every retry or backtrack."""

    def __init__(self, function: str, attempts: Sequence[Attempt], message: str) -> None:
        super().__init__(function, attempts)
        self.message = message
        self.args = (f"{function}: an assertion still failed after {len(self.attempts)} attempt(s): {message}",)


class ArtifactError(LMDSLError):
    """A saved parameter file or compiled artifact cannot be used: malformed, hostile or stale."""


class TrainingError(LMDSLError):
    """Fine-tuning cannot run (`BootstrapFinetune`): the `finetune` extra is missing, no run
    passed the metric, or the base model is not one lmdsl can train."""


class RetrievalError(LMDSLError):
    """A retriever cannot be built or asked (`lmdsl.retrieval`): an unreadable corpus, a bad `k`,
    a missing `bm25s`. A search server's failures are `ProviderError`s, as a model's are."""


class IndexFileError(RetrievalError):
    """A saved retrieval index cannot be loaded: missing, not a regular file, too large, damaged or
    hostile. Loading never runs code; build the index again and save it."""


class SandboxError(LMDSLError):
    """Generated code did not produce a usable result in the sandbox (`lmdsl.sandbox`).

    The message is short and written to be sent back to the model so that it can fix
    its code. `stdout` holds what the code printed before it failed, when known.
    """

    def __init__(self, message: str, *, stdout: str = "") -> None:
        super().__init__(message)
        self.stdout = stdout


class SandboxTimeout(SandboxError):
    """The code ran past the wall-clock limit (`limit == "wall"`) or used up its CPU time (`"cpu"`)."""

    def __init__(self, message: str, *, limit: str, stdout: str = "") -> None:
        super().__init__(message, stdout=stdout)
        self.limit = limit


class SandboxMemoryError(SandboxError):
    """The code tried to use more memory than the sandbox allows."""


class SandboxViolation(SandboxError):
    """The code tried a forbidden operation: an import, a file, the network, a process, an escape."""


class SandboxCodeError(SandboxError):
    """The code did not compile or raised an exception.

    `type_name` and `detail` are the exception's type and message; `traceback` lists
    the lines of the generated code only, and `line` is the innermost one.
    """

    def __init__(
        self,
        message: str,
        *,
        type_name: str,
        detail: str,
        traceback: str = "",
        line: int | None = None,
        stdout: str = "",
    ) -> None:
        super().__init__(message, stdout=stdout)
        self.type_name = type_name
        self.detail = detail
        self.traceback = traceback
        self.line = line


class SandboxOutputError(SandboxError):
    """`result` is missing, not JSON-serialisable or too large, or the code printed too much."""


class SandboxCrash(SandboxError):
    """The code's process was killed by a signal (SIGSEGV, SIGABRT, SIGSYS...) that no limit explains.

    `signal_number` is the signal, `signal_name` its name (`"SIGSEGV"`, or `"signal 77"`
    for a number Python does not name).
    """

    def __init__(self, message: str, *, signal_number: int, signal_name: str, stdout: str = "") -> None:
        super().__init__(message, stdout=stdout)
        self.signal_number = signal_number
        self.signal_name = signal_name


class SandboxInputError(LMDSLError, ValueError):
    """The inputs or limits given to the sandbox are unusable: the caller's mistake, not the code's."""


class SandboxUnavailableError(ConfigurationError):
    """The sandbox cannot run here (it needs Linux and a Python interpreter it can start)."""


class EvaluationError(LMDSLError):
    """`evaluate` stopped because more than `max_errors` examples failed. `result` holds
    the examples that ran (in devset order), their scores and their errors."""

    def __init__(self, message: str, result: EvaluationResult) -> None:
        super().__init__(message)
        self.result = result


class CheckRefused(LMDSLError, PermissionError):
    """`lmdsl check` refused what a file's top-level code tried while the file was being
    checked: calling a model, or writing, moving or deleting a file. Each refusal is reported
    as a finding at the top-level line that led to it; guard such code with
    `if __name__ == "__main__":`."""


class CassetteMismatch(LMDSLError):
    """A test replaying a cassette (lmdsl's pytest plugin) made a request the cassette does not hold.

    `test` is the test's node id, `function` the fuzzy function that asked, `cassette` the
    file's path and `difference` how the request differs from the closest recorded one
    (which message changed, as a unified diff, or which setting). Record it again with
    `pytest --lmdsl-record=new` (adds what is missing) or `--lmdsl-record=all` (starts over).
    """

    def __init__(self, message: str, *, test: str, function: str, cassette: str, difference: str) -> None:
        super().__init__(message)
        self.test = test
        self.function = function
        self.cassette = cassette
        self.difference = difference


class LiveModelCallError(LMDSLError):
    """A test that may not call a model (`lmdsl_allow_model_requests = false`) called a live one:
    any backend but a test double that says it calls no model (`live = False`, as `ScriptedModel`
    does). `test` is the test's node id, `function` the fuzzy function, `model` the backend's
    name. Script it, replay a cassette, or mark the test `lmdsl_live`."""

    def __init__(self, message: str, *, test: str, function: str, model: str) -> None:
        super().__init__(message)
        self.test = test
        self.function = function
        self.model = model


class ReportError(LMDSLError):
    """A compile or evaluation report could not be made: its file cannot be written, or plotly
    (the `report` extra) is not installed. The message says which, and what to do."""
