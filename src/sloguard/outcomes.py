"""Step 5 of the request path: record what became of a request the app served.

:class:`OutcomeRecorder` puts a request's latency and outcome in its
capability's live window (capabilities with an SLO file), in the metrics and,
for every request that names a capability, in the request observers
(:func:`add_request_observer`; the pytest plugin is one). With none registered
the hot path pays one check of an empty tuple.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sloguard._clock import Clock
from sloguard.observability.metrics import CapabilitySeries, MetricsSink
from sloguard.request import GuardedRequest
from sloguard.slo.manager import SLOManager
from sloguard.slo.schema import SLOFile
from sloguard.slo.window import LatencyWindow

logger = logging.getLogger("sloguard")

RequestObserver = Callable[[str, float, bool], None]
"""Called with ``(capability, latency_s, ok)`` once per request that names a capability
(a blank one does not count)."""

_observers: tuple[RequestObserver, ...] = ()

UNMETERED_PATHS = ("/metrics", "/slo", "/healthz", "/workers", "/openapi.json")
"""sloguard's own endpoints (scrapes, dashboard polls, health checks, registrations):
not the service's traffic, so not counted as requests of capability ``other``."""


def add_request_observer(observer: RequestObserver) -> None:
    """Have every SLOGuard of the process call ``observer`` after each request with a
    capability (with an SLO file or not); it runs on the request's thread, must be
    quick, and one that raises is logged, never breaks the request."""
    global _observers
    if observer not in _observers:
        _observers = (*_observers, observer)


def remove_request_observer(observer: RequestObserver) -> None:
    """Stop calling ``observer``; nothing happens if it was not registered."""
    global _observers
    _observers = tuple(o for o in _observers if o is not observer)


def _notify(capability: str, latency_s: float, ok: bool) -> None:
    for observer in _observers:
        try:
            observer(capability, latency_s, ok)
        except Exception:
            logger.exception("request observer %r failed", observer)


class _Recorded:
    """Where one capability's requests are recorded, for as long as ``slo`` is loaded."""

    __slots__ = ("series", "slo", "window")

    def __init__(self, slo: SLOFile, window: LatencyWindow | None, series: CapabilitySeries):
        self.slo = slo
        self.window = window
        self.series = series


class OutcomeRecorder:
    """Records each served request: live window, metrics, request observers.

    A request is ``ok`` unless its status is 5xx (500 when the app raised or
    never answered). The window and the observers see the service's latency,
    from the end of the request body (``request.received``) to the call; the
    metrics see the whole of it, from the request's arrival.
    """

    def __init__(
        self,
        manager: SLOManager,
        metrics: MetricsSink,
        *,
        clock: Clock,
        unmetered: tuple[str, ...] = UNMETERED_PATHS,
    ) -> None:
        self.manager = manager
        self.unmetered = unmetered
        """Path prefixes of sloguard's own endpoints, left out of the ``other`` series."""
        self.metrics = metrics
        self._clock = clock
        # The windows take the manager's clock time: a request ends at our clock's
        # reading when the two are one clock, else at a reading of the manager's.
        self._window_clock = None if manager.clock is clock else manager.clock
        self._other = metrics.capability(None)
        self._recorded: dict[str, _Recorded] = {}

    def record(self, request: GuardedRequest, slo: SLOFile | None, status: int) -> float:
        """Record ``request`` (whose capability has ``slo``, or none) answered with
        ``status``; return its service latency."""
        end = self._clock()
        latency = end - request.received
        total = end - request.start
        ok = status < 500
        capability = request.capability
        if slo is None:
            if not request.scope["path"].startswith(self.unmetered):
                self._other.request(request.priority, ok, total)
        else:
            assert capability is not None
            recorded = self._recorded.get(capability)
            if recorded is None or recorded.slo is not slo:
                recorded = self._recorded[capability] = _Recorded(
                    slo,
                    self.manager.live_window(capability),
                    self.metrics.capability(capability),
                )
            window = recorded.window
            if window is not None:
                window_clock = self._window_clock
                window.add(latency, ok, end if window_clock is None else window_clock())
            recorded.series.request(request.priority, ok, total)
        if _observers and capability:
            _notify(capability, latency, ok)
        return latency
