"""`lmdsl check`'s file runner: execute each file with findings collected, list them all.

Files are executed under a module name other than `__main__`, so a script's
`if __name__ == "__main__":` block does not run. The rest of its top-level code does, so
the check stands guard while it runs, and what that code must not do becomes a finding
(code `lmdsl-top-level`) at the top-level line that led to it, once per line and kind,
even when the code catches the refusal (`lmdsl.errors.CheckRefused`):

- **No model is called.** Every fuzzy call's model is a guard that refuses to answer: set
  with `using(model=...)` (which beats a function's own `model=` and anything
  `lmdsl.configure(...)` in the file sets), by an interceptor (which beats a `using` block
  in the file), and as the process default's override (for threads the file starts
  itself, which do not inherit the context).
- **No file is written.** An audit hook refuses opening a file to write, append or create
  it, deleting, moving, linking, copying onto, truncating or re-permissioning one, and
  opening an SQLite database, anywhere but in a temporary directory of the check's own (what
  `tempfile` hands out meanwhile), the terminal's devices and hidden folders, where tools
  keep their caches (`.hypothesis`, `~/.cache`: libraries write there on import). Creating an
  empty folder is let be too; Python writes no bytecode meanwhile.

An audit hook cannot be removed: the first check adds it (only a process that runs
`lmdsl check` ever has it; `import lmdsl` does not), and outside a check it does nothing.
Hence the module globals below: the watch in force, which the hook reads from any thread.
Not covered: what a subprocess started by the file does, and writes through a file
descriptor opened before the check.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lmdsl import config, rules
from lmdsl.checking import Finding, collecting
from lmdsl.errors import CheckRefused, SignatureError
from lmdsl.lm.types import Backend, Completion, Request
from lmdsl.unicode import printable
from lmdsl.warn import is_user_file

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
    """Execute each file with findings collected, standing guard (see the module docstring); an
    import that fails for another reason is a finding too (without a code)."""
    import runpy

    findings: list[Finding] = []
    with _standing_guard() as watch:
        for file in files:
            if on_file is not None:
                on_file(file)
            directory = str(file.resolve().parent)
            added = directory not in sys.path
            if added:
                sys.path.insert(0, directory)
            watch.file = file
            try:
                with collecting() as found:
                    try:
                        runpy.run_path(str(file), run_name="__lmdsl_check__")
                    except SignatureError as error:  # raised outside a collecting decorator: at the line that raised
                        line = _error_line(error, file)
                        found.extend(Finding(str(file), line, str(problem), problem.code) for problem in error.problems)
                    except Exception as error:
                        if not _refused(error):  # a refusal is a finding already
                            found.append(
                                Finding(
                                    str(file),
                                    _error_line(error, file),
                                    f"cannot be loaded: {type(error).__name__}: {error}",
                                    None,
                                )
                            )
                findings.extend(found)
                findings.extend(watch.take())
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


def _refused(error: BaseException | None) -> bool:
    """Whether a refusal of the check caused this error (or is it)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, CheckRefused):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


# -- the guard ----------------------------------------------------------------------------------


class _Watch:
    """What the top-level code of the file being checked tried and was refused."""

    def __init__(self, scratch: str) -> None:
        self.scratch = os.path.join(os.path.realpath(scratch), "")
        self.thread = threading.get_ident()
        self.file = Path()
        self._found: list[Finding] = []
        self._seen: set[tuple[str, int, str]] = set()
        self._lock = threading.Lock()

    def refuse(self, message: str) -> CheckRefused:
        """Record the refusal as a finding at the top-level line that led to it; the error to raise."""
        path, line = self._top_level_line()
        with self._lock:
            if (path, line, message) not in self._seen:
                self._seen.add((path, line, message))
                self._found.append(Finding(path, line, message, rules.TOP_LEVEL))
        return CheckRefused(f"lmdsl check: {message}")

    def take(self) -> list[Finding]:
        with self._lock:
            found, self._found = self._found, []
        return found

    def _top_level_line(self) -> tuple[str, int]:
        """The innermost module-level line of the user's code the checking thread is running
        (the file's own line, or that of a module of the user's it imports)."""
        here = threading.get_ident() == self.thread
        frame = sys._getframe(1) if here else sys._current_frames().get(self.thread)
        target = str(self.file.resolve())
        own: tuple[str, int] | None = None
        while frame is not None:
            code = frame.f_code
            if code.co_name == "<module>":
                if is_user_file(code.co_filename):
                    return code.co_filename, frame.f_lineno or 0
                if own is None and str(Path(code.co_filename).resolve()) == target:
                    own = (code.co_filename, frame.f_lineno or 0)
            frame = frame.f_back
        return own or (str(self.file), 0)

    # -- files --------------------------------------------------------------------------------
    def judge(self, event: str, args: tuple[Any, ...]) -> CheckRefused | None:
        """The refusal of an audited event that changes a file outside the scratch directory, or None."""
        if event == "open":
            path, _, flags = args
            if isinstance(path, int) or not isinstance(flags, int) or not flags & _WRITING:
                return None
            return self._outside("writes", path)
        if event == "sqlite3.connect":
            return self._database(args[0])
        found = _CHANGES.get(event)
        if found is None:
            return None
        action, paths, dir_fd = found
        folder = args[dir_fd] if dir_fd is not None and dir_fd < len(args) else None
        for index in paths:
            refusal = self._outside(action, args[index], folder)
            if refusal is not None:
                return refusal
        return None

    def _outside(self, action: str, path: object, folder: object = None) -> CheckRefused | None:
        if isinstance(path, int):  # a file descriptor: opened (and judged) before
            return None
        where = self._resolve(path, folder)
        if where is not None and (
            where.startswith(self.scratch)
            or where == self.scratch[:-1]
            or where in _DEVICES
            or where.startswith(_FDS)
            or any(part.startswith(".") for part in Path(where).parts)  # a tool's own folder
        ):
            return None
        shown = printable(os.fsdecode(path)) if isinstance(path, (str, bytes, os.PathLike)) else repr(path)
        return self.refuse(rules.top_level_file_change(action, shown))

    @staticmethod
    def _resolve(path: object, folder: object) -> str | None:
        """The real path, or None when it cannot be told (then it is refused)."""
        try:
            name = os.fsdecode(path)  # type: ignore[arg-type]
            if isinstance(folder, int) and folder >= 0 and not os.path.isabs(name):
                name = os.path.join(os.readlink(f"/proc/self/fd/{folder}"), name)
            return os.path.realpath(name)
        except (TypeError, ValueError, OSError):
            return None

    def _database(self, database: object) -> CheckRefused | None:
        name = os.fsdecode(database) if isinstance(database, (str, bytes, os.PathLike)) else ""
        if name in ("", ":memory:"):
            return None
        if name.startswith("file:"):
            path, _, query = name[5:].partition("?")
            if "mode=ro" in query or "mode=memory" in query or path in ("", ":memory:"):
                return None
            name = path
        return self._outside("opens the database", name)

    # -- the model ------------------------------------------------------------------------------
    def guard(self, function: str | None = None) -> _ModelGuard:
        return _ModelGuard(self, function)

    def intercept(self, backend: Backend, function: str) -> Backend:
        return _ModelGuard(self, function)


class _ModelGuard:
    """The model of every fuzzy call during a check: it answers nothing."""

    cacheable = False
    live = False

    def __init__(self, watch: _Watch, function: str | None) -> None:
        self._watch = watch
        self._function = function

    @property
    def name(self) -> str:
        return "lmdsl-check-guard"

    def complete(self, request: Request) -> Completion:
        raise self._watch.refuse(rules.top_level_model_call(self._function or "a fuzzy function"))


_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_DEVICES = frozenset({os.devnull, "/dev/stdout", "/dev/stderr", "/dev/tty"})
_FDS = ("/dev/fd/", "/proc/self/fd/")
# event: (what the code does, the arguments that are paths, the argument that is a folder's descriptor)
_CHANGES: dict[str, tuple[str, tuple[int, ...], int | None]] = {
    "os.remove": ("deletes", (0,), 1),
    "os.rmdir": ("deletes", (0,), 1),
    "os.rename": ("moves", (0, 1), 2),
    "os.link": ("links", (1,), 3),
    "os.symlink": ("links", (1,), 2),
    "os.truncate": ("truncates", (0,), None),
    "os.chmod": ("changes the permissions of", (0,), 2),
    "os.chown": ("changes the owner of", (0,), 3),
    "os.utime": ("touches", (0,), 3),
    "shutil.rmtree": ("deletes", (0,), 1),
    "shutil.copyfile": ("copies onto", (1,), None),
    "shutil.copytree": ("copies onto", (1,), None),
    "shutil.move": ("moves", (0, 1), None),
    "shutil.make_archive": ("writes the archive", (0,), None),
    "shutil.unpack_archive": ("unpacks into", (1,), None),
}

_watching: _Watch | None = None  # the check in progress, read by the audit hook (any thread)
_hooked = False
_inside = threading.local()  # the hook's own file operations are not judged


def _audit(event: str, args: tuple[Any, ...]) -> None:
    watch = _watching
    if watch is None or (event != "open" and event != "sqlite3.connect" and event not in _CHANGES):
        return
    if getattr(_inside, "busy", False):
        return
    _inside.busy = True
    try:
        refusal = watch.judge(event, args)
    finally:
        _inside.busy = False
    if refusal is not None:
        raise refusal


@contextlib.contextmanager
def _standing_guard() -> Iterator[_Watch]:
    """Guard the model and the files for the block (see the module docstring); restore everything after."""
    global _watching, _hooked
    scratch = tempfile.mkdtemp(prefix="lmdsl-check-")
    watch = _Watch(scratch)
    guard = watch.guard()
    saved = (tempfile.tempdir, sys.dont_write_bytecode)
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    try:
        tempfile.tempdir, sys.dont_write_bytecode = scratch, True
        # the process default (threads the file starts), this context, and every call's backend;
        # a file's own `configure(...)` ends with the check
        with config.process_default(model=guard), config.using(model=guard), config.intercepting(watch.intercept):
            _watching = watch
            try:
                yield watch
            finally:
                _watching = None
    finally:
        tempfile.tempdir, sys.dont_write_bytecode = saved
        shutil.rmtree(scratch, ignore_errors=True)
