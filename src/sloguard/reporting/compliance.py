"""Compliance reports: daily records and monthly summaries with service credits.

A minute counts as **downtime** when it was non-compliant (any objective of
the SLO missed over that minute, on any replica), as **uptime** when it was
compliant. Minutes with no data (nothing recorded: no traffic, or sloguard
not running) count as neither, so a day's ``compliance_percentage`` is
``uptime / (uptime + downtime) * 100``, and None when nothing was recorded.
Days are UTC days. Reports read the repository: call these functions off
the event loop.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sloguard.reporting.records import DAY_SECONDS
from sloguard.reporting.repository import HistoryRepository
from sloguard.slo.schema import CreditBracket, SLOFile

MAX_DAILY_RANGE_DAYS = 90
MAX_MONTHLY_RANGE_MONTHS = 13


@dataclass(frozen=True, slots=True)
class DailyCompliance:
    """One UTC day of one capability."""

    date: dt.date
    compliance_percentage: float | None
    target_percentage: float
    uptime_minutes: int
    downtime_minutes: int
    sla_breaches: int
    """Breaches (open or resolved, not warnings) that started that day."""
    requests: int
    errors: int

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.date.isoformat(),
            "compliance_percentage": self.compliance_percentage,
            "target_percentage": self.target_percentage,
            "uptime_minutes": self.uptime_minutes,
            "downtime_minutes": self.downtime_minutes,
            "sla_breaches": self.sla_breaches,
            "requests": self.requests,
            "errors": self.errors,
        }


@dataclass(frozen=True, slots=True)
class MonthlyCompliance:
    """One calendar month (UTC) of one capability, with the credit owed."""

    month: str
    """``YYYY-MM``."""
    compliance_percentage: float | None
    target_percentage: float
    uptime_minutes: int
    downtime_minutes: int
    sla_breaches: int
    credit_percentage: float | None
    """The credit owed for the month under the SLO's ``credits`` brackets: 0 when the
    month is above every bracket; None when the SLO has no brackets or the month no data."""
    breach_credit_percentage: float | None = None
    """The credits of the breaches that started in the month, summed and capped by
    ``max_credit_pct``; None when the SLO has no brackets."""

    def to_json(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "compliance_percentage": self.compliance_percentage,
            "target_percentage": self.target_percentage,
            "uptime_minutes": self.uptime_minutes,
            "downtime_minutes": self.downtime_minutes,
            "sla_breaches": self.sla_breaches,
            "credit_percentage": self.credit_percentage,
            "breach_credit_percentage": self.breach_credit_percentage,
        }


def percentage(uptime: int, downtime: int) -> float | None:
    """Compliant minutes as a percentage of recorded minutes (None when none were)."""
    total = uptime + downtime
    return None if not total else round(100.0 * uptime / total, 4)


def credit_owed(compliance: float | None, brackets: tuple[CreditBracket, ...]) -> float | None:
    """The credit of the lowest bracket ``compliance`` falls below (0 if none)."""
    if not brackets or compliance is None:
        return None
    owed = [b.credit_pct for b in brackets if compliance < b.below_pct]
    return max(owed, default=0.0)


def breach_credit(slo: SLOFile, started_at: float, ended_at: float) -> float | None:
    """The credit one breach earns: the ``credits`` bracket its own downtime falls into,
    capped by ``max_credit_pct``; None when the SLO has no brackets.

    The affected period is the breach's calendar month (UTC, the one it started in):
    the breach is judged as if it were that month's only downtime, so its compliance
    is ``100 * (1 - duration / length of the month)``. A 45-minute breach in a
    30-day month is 99.896%: under brackets ``below 99.9: 10%``, it earns 10%.
    """
    if not slo.credits:
        return None
    start = dt.datetime.fromtimestamp(started_at, dt.UTC).date()
    first, last = month_bounds(start)
    month_s = (last - first).days * DAY_SECONDS + DAY_SECONDS
    compliance = 100.0 * max(0.0, 1.0 - max(0.0, ended_at - started_at) / month_s)
    owed = credit_owed(round(compliance, 6), slo.credits)
    return _capped(owed, slo.max_credit_pct)


def _capped(credit: float | None, cap: float | None) -> float | None:
    return credit if credit is None or cap is None else min(credit, cap)


def _epoch(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def daily_compliance(
    repository: HistoryRepository, slo: SLOFile, from_date: dt.date, to_date: dt.date
) -> list[DailyCompliance]:
    """One record per day from ``from_date`` to ``to_date`` inclusive (days without data too)."""
    since, until = _epoch(from_date), _epoch(to_date) + DAY_SECONDS
    points = {p.start: p for p in repository.history(slo.key, since, until, DAY_SECONDS)}
    breaches: dict[int, int] = {}
    for breach in repository.breaches(slo.key, since=since, until=until):
        if breach.state != "warning":
            started = int(breach.started_at // DAY_SECONDS) * DAY_SECONDS
            breaches[started] = breaches.get(started, 0) + 1
    target = round(slo.slo.availability.target * 100.0, 6)
    records = []
    day = from_date
    while day <= to_date:
        start = _epoch(day)
        point = points.get(start)
        up = point.compliant_minutes if point else 0
        down = point.downtime_minutes if point else 0
        records.append(
            DailyCompliance(
                date=day,
                compliance_percentage=percentage(up, down),
                target_percentage=target,
                uptime_minutes=up,
                downtime_minutes=down,
                sla_breaches=breaches.get(start, 0),
                requests=point.requests if point else 0,
                errors=point.errors if point else 0,
            )
        )
        day += dt.timedelta(days=1)
    return records


def month_bounds(month: dt.date) -> tuple[dt.date, dt.date]:
    """First and last day of the month of ``month``."""
    first = month.replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    return first, following - dt.timedelta(days=1)


def monthly_compliance(
    repository: HistoryRepository, slo: SLOFile, from_month: dt.date, to_month: dt.date
) -> list[MonthlyCompliance]:
    """One summary per calendar month from ``from_month`` to ``to_month`` (any day in each)."""
    first, _ = month_bounds(from_month)
    _, last = month_bounds(to_month)
    by_month: dict[str, list[DailyCompliance]] = {}
    for record in daily_compliance(repository, slo, first, last):
        by_month.setdefault(record.date.strftime("%Y-%m"), []).append(record)
    credits: dict[str, float] = {}
    since, until = _epoch(first), _epoch(last) + DAY_SECONDS
    for breach in repository.breaches(slo.key, since=since, until=until):
        if breach.credit_pct is not None:
            month = dt.datetime.fromtimestamp(breach.started_at, dt.UTC).strftime("%Y-%m")
            credits[month] = credits.get(month, 0.0) + breach.credit_pct
    out = []
    for month, days in by_month.items():
        up = sum(d.uptime_minutes for d in days)
        down = sum(d.downtime_minutes for d in days)
        compliance = percentage(up, down)
        out.append(
            MonthlyCompliance(
                month=month,
                compliance_percentage=compliance,
                target_percentage=days[0].target_percentage,
                uptime_minutes=up,
                downtime_minutes=down,
                sla_breaches=sum(d.sla_breaches for d in days),
                credit_percentage=credit_owed(compliance, slo.credits),
                breach_credit_percentage=(
                    _capped(round(credits.get(month, 0.0), 6), slo.max_credit_pct)
                    if slo.credits
                    else None
                ),
            )
        )
    return out
