"""Progress bars that suit both a terminal and a log file."""

from __future__ import annotations

import sys
from typing import Any


def bar_options() -> dict[str, Any]:
    """tqdm keyword arguments: live updates on a terminal; in a log (CI, nohup, a pipe) one line every 30 s
    instead of a carriage-return update per step, which a log shows as one endless line."""
    if sys.stderr.isatty():
        return {"dynamic_ncols": True}
    return {"mininterval": 30.0, "ncols": 100}
