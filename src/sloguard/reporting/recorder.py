"""HistoryRecorder: turns what this process saw into minute rows, off the request path.

The request path already keeps, per capability, a live window of 5-second
buckets (``LatencyWindow``); a bucket that closes is frozen with its latency
sketch. Every ``interval_s`` the recorder reads the buckets closed since its
last flush, files each under the wall-clock minute its start falls in, merges
the sketches of a minute into its quantiles, adds the requests SLOGuard
refused since the last flush (``guard.shed_counts``), and upserts one row per
(capability, minute) for this replica. The request path does nothing more.

- A minute's row is rewritten at every flush until the minute is over, so a
  crash loses at most one interval (plus the open 5-second bucket).
- A restart resumes: a new process (default replica id ``hostname-pid``)
  appends its own rows. With a fixed ``replica`` id, the minute of the
  restart keeps only the new process's share.
- A failed write (full disk, lost database) is logged once per outage and
  counted (``sloguard_report_flush_errors_total``); its rows wait in a
  backlog and are retried at the next flush, after migrating the schema
  again (a database that comes back empty is recreated). The backlog holds at most
  ``max_backlog`` rows; past that the oldest minutes are dropped and counted
  (``sloguard_report_rows_dropped_total``). Requests are never affected.
- Every store call has a deadline (``store_timeout_s``, 30 s): a store that
  hangs (a locked table, a server that stopped answering) is a failed write
  like any other, and the next flush does not start another call while the
  last one is still stuck.
- A capability whose buckets cannot be read or summed is logged (once until it
  works again) and skipped; the others are recorded. :attr:`HistoryRecorder.liveness`
  tells ``/healthz`` how the loop is doing.
- ``interval_s`` must stay below the live window (60 s by default): buckets
  older than the window are gone before the next flush could read them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, overload

from sloguard._clock import Clock, monotonic
from sloguard.exceptions import ConfigurationError
from sloguard.liveness import Liveness, stop_task
from sloguard.observability.metrics import Metrics, default_metrics
from sloguard.reporting.records import MinuteAggregate
from sloguard.reporting.repository import HistoryRepository
from sloguard.reporting.slicing import in_slices
from sloguard.reporting.storecalls import StoreCalls
from sloguard.slo.manager import SLOManager
from sloguard.slo.sketch import FrozenBucket

logger = logging.getLogger("sloguard.reporting")

DEFAULT_INTERVAL_S = 10.0
DEFAULT_MAX_BACKLOG = 100_000
DEFAULT_STORE_TIMEOUT_S = 30.0
"""A write of a large backlog takes seconds; nothing waits on the recorder but itself."""
_QUANTILES = (0.50, 0.95, 0.99)


_Row = tuple[str, int, str, int, int, int, float | None, float | None, float | None, bool]
"""A :class:`MinuteAggregate`'s fields, in order."""


class _Rows(Sequence[MinuteAggregate]):
    """Rows kept as tuples, each made a :class:`MinuteAggregate` only as it is read.

    A flush at 10,000 capabilities has 10,000 rows: built at once, they would outlive
    two collections and reach the collector's oldest generation, and enough of that
    sets off a full collection (hundreds of milliseconds, the whole heap walked).
    Tuples of numbers and strings the collector stops tracking at once.
    """

    __slots__ = ("_rows",)

    def __init__(self, rows: list[_Row]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[MinuteAggregate]:
        return (MinuteAggregate(*row) for row in self._rows)

    @overload
    def __getitem__(self, index: int) -> MinuteAggregate: ...
    @overload
    def __getitem__(self, index: slice) -> list[MinuteAggregate]: ...
    def __getitem__(self, index: int | slice) -> MinuteAggregate | list[MinuteAggregate]:
        if isinstance(index, slice):
            return [MinuteAggregate(*row) for row in self._rows[index]]
        return MinuteAggregate(*self._rows[index])


class ShedCounts(Protocol):
    """What the recorder reads from SLOGuard: enforced refusals so far, by priority."""

    def shed_counts(self, capability: str, *, dry_run: bool = False) -> Mapping[Any, int]: ...


def default_replica() -> str:
    """``hostname-pid``: unique per process, so a restart never overwrites older rows."""
    return f"{socket.gethostname()}-{os.getpid()}"


class HistoryRecorder:
    """Flushes this process's per-capability minute aggregates to ``repository``.

    ``flush()`` is one pass; ``run()`` loops forever (start it as a task and
    cancel it on shutdown, or use :meth:`start`/:meth:`stop`). Clocks are
    injected: ``monotonic`` must be the manager's clock (bucket times are on
    it), ``wall`` gives Unix time for the minutes.
    """

    def __init__(
        self,
        manager: SLOManager,
        repository: HistoryRepository,
        *,
        guard: ShedCounts | None = None,
        replica: str | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        prune_every_s: float | None = 3_600.0,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        monotonic_clock: Clock = monotonic,
        wall_clock: Clock = time.time,
        metrics: Metrics | None = None,
        slice_s: float | None = None,
        store_timeout_s: float = DEFAULT_STORE_TIMEOUT_S,
    ) -> None:
        if not 0 < interval_s < manager.window_seconds:
            raise ConfigurationError(
                f"interval_s must be positive and below the live window "
                f"({manager.window_seconds:g} s), got {interval_s!r}"
            )
        if max_backlog < 1:
            raise ConfigurationError(f"max_backlog must be at least 1, got {max_backlog!r}")
        if prune_every_s is not None and prune_every_s <= 0:
            raise ConfigurationError(f"prune_every_s must be positive, got {prune_every_s!r}")
        self.manager = manager
        self.repository = repository
        self.guard = guard
        self.replica = replica or default_replica()
        self.interval_s = interval_s
        self.prune_every_s = prune_every_s
        self.max_backlog = max_backlog
        self.slice_s = slice_s
        """Hand the event loop back after this much work in a pass (default ``SLICE_S``)."""
        self._monotonic = monotonic_clock
        self._wall = wall_clock
        self._metrics = metrics
        self._seen: dict[str, float] = {}  # capability -> start of the last bucket read
        self._width: dict[str, float] = {}
        self._shed_seen: dict[str, int] = {}
        # (capability, minute) -> (its refusals, *its frozen buckets as bytes) so far: flat
        # tuples of an int and bytes, which the cyclic collector stops tracking.
        self._minutes: dict[tuple[str, int], tuple[int, *tuple[bytes, ...]]] = {}
        self._backlog: dict[tuple[str, int], _Row] = {}  # tuples, as `_minutes`
        self._failing = False
        self._next_prune = -float("inf")
        self._task: asyncio.Task[None] | None = None
        # One call at a time: a write still stuck past its deadline is not joined by another.
        self._call = StoreCalls("sloguard-history-recorder", timeout_s=store_timeout_s, threads=1)
        self.liveness = Liveness("history_recorder", interval_s, clock=wall_clock)
        """The liveness of :meth:`run` (``idle`` until it runs)."""
        self.flush_errors = 0
        self.dropped_rows = 0

    @property
    def metrics(self) -> Metrics:
        """Where flush errors and dropped rows are counted (default: the process's
        metrics, looked up when first needed, so that SLOGuard sets their buckets)."""
        if self._metrics is None:
            self._metrics = default_metrics()
        return self._metrics

    @property
    def backlog(self) -> int:
        """Rows waiting to be retried after a failed write."""
        return len(self._backlog)

    # -- collecting (on the event loop, no I/O) ---------------------------------

    async def collect(self) -> list[MinuteAggregate]:
        """Read what was closed since the last call; the rows of every minute touched.

        A minute stays open (and its row is rewritten) until the wall clock has
        moved a bucket past its end. Both passes over the capabilities are cut into
        slices (:func:`in_slices`): requests are served between them.
        """
        return list(_Rows(await self._collect_rows()))

    async def _collect_rows(self) -> list[_Row]:
        """:meth:`collect`, each row a tuple (see :class:`_Rows`)."""
        wall, offset = self._offset()
        touched: set[tuple[str, int]] = set()
        liveness = self.liveness
        async for capability in in_slices(self.manager.capabilities, slice_s=self.slice_s):
            item = f"reading {capability}"
            try:  # one capability that fails never keeps the others from being recorded
                touched |= self._collect(capability, wall, offset)
            except Exception as exc:
                liveness.failed(item, exc, logger)
            else:
                liveness.recovered(item, logger)
        rows = []
        async for capability, minute in in_slices(sorted(touched), slice_s=self.slice_s):
            item = f"summing {capability}"
            try:
                rows.append(self._row(capability, minute))
            except Exception as exc:
                liveness.failed(item, exc, logger)
            else:
                liveness.recovered(item, logger)
        # Every bucket of a minute has closed (and been read) once the clock is a bucket
        # width past the minute's end; a second of margin absorbs clock jitter.
        horizon = wall - 61.0 - max(self._width.values(), default=0.0)
        for key in [k for k in self._minutes if k[1] < horizon]:
            del self._minutes[key]
        return rows

    def _collect(self, capability: str, wall: float, offset: float) -> set[tuple[str, int]]:
        """File ``capability``'s newly closed buckets (and refusals) under their minutes;
        the minutes touched."""
        touched = set()
        last = self._seen.get(capability)
        width, buckets = self.manager.closed_buckets(capability, after=last)
        for bucket in buckets:
            start = bucket.epoch * width
            # A bucket counts in the minute its start falls in; rounded to the
            # millisecond so that float noise in the offset cannot move a bucket
            # that starts on a minute into the one before.
            key = (capability, int(round(start + offset, 3) // 60) * 60)
            self._add(key, bucket=bytes(bucket))
            touched.add(key)
            self._seen[capability] = start
            self._width[capability] = width
        shed = self._new_shed(capability)
        if shed:
            key = (capability, int(wall // 60) * 60)
            self._add(key, shed=shed)
            touched.add(key)
        return touched

    def _add(self, key: tuple[str, int], *, bucket: bytes | None = None, shed: int = 0) -> None:
        """File a closed bucket or refusals under a capability's minute."""
        shed_before, *buckets = self._minutes.get(key, (0,))
        if bucket is not None:
            buckets.append(bucket)
        self._minutes[key] = (shed_before + shed, *buckets)

    def _offset(self) -> tuple[float, float]:
        wall = self._wall()
        return wall, wall - self._monotonic()

    def _new_shed(self, capability: str) -> int:
        if self.guard is None:
            return 0
        total = sum(self.guard.shed_counts(capability).values())
        previous = self._shed_seen.get(capability, 0)
        self._shed_seen[capability] = total
        return max(0, total - previous)

    def _row(self, capability: str, minute: int) -> _Row:
        shed, *buckets = self._minutes[(capability, minute)]
        merged = FrozenBucket.merge(0, buckets)
        p50, p95, p99 = (
            None if q is None else q * 1000.0
            for q in merged.quantiles(_QUANTILES, self.manager.mapping)
        )
        requests, errors = merged.requests, merged.errors
        compliant, _ = self.manager.check_compliance(
            capability,
            {
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99,
                "availability": 1.0 - errors / requests if requests else None,
            },
        )
        # MinuteAggregate's fields, in order.
        return (capability, minute, self.replica, requests, errors, shed, p50, p95, p99, compliant)

    # -- writing (in a worker thread) -------------------------------------------

    async def flush(self) -> int:
        """Collect and write; the number of rows written (0 when the write failed)."""
        for row in await self._collect_rows():
            self._backlog[row[:2]] = row  # (capability, minute): newer rows replace older
        self._bound_backlog()
        if not self._backlog:
            return 0
        rows = list(self._backlog.values())
        try:
            await self._call(self._write, rows)
        except Exception as exc:
            self.flush_errors += 1
            self.metrics.report_flush_errors.inc()
            if not self._failing:
                logger.error(
                    "writing SLO history to %r failed (%d rows kept to retry): %s",
                    self.repository,
                    len(rows),
                    exc,
                )
            self._failing = True
            return 0
        if self._failing:
            logger.warning("SLO history writes to %r work again", self.repository)
            self._failing = False
        for row in rows:
            if self._backlog.get(row[:2]) is row:
                del self._backlog[row[:2]]
        return len(rows)

    def _write(self, rows: list[_Row]) -> None:
        if self._failing:  # the store may be back empty (a lost database): schema first
            self.repository.migrate()
        self.repository.write_minutes(_Rows(rows))

    def _bound_backlog(self) -> None:
        excess = len(self._backlog) - self.max_backlog
        if excess <= 0:
            return
        oldest = sorted(self._backlog, key=lambda key: (key[1], key[0]))[:excess]
        for key in oldest:
            del self._backlog[key]
        self.dropped_rows += excess
        self.metrics.report_rows_dropped.inc(excess)
        logger.error("SLO history backlog full: dropped the %d oldest unwritten rows", excess)

    async def prune(self) -> None:
        """Roll up and expire old history (errors are logged, like flush errors)."""
        try:
            result = await self._call(self.repository.prune, self._wall())
        except Exception as exc:
            logger.error("pruning SLO history in %r failed: %s", self.repository, exc)
            return
        if result.rolled_minutes or result.dropped_days:
            logger.info(
                "SLO history: rolled %d minute rows into days, dropped %d old days",
                result.rolled_minutes,
                result.dropped_days,
            )

    async def run(self) -> None:
        """Flush every ``interval_s`` (and prune every ``prune_every_s``), forever. A pass
        that fails is logged (once until one works again) and the loop goes on."""
        await self.liveness.run_every(
            self.interval_s, "history flush", self._pass, logger, wait_first=True
        )

    async def _pass(self) -> None:
        await self.flush()
        if self.prune_every_s is not None and self._monotonic() >= self._next_prune:
            self._next_prune = self._monotonic() + self.prune_every_s
            await self.prune()

    def start(self) -> None:
        """Start :meth:`run` as a task on the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        """Stop the loop and flush one last time (after a write the loop had in flight)."""
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        await self._call.idle()
        await self.flush()
