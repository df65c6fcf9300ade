"""Verdicts: ok, violated (in the SLO manager's words), insufficient data, unchecked."""

from __future__ import annotations

from pathlib import Path

import pytest

from sloguard import SLOManager
from sloguard.gate import Measured, judge
from sloguard.slo import SLOFile

GOOD = Measured(p50_ms=40, p95_ms=100, p99_ms=150, availability=0.99, requests=50)
SLOW = Measured(p50_ms=40, p95_ms=250, p99_ms=150, availability=0.95, requests=50)


def test_equal_to_the_target_complies_and_beyond_it_violates(slos: list[SLOFile]) -> None:
    report = judge(slos, {"convert:pdf": GOOD, "classify:email": SLOW})
    verdicts = {v.capability: v for v in report.verdicts}
    assert verdicts["convert:pdf"].status == "ok"
    assert verdicts["convert:pdf"].violations == ()
    assert verdicts["classify:email"].status == "violated"
    assert verdicts["classify:email"].violations == (
        "p50 latency 40ms > target 20ms",
        "p95 latency 250ms > target 60ms",
        "p99 latency 150ms > target 120ms",
        "availability 95.00% < target 99.50%",
    )
    assert not report.passed
    assert report.failures == (verdicts["classify:email"],)
    assert report.summary() == "1 violated, 1 ok: FAIL"


def test_the_violations_are_the_slo_managers(slo_dir: Path, slos: list[SLOFile]) -> None:
    manager = SLOManager(slo_dir)
    report = judge(slos, {"classify:email": SLOW})
    expected = manager.check_compliance("classify:email", SLOW.as_metrics())
    assert (False, list(report.verdicts[0].violations)) == expected


def test_too_few_requests_are_insufficient_data_and_pass_unless_asked(
    slos: list[SLOFile],
) -> None:
    few = Measured(p50_ms=900, p95_ms=900, p99_ms=900, availability=0.5, requests=4)
    report = judge(slos, {"classify:email": few})  # email needs 5 (its min_samples)
    verdicts = {v.capability: v for v in report.verdicts}
    assert verdicts["classify:email"].status == "insufficient data"
    assert verdicts["classify:email"].min_requests == 5
    assert verdicts["convert:pdf"].status == "insufficient data"  # not measured at all
    assert verdicts["convert:pdf"].measured is None
    assert verdicts["convert:pdf"].min_requests == 20
    assert report.passed
    assert report.summary() == "2 insufficient data: PASS"
    strict = judge(slos, {"classify:email": few}, fail_on_insufficient_data=True)
    assert not strict.passed
    assert len(strict.failures) == 2


@pytest.mark.parametrize(("min_requests", "status"), [(4, "violated"), (5, "insufficient data")])
def test_min_requests_overrides_each_slos_own(
    slos: list[SLOFile], min_requests: int, status: str
) -> None:
    few = Measured(p50_ms=900, availability=1.0, requests=4)
    report = judge(slos, {"classify:email": few}, min_requests=min_requests)
    assert report.verdicts[0].status == status


def test_a_capability_without_an_slo_file_is_unchecked_not_failed(slos: list[SLOFile]) -> None:
    report = judge(slos, {"resize:image": SLOW, "convert:pdf": GOOD})
    verdicts = {v.capability: v.status for v in report.verdicts}
    assert verdicts == {
        "classify:email": "insufficient data",
        "convert:pdf": "ok",
        "resize:image": "unchecked",
    }
    assert report.passed
    assert [v.capability for v in report.verdicts] == sorted(verdicts)


def test_a_seed_file_without_a_request_count_is_insufficient_data(
    tmp_path: Path, slos: list[SLOFile]
) -> None:
    from sloguard.gate import read_metrics_file
    from sloguard.gate.report import render_text

    path = tmp_path / "seed.json"
    path.write_text('{"classify:email": {"p95_ms": 900, "availability": 0.5}}', encoding="utf-8")
    report = judge(slos, read_metrics_file(path))
    verdict = {v.capability: v for v in report.verdicts}["classify:email"]
    assert verdict.status == "insufficient data"
    assert verdict.measured is not None
    assert verdict.measured.requests is None
    assert "the file gives no request count" in render_text(report)
    assert report.passed
    assert not judge(slos, read_metrics_file(path), fail_on_insufficient_data=True).passed
