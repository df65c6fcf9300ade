"""Passes over every capability, cut into slices so that the event loop serves in between.

At 10,000 capabilities one pass of the monitor (each capability's live status,
breaches, alerts) or of the history recorder (each one's closed buckets, merged
into minute rows) takes hundreds of milliseconds of CPU. Done at once on the
event loop, every request waiting on that loop would wait that long.
:func:`in_slices` yields the items one by one and hands the loop back whenever
``slice_s`` of work has gone by since it last did: the pass takes as long, but no
request waits more than about one slice (benchmarks/monitor_stall.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

SLICE_S = 0.001
"""The longest run of work between two hand-backs to the event loop, by default. The
monitor's and the recorder's slices can fall in the same turns of the loop, and a
waiting request waits a few turns: about six slices (benchmarks/monitor_stall.py)."""


async def in_slices(
    items: Iterable[T],
    *,
    slice_s: float | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> AsyncIterator[T]:
    """Each of ``items``; between two, ``await asyncio.sleep(0)`` once ``slice_s``
    (default :data:`SLICE_S`) has passed on ``timer`` since the last hand-back."""
    budget = SLICE_S if slice_s is None else slice_s
    deadline = timer() + budget
    for item in items:
        yield item
        if timer() >= deadline:
            await asyncio.sleep(0)
            deadline = timer() + budget
