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

import struct
from dataclasses import dataclass

from sloguard.slo.schema import BudgetAlert, SLOFile

MONTH_SECONDS = 30 * 86_400.0
BURN_RATE_WINDOWS = {"5m": 300.0, "1h": 3_600.0, "6h": 21_600.0}

# A ring's counts are one bytearray: the index of its newest slot written, then
# (requests, errors) per slot, unsigned, 2, 4 or 8 bytes each as the counts need.
_LAST = struct.Struct("=q")
_FAR_PAST = -(2**62)
_TYPECODES = {2: "H", 4: "I", 8: "Q"}  # struct's, by size


class _Ring:
    """Requests and errors per slot of ``width`` seconds, for the last ``slots`` slots.

    One instance serves every counter: the counts are in a bytearray of the counter's
    (``counts``, made by :meth:`new`), which the collector does not track.
    """

    __slots__ = ("slots", "width")

    def __init__(self, width: float, slots: int) -> None:
        self.width = width
        self.slots = slots

    def new(self) -> bytearray:
        """Counts with every slot empty."""
        counts = bytearray(_LAST.size + 4 * self.slots)
        _LAST.pack_into(counts, 0, _FAR_PAST)
        return counts

    def add(self, counts: bytearray, at: float, requests: int, errors: int) -> None:
        index = int(at // self.width)
        if index <= self._advance(counts, index) - self.slots:
            return  # older than anything kept
        slot = index % self.slots
        slot_requests, slot_errors = self._read(counts, slot)
        new = (slot_requests + requests, slot_errors + errors)
        while max(new) >> (8 * self._size(counts)):  # a count outgrows its size
            self._widen(counts)
        self._write(counts, slot, *new)

    def totals(self, counts: bytearray, now: float, span: float) -> tuple[int, int]:
        """Requests and errors in the slots covering the last ``span`` seconds up to ``now``."""
        index = int(now // self.width)
        self._advance(counts, index)
        count = min(self.slots, max(1, round(span / self.width)))
        slots = self._unpack(counts)
        requests = errors = 0
        for k in range(index - count + 1, index + 1):
            i = 2 * (k % self.slots)
            requests += slots[i]
            errors += slots[i + 1]
        return requests, errors

    def _advance(self, counts: bytearray, index: int) -> int:
        """Make ``index`` the newest slot if it is newer, emptying the slots it skips;
        the newest slot's index."""
        last: int = _LAST.unpack_from(counts)[0]
        if index <= last:
            return last
        if index - last >= self.slots:
            counts[_LAST.size :] = bytes(4 * self.slots)  # every slot is stale: narrow again
        else:
            for k in range(last + 1, index + 1):
                self._write(counts, k % self.slots, 0, 0)
        _LAST.pack_into(counts, 0, index)
        return index

    def _size(self, counts: bytearray) -> int:
        """Bytes per count: 2, 4 or 8."""
        return (len(counts) - _LAST.size) // (2 * self.slots)

    def _read(self, counts: bytearray, slot: int) -> tuple[int, int]:
        size = self._size(counts)
        pair: tuple[int, int] = struct.unpack_from(
            f"=2{_TYPECODES[size]}", counts, _LAST.size + 2 * size * slot
        )
        return pair

    def _write(self, counts: bytearray, slot: int, requests: int, errors: int) -> None:
        size = self._size(counts)
        fmt = f"=2{_TYPECODES[size]}"
        struct.pack_into(fmt, counts, _LAST.size + 2 * size * slot, requests, errors)

    def _unpack(self, counts: bytearray) -> tuple[int, ...]:
        """Every count: ``(requests, errors)`` of slot ``i`` at ``2 * i`` and ``2 * i + 1``."""
        typecode = _TYPECODES[self._size(counts)]
        return struct.unpack_from(f"={2 * self.slots}{typecode}", counts, _LAST.size)

    def _widen(self, counts: bytearray) -> None:
        """Make every count the next size up; OverflowError beyond 8 bytes."""
        wider = _TYPECODES.get(2 * self._size(counts))
        if wider is None:
            raise OverflowError("a count does not fit in 8 bytes")
        counts[_LAST.size :] = struct.pack(f"={2 * self.slots}{wider}", *self._unpack(counts))


_MINUTES = _Ring(60.0, 5)
_SIX_HOURS = _Ring(300.0, 72)
_MONTH = _Ring(21_600.0, 120)


class OutcomeCounter:
    """Rolling request and error counts of one capability, up to 30 days back (~1.4 KB).

    One object for the cyclic collector to walk: its counts are bytearrays.
    """

    __slots__ = ("_minutes", "_month", "_six_hours")

    def __init__(self) -> None:
        self._minutes = _MINUTES.new()
        self._six_hours = _SIX_HOURS.new()
        self._month = _MONTH.new()

    def add(self, at: float, requests: int, errors: int) -> None:
        """Count ``requests`` (of which ``errors`` failed) that happened at ``at``."""
        _MINUTES.add(self._minutes, at, requests, errors)
        _SIX_HOURS.add(self._six_hours, at, requests, errors)
        _MONTH.add(self._month, at, requests, errors)

    def totals(self, now: float, span: float) -> tuple[int, int]:
        """Requests and errors over about the last ``span`` seconds (to the slot width)."""
        if span <= 300.0:
            return _MINUTES.totals(self._minutes, now, span)
        if span <= 21_600.0:
            return _SIX_HOURS.totals(self._six_hours, now, span)
        return _MONTH.totals(self._month, now, span)


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
