"""Compile a program on the embedded model: extract order numbers from support messages.

Run it with `./dev demo` (or `python examples/order_numbers.py`). It needs no API key
and no network: SmolLM2-135M-Instruct runs inside the process.

The program is one typed fuzzy function; its docstring is the only prompt anyone
wrote. `lmdsl compile` scores it on the dev set, has `RandomSearch` choose
demonstrations for it (labelled and bootstrapped from the training set), prints the
score before and after, and writes the artifact that the program then loads.
The messages (examples/data/order_numbers.jsonl) were written for this project.
"""

# A fuzzy function's body is its docstring; mypy calls that an empty body.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

import json
import sys
from pathlib import Path

import lmdsl

HERE = Path(__file__).parent
CASES = [json.loads(line) for line in (HERE / "data" / "order_numbers.jsonl").read_text().splitlines() if line]
TRAIN = [lmdsl.Example(message=c["message"], label=c["label"]) for c in CASES[:30]]
DEV = [lmdsl.Example(message=c["message"], label=c["label"]) for c in CASES[30:70]]
ARTIFACT = HERE / "build" / "find_order.lmdsl.json"


@lmdsl.fuzzy
def order_number(message: str) -> str:
    """Extract the order number from the customer's message, as digits only."""
    ...


def exact(example: lmdsl.Example, prediction: str) -> bool:
    return bool(prediction.strip() == example.label)


@lmdsl.optimize(
    trainset=TRAIN,
    devset=DEV,
    metric=exact,
    optimizer=lmdsl.RandomSearch(candidates=6, max_demos=4, max_labeled=4, max_lm_calls=1500, seed=0),
    artifact=ARTIFACT,
)
@lmdsl.program
def find_order(message: str) -> str:
    return order_number(message).strip()


def main() -> int:
    from lmdsl.cli import main as cli

    report = HERE / "build" / "find_order-report.html"
    code = cli(["compile", f"{__file__}:find_order", "--report", str(report)])
    if code:
        return code
    print("\nThe compiled program on new messages (it loads its artifact on the first call):")
    for case in CASES[70:74]:
        print(f"  {case['message']!r}\n    -> {find_order(case['message'])!r} (expected {case['label']!r})")
    print(f"\nInspect the chosen demos: .venv/bin/lmdsl inspect {ARTIFACT.relative_to(HERE.parent)}")
    print(f"What the compile tried and changed, in a browser: {report.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
