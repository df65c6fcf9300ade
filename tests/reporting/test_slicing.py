"""in_slices: long passes hand the event loop back between slices of work."""

from __future__ import annotations

import asyncio

from sloguard._clock import ManualClock
from sloguard.reporting.slicing import in_slices


async def test_the_loop_is_handed_back_once_a_slice_of_work_has_passed() -> None:
    clock = ManualClock()
    served: list[int] = []  # what another task did, and when: after which item
    seen: list[int] = []

    async def other_task() -> None:
        while True:
            served.append(len(seen))
            await asyncio.sleep(0)

    task = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    served.clear()
    async for item in in_slices(range(10), slice_s=0.0025, timer=clock):
        seen.append(item)
        clock.advance(0.001)  # each item takes 1 ms of work
    task.cancel()
    assert seen == list(range(10))
    # Handed back once 2.5 ms of work has passed: after 3, 6 and 9 items, never between.
    assert served == [3, 6, 9]


async def test_quick_work_never_waits() -> None:
    clock = ManualClock()
    assert [i async for i in in_slices("abc", slice_s=1.0, timer=clock)] == ["a", "b", "c"]
