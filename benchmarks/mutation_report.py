#!/usr/bin/env python
"""Summarise a mutmut run (`./dev mutate [MODULE]`) into `benchmarks/results/mutation/`.

One file per module (`lmdsl.prompt.md`, ...) with its counts, its score and every surviving
mutant (its diff's changed lines), and `README.md` there with the table of all modules. A
module's file is rewritten only when this run checked its mutants, so mutating one module
keeps the others' last results.

Score = killed / (killed + survived + no tests), where killed counts a failing test, a
timeout, a crash and a type-check failure. Mutants judged equivalent (no test can tell
them apart from the original: the behaviour is the same) are listed in
`benchmarks/mutation_equivalent.toml` with a one-line reason each, and left out of the score.

    python benchmarks/mutation_report.py [--module prompt]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
RESULTS = ROOT / "benchmarks" / "results" / "mutation"
EQUIVALENT = ROOT / "benchmarks" / "mutation_equivalent.toml"

KILLED = {1, 3, 24, -24, 152, 255, 36, 37, -11, -9}  # failing tests, timeouts, crashes, type checks
SURVIVED = {0}
NO_TESTS = {5, 33}


@dataclass(frozen=True)
class Module:
    name: str
    outcomes: dict[str, int | None]

    def counts(self, equivalent: dict[str, str]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for mutant, code in self.outcomes.items():
            if mutant in equivalent and code in SURVIVED:
                counts["equivalent"] += 1
            elif code in KILLED:
                counts["killed"] += 1
            elif code in SURVIVED:
                counts["survived"] += 1
            elif code in NO_TESTS:
                counts["no tests"] += 1
            elif code is None:
                counts["not checked"] += 1
            else:
                counts["other"] += 1
        return counts

    def checked(self) -> bool:
        return any(code is not None for code in self.outcomes.values())


def score(counts: Counter[str]) -> float | None:
    judged = counts["killed"] + counts["survived"] + counts["no tests"]
    return 100.0 * counts["killed"] / judged if judged else None


def read_modules() -> list[Module]:
    modules = []
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        relative = meta.relative_to(MUTANTS).with_suffix("").with_suffix("")
        name = ".".join(relative.parts)
        outcomes = json.loads(meta.read_text())["exit_code_by_key"]
        modules.append(Module(name, outcomes))
    return modules


def changed_lines(mutant: str) -> str:
    """The lines a mutant changes, from `mutmut show` (a unified diff)."""
    shown = subprocess.run([sys.executable, "-m", "mutmut", "show", mutant], cwd=ROOT, capture_output=True, text=True)
    lines = [
        line[1:].strip()
        for line in shown.stdout.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return " -> ".join(lines[:2]) or "(no diff shown)"


def write_module(module: Module, equivalent: dict[str, str]) -> None:
    counts = module.counts(equivalent)
    value = score(counts)
    lines = [
        f"# {module.name}",
        "",
        f"score: {'n/a' if value is None else f'{value:.1f}%'} "
        f"({counts['killed']} killed, {counts['survived']} survived, {counts['no tests']} without tests, "
        f"{counts['equivalent']} equivalent, {counts['not checked']} not checked)",
        "",
    ]
    survivors = sorted(m for m, code in module.outcomes.items() if code in SURVIVED and m not in equivalent)
    if survivors:
        lines += ["## Surviving mutants", ""]
        lines += [f"- `{m}`: `{changed_lines(m)}`" for m in survivors]
        lines.append("")
    equal = sorted(m for m, code in module.outcomes.items() if code in SURVIVED and m in equivalent)
    if equal:
        lines += ["## Equivalent (not counted)", ""]
        lines += [f"- `{m}`: {equivalent[m]}" for m in equal]
        lines.append("")
    (RESULTS / f"{module.name}.md").write_text("\n".join(lines))


def write_summary() -> None:
    rows = ["| module | score (counts) |", "|---|---|"]
    for path in sorted(RESULTS.glob("lmdsl*.md")):
        result = path.read_text().splitlines()[2]  # the "score: ..." line
        rows.append(f"| [{path.stem}]({path.name}) | {result.removeprefix('score: ')} |")
    text = [
        "# Mutation testing",
        "",
        "`./dev mutate [MODULE]` (mutmut against `tests/unit`; see `benchmarks/mutation_report.py` for the score).",
        "",
        *rows,
        "",
    ]
    (RESULTS / "README.md").write_text("\n".join(text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", help="only this module (as given to ./dev mutate, e.g. prompt)")
    args = parser.parse_args()
    if not MUTANTS.is_dir():
        print("no mutants/ folder: run ./dev mutate first", file=sys.stderr)
        return 2
    equivalent: dict[str, str] = (
        tomllib.loads(EQUIVALENT.read_text()).get("equivalent", {}) if EQUIVALENT.exists() else {}
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    wanted = f"lmdsl.{args.module}" if args.module else None
    for module in read_modules():
        if module.checked() and (wanted is None or module.name == wanted or module.name.startswith(f"{wanted}.")):
            write_module(module, equivalent)
            counts = module.counts(equivalent)
            value = score(counts)
            print(f"{module.name}: {'n/a' if value is None else f'{value:.1f}%'} {dict(counts)}")
    write_summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
