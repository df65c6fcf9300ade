"""Daily and monthly compliance, checked against figures computed by hand."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from sloguard.exceptions import SLOFileError
from sloguard.reporting._sql import SQLHistory
from sloguard.reporting.compliance import (
    breach_credit,
    credit_owed,
    daily_compliance,
    monthly_compliance,
)
from sloguard.reporting.records import Breach, MinuteAggregate
from sloguard.slo.loader import load_slo_file
from sloguard.slo.schema import CreditBracket, SLOFile
from tests.reporting.conftest import write_slo

CAP = "convert:pdf"
JAN10 = 1_736_467_200  # 2025-01-10T00:00:00Z
JAN12 = JAN10 + 2 * 86_400
CREDITS = """\
credits:
  - {below_pct: 99.9, credit_pct: 10}
  - {below_pct: 99, credit_pct: 25}
"""


def minute(start: int, i: int, *, replica: str = "a", compliant: bool = True) -> MinuteAggregate:
    return MinuteAggregate(CAP, start + 60 * i, replica, 10, 0, 0, 5.0, 9.0, 12.0, compliant)


@pytest.fixture
def slo(tmp_path: Path) -> SLOFile:
    return load_slo_file(write_slo(tmp_path, extra=CREDITS))


@pytest.fixture
def history(repository: SQLHistory) -> SQLHistory:
    # Jan 10: 200 minutes; 0-2 non-compliant, and minute 10 non-compliant on replica b only.
    rows = [minute(JAN10, i, compliant=i >= 3) for i in range(200)]
    rows.append(minute(JAN10, 10, replica="b", compliant=False))
    # Jan 11: nothing recorded. Jan 12: 1,000 compliant minutes.
    rows += [minute(JAN12, i) for i in range(1000)]
    repository.write_minutes(rows)
    for breach_id, state, at, credit in [
        ("b1", "resolved", JAN10 + 60, 10.0),
        ("b2", "open", JAN10 + 7200, None),
        ("w1", "warning", JAN10 + 9000, None),  # a near miss, not an SLA breach
        ("b3", "resolved", JAN12 + 60, 25.0),
    ]:
        repository.save_breach(
            Breach(breach_id, CAP, state, at, None, (), credit_pct=credit)  # type: ignore[arg-type]
        )
    return repository


def test_daily_records(history: SQLHistory, slo: SLOFile) -> None:
    records = daily_compliance(history, slo, dt.date(2025, 1, 10), dt.date(2025, 1, 12))
    assert [r.to_json() for r in records] == [
        {
            "date": "2025-01-10",
            "compliance_percentage": 98.0,  # 196 of 200 minutes
            "target_percentage": 99.0,
            "uptime_minutes": 196,
            "downtime_minutes": 4,
            "sla_breaches": 2,
            "requests": 2010,
            "errors": 0,
        },
        {
            "date": "2025-01-11",
            "compliance_percentage": None,
            "target_percentage": 99.0,
            "uptime_minutes": 0,
            "downtime_minutes": 0,
            "sla_breaches": 0,
            "requests": 0,
            "errors": 0,
        },
        {
            "date": "2025-01-12",
            "compliance_percentage": 100.0,
            "target_percentage": 99.0,
            "uptime_minutes": 1000,
            "downtime_minutes": 0,
            "sla_breaches": 1,
            "requests": 10_000,
            "errors": 0,
        },
    ]


def test_daily_records_read_rolled_up_days_the_same(history: SQLHistory, slo: SLOFile) -> None:
    days = (dt.date(2025, 1, 10), dt.date(2025, 1, 12))
    before = daily_compliance(history, slo, *days)
    history.prune(JAN12 + 40 * 86_400)  # everything is now day rows
    assert history.minute_rows(CAP, JAN10, JAN12 + 86_400) == []
    assert daily_compliance(history, slo, *days) == before


def test_monthly_summary_with_credits(history: SQLHistory, slo: SLOFile) -> None:
    months = monthly_compliance(history, slo, dt.date(2025, 1, 1), dt.date(2025, 2, 1))
    assert [m.to_json() for m in months] == [
        {
            "month": "2025-01",
            "compliance_percentage": 99.6667,  # 1,196 of 1,200 minutes
            "target_percentage": 99.0,
            "uptime_minutes": 1196,
            "downtime_minutes": 4,
            "sla_breaches": 3,
            "credit_percentage": 10.0,  # below 99.9%, not below 99%
            "breach_credit_percentage": 35.0,  # b1's 10% and b3's 25%
        },
        {
            "month": "2025-02",
            "compliance_percentage": None,
            "target_percentage": 99.0,
            "uptime_minutes": 0,
            "downtime_minutes": 0,
            "sla_breaches": 0,
            "credit_percentage": None,
            "breach_credit_percentage": 0.0,
        },
    ]


def test_the_months_breach_credits_are_capped(history: SQLHistory, tmp_path: Path) -> None:
    capped = load_slo_file(write_slo(tmp_path / "capped", extra=CREDITS + "max_credit_pct: 30\n"))
    [january] = monthly_compliance(history, capped, dt.date(2025, 1, 1), dt.date(2025, 1, 1))
    assert january.breach_credit_percentage == 30.0  # 35 owed, capped


@pytest.mark.parametrize(
    ("duration_s", "cap", "credit"),
    [
        (2_400, None, 0.0),  # 40 min of 31 days: 99.9104%, above every bracket
        (2_700, None, 10.0),  # 45 min: 100 * (1 - 2,700 / 2,678,400) = 99.8992% < 99.9
        (28_800, None, 25.0),  # 8 h: 98.9247% < 99
        (28_800, 20, 20.0),  # ... capped by max_credit_pct
    ],
)
def test_a_breach_earns_the_credit_of_its_own_downtime_in_its_month(
    tmp_path: Path, duration_s: float, cap: float | None, credit: float
) -> None:
    extra = CREDITS + ("" if cap is None else f"max_credit_pct: {cap}\n")
    slo = load_slo_file(write_slo(tmp_path, extra=extra))
    assert breach_credit(slo, JAN10, JAN10 + duration_s) == credit


def test_no_brackets_no_credit(tmp_path: Path) -> None:
    slo = load_slo_file(write_slo(tmp_path))
    assert breach_credit(slo, JAN10, JAN10 + 86_400) is None


def test_a_resolved_breach_carries_its_credit_and_severity(tmp_path: Path) -> None:
    from sloguard.reporting.breaches import BreachTracker
    from tests.reporting.statuses import make_status

    slo = load_slo_file(write_slo(tmp_path, extra=CREDITS + "max_credit_pct: 20\n"))
    tracker = BreachTracker(open_after_s=0, resolve_after_s=60)
    bad = make_status(slo, p95=250.0, now=JAN10)  # 2.5x the 100 ms target
    tracker.observe(bad, slo, JAN10)
    for at in range(JAN10 + 60, JAN10 + 8 * 3_600, 60):  # 8 h of violation
        tracker.observe(bad, slo, at)
    ended = JAN10 + 8 * 3_600
    tracker.observe(make_status(slo, now=ended), slo, ended)
    [event] = tracker.observe(make_status(slo, now=ended + 60), slo, ended + 60)
    breach = event.data["breach"]
    assert (breach.state, breach.ended_at, breach.severity) == ("resolved", ended, "critical")
    assert breach.credit_pct == 20.0  # 25% owed for 8 h, capped at 20%


def test_credit_brackets() -> None:
    brackets = (
        CreditBracket(below_pct=99.9, credit_pct=10),
        CreditBracket(below_pct=99, credit_pct=25),
    )
    assert credit_owed(99.95, brackets) == 0.0
    assert credit_owed(99.9, brackets) == 0.0  # "under 99.9%" excludes 99.9
    assert credit_owed(99.5, brackets) == 10.0
    assert credit_owed(98.0, brackets) == 25.0
    assert credit_owed(98.0, ()) is None
    assert credit_owed(None, brackets) is None


@pytest.mark.parametrize(
    ("credits", "message"),
    [
        ("[{below_pct: 99.9, credit_pct: 30}, {below_pct: 99, credit_pct: 25}]", "less than"),
        ("[{below_pct: 99, credit_pct: 10}, {below_pct: 99, credit_pct: 25}]", "two brackets"),
        ("[{below_pct: 101, credit_pct: 10}]", "credits[0].below_pct"),
        ("[{below_pct: '99', credit_pct: 10}]", "credits[0].below_pct"),
        ("[{below: 99, credit_pct: 10}]", "credits[0].below"),
    ],
)
def test_bad_credit_brackets_name_the_file_and_field(
    tmp_path: Path, credits: str, message: str
) -> None:
    path = write_slo(tmp_path, extra=f"credits: {credits}\n")
    with pytest.raises(SLOFileError) as caught:
        load_slo_file(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)
