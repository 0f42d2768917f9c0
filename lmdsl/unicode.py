"""Text that is not valid Unicode: found once, where it enters, so it never reaches a prompt,
a cache key, a file or the parser.

A Python `str` can hold lone surrogates (U+D800-U+DFFF): `json.loads('"\\ud800"')`, a
`surrogateescape`-decoded file name, a backend that decodes bytes loosely. No model API
takes them and UTF-8 cannot encode them, so every boundary that accepts text (a reply,
inputs, a parameter file) rejects them with its own typed error, naming the position.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

__all__ = ["first_surrogate", "printable", "surrogate_problem", "surrogates_in"]


def first_surrogate(text: str) -> int | None:
    """The index of the first lone surrogate in `text`, or None when it is valid Unicode.

    Free for ASCII; otherwise one UTF-8 encode, which is what sending the text costs anyway.
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None


def printable(text: str) -> str:
    """`text` with any lone surrogate written as `\\udXXX`, so an error message that quotes it
    can always be printed and logged."""
    if first_surrogate(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def surrogate_problem(text: str) -> str | None:
    """A short reason when `text` is not valid Unicode, else None."""
    at = first_surrogate(text)
    if at is None:
        return None
    return f"it is not valid Unicode (a lone surrogate U+{ord(text[at]):04X} at position {at})"


def surrogates_in(value: object, *, where: str = "", depth: int = 0) -> Iterator[tuple[str, str]]:
    """(path, reason) for every string in JSON-shaped data (dicts, lists, keys included) that
    is not valid Unicode; the walk stops at 200 levels, deeper than any JSON parser here allows."""
    if depth > 200:
        return
    if isinstance(value, str):
        problem = surrogate_problem(value)
        if problem is not None:
            yield where or "the value", problem
    elif isinstance(value, Mapping):
        for key, item in value.items():
            name = printable(str(key))
            path = f"{where}.{name}" if where else name
            if isinstance(key, str) and (problem := surrogate_problem(key)) is not None:
                yield f"{path} (a key)", problem
            yield from surrogates_in(item, where=path, depth=depth + 1)
    elif isinstance(value, (list, tuple)):
        for number, item in enumerate(value):
            yield from surrogates_in(item, where=f"{where}[{number}]", depth=depth + 1)
