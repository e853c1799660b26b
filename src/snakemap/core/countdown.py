"""Progress of a long step that is not training, in its log: ``k of n {what} (p%), ETA h:mm:ss``.

A line at most every ``every_s`` seconds (and at the last item), so a step of a million items
logs a few hundred lines, not a million.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def clock_text(seconds: float) -> str:
    """``h:mm:ss`` of a duration."""
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class Countdown:
    """Counts items of a step and logs how many are done and when the rest should be."""

    def __init__(
        self, total: int, what: str, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total, self.what, self.every_s, self.clock = total, what, every_s, clock
        self.done = 0
        self.start = self.last = clock()

    def step(self, count: int = 1) -> str | None:
        """Count ``count`` more items done; the line logged now, if one is."""
        self.done += count
        now = self.clock()
        if self.done < self.total and now - self.last < self.every_s:
            return None
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        pct = 100 * self.done / self.total if self.total else 100.0
        line = f"{self.done} of {self.total} {self.what} ({pct:.0f}%), ETA {clock_text(eta)}"
        log.info(line)
        return line
