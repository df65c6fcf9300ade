from __future__ import annotations

from pathlib import Path

import pytest

from sloguard.slo import SLOFile, check_compliance, load_slo_file


@pytest.fixture
def seed(state_slos: Path) -> SLOFile:
    return load_slo_file(state_slos / "convert_document_to_pdf.yml")


def test_seed_example_from_the_design(seed: SLOFile) -> None:
    assert check_compliance(seed, {"p95_ms": 250, "availability": 0.999}) == (
        False,
        ["p95 latency 250ms > target 100ms"],
    )


def test_every_metric_over_target_is_a_violation_in_the_seeds_words(seed: SLOFile) -> None:
    compliant, violations = check_compliance(
        seed, {"p50_ms": 60, "p95_ms": 250, "p99_ms": 201, "availability": 0.995}
    )
    assert compliant is False
    assert violations == [
        "p50 latency 60ms > target 50ms",
        "p95 latency 250ms > target 100ms",
        "p99 latency 201ms > target 200ms",
        "availability 99.50% < target 99.90%",
    ]


def test_on_target_is_compliant(seed: SLOFile) -> None:
    metrics = {"p50_ms": 50.0, "p95_ms": 100.0, "p99_ms": 200.0, "availability": 0.999}
    assert check_compliance(seed, metrics) == (True, [])


def test_missing_none_and_unknown_keys_are_not_checked(seed: SLOFile) -> None:
    assert check_compliance(seed, {}) == (True, [])
    assert check_compliance(seed, {"p95_ms": None, "availability": None}) == (True, [])
    assert check_compliance(seed, {"p90_ms": 10_000}) == (True, [])


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"p95_ms": 100.04}, "p95 latency 100.04ms > target 100.00ms"),
        ({"p95_ms": 104.26}, "p95 latency 104ms > target 100ms"),
        ({"availability": 0.99899}, "availability 99.899% < target 99.900%"),
        ({"availability": 0.5}, "availability 50.00% < target 99.90%"),
    ],
)
def test_numbers_print_with_enough_digits_to_differ(
    seed: SLOFile, metrics: dict[str, float], message: str
) -> None:
    assert check_compliance(seed, metrics) == (False, [message])


def test_target_with_more_digits_keeps_them(state_slos: Path, tmp_path: Path) -> None:
    text = (state_slos / "convert_document_to_pdf.yml").read_text(encoding="utf-8")
    text = text.replace("target: 0.999", "target: 0.99995").replace("    monthly_pct: 0.1\n", "")
    path = tmp_path / "x.yml"
    path.write_text(text, encoding="utf-8")
    slo = load_slo_file(path)
    assert check_compliance(slo, {"availability": 0.9999}) == (
        False,
        ["availability 99.990% < target 99.995%"],
    )


SLA = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p95_ms: 100}
  availability: {target: 0.99}
  error_rate: {max_pct: 0.5}
  throughput: {min_rps: 100}
"""


@pytest.fixture
def sla(tmp_path: Path) -> SLOFile:
    path = tmp_path / "sla.yml"
    path.write_text(SLA, encoding="utf-8")
    return load_slo_file(path)


@pytest.mark.parametrize(
    ("metrics", "violations"),
    [
        # p95 only: p50 and p99 have no target, so no value of theirs is a violation.
        ({"p50_ms": 10_000, "p95_ms": 100, "p99_ms": 10_000}, []),
        ({"p95_ms": 101}, ["p95 latency 101ms > target 100ms"]),
        # The error rate's own ceiling, tighter here than availability's 1%.
        ({"availability": 0.995}, []),
        ({"availability": 0.994}, ["error rate 0.60% > target 0.50%"]),
        ({"error_rate": 0.006}, ["error rate 0.60% > target 0.50%"]),
        (
            {"availability": 0.98},
            ["availability 98.00% < target 99.00%", "error rate 2.00% > target 0.50%"],
        ),
        # Throughput: a floor while demand reaches it; not judged below that demand.
        ({"throughput_rps": 100, "demand_rps": 150}, []),
        ({"throughput_rps": 80, "demand_rps": 150}, ["throughput 80.0 rps < target 100.0 rps"]),
        ({"throughput_rps": 80, "demand_rps": 99}, []),
        ({"throughput_rps": 80}, []),
    ],
)
def test_each_new_target_met_and_violated(
    sla: SLOFile, metrics: dict[str, float], violations: list[str]
) -> None:
    assert check_compliance(sla, metrics) == (not violations, violations)


def test_severity_counts_the_new_targets(sla: SLOFile) -> None:
    from sloguard.slo.compliance import severity

    assert severity(sla, {"p95_ms": 50}) == 0.5
    assert severity(sla, {"error_rate": 0.01}) == pytest.approx(2.0)
    assert severity(sla, {"throughput_rps": 50, "demand_rps": 200}) == 2.0
    assert severity(sla, {"throughput_rps": 50, "demand_rps": 60}) == 0.0  # not judged
