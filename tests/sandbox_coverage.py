"""Branch coverage of the sandbox child, which runs in its own confined process.

coverage.py cannot follow it there by itself: the child starts with `python -I -S` (no
site, so no `.pth` start-up hook), and once confined it may not open files, so coverage
could not save a data file. Instead, when the test process is being measured, the child is
started through `python -I -S <this file> <coverage's site dir> <child.py>`, which starts
coverage's C tracer (no Python frames, so the child's audit hook never sees it) for
child.py alone, runs the child, and on the child's `os._exit` writes the arcs it saw to
stderr after a marker line. The parent's side (`install`) takes them out of the stderr the
sandbox reads and adds them to the test process's coverage data as a parallel data file,
which pytest-cov combines with the rest.

Measurement only: without coverage running in the test process nothing here is used.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

MARKER = b"\n--lmdsl-sandbox-coverage--\n"


def _run_child(site_dir: str, child: str) -> None:
    """The child process's side: trace child.py's arcs, run it, report the arcs at `os._exit`."""
    tracer_module = _load_tracer(site_dir)
    CFileDisposition, CTracer = tracer_module.CFileDisposition, tracer_module.CTracer  # noqa: N806
    report_fd = os.dup(2)
    traced = CFileDisposition()
    traced.trace, traced.source_filename, traced.file_tracer, traced.has_dynamic_filename = True, child, None, False
    skipped = CFileDisposition()
    skipped.trace, skipped.source_filename, skipped.file_tracer, skipped.has_dynamic_filename = False, None, None, False
    tracer = CTracer()
    tracer.data = {}
    tracer.trace_arcs = True
    tracer.should_trace = lambda filename, frame: traced if filename == child else skipped
    tracer.should_trace_cache = {}
    tracer.lock_data = tracer.unlock_data = lambda: None
    tracer.warn = lambda *args, **kwargs: None
    tracer.concur_id_func = tracer.should_start_context = tracer.switch_context = None
    tracer.check_include = tracer.disable_plugin = None
    tracer.file_tracers = {}
    real_exit, encode, write = os._exit, json.dumps, os.write

    def report_then_exit(status: int) -> NoReturn:
        arcs = [_unpack(packed) for packed in tracer.data.get(child, ())]
        data = MARKER + encode(arcs).encode("ascii")
        while data:
            data = data[write(report_fd, data) :]
        real_exit(status)

    os._exit = report_then_exit
    tracer.start()
    with open(child, encoding="utf-8") as file:
        program = compile(file.read(), child, "exec", dont_inherit=True)
    exec(program, {"__name__": "__main__", "__file__": child, "__builtins__": __builtins__})


def _load_tracer(site_dir: str) -> Any:
    """coverage's C tracer alone, without the coverage package (which would load half the
    standard library into the child before the code runs)."""
    import glob
    from importlib.machinery import ExtensionFileLoader
    from importlib.util import module_from_spec, spec_from_file_location

    (path,) = glob.glob(os.path.join(site_dir, "coverage", "tracer.*.so"))
    loader = ExtensionFileLoader("coverage.tracer", path)
    spec = spec_from_file_location("coverage.tracer", path, loader=loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    return module


def _unpack(packed: int) -> tuple[int, int]:
    """coverage's C tracer packs an arc into one int (see coverage.collector.flush_data)."""
    first, second = packed & 0xFFFFFFF, (packed >> 28) & 0xFFFFFFF
    return (-first if packed & (1 << 56) else first, -second if packed & (1 << 57) else second)


def install(monkeypatch: object) -> None:
    """The test process's side: start children through this file and keep the arcs they report."""
    import dataclasses

    import coverage
    import pytest

    from lmdsl.sandbox import parent
    from lmdsl.sandbox.confinement import isolation_prefix
    from lmdsl.sandbox.protocol import Outcome

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    current = coverage.Coverage.current()
    if current is None:
        return
    child = parent._CHILD_PROGRAM
    site_dir = os.path.dirname(os.path.dirname(coverage.__file__))
    argv = [
        *isolation_prefix(),
        sys.executable,
        "-I",
        "-S",
        "-B",
        "-W",
        "ignore",
        os.path.abspath(__file__),
        site_dir,
        child,
    ]
    real_execute = parent._execute

    def measured_execute(*args: object, **kwargs: object) -> Outcome:
        outcome = real_execute(*args, **kwargs)  # type: ignore[arg-type]
        stderr, found, payload = outcome.stderr.partition(MARKER)
        if found:
            arcs = [tuple(arc) for arc in json.loads(payload)]
            data = coverage.CoverageData(basename=current.config.data_file, suffix=True)  # a unique name
            data.add_arcs({child: arcs})
            data.write()
        return dataclasses.replace(outcome, stderr=stderr)

    monkeypatch.setattr(parent, "_child_argv", lambda: argv)
    monkeypatch.setattr(parent, "_execute", measured_execute)


if __name__ == "__main__":
    _run_child(sys.argv[1], sys.argv[2])
