"""Liveness: how a background loop is doing, for ``/healthz``.

Every background loop (the SLO file watcher, the SLO monitor, the history
recorder, the alert notifier) keeps one :class:`Liveness`. A loop isolates each
item it works on (a capability, a pass, an alert): an item that raises is
counted and logged, with its traceback, once until it works again, and the loop
goes on with the next. :func:`liveness_report` turns the records into what
``/healthz`` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from sloguard._clock import Clock

State = Literal["idle", "running", "stalled", "stopped"]
"""``idle``: never started; ``stalled``: started, but no pass for three intervals;
``stopped``: ended (shut down, or died)."""

STALL_INTERVALS = 3
"""A periodic loop with no pass for this many intervals (and at least 10 s) is stalled."""
_MAX_FAILING = 1_024  # items remembered as failing (logged once each): bounded memory
_MAX_ERROR_CHARS = 300


@dataclass(slots=True)
class Liveness:
    """The liveness of one background loop. ``interval_s``: how often a periodic loop
    passes (None: it works on demand, like the notifier, and cannot stall by time).
    Times are the wall clock's ``clock`` (Unix seconds)."""

    name: str
    interval_s: float | None = None
    clock: Clock = time.time
    running: bool = False
    started_at: float | None = None
    passes: int = 0
    """Passes (or, for an on-demand loop, items) completed since it started."""
    last_pass_at: float | None = None
    failures: int = 0
    """Items (or passes) that raised and were skipped."""
    last_error: str | None = None
    last_error_at: float | None = None
    _failing: dict[str, None] = field(default_factory=dict, repr=False)

    def started(self) -> None:
        """The loop starts (again)."""
        self.running = True
        self.started_at = self.clock()

    def stopped(self) -> None:
        """The loop ended: shut down, cancelled, or died."""
        self.running = False

    def passed(self) -> None:
        """One pass (or item) is done."""
        self.passes += 1
        self.last_pass_at = self.clock()

    def failed(self, item: str, exc: BaseException, logger: logging.Logger) -> None:
        """``item`` raised ``exc`` and was skipped: counted, and logged with its
        traceback the first time (until :meth:`recovered`)."""
        self.failures += 1
        self.last_error = f"{item}: {type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
        self.last_error_at = self.clock()
        if item in self._failing:
            logger.debug("%s: %s failed again: %r", self.name, item, exc)
            return
        if len(self._failing) >= _MAX_FAILING:
            del self._failing[next(iter(self._failing))]
        self._failing[item] = None
        logger.error(
            "%s: %s failed and was skipped (logged once until it works again)",
            self.name,
            item,
            exc_info=exc,
        )

    def recovered(self, item: str, logger: logging.Logger) -> None:
        """``item`` works (again): a later failure is logged again."""
        if item in self._failing:
            del self._failing[item]
            logger.warning("%s: %s works again", self.name, item)

    async def run_every(
        self,
        interval_s: float,
        item: str,
        work: Callable[[], Awaitable[object]],
        logger: logging.Logger,
        *,
        wait_first: bool = False,
    ) -> None:
        """``await work()`` every ``interval_s`` seconds, forever (run it as a task); with
        ``wait_first``, the first pass comes after one interval. A pass that raises is
        :meth:`failed` (its ``item`` logged once until it works again) and the loop goes on."""
        self.interval_s = interval_s
        self.started()
        try:
            while True:
                if wait_first:
                    await asyncio.sleep(interval_s)
                try:
                    await work()
                except Exception as exc:
                    self.failed(item, exc, logger)
                else:
                    self.recovered(item, logger)
                self.passed()
                if not wait_first:
                    await asyncio.sleep(interval_s)
        finally:
            self.stopped()

    def state(self, now: float | None = None) -> State:
        """How the loop is doing at ``now`` (default: the clock's now)."""
        if not self.running:
            return "idle" if self.started_at is None else "stopped"
        if self.interval_s is None:
            return "running"
        at = self.clock() if now is None else now
        last = self.last_pass_at if self.last_pass_at is not None else self.started_at
        limit = max(STALL_INTERVALS * self.interval_s, self.interval_s + 10.0)
        return "stalled" if last is not None and at - last > limit else "running"

    def json(self, now: float | None = None) -> dict[str, Any]:
        """The record as ``/healthz`` shows it."""
        return {
            "state": self.state(now),
            "interval_s": self.interval_s,
            "passes": self.passes,
            "last_pass_at": self.last_pass_at,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }


def liveness_report(loops: Iterable[Liveness], now: float | None = None) -> dict[str, Any]:
    """``{"status": "ok" | "degraded", "loops": {name: ...}}``: degraded when a loop that
    was started has stopped or stalled (an idle loop was never meant to run)."""
    records = {loop.name: loop.json(now) for loop in loops}
    bad = any(record["state"] in ("stalled", "stopped") for record in records.values())
    return {"status": "degraded" if bad else "ok", "loops": records}


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel a background task and wait until it has ended (its cancellation is not
    the caller's: it is not raised again here)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
