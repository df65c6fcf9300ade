"""Idempotency hits and misses per capability, for the /slo API and the dashboard.

The request path reports each idempotency decision with its capability:
``reporter.idempotency.count(capability, event)`` (``event`` as the
``sloguard_idempotency_events_total`` counter names them: ``hit``, ``miss``...).
``GET /slo`` then gives each capability its own ``idempotency`` object; until
the first decision is counted (a guard that does not report them), it gives none,
and the process-wide figures stay the only ones (``GET /slo``'s ``idempotency``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any


class IdempotencyCounts:
    """Hits and misses by capability (requests without a capability count under None).

    With ``slo_of`` (the manager's ``get_slo``), a capability without an SLO file
    counts under None too: only those with one are reported, and clients name
    capabilities at will (any ``/route/{verb}/{name}``), so each name kept would
    grow memory without bound.
    """

    def __init__(self, slo_of: Callable[[str], object | None] | None = None) -> None:
        self._hits: Counter[str | None] = Counter()
        self._misses: Counter[str | None] = Counter()
        self._slo_of = slo_of
        self.active = False
        """Whether anything was ever counted: only then are the figures per capability true."""

    def count(self, capability: str | None, event: str) -> None:
        """Count ``event`` for ``capability``; only ``hit`` and ``miss`` make the rate."""
        self.active = True
        if event == "hit":
            counts = self._hits
        elif event == "miss":
            counts = self._misses
        else:
            return
        # A name is looked up only until it is counted (forget() drops it with its file).
        slo_of = self._slo_of
        if capability not in counts and capability is not None and slo_of is not None:
            capability = capability if slo_of(capability) is not None else None
        counts[capability] += 1

    def forget(self, capability: str | None) -> None:
        """Drop a capability's figures (its SLO file is gone)."""
        self._hits.pop(capability, None)
        self._misses.pop(capability, None)

    def json(self, capability: str | None) -> dict[str, Any] | None:
        """``{"hits", "misses", "hit_rate"}`` of ``capability``; None until anything is counted."""
        if not self.active:
            return None
        hits, misses = self._hits[capability], self._misses[capability]
        return {
            "hits": hits,
            "misses": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else None,
        }
