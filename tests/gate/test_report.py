"""Reports: the text table, JSON, and JUnit XML that CI systems parse."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from sloguard.gate import CheckReport, Measured, judge, render
from sloguard.slo import SLOFile

MEASURED = {
    "convert:pdf": Measured(p50_ms=40, p95_ms=250, p99_ms=150, availability=0.999, requests=50),
    "classify:email": Measured(p50_ms=5, p95_ms=9, p99_ms=12, availability=1.0, requests=2),
    "resize:image": Measured(p50_ms=1, requests=3),
}


@pytest.fixture
def report(slos: list[SLOFile]) -> CheckReport:
    return judge(slos, MEASURED)


def test_the_text_table_shows_each_capability_against_its_targets(report: CheckReport) -> None:
    lines = render(report, "text").splitlines()
    header, email, pdf, image = lines[:4]
    assert header.split() == [
        "capability", "requests", "p50", "ms", "p95", "ms", "p99", "ms", "availability", "status"
    ]  # fmt: skip
    assert email.split()[:6] == [
        "classify:email",
        "2",
        "5.0/20",
        "9.0/60",
        "12.0/120",
        "100.00%/99.5%",
    ]
    assert email.endswith("insufficient data (2 < 5 requests)")
    assert pdf.split() == [
        "convert:pdf",
        "50",
        "40.0/50",
        "250.0/100",
        "150.0/200",
        "99.90%/99%",
        "VIOLATED",
    ]
    assert image.split()[:3] == ["resize:image", "3", "1.0"]
    assert image.endswith("unchecked (no SLO file)")
    assert lines[5:] == [
        "violations:",
        "  convert:pdf: p95 latency 250ms > target 100ms",
        "",
        "1 violated, 1 insufficient data, 1 unchecked: FAIL",
    ]


def test_json_carries_measurements_targets_and_violations(report: CheckReport) -> None:
    document = json.loads(render(report, "json"))
    assert document["passed"] is False
    assert document["summary"] == {"ok": 0, "violated": 1, "insufficient data": 1, "unchecked": 1}
    pdf = next(c for c in document["capabilities"] if c["capability"] == "convert:pdf")
    assert pdf["status"] == "violated"
    assert pdf["measured"]["p95_ms"] == 250
    assert pdf["targets"] == {"p50_ms": 50, "p95_ms": 100, "p99_ms": 200, "availability": 0.99}
    assert pdf["violations"] == ["p95 latency 250ms > target 100ms"]
    image = next(c for c in document["capabilities"] if c["capability"] == "resize:image")
    assert image["targets"] is None


@pytest.mark.parametrize("fail_on_insufficient_data", [False, True])
def test_junit_xml_parses_with_one_testcase_per_capability(
    slos: list[SLOFile], fail_on_insufficient_data: bool
) -> None:
    report = judge(slos, MEASURED, fail_on_insufficient_data=fail_on_insufficient_data)
    root = ET.fromstring(render(report, "junit"))
    assert root.tag == "testsuites"
    [suite] = root
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert sorted(cases) == ["classify:email", "convert:pdf", "resize:image"]
    failure = cases["convert:pdf"].find("failure")
    assert failure is not None
    assert failure.get("message") == "p95 latency 250ms > target 100ms"
    assert cases["resize:image"].find("skipped") is not None
    email = cases["classify:email"]
    if fail_on_insufficient_data:
        assert email.find("failure") is not None
        assert (suite.get("failures"), suite.get("skipped")) == ("2", "1")
    else:
        assert email.find("skipped") is not None
        assert (suite.get("failures"), suite.get("skipped")) == ("1", "2")
    assert suite.get("tests") == "3"
    system_out = cases["convert:pdf"].find("system-out")
    assert system_out is not None
    assert "p95 ms: 250.0/100" in (system_out.text or "")


def test_junit_escapes_what_it_quotes(slos: list[SLOFile]) -> None:
    odd = {"a:<b&c>": Measured(requests=1)}
    root = ET.fromstring(render(judge(slos, odd), "junit"))
    assert "a:<b&c>" in [case.get("name") for case in root.iter("testcase")]
