"""Time sources.

Everything in sloguard that measures durations or expiries takes a ``Clock``:
a zero-argument callable returning seconds as a float. Production code uses
``time.monotonic``; tests pass a :class:`ManualClock` and move time by hand, so
no test ever sleeps to wait for a lease or a TTL to run out.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""A monotonic time source in seconds."""

monotonic: Clock = time.monotonic


class ManualClock:
    """A clock that only moves when told to; for tests and simulations."""

    __slots__ = ("now",)

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self.now += seconds
