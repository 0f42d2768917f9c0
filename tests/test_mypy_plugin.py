"""lmdsl's static checks on whole files: the mypy plugin under the newest mypy and the oldest
one lmdsl supports, basedpyright on the typed surface, and agreement between the plugin and
the decoration-time rules (`lmdsl check`), which share one rule table."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from filelock import FileLock

from lmdsl.cli.check import check_files
from tests.conftest import ROOT

OLDEST_MYPY = "1.19.1"  # error codes of plugins can be disabled one by one from 1.19 on
CONFIG = ROOT / "tests" / "typecheck" / "mypy.ini"
MISTAKES = ROOT / "tests" / "typecheck" / "cases" / "wiring_mistakes.py"
RULE_CASES = ROOT / "tests" / "typecheck" / "test_plugin_rules.yml"
ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.*?)  \[(?P<code>[a-z-]+)\]$")


@pytest.fixture(scope="session")
def oldest_mypy() -> Path:
    """mypy OLDEST_MYPY beside the project venv, installed by `./dev setup`: nothing is downloaded
    while the tests run."""
    target = ROOT / ".venv" / f"mypy-{OLDEST_MYPY}"
    if not (target / "mypy" / "__init__.py").exists():
        pytest.skip(f"mypy {OLDEST_MYPY} is not installed in {target} (./dev setup installs it)")
    return target


@pytest.fixture(scope="session")
def mypy_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The mypy caches, kept between runs in pytest's cache folder: mypy re-checks what changed
    (the plugin reports its rule table's digest, so a rule change counts), and a run on
    unchanged sources checks lmdsl and its dependencies from the cache instead of from scratch
    (about 30 s per mypy version on 2 cores). `run_mypy` takes a lock around each cache, which
    the xdist workers share. Without pytest's cache plugin, a folder for this run only."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("lmdsl-mypy"))
    base = tmp_path_factory.getbasetemp()
    shared = (base if worker_id == "master" else base.parent) / "mypy-cache"
    shared.mkdir(exist_ok=True)
    return shared


@pytest.fixture(params=["newest", "oldest"])
def mypy_path(request: pytest.FixtureRequest) -> Path | None:
    """None for the installed (newest) mypy, else a folder to put first on PYTHONPATH."""
    if request.param == "newest":
        return None
    path: Path = request.getfixturevalue("oldest_mypy")
    return path


def cache_name(prefix: Path | None) -> str:
    return "newest" if prefix is None else f"mypy-{OLDEST_MYPY}"


def run_mypy(files: Sequence[Path], prefix: Path | None, cache: Path) -> tuple[str, list[tuple[int, str, str]]]:
    env = dict(os.environ)
    if prefix is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(prefix), str(ROOT)])
    with FileLock(f"{cache}.lock"):  # mypy's cache is not safe for two processes at once
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--config-file",
                str(CONFIG),
                "--cache-dir",
                str(cache),
                "--no-error-summary",
                *map(str, files),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=600,
        )
    version = subprocess.run(
        [sys.executable, "-m", "mypy", "--version"], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    errors = [(int(m["line"]), m["code"], m["message"]) for m in map(ERROR.match, result.stdout.splitlines()) if m]
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return version, errors


def expected_marks(file: Path) -> list[tuple[int, str]]:
    return [
        (number, mark.group(1))
        for number, line in enumerate(file.read_text().splitlines(), start=1)
        if (mark := re.search(r"# expect: ([a-z-]+)", line))
    ]


def test_five_wiring_mistakes_give_exactly_five_errors_with_their_codes_and_lines(
    mypy_path: Path | None, mypy_cache: Path
) -> None:
    version, errors = run_mypy([MISTAKES], mypy_path, mypy_cache / cache_name(mypy_path))
    if mypy_path is not None:
        assert OLDEST_MYPY in version
    assert len(expected_marks(MISTAKES)) == 5
    assert sorted((line, code) for line, code, _ in errors) == expected_marks(MISTAKES), (version, errors)
    messages = " | ".join(message for _, _, message in errors)
    assert 'did you mean "message"?' in messages and 'did you mean "msg"?' in messages


def test_the_examples_pass_the_plugin(mypy_path: Path | None, mypy_cache: Path) -> None:
    examples = sorted((ROOT / "examples").glob("*.py"))
    version, errors = run_mypy(examples, mypy_path, mypy_cache / cache_name(mypy_path))
    assert errors == [], (version, errors)


def test_the_rule_cases_pass_under_the_oldest_mypy(oldest_mypy: Path, mypy_cache: Path, tmp_path: Path) -> None:
    """The same YAML cases as the main run, with `mypy` on PATH being the oldest supported.
    pytest-mypy-plugins keeps its mypy cache in `<base>/.mypy_cache`, here kept between runs. It
    is not `run_mypy`'s: the cases find lmdsl through the installed package, not the source
    tree, and one cache for both would be checked from scratch by each in turn."""
    shim = tmp_path / "bin" / "mypy"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{oldest_mypy}" exec "{sys.executable}" -m mypy "$@"\n')
    shim.chmod(0o755)
    base = mypy_cache / f"cases-mypy-{OLDEST_MYPY}"
    base.mkdir(exist_ok=True)
    # Not as an xdist worker: pytest-mypy-plugins would keep one cache per worker name.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_XDIST")}
    env["PATH"] = f"{shim.parent}{os.pathsep}{os.environ['PATH']}"
    with FileLock(f"{base}.lock"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                str(RULE_CASES),
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:randomly",
                f"--mypy-testing-base={base}",
                f"--mypy-ini-file={CONFIG}",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=900,
        )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", result.stdout) and "failed" not in result.stdout.splitlines()[-1]


def test_lmdsl_check_finds_the_same_mistakes_without_running_anything(capsys: pytest.CaptureFixture[str]) -> None:
    from lmdsl.cli import main

    assert main(["check", str(MISTAKES)]) == 1
    out = capsys.readouterr().out
    codes = re.findall(r"  \[(lmdsl-[a-z]+)\]$", out, re.MULTILINE)
    assert codes == ["lmdsl-wiring"] * 5, out
    assert "Found 5 errors in 1 file" in out


def test_lmdsl_check_passes_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    from lmdsl.cli import main

    assert main(["check", str(ROOT / "examples")]) == 0, capsys.readouterr().out
    assert "Success: no issues found" in capsys.readouterr().out


# -- one rule table: the plugin and decoration time agree on every type -------------------------

ANNOTATIONS = [
    "str",
    "int",
    "float",
    "bool",
    "Literal['a', 'b']",
    "Literal[1, True]",
    "Color",
    "Item",
    "Row",
    "list[str]",
    "list[Item]",
    "dict[str, int]",
    "dict[Literal['a', 'b'], int]",
    "tuple[str, int]",
    "tuple[int, ...]",
    "Optional[str]",
    "int | str",
    "list[Optional[int]]",
    "set[str]",
    "frozenset[int]",
    "object",
    "Any",
    "Callable[[str], str]",
    "dict[int, str]",
    "list",
    "dict",
    "bytes",
    "Point",
    "list[set[int]]",
    "dict[str, object]",
    "BadRow",
    "Tags",
    "Path",
]

PRELUDE = """
# mypy: disable-error-code="empty-body"
import enum
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple, Optional
from typing_extensions import TypeAlias, TypedDict  # pydantic needs this TypedDict before Python 3.12
from pydantic import BaseModel
import lmdsl

class Color(enum.Enum):
    RED = "red"

class Item(BaseModel):
    name: str

class Row(TypedDict):
    name: str
    items: list[Item]

class BadRow(TypedDict):
    name: str
    tags: set[str]

class Point(NamedTuple):
    x: int

Tags: TypeAlias = set[str]
"""


def test_the_plugin_and_decoration_time_judge_every_type_alike(tmp_path: Path, mypy_cache: Path) -> None:
    source = PRELUDE + "".join(
        textwrap.dedent(f'''
        @lmdsl.fuzzy
        def takes_{n}(value: {a}) -> str:
            """Use the value."""
            ...

        @lmdsl.fuzzy
        def returns_{n}(text: str) -> {a}:
            """Produce a value."""
            ...
        ''')
        for n, a in enumerate(ANNOTATIONS)
    )
    module = tmp_path / "types_table.py"
    module.write_text(source)

    _, errors = run_mypy([module], None, mypy_cache / cache_name(None))
    static = {(m.split(":")[0], code) for _, code, m in errors}
    runtime = {(f.message.split(":")[0], f.code) for f in check_files([module])}
    assert static == runtime, sorted(static ^ runtime)
    rejected = {name for name, _ in static}
    for n, annotation in enumerate(ANNOTATIONS):  # the table itself, spelled out
        ok = n < ANNOTATIONS.index("set[str]")
        assert (f"takes_{n}" not in rejected) == ok, annotation


def test_the_typed_surface_passes_basedpyright() -> None:
    """tests/typing/assert_types.py under basedpyright (strict): exact types, caught mistakes."""
    executable = shutil.which("basedpyright")
    if executable is None:
        pytest.skip("basedpyright is not installed (./dev test installs it)")
    # the project file named: a pyrightconfig.json in a parent folder must not take over
    result = subprocess.run(
        [executable, "--project", "pyproject.toml"], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert result.returncode == 0 and "0 errors" in result.stdout, result.stdout + result.stderr


def test_the_plugin_reports_the_rule_tables_digest_so_a_kept_cache_follows_rule_changes() -> None:
    import hashlib

    from mypy.options import Options
    from mypy.plugin import ReportConfigContext

    from lmdsl import rules
    from lmdsl.plugins.mypy import LmdslPlugin

    plugin = LmdslPlugin(Options())
    digest = hashlib.sha256(Path(rules.__file__).read_bytes()).hexdigest()
    for module in ("app", "lmdsl.rules"):
        assert plugin.report_config_data(ReportConfigContext(module, f"{module}.py", is_check=False)) == digest


def test_the_plugin_starts_from_public_names_only() -> None:
    """An internal path in the plugin would silently turn a check off when the code moves."""
    import lmdsl

    source = (ROOT / "plugins" / "mypy.py").read_text()
    named = set(re.findall(r'"(lmdsl\.[A-Za-z_.]+)"', source)) - {"lmdsl.plugins.mypy"}  # the docstring's config line
    assert named == {"lmdsl.fuzzy", "lmdsl.FuzzyFunction", "lmdsl.react", "lmdsl.optimize", "lmdsl.Example"}
    for name in named:
        assert hasattr(lmdsl, name.removeprefix("lmdsl.")), name


def test_a_public_name_of_another_shape_stops_the_plugin_instead_of_skipping_a_check() -> None:
    from mypy.nodes import GDEF, FuncDef, SymbolTableNode

    from lmdsl.plugins.mypy import resolve_targets

    fuzzy = SymbolTableNode(GDEF, FuncDef("fuzzy"))
    with pytest.raises(RuntimeError, match="expected lmdsl.FuzzyFunction to be a name lmdsl exports"):
        resolve_targets(lambda name: fuzzy if name == "lmdsl.fuzzy" else None)
    assert resolve_targets(lambda name: None) is None  # lmdsl is not part of this mypy run
