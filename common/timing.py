"""One lap timer for every per-object record of seconds by step (preprocess's process_object, eval's predict and
score halves, the metrics' steps): each lap adds the seconds since the previous one to its step's entry."""

from __future__ import annotations

import time


class LapTimer:
    """Adds the wall seconds since the previous lap to timings[step] and, when `cpu` is given, this process's CPU
    seconds to cpu[step] (nothing is recorded where timings is None; the laps still move on).

    A step lapped twice adds up: timings[step] is the sum of its laps."""

    def __init__(self, timings: dict[str, float] | None, cpu: dict[str, float] | None = None):
        self.timings = timings
        self.cpu = cpu
        self.start = self.t = time.perf_counter()
        self.cpu_t = time.process_time() if cpu is not None else 0.0

    def lap(self, step: str) -> None:
        """End the current lap as `step`."""
        now = time.perf_counter()
        if self.cpu is not None:
            cpu_now = time.process_time()
            self.cpu[step] = self.cpu.get(step, 0.0) + cpu_now - self.cpu_t
            self.cpu_t = cpu_now
        if self.timings is not None:
            self.timings[step] = self.timings.get(step, 0.0) + now - self.t
        self.t = now

    def skip(self) -> None:
        """Start the next lap now, without recording the time since the last one (a callee timed its own steps
        into the same timings)."""
        self.t = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Wall seconds since the timer was made."""
        return time.perf_counter() - self.start
