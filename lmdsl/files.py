"""Opening files a user or a compile names (parameter files, artifacts, data sets) safely.

A path can name something that is not a file: a FIFO (opening it for reading blocks
until a writer comes), a device such as `/dev/zero` (its size reads as 0 and it never
ends), a directory, or a symlink to any of them. `open_regular` opens without blocking
and refuses all of those; `read_regular` then reads at most `limit + 1` bytes, whatever
the size claims, so a file that grows while it is read cannot exhaust memory either.
`write_atomic` writes a temporary file beside the target and renames it into place, so a
crash never leaves half a file and a FIFO at the path is replaced, not written into.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

__all__ = ["NotReadable", "open_regular", "read_regular", "sha256_file", "write_atomic"]


class NotReadable(Exception):
    """The path cannot be read as a regular file; the message says why, without the path."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path) -> BinaryIO:
    """The file opened for reading in binary mode; `NotReadable` if it is missing, unreadable
    or anything but a regular file (never blocks on a FIFO)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise NotReadable(f"cannot read it ({error.strerror or error})") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise NotReadable(f"it is {_kind(mode)}, not a regular file")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_regular(path: str | Path, *, limit: int) -> bytes:
    """At most `limit` bytes of a regular file; `NotReadable` if it is larger or not a regular file."""
    with open_regular(path) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise NotReadable(f"cannot read it ({error.strerror or error})") from None
    if len(data) > limit:
        raise NotReadable(f"it is larger than {limit} bytes, too large for this kind of file")
    return data


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a regular file, read in blocks (`NotReadable` for anything else)."""
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 `text` to `path` through a temporary file renamed into place; on any failure
    the temporary file is removed and the target is as it was."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
