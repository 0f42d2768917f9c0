"""lmdsl's pytest plugin (registered through the `pytest11` entry point; `-p no:lmdsl` turns it off).

- Cassettes: `@pytest.mark.lmdsl_cassette` (or the `lmdsl_cassette` fixture) answers every
  model call of a test from a JSON file, `<test dir>/cassettes/<module>/<test>.json`;
  `--lmdsl-record=none|new|all` says whether to record (`lmdsl.plugins.cassettes`).
- The live-call guard: with the ini option `lmdsl_allow_model_requests = false`, a test that
  calls a model other than a `ScriptedModel` fails with `LiveModelCallError`, unless it is
  marked `@pytest.mark.lmdsl_live` or replays a cassette.
- Fixtures: `lmdsl_scripted` (a scripted model installed for the test), `lmdsl_history`
  (the records of the test's fuzzy calls), `lmdsl_cache_dir` (a fresh cache directory).

The plugin loads in every pytest run where lmdsl is installed, so it imports lmdsl only
when a test asks for one of these.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from lmdsl.calls.records import CallRecord
    from lmdsl.lm.scripted import Reply, ScriptedModel
    from lmdsl.lm.types import Request
    from lmdsl.plugins.cassettes import Boundary, Cassette

__all__ = ["ScriptedFactory", "cassette_path"]

_RECORD_MODES = ("none", "new", "all")
_BOUNDARY = pytest.StashKey["Boundary"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lmdsl", "lmdsl: language-model calls in tests")
    group.addoption(
        "--lmdsl-record",
        dest="lmdsl_record",
        choices=_RECORD_MODES,
        default="none",
        help="cassettes (@pytest.mark.lmdsl_cassette): none = replay only, an unrecorded request fails (default); "
        "new = replay what is recorded, call the model for the rest and add it; all = call the model for "
        "every request and rewrite the cassette",
    )
    parser.addini(
        "lmdsl_allow_model_requests",
        type="bool",
        default=True,
        help="lmdsl: false makes a test that calls a model other than a ScriptedModel fail with "
        "LiveModelCallError, unless it is marked lmdsl_live or replays a cassette (default: true)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lmdsl_cassette(name=None): answer the test's model calls from a cassette, by default "
        "cassettes/<module>/<test>.json beside the test file (see --lmdsl-record)",
    )
    config.addinivalue_line(
        "markers",
        "lmdsl_live: the test may call a real model even when lmdsl_allow_model_requests is false",
    )


def cassette_path(item: pytest.Item, name: str | Path | None = None) -> Path:
    """Where a test's cassette is: `name` (relative to the module's cassette folder, `.json`
    added if it has no suffix), else the test's name, class included, with parametrize ids
    made safe for a file name."""
    folder = item.path.parent / "cassettes" / item.path.stem
    if name is not None:
        path = Path(name)
        return path if path.is_absolute() else folder / (path if path.suffix else path.with_suffix(".json"))
    test = item.nodeid.split("::", 1)[-1].replace("::", ".")
    safe = test.replace("[", "-").replace("]", "")
    safe = re.sub(r"[^A-Za-z0-9_.\-]+", "_", safe).strip("._") or "test"
    if re.search(r"[^A-Za-z0-9_.\-\[\]]", test) or len(safe) > 120:  # two ids could map to one name
        safe = f"{safe[:120]}-{hashlib.sha256(test.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    return folder / f"{safe}.json"


def _marked_cassette(item: pytest.Item) -> tuple[bool, str | Path | None]:
    marker = item.get_closest_marker("lmdsl_cassette")
    if marker is None:
        return False, None
    name = marker.args[0] if marker.args else marker.kwargs.get("name")
    if name is not None and not isinstance(name, str | Path):
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.lmdsl_cassette takes a file name, not {name!r}")
    return True, name


@pytest.fixture(autouse=True)
def _lmdsl_boundary(request: pytest.FixtureRequest) -> Iterator[Boundary | None]:
    """Installs the test's cassette and the live-call guard, when it has either; saves the
    cassette at teardown."""
    item = request.node
    marked, name = _marked_cassette(item)
    taped = marked or "lmdsl_cassette" in request.fixturenames
    guarded = not request.config.getini("lmdsl_allow_model_requests") and item.get_closest_marker("lmdsl_live") is None
    if not (taped or guarded):
        yield None
        return
    from lmdsl.config import intercepting
    from lmdsl.plugins.cassettes import Boundary, Cassette

    mode = request.config.getoption("lmdsl_record")
    cassette = Cassette(cassette_path(item, name), mode, item.nodeid) if taped else None
    boundary = Boundary(item.nodeid, cassette, guarded)
    item.stash[_BOUNDARY] = boundary
    with intercepting(boundary.wrap):
        yield boundary
    if cassette is not None:
        cassette.save()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A cassette mismatch or a refused live call fails the test even when the code under test
    caught it (`map` keeps errors per item, `evaluate` keeps them as rows)."""
    result = yield
    boundary = item.stash.get(_BOUNDARY, None)
    if boundary is not None and boundary.errors:
        error = boundary.errors[0]
        more = len(boundary.errors) - 1
        error.add_note(
            "lmdsl: raised during the test and caught by the code under test; the test fails anyway"
            + (f" ({more} more such error(s))" if more else "")
        )
        raise error
    return result


@pytest.fixture
def lmdsl_cassette(_lmdsl_boundary: Boundary | None) -> Cassette:
    """The test's cassette (asking for it turns it on, like `@pytest.mark.lmdsl_cassette`):
    `path`, `mode`, `interactions`, and the counts `played` and `recorded`."""
    assert _lmdsl_boundary is not None and _lmdsl_boundary.cassette is not None
    return _lmdsl_boundary.cassette


class ScriptedFactory:
    """`lmdsl_scripted(replies)`: a `ScriptedModel` that every fuzzy call of the test runs on
    (installed with `lmdsl.using(model=...)` until the test ends). Replies are as
    `ScriptedModel` takes them: a list in request order, or a function of the request."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack

    def __call__(
        self,
        replies: Callable[[Request], Reply] | Iterable[Reply],
        *,
        name: str = "scripted",
        cacheable: bool = False,
    ) -> ScriptedModel:
        from lmdsl.config import using
        from lmdsl.lm.scripted import ScriptedModel

        model = ScriptedModel(replies, name=name, cacheable=cacheable)
        self._stack.enter_context(using(model=model))
        return model


@pytest.fixture
def lmdsl_scripted() -> Iterator[ScriptedFactory]:
    """A factory of scripted models, each installed for the rest of the test (the latest wins)."""
    with ExitStack() as stack:
        yield ScriptedFactory(stack)


@pytest.fixture
def lmdsl_history() -> Iterator[list[CallRecord]]:
    """The records of the fuzzy calls made during the test, in the order they finished
    (calls in `map`/`evaluate` threads and `acall` included)."""
    from lmdsl.calls.records import capture

    with capture() as records:
        yield records


@pytest.fixture
def lmdsl_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh, empty completion-cache directory, configured for the test (`lmdsl.using(cache_dir=...)`;
    whether caching is on is left as configured)."""
    from lmdsl.config import using

    directory = tmp_path_factory.mktemp("lmdsl-cache")
    with using(cache_dir=directory):
        yield directory
