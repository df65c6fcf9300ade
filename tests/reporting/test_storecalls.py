"""StoreCalls: blocking store calls in threads, each within a deadline, never piling up."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from sloguard.exceptions import ConfigurationError, HistoryUnavailable
from sloguard.reporting.sqlite import SQLiteHistory
from sloguard.reporting.storecalls import StoreCalls


async def test_results_and_errors_come_back_as_from_the_function() -> None:
    calls = StoreCalls("test")
    assert await calls(divmod, 7, 2) == (3, 1)
    assert await calls(sorted, [3, 1], reverse=True) == [3, 1]
    with pytest.raises(ZeroDivisionError):
        await calls(divmod, 1, 0)


async def test_a_call_that_hangs_is_given_up_and_the_stuck_ones_are_not_joined() -> None:
    calls = StoreCalls("test", timeout_s=0.05, threads=2)
    release = threading.Event()
    try:
        for _ in range(2):  # each waits its deadline, then is given up; its thread stays stuck
            with pytest.raises(HistoryUnavailable, match=r"did not answer wait within 0\.05 s"):
                await calls(release.wait)
        threads = threading.active_count()
        for _ in range(10):  # both threads are stuck: these fail at once, with no new thread
            with pytest.raises(HistoryUnavailable, match="has not answered the last 2 calls"):
                await calls(release.wait)
        assert threading.active_count() == threads
    finally:
        release.set()
    for _ in range(1000):  # the stuck threads return, and calls go through again
        try:
            assert await calls(abs, -1) == 1
            break
        except HistoryUnavailable:
            await asyncio.sleep(0.01)
    else:
        pytest.fail("the store was never called again")


async def test_idle_waits_for_a_call_its_caller_stopped_waiting_for() -> None:
    calls = StoreCalls("test", threads=1)
    release, entered = threading.Event(), threading.Event()

    def stuck() -> str:
        entered.set()
        release.wait(10)
        return "written"

    caller = asyncio.ensure_future(calls(stuck))
    assert await asyncio.to_thread(entered.wait, 10)
    caller.cancel()  # as a loop being stopped: its call runs on in its thread
    with pytest.raises(asyncio.CancelledError):
        await caller
    with pytest.raises(HistoryUnavailable, match="has not answered the last 1 calls"):
        await calls(abs, -1)  # what a last call found before

    idle = asyncio.ensure_future(calls.idle())
    await asyncio.sleep(0)
    assert not idle.done()
    release.set()
    assert await idle
    assert await calls(abs, -1) == 1  # the thread is free again
    assert await calls.idle()  # nothing running: at once


async def test_idle_gives_up_after_the_deadline() -> None:
    calls = StoreCalls("test", timeout_s=0.05, threads=1)
    release = threading.Event()
    try:
        with pytest.raises(HistoryUnavailable):
            await calls(release.wait)
        assert not await calls.idle()
    finally:
        release.set()


def test_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        StoreCalls("test", timeout_s=0)
    with pytest.raises(ConfigurationError, match="threads"):
        StoreCalls("test", threads=0)


async def test_sqlite_connections_of_ended_call_threads_are_closed(tmp_path: Path) -> None:
    # Each call runs in a thread of its own, and SQLite keeps a connection per thread:
    # the connections of threads that have ended must not pile up (file descriptors).
    history = SQLiteHistory(tmp_path / "history.sqlite3")
    calls = StoreCalls("history")
    await calls(history.migrate)
    before = await calls(_open_files)
    for _ in range(40):
        await calls(history.schema_version)
    after = await calls(_open_files)
    history.close()
    assert after - before <= 6  # at most a couple of threads still finishing


def _open_files() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))
