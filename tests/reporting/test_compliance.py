"""Daily and monthly compliance, checked against figures computed by hand."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from sloguard.exceptions import SLOFileError
from sloguard.reporting._sql import SQLHistory
from sloguard.reporting.compliance import credit_owed, daily_compliance, monthly_compliance
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
    for breach_id, state, at in [
        ("b1", "resolved", JAN10 + 60),
        ("b2", "open", JAN10 + 7200),
        ("w1", "warning", JAN10 + 9000),  # a near miss, not an SLA breach
        ("b3", "resolved", JAN12 + 60),
    ]:
        repository.save_breach(Breach(breach_id, CAP, state, at, None, ()))  # type: ignore[arg-type]
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
        },
        {
            "month": "2025-02",
            "compliance_percentage": None,
            "target_percentage": 99.0,
            "uptime_minutes": 0,
            "downtime_minutes": 0,
            "sla_breaches": 0,
            "credit_percentage": None,
        },
    ]


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
