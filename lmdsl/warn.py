"""Warnings that point at the user's line: the first frame outside lmdsl, however deep the call."""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_user(message: str, category: type[Warning]) -> None:
    """`warnings.warn` with the stack level of the nearest caller outside the lmdsl package."""
    frame = sys._getframe(1)
    level = 2  # stacklevel 2 is the frame that called warn_user
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, category, stacklevel=level)
