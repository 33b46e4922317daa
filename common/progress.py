"""Progress bars that suit both a terminal and a log file."""

from __future__ import annotations

import math
import re
import sys
from typing import Any, TextIO

LOG_STEPS = 10  # in a log, a bar of known total prints a line at every 10% of it (and its final state)
LOG_STEPS_LONG = 100  # ... and at every 1% of a long one (a ShapeNet preprocess: 44k objects, hours)
LONG = 1000
LOG_INTERVAL = 30.0  # seconds between the lines of a bar of unknown total in a log


_STATE = re.compile(r"^.*\|\s*\d+/\d+")  # a bar's description, bar and count, without its rate and times


class LogLines:
    """A stream for tqdm in a log: each refresh becomes one line of its own (tqdm's carriage-return updates
    would pile up on one endless line), the blank clearing writes are dropped."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.last_state = ""

    @property
    def encoding(self) -> str | None:  # tqdm picks unicode or ascii bar characters from it
        return getattr(self.stream, "encoding", None)

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        state = _STATE.match(line)
        if line and not (state and state.group(0) == self.last_state):  # tqdm's close repeats its last state
            self.stream.write(line + "\n")
        if line:  # tqdm's clearing writes (blanks) come between its last refresh and its close
            self.last_state = state.group(0) if state else ""
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def bar_options(total: int | None = None, leave: bool = True) -> dict[str, Any]:
    """tqdm keyword arguments (pass `leave` here, not to tqdm): live updates on a terminal; in a log (CI,
    nohup, a pipe: stderr is not a TTY) one line per LOG_STEPS-th of `total` (LOG_STEPS_LONG-th past LONG)
    or every LOG_INTERVAL s when not, and always the final state (so `leave` is ignored there)."""
    if sys.stderr.isatty():
        return {"dynamic_ncols": True, "leave": leave}
    options: dict[str, Any] = {"file": LogLines(sys.stderr), "ncols": 100, "leave": True}
    if total:
        # maxinterval = inf: tqdm's monitor thread would otherwise drop miniters to 1 after 10 s without a
        # line, and from then on print every step
        steps = LOG_STEPS_LONG if total > LONG else LOG_STEPS
        options.update(mininterval=0.0, miniters=max(1, math.ceil(total / steps)), maxinterval=math.inf)
    else:
        options.update(mininterval=LOG_INTERVAL)
    return options
