"""SLOManager: the SLO files of a directory, and a live window per capability."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard, TypeVar

from pydantic import BaseModel

from sloguard._clock import Clock, monotonic
from sloguard.exceptions import ConfigurationError, SLOFileError
from sloguard.liveness import Liveness
from sloguard.slo.budget import BudgetStatus, OutcomeCounter, budget_status
from sloguard.slo.compliance import Metrics
from sloguard.slo.compliance import check_compliance as _check_compliance
from sloguard.slo.loader import read_slo_files, resolve_claims, slo_file_paths
from sloguard.slo.schema import SLOFile
from sloguard.slo.sketch import (
    DEFAULT_RELATIVE_ACCURACY,
    FrozenBucket,
    KeyMapping,
    latency_mapping,
)
from sloguard.slo.tiers import TierTable, read_tiers, tiers_path_for
from sloguard.slo.window import LatencyWindow, WindowSnapshot, invalid_latency

logger = logging.getLogger("sloguard.slo")

_Model = TypeVar("_Model", bound=BaseModel)
_EMPTY = WindowSnapshot(requests=0, errors=0, p50_s=None, p95_s=None, p99_s=None)


@dataclass(frozen=True, slots=True)
class _Scan:
    """What reading the directory found, before it is installed."""

    files: dict[Path, SLOFile]
    errors: list[SLOFileError]
    signature: tuple[tuple[str, int, int], ...]
    tiers: TierTable


@dataclass(frozen=True, slots=True)
class SLOStatus:
    """The live state of one capability: its window, its compliance, its error budget."""

    capability: str
    p50_ms: float | None
    """Latency percentiles over the window, in milliseconds; None with no requests."""
    p95_ms: float | None
    p99_ms: float | None
    availability: float | None
    """Fraction of the window's requests that succeeded; None with no requests."""
    requests: int
    errors: int
    compliant: bool
    violations: tuple[str, ...]
    shedding: bool
    """Whether the admission policy is refusing some priorities of this capability."""
    window_seconds: float
    budget: BudgetStatus
    throughput_rps: float | None = None
    """Successful requests per second over the window (None with no requests)."""
    demand_rps: float | None = None
    """Requests per second that reached the app over the window. The reporter adds
    the ones admission refused before it judges a throughput floor; the live
    ``compliant`` and ``violations`` never include throughput, so it cannot shed."""


class SLOManager:
    """Loads the SLO files of a directory and keeps a live window per capability.

    ``record`` is called by the middleware once per request; ``status`` merges
    the window on demand. Per-capability state is allocated on the first
    ``record``, so loaded but idle capabilities cost only their model.
    Everything runs on the caller's thread without locks: call ``record`` from
    one event loop (or one thread) at a time.
    """

    def __init__(
        self,
        slo_dir: str | os.PathLike[str] | None = None,
        *,
        window_seconds: float = 60.0,
        buckets: int = 12,
        relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY,
        clock: Clock = monotonic,
        tiers_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if window_seconds <= 0:
            raise ConfigurationError(f"window_seconds must be positive, got {window_seconds!r}")
        if buckets < 1:
            raise ConfigurationError(f"buckets must be at least 1, got {buckets!r}")
        if not 0 < relative_accuracy < 1:
            raise ConfigurationError(
                f"relative_accuracy must be between 0 and 1, got {relative_accuracy!r}"
            )
        self.window_seconds = window_seconds
        self.buckets = buckets
        self._clock = clock
        self._mapping = latency_mapping(relative_accuracy)
        self._dir = Path(slo_dir) if slo_dir is not None else None
        # The SLA tiers files may name: tiers.yml beside the directory, by default.
        self._tiers_file: Path | None = (
            Path(tiers_file)
            if tiers_file is not None
            else None
            if self._dir is None
            else tiers_path_for(self._dir)
        )
        self._tiers: TierTable | None = None  # the last good table
        self._slos: dict[str, SLOFile] = {}
        self._files: dict[Path, SLOFile] = {}
        self._owners: dict[str, Path] = {}
        self._errors: list[SLOFileError] = []
        self._windows: dict[str, LatencyWindow] = {}
        self._counters: dict[str, OutcomeCounter] = {}
        self._shedding: set[str] = set()
        self._loaded_at: dict[str, float] = {}
        self._signature: tuple[tuple[str, int, int], ...] = ()
        self.watcher = Liveness("slo_watcher")
        """The liveness of :meth:`watch` (``idle`` until it runs)."""
        if self._dir is not None:
            self.reload()

    # -- files ----------------------------------------------------------------

    @property
    def slo_dir(self) -> Path | None:
        """The directory the SLO files are read from."""
        return self._dir

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The loaded capability keys (``verb:name``), sorted."""
        return tuple(sorted(self._slos))

    @property
    def errors(self) -> list[SLOFileError]:
        """The files that failed at the last load, one error each, naming file and fields."""
        return list(self._errors)

    def loaded_at(self, capability: str) -> float | None:
        """Clock time at which this manager first loaded ``capability`` (None if it has not).

        Kept in memory only: a restart starts it again (``grace_period_days`` counts from it).
        """
        return self._loaded_at.get(capability)

    @property
    def tiers(self) -> TierTable:
        """The SLA tiers in force: the built-in ones and ``tiers.yml``'s."""
        return self._tiers or TierTable()

    def get_slo(self, capability: str) -> SLOFile | None:
        """The SLO of ``capability`` (``verb:name``), or None if no file defines it."""
        return self._slos.get(capability)

    def reload(self) -> None:
        """Re-read the directory.

        New and changed files take effect; deleted files drop their capability.
        A file that no longer loads keeps the last good version of its
        capability, and is listed in :attr:`errors`. Raises
        :class:`ConfigurationError` if the directory is gone (nothing changes).
        """
        if self._dir is not None:
            self._apply(self._scan(self._dir))

    def reload_if_changed(self) -> bool:
        """Reload if a file was added, removed or modified (by size or mtime); say if it did."""
        scan = self._scan_if_changed()
        if scan is not None:
            self._apply(scan)
        return scan is not None

    async def poll(self) -> bool:
        """Like :meth:`reload_if_changed`, reading the files in a worker thread.

        The new files are installed back on the event loop, so ``record`` never
        sees a half-applied reload and the loop never blocks on disk.
        """
        scan = await asyncio.to_thread(self._scan_if_changed)
        if scan is not None:
            self._apply(scan)
        return scan is not None

    async def watch(self, interval_s: float = 2.0) -> None:
        """Run :meth:`poll` every ``interval_s`` seconds, forever; start it as a task.

        Errors are logged (once, until a reload works again), never raised: a bad
        edit, a missing directory or a failure of any kind does not stop the
        watch. :attr:`watcher` is its liveness.
        """
        await self.watcher.run_every(interval_s, "SLO reload", self.poll, logger, wait_first=True)

    def _scan_if_changed(self) -> _Scan | None:
        if self._dir is None:
            return None
        paths = slo_file_paths(self._dir)
        if self._signature_of(paths) == self._signature:
            return None
        return self._scan(self._dir, paths)

    def _signature_of(self, paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
        tiers = [] if self._tiers_file is None else [self._tiers_file]
        return _signature(paths) + _signature(tiers)

    def _scan(self, directory: Path, paths: list[Path] | None = None) -> _Scan:
        """Read the files: I/O only, safe in a worker thread."""
        if paths is None:
            paths = slo_file_paths(directory)
        # Taken before reading, so an edit made during the read is seen next time.
        signature = self._signature_of(paths)
        tiers, tiers_error = read_tiers(self._tiers_file, self._tiers)
        fresh, errors = read_slo_files(paths, tiers)
        errors = ([tiers_error] if tiers_error else []) + errors
        return _Scan(_share_equal_parts(fresh), errors, signature, tiers)

    def _apply(self, scan: _Scan) -> None:
        """Install a scan: keep last good versions, settle duplicates, drop gone state."""
        errors = list(scan.errors)
        kept_last_good = {e.path: self._files[e.path] for e in errors if e.path in self._files}
        files, duplicates = resolve_claims(
            {**scan.files, **kept_last_good}, owners=self._owners, fallbacks=self._files
        )
        errors += duplicates
        for error in errors:
            logger.warning("invalid SLO file: %s", error)
            previous = files.get(error.path)
            if previous is not None:
                logger.warning("%s: keeping the last good version of %s", error.path, previous.key)
        previous_slos = self._slos
        self._files = files
        self._slos = {slo.key: slo for slo in files.values()}
        self._owners = {slo.key: path for path, slo in files.items()}
        self._errors = errors
        self._signature = scan.signature
        if scan.tiers.unusable is None:
            self._tiers = scan.tiers
        now = self._clock()
        for key, slo in self._slos.items():
            self._loaded_at.setdefault(key, now)
            previous = previous_slos.get(key)
            if previous is not None and previous.shedding.window_s != slo.shedding.window_s:
                self._forget_window(key)  # rebuilt at the next request, on the new width
        for gone in self._windows.keys() - self._slos.keys():
            self._forget_window(gone)
        for gone in self._loaded_at.keys() - self._slos.keys():
            del self._loaded_at[gone]
        self._shedding.intersection_update(self._slos)

    def _forget_window(self, capability: str) -> None:
        self._windows.pop(capability, None)
        self._counters.pop(capability, None)

    # -- live windows ---------------------------------------------------------

    def record(self, capability: str, *, latency_s: float, ok: bool = True) -> None:
        """Count one request of ``capability``: its latency in seconds and whether it succeeded.

        A capability with no SLO file is ignored. Raises ValueError, naming the
        value, if ``latency_s`` is NaN, infinite or negative: one such value
        would make every quantile of the window meaningless.
        """
        if not 0.0 <= latency_s < math.inf:  # NaN fails every comparison
            raise invalid_latency(latency_s)
        window = self.live_window(capability)
        if window is not None:
            window.add(latency_s, ok, self._clock())

    def live_window(self, capability: str) -> LatencyWindow | None:
        """The window :meth:`record` adds ``capability``'s requests to (started now if
        need be), or None if it has no SLO file; its ``add(latency_s, ok, now)`` takes
        :attr:`clock` time and is ``record`` without the lookup (SLOGuard's hot path).

        The window lives as long as the capability's :class:`SLOFile`: a reload that
        changes its ``shedding.window_s``, or drops the capability, starts another one.
        Hold it only while :meth:`get_slo` returns the same object.
        """
        window = self._windows.get(capability)
        if window is None:
            window = self._start_window(capability)
        return window

    @property
    def clock(self) -> Clock:
        """The clock the windows and budgets read."""
        return self._clock

    def check_compliance(self, capability: str, metrics: Metrics) -> tuple[bool, list[str]]:
        """Compare ``metrics`` with the targets of ``capability``; see :func:`check_compliance`.

        A capability with no SLO file has no targets to miss: ``(True, [])``.
        """
        slo = self._slos.get(capability)
        if slo is None:
            return True, []
        return _check_compliance(slo, metrics)

    def status(self, capability: str) -> SLOStatus | None:
        """The live status of ``capability`` over the window, or None if it has no SLO file."""
        slo = self._slos.get(capability)
        if slo is None:
            return None
        now = self._clock()
        window = self._windows.get(capability)
        snapshot, pending = _EMPTY, (0, 0)
        if window is not None:
            snapshot = window.snapshot(now)  # rolls the window: closed buckets reach the counter
            _, open_requests, open_errors = window.open_bucket()
            pending = (open_requests, open_errors)
        budget = budget_status(slo, self._counters.get(capability), now, pending)
        p50, p95, p99 = (_ms(q) for q in (snapshot.p50_s, snapshot.p95_s, snapshot.p99_s))
        compliant, violations = _check_compliance(
            slo,
            {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "availability": snapshot.availability},
        )
        window_s, requests = self.window_for(slo), snapshot.requests
        return SLOStatus(
            capability=capability,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            availability=snapshot.availability,
            requests=snapshot.requests,
            errors=snapshot.errors,
            compliant=compliant,
            violations=tuple(violations),
            shedding=capability in self._shedding,
            window_seconds=window_s,
            budget=budget,
            throughput_rps=None if not requests else (requests - snapshot.errors) / window_s,
            demand_rps=None if not requests else requests / window_s,
        )

    @property
    def mapping(self) -> KeyMapping:
        """The DDSketch key mapping of every window: what turns frozen buckets into quantiles."""
        return self._mapping

    def closed_buckets(
        self, capability: str, *, after: float | None = None
    ) -> tuple[float, list[FrozenBucket]]:
        """``(bucket_seconds, buckets)``: the closed buckets of ``capability``'s live window,
        oldest first (none before its first request); with ``after``, only those that
        started after ``after`` (clock seconds). Closes the open bucket if the clock is
        past it, as a status read would. Reporting reads history from these.
        """
        window = self._windows.get(capability)
        if window is None:
            return 0.0, []
        return window.bucket_seconds, window.closed_buckets(self._clock(), after=after)

    def set_shedding(self, capability: str, active: bool) -> None:
        """Mark ``capability`` as shedding or not; reported by :meth:`status`."""
        if active and capability in self._slos:
            self._shedding.add(capability)
        else:
            self._shedding.discard(capability)

    def window_for(self, slo: SLOFile) -> float:
        """The width of the live window ``slo`` is judged over, in seconds."""
        return slo.shedding.window_s or self.window_seconds

    def _start_window(self, capability: str) -> LatencyWindow | None:
        slo = self._slos.get(capability)
        if slo is None:
            return None  # unknown capabilities are not counted, so they cannot grow memory
        counter = OutcomeCounter()
        window = LatencyWindow(
            self._mapping,
            window_seconds=self.window_for(slo),
            buckets=self.buckets,
            on_close=counter.add,
        )
        self._counters[capability] = counter
        self._windows[capability] = window
        return window


def _share_equal_parts(files: dict[Path, SLOFile]) -> dict[Path, SLOFile]:
    """``files``, each part (a model, a tuple of models) equal to one of another file's
    made that one object. The models are frozen, so sharing is safe; files of one tier
    or template then hold one copy of their targets and alerts between them, not one
    each (at 10,000 files, ~200,000 fewer objects for the cyclic collector to walk)."""
    pool: dict[object, object] = {}

    def with_shared_parts(model: _Model) -> _Model:
        moved = {}
        for name, part in model:
            same = shared(part)
            if same is not part:
                moved[name] = same
        return model.model_copy(update=moved) if moved else model

    def shared(value: object) -> object:
        if not isinstance(value, BaseModel) and not _models(value):
            return value  # a string, a number: nothing to share
        try:
            found = pool.get(value)
        except TypeError:  # unhashable: kept as it is
            return value
        if found is None:  # the first of its kind: its parts shared, it is the one from now on
            if isinstance(value, tuple):
                found = tuple(shared(item) for item in value)
            else:
                found = with_shared_parts(value)
            pool[value] = found
        return found

    return {path: with_shared_parts(slo) for path, slo in files.items()}


def _models(value: object) -> TypeGuard[tuple[BaseModel, ...]]:
    return isinstance(value, tuple) and bool(value) and all(isinstance(v, BaseModel) for v in value)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _signature(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue  # vanished between listing and stat; the next poll sees it gone
        out.append((path.name, st.st_mtime_ns, st.st_size))
    return tuple(out)
