"""StoreCalls: the history store's blocking calls, off the event loop, each within a deadline.

A history store (SQLite, PostgreSQL) blocks, and may block for good: a table
locked by another client, a server that stopped answering. Called through
``asyncio.to_thread`` with no deadline, one such call holds up whoever awaits
it (the monitor, the alert notifier) and a thread of the loop's shared pool,
for as long as it hangs.

:class:`StoreCalls` runs each call in a daemon thread of its own and waits at
most ``timeout_s`` for it; past that the caller gets :class:`HistoryUnavailable`
and goes on (the thread finishes on its own, or with the process). At most
``threads`` calls run at once: while that many are stuck, further calls fail at
once instead of piling up threads behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sloguard.exceptions import ConfigurationError, HistoryUnavailable

T = TypeVar("T")

DEFAULT_STORE_TIMEOUT_S = 5.0
"""How long a background loop waits for one history store call."""


class StoreCalls:
    """Calls blocking functions (a history store's methods) in threads, each bounded
    by ``timeout_s``; at most ``threads`` at once. Await it like ``asyncio.to_thread``."""

    def __init__(
        self, name: str, *, timeout_s: float = DEFAULT_STORE_TIMEOUT_S, threads: int = 2
    ) -> None:
        if not timeout_s > 0:
            raise ConfigurationError(f"the store timeout must be positive, got {timeout_s!r}")
        if threads < 1:
            raise ConfigurationError(f"threads must be at least 1, got {threads!r}")
        self.name = name
        self.timeout_s = timeout_s
        self.threads = threads
        self._free = threading.BoundedSemaphore(threads)
        # One future per call whose thread has not returned, awaited or not (idle()).
        self._running: set[asyncio.Future[None]] = set()

    async def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a thread; raise :class:`HistoryUnavailable` if it has not
        returned within ``timeout_s``, or if every thread is still stuck in an earlier call."""
        if not self._free.acquire(blocking=False):
            raise HistoryUnavailable(
                f"{self.name}: the history store has not answered the last {self.threads} "
                "calls; it is not called again until one returns"
            )
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()
        returned: asyncio.Future[None] = loop.create_future()
        self._running.add(returned)
        returned.add_done_callback(self._running.discard)

        def run() -> None:
            try:
                outcome: tuple[Any, BaseException | None] = (fn(*args, **kwargs), None)
            except BaseException as exc:  # handed to the awaiting task, whatever it is
                outcome = (None, exc)
            finally:
                self._free.release()
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_settle, answer, *outcome, returned)

        threading.Thread(target=run, name=self.name, daemon=True).start()
        try:
            # asyncio.timeout, not wait_for: on 3.11, wait_for loses a cancellation that
            # comes as the answer does, and a task being stopped would carry on.
            async with asyncio.timeout(self.timeout_s):
                return await answer
        except TimeoutError:
            what = getattr(fn, "__name__", "a call")
            raise HistoryUnavailable(
                f"{self.name}: the history store did not answer {what} within {self.timeout_s:g} s"
            ) from None

    async def idle(self) -> bool:
        """Wait, at most ``timeout_s``, until no call is running: a caller that stopped
        waiting (cancelled, or past its deadline) leaves its call running in its thread.
        Whether none is. Whoever stops using the store waits here before its last call,
        which would otherwise find every thread taken."""
        if not self._running:
            return True
        _, running = await asyncio.wait(set(self._running), timeout=self.timeout_s)
        return not running


def _settle(
    answer: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
    returned: asyncio.Future[None],
) -> None:
    returned.set_result(None)
    if answer.done():  # the caller stopped waiting (its deadline passed, or it was cancelled)
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)
