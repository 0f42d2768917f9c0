"""The typed surface without any plugin: checked by mypy (as part of the project) and by
basedpyright (tests/test_typing_surface.py). Every `assert_type` here is a claim about the
public API's exact types; the `# type: ignore[...]` lines are mistakes both checkers catch
(mypy reports an unused ignore, basedpyright an unnecessary one, if they stop catching them)."""

# mypy: disable-error-code="empty-body"
# pyright: reportUnusedCallResult=false, reportUnusedParameter=false

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, assert_type

from pydantic import BaseModel

import lmdsl
from lmdsl.program import CompileConfigLike


class Facts(BaseModel):
    claims: list[str]


@lmdsl.fuzzy
def extract(document: str, *, max_items: int = 5) -> Facts:
    """List the factual claims in the document."""
    ...


@lmdsl.fuzzy(strategy=lmdsl.chain_of_thought, retries=1)
def verdict(claim: str) -> Literal["true", "false"]:
    """Say whether the claim is true."""
    ...


@verdict.ensure
def short(output: str, claim: str) -> bool:
    return len(claim) > 0


@verdict.ensure(soft=True)
def lower(output: str) -> bool:
    return output.islower()


@lmdsl.program
def check(document: str) -> list[Literal["true", "false"]]:
    return [verdict(claim) for claim in extract(document).claims]


def accuracy(example: lmdsl.Example, prediction: Sequence[str]) -> bool:
    labels: list[str] = example.fields["labels"]
    return list(prediction) == labels


@lmdsl.optimize(trainset=[lmdsl.Example(document="d", labels=["true"])], metric=accuracy)
@lmdsl.program(max_backtracks=1)
def compiled_check(document: str) -> list[Literal["true", "false"]]:
    return check(document)


def surface() -> None:
    # decorated functions keep their exact signatures and return types
    assert_type(extract("text"), Facts)
    assert_type(extract("text", max_items=3), Facts)
    assert_type(verdict("the sky is blue"), Literal["true", "false"])
    assert_type(check("doc"), list[Literal["true", "false"]])
    assert_type(compiled_check("doc"), list[Literal["true", "false"]])
    assert_type(check.run("doc").output, list[Literal["true", "false"]])
    assert_type(short("true", "claim"), bool)  # ensure returns the check itself
    assert_type(extract.map([{"document": "a"}]), list[lmdsl.Outcome[Facts]])

    # wiring mistakes plain typing catches
    extract(42)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    extract("text", max_item=3)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    verdict(extract("text"))  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    extract("a", 3)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]


def attached_configuration() -> None:
    # what @lmdsl.optimize attaches is typed where it is read: no isinstance, no Any
    config = compiled_check.compile_config
    assert_type(config, CompileConfigLike | None)
    if config is not None:
        assert_type(config.metric, Callable[..., float | bool | lmdsl.Score])
        assert_type(config.trainset, Sequence[Any])
        assert_type(config.devset, Sequence[Any] | None)
        assert_type(config.artifact, Path | None)
        assert_type(config.optimizer, object)
    _metric = check.compile_config.metric  # type: ignore[union-attr]  # pyright: ignore[reportOptionalMemberAccess]
