"""`lmdsl check`'s file runner: execute each file with findings collected, list them all.

Files are executed under a module name other than `__main__`, so a script's
`if __name__ == "__main__":` block does not run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from lmdsl.checking import Finding, collecting
from lmdsl.errors import SignatureError

SKIPPED_DIRS = frozenset({".git", ".venv", "venv", "__pycache__", "node_modules", "build", "dist"})


def python_files(targets: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for target in map(Path, targets):
        if target.is_dir():
            files.extend(
                p
                for p in sorted(target.rglob("*.py"))
                if not any(part in SKIPPED_DIRS or part.startswith(".") for part in p.relative_to(target).parts[:-1])
            )
        else:
            files.append(target)
    return files


def check_files(files: Sequence[Path], *, on_file: Callable[[Path], None] | None = None) -> list[Finding]:
    """Execute each file with findings collected; an import that fails for another reason
    is a finding too (without a code)."""
    import runpy
    import sys

    findings: list[Finding] = []
    for file in files:
        if on_file is not None:
            on_file(file)
        directory = str(file.resolve().parent)
        added = directory not in sys.path
        if added:
            sys.path.insert(0, directory)
        try:
            with collecting() as found:
                try:
                    runpy.run_path(str(file), run_name="__lmdsl_check__")
                except SignatureError as error:  # raised outside a collecting decorator: at the line that raised
                    line = _error_line(error, file)
                    found.extend(Finding(str(file), line, str(problem), problem.code) for problem in error.problems)
                except Exception as error:
                    found.append(
                        Finding(
                            str(file),
                            _error_line(error, file),
                            f"cannot be loaded: {type(error).__name__}: {error}",
                            None,
                        )
                    )
            findings.extend(found)
        finally:
            if added:
                sys.path.remove(directory)
    return sorted(findings)


def _error_line(error: BaseException, file: Path) -> int:
    """The deepest line of `file` in the error's traceback."""
    line = 0
    traceback = error.__traceback__
    target = str(file.resolve())
    while traceback is not None:
        if str(Path(traceback.tb_frame.f_code.co_filename).resolve()) == target:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line
