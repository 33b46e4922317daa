"""The one-line reason of an exception, for per-object records and the CLI's `aps: error: <reason>`."""

from __future__ import annotations


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first non-empty line of str(exc); `default` (the exception's type name when None) if it has none."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0]
    return type(exc).__name__ if default is None else default
