"""A fuzzy function's free parameters, and a context-local layer of them.

`Params` (instructions and demos) is what an optimizer chooses and what a parameter file or
an artifact stores. `overlaid` puts parameters in force for the current context only (this
thread or task, and what it starts with a copied context, as `map` and `evaluate` do):
the functions' own parameters are untouched, so two candidates can be scored at once and
a program used elsewhere during a compile keeps its parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Demo:
    """A worked example shown to the model: inputs by name, the output, optional reasoning."""

    inputs: Mapping[str, Any]
    output: Any
    reasoning: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs)))


@dataclass(frozen=True)
class Params:
    """A fuzzy function's free parameters: what an optimizer sets, what an artifact stores."""

    instructions: str
    demos: tuple[Demo, ...] = field(default=())


_NONE: Mapping[object, Params] = MappingProxyType({})

# The parameters in force in this context, by function object (checked before they get here).
OVERLAY: ContextVar[Mapping[object, Params]] = ContextVar("lmdsl_params_overlay", default=_NONE)


@contextmanager
def overlaid(params: Mapping[object, Params]) -> Iterator[None]:
    """Within the block, in this context only, each function in `params` uses those parameters.

    Nests: an inner block's parameters win for its functions, the outer block's stay for the rest.
    """
    token = OVERLAY.set(MappingProxyType({**OVERLAY.get(), **params}))
    try:
        yield
    finally:
        OVERLAY.reset(token)
