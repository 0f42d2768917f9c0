"""One self-contained HTML page: escaped text, tables, and plotly figures with plotly.js inlined,
so the file opens anywhere with no network."""

from __future__ import annotations

import html
import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic_core import to_json

from lmdsl.errors import ReportError
from lmdsl.files import write_atomic
from lmdsl.unicode import printable

MAX_CELL_CHARS = 2000  # of one value shown in a table: enough to read it, not a wall of text

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; }
.sub { color: #57606a; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: .8rem; margin: 1rem 0; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem .9rem; min-width: 8rem; }
.card b { display: block; font-size: 1.35rem; }
table { border-collapse: collapse; width: 100%; margin: .6rem 0; }
th, td { border: 1px solid #d0d7de; padding: .3rem .5rem; vertical-align: top; text-align: left; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; font: 12px/1.4 ui-monospace, monospace; }
.tag { display: inline-block; border-radius: 4px; padding: 0 .35rem; font-size: 12px; background: #ddf4ff; }
.tag.labelled { background: #dafbe1; } .tag.bootstrapped { background: #fff8c5; }
.tag.proposed, .tag.evolved { background: #fbefff; } .tag.fixed { background: #dafbe1; }
.tag.broken { background: #ffebe9; }
.figure { margin: 1rem 0; }
details summary { cursor: pointer; }
"""


def text(value: object) -> str:
    """Any value as escaped HTML text: strings as they are, anything else as JSON, long ones cut."""
    shown = value if isinstance(value, str) else to_json(value, serialize_unknown=True).decode()
    shown = printable(shown)
    if len(shown) > MAX_CELL_CHARS:
        shown = shown[: MAX_CELL_CHARS - 1] + "…"
    return html.escape(shown)


def pre(value: object) -> str:
    return f"<pre>{text(value)}</pre>"


def tag(label: str) -> str:
    return f'<span class="tag {html.escape(label)}">{html.escape(label)}</span>'


def number(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[int] = ()) -> str:
    """A table from already-escaped cells (build them with `text`, `pre`, `tag`, `number`)."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cards(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(f'<div class="card">{html.escape(label)}<b>{html.escape(value)}</b></div>' for label, value in items)
        + "</div>"
    )


def plotly() -> Any:
    """plotly.graph_objects, imported on first use: reports need the `report` extra."""
    try:  # by name: plotly has no type information, and mypy run on a user's code follows imports here
        go: Any = importlib.import_module("plotly.graph_objects")
    except ImportError:
        raise ReportError(
            "a report draws its plots with plotly, which is not installed: pip install 'lmdsl[report]'"
        ) from None
    return go


@dataclass
class Page:
    """A report being put together: sections of HTML and the figures they refer to by id."""

    title: str
    subtitle: str
    parts: list[str] = field(default_factory=list)
    figures: int = 0

    def section(self, heading: str, body: str) -> None:
        self.parts.append(f"<section><h2>{html.escape(heading)}</h2>{body}</section>")

    def figure(self, figure: Any) -> str:
        """The HTML of a plotly figure (its data JSON-escaped by plotly, so no text in it closes the script)."""
        self.figures += 1
        figure.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50})
        div: str = figure.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"figure-{self.figures}",
            config={"displaylogo": False, "responsive": True},
        )
        return f'<div class="figure">{div}</div>'

    def render(self) -> str:
        script = ""
        if self.figures:
            offline: Any = importlib.import_module("plotly.offline")  # there: a figure was made with it

            script = f'<script type="text/javascript">{offline.get_plotlyjs()}</script>'
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style>{script}</head><body>"
            f'<h1>{html.escape(self.title)}</h1><p class="sub">{html.escape(self.subtitle)}</p>'
            + "".join(self.parts)
            + "</body></html>\n"
        )


def write(path: str | Path, page: str) -> Path:
    """Write a report atomically; an unwritable place is a `ReportError` that says so."""
    try:
        return write_atomic(path, page)
    except OSError as error:
        raise ReportError(
            f"cannot write the report to {path}: {error.strerror or error}; choose a file in a folder you can write to"
        ) from None
