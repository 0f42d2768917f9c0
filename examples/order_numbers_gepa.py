"""GEPA on the embedded model: evolve the instruction of `order_numbers.py`'s fuzzy function.

Run it with `.venv/bin/lmdsl compile examples/order_numbers_gepa.py:find_order_gepa` (and
`...:find_order_gepa_demos`), then `.venv/bin/python examples/order_numbers_gepa.py` scores the
uncompiled and compiled programs on the 20 messages neither the compile's training nor its
validation set holds.

The metric explains itself (`lmdsl.Score` feedback): GEPA shows the reflection model what was
wrong. The reflection model is the program's own model here, SmolLM2-135M, a weak reflector:
a stronger one is the usual choice (`reflection_model=`).
"""

# A fuzzy function's body is its docstring; mypy calls that an empty body.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

import sys
from pathlib import Path

import lmdsl

sys.path.insert(0, str(Path(__file__).parent))
from order_numbers import CASES, DEV, HERE, TRAIN, order_number  # noqa: E402

HELD_OUT = [lmdsl.Example(message=c["message"], label=c["label"]) for c in CASES[70:90]]


def explained(example: lmdsl.Example, prediction: str) -> lmdsl.Score:
    got = prediction.strip()
    if got == example.label:
        return lmdsl.Score(1.0)
    return lmdsl.Score(0.0, feedback=f"expected the order number {example.label}, digits only; the answer was {got!r}")


@lmdsl.optimize(
    trainset=TRAIN,
    devset=DEV,
    metric=explained,
    optimizer=lmdsl.GEPA(max_metric_calls=200, max_lm_calls=260, max_reflection_chars=6000, seed=0),
    artifact=HERE / "build" / "find_order_gepa.lmdsl.json",
)
@lmdsl.program
def find_order_gepa(message: str) -> str:
    return order_number(message).strip()


@lmdsl.optimize(
    trainset=TRAIN,
    devset=DEV,
    metric=explained,
    optimizer=lmdsl.GEPA(
        max_metric_calls=400, max_lm_calls=500, demo_sets=3, max_demos=4, max_reflection_chars=6000, seed=0
    ),
    artifact=HERE / "build" / "find_order_gepa_demos.lmdsl.json",
)
@lmdsl.program
def find_order_gepa_demos(message: str) -> str:
    """The same, but GEPA starts from the best of three demo sets (zero-shot, labelled, bootstrapped)."""
    return order_number(message).strip()


if __name__ == "__main__":
    for program in (find_order_gepa, find_order_gepa_demos):
        compiled = lmdsl.evaluate(program, HELD_OUT, explained, threads=1, progress=False).score
        print(f"{program.name} on {len(HELD_OUT)} held-out messages, compiled (if its artifact exists): {compiled:.1f}")
    find_order_gepa.reset_params()
    uncompiled = lmdsl.evaluate(find_order_gepa, HELD_OUT, explained, threads=1, progress=False).score
    print(f"uncompiled: {uncompiled:.1f}")
