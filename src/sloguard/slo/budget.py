"""Error budget and burn rates over the SLO's month (a rolling 30 days).

With an availability target ``t`` the budget is ``b = 1 - t``: the fraction of
requests allowed to fail. Over a span of time with ``n`` requests and ``e``
errors (SRE workbook, chapter 5):

- burn rate = ``(e / n) / b``; 1.0 spends exactly the budget in a month,
  14.4 spends 2% of it in an hour;
- budget consumed (over the month) = ``e / (n * b)``; 1.0 means exhausted.

Outcome counts are kept at three resolutions so that memory stays bounded:
1-minute slots for five minutes (the 5 m burn rate), 5-minute slots for six
hours (1 h and 6 h) and 6-hour slots for 30 days (the month). A ring's
counts start 2 bytes wide and widen (4, then 8 bytes) the first time one
outgrows them, so a ring costs 4 bytes a slot until a slot passes 65,535
requests. They are fed once per closed window bucket, not per request. The
counts live in this process only: after a restart the month starts again.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from sloguard.slo.schema import BudgetAlert, SLOFile

MONTH_SECONDS = 30 * 86_400.0
BURN_RATE_WINDOWS = {"5m": 300.0, "1h": 3_600.0, "6h": 21_600.0}


_WIDER = {"H": "I", "I": "Q"}  # unsigned counts of 2, 4 and 8 bytes


def _zeros(slots: int) -> array[int]:
    return array("H", bytes(4 * slots))


class _CountRing:
    """Requests and errors per slot of ``width`` seconds, for the last ``slots`` slots."""

    __slots__ = ("_counts", "_last", "_slots", "_width")

    def __init__(self, width: float, slots: int) -> None:
        self._width = width
        self._slots = slots
        # Interleaved (requests, errors) per slot, unsigned, as narrow as the counts allow.
        self._counts = _zeros(slots)
        self._last = -(2**62)  # index of the newest slot written; far past at first

    def add(self, at: float, requests: int, errors: int) -> None:
        index = int(at // self._width)
        if index > self._last:
            self._advance(index)
        elif index <= self._last - self._slots:
            return  # older than anything kept
        i = 2 * (index % self._slots)
        counts = self._counts
        slot_requests = counts[i] + requests
        slot_errors = counts[i + 1] + errors
        while True:
            try:
                counts[i] = slot_requests
                counts[i + 1] = slot_errors
                return
            except OverflowError:
                wider = _WIDER.get(counts.typecode)
                if wider is None:
                    raise  # beyond 8 bytes, or negative
                counts = self._counts = array(wider, counts)

    def totals(self, now: float, span: float) -> tuple[int, int]:
        """Requests and errors in the slots covering the last ``span`` seconds up to ``now``."""
        index = int(now // self._width)
        if index > self._last:
            self._advance(index)
        count = min(self._slots, max(1, round(span / self._width)))
        counts = self._counts
        requests = errors = 0
        for k in range(index - count + 1, index + 1):
            i = 2 * (k % self._slots)
            requests += counts[i]
            errors += counts[i + 1]
        return requests, errors

    def _advance(self, index: int) -> None:
        counts = self._counts
        if index - self._last >= self._slots:
            self._counts = _zeros(self._slots)  # every slot is stale: narrow again
        else:
            for k in range(self._last + 1, index + 1):
                i = 2 * (k % self._slots)
                counts[i] = counts[i + 1] = 0
        self._last = index


class OutcomeCounter:
    """Rolling request and error counts of one capability, up to 30 days back (~1.4 KB)."""

    __slots__ = ("_minutes", "_month", "_six_hours")

    def __init__(self) -> None:
        self._minutes = _CountRing(60.0, 5)
        self._six_hours = _CountRing(300.0, 72)
        self._month = _CountRing(21_600.0, 120)

    def add(self, at: float, requests: int, errors: int) -> None:
        """Count ``requests`` (of which ``errors`` failed) that happened at ``at``."""
        self._minutes.add(at, requests, errors)
        self._six_hours.add(at, requests, errors)
        self._month.add(at, requests, errors)

    def totals(self, now: float, span: float) -> tuple[int, int]:
        """Requests and errors over about the last ``span`` seconds (to the slot width)."""
        if span <= 300.0:
            return self._minutes.totals(now, span)
        if span <= 21_600.0:
            return self._six_hours.totals(now, span)
        return self._month.totals(now, span)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """The error budget of one capability at one instant."""

    budget: float
    """The fraction of requests allowed to fail, ``1 - availability.target``."""
    requests: int
    """Requests over the month (since this process started, at most 30 days)."""
    errors: int
    consumed: float
    """Fraction of the month's budget spent; above 1.0 when overspent."""
    burn_rate_5m: float
    burn_rate_1h: float
    burn_rate_6h: float
    alerts_crossed: tuple[BudgetAlert, ...]
    """The file's ``error_budget.alerts`` whose threshold ``consumed`` has reached."""

    @property
    def remaining(self) -> float:
        """Fraction of the month's budget left; negative when overspent."""
        return 1.0 - self.consumed


def burn_rate(requests: int, errors: int, budget: float) -> float:
    """How fast errors spend the budget: error rate over allowed rate (0 with no requests)."""
    if requests <= 0:
        return 0.0
    return (errors / requests) / budget


def budget_status(
    slo: SLOFile,
    counter: OutcomeCounter | None,
    now: float,
    pending: tuple[int, int] = (0, 0),
) -> BudgetStatus:
    """Compute budget consumption and burn rates at ``now``.

    ``pending`` are requests and errors not yet given to ``counter`` (the open
    window bucket); they count in every span.
    """
    budget = slo.budget_fraction
    pending_requests, pending_errors = pending

    def span(seconds: float) -> tuple[int, int]:
        requests, errors = counter.totals(now, seconds) if counter is not None else (0, 0)
        return requests + pending_requests, errors + pending_errors

    month_requests, month_errors = span(MONTH_SECONDS)
    consumed = burn_rate(month_requests, month_errors, budget)  # same ratio, over the month
    rates = {name: burn_rate(*span(seconds), budget) for name, seconds in BURN_RATE_WINDOWS.items()}
    return BudgetStatus(
        budget=budget,
        requests=month_requests,
        errors=month_errors,
        consumed=consumed,
        burn_rate_5m=rates["5m"],
        burn_rate_1h=rates["1h"],
        burn_rate_6h=rates["6h"],
        alerts_crossed=tuple(
            # The tolerance absorbs float rounding: 50 errors of 100,000 at 99.9% is 0.5.
            alert
            for alert in slo.slo.error_budget.alerts
            if consumed >= alert.threshold - 1e-9
        ),
    )
