"""Comparing measured metrics with an SLO's targets, in the seed's words."""

from __future__ import annotations

from collections.abc import Mapping

from sloguard.slo.schema import SLOFile

Metrics = Mapping[str, float | None]
"""Optional keys ``p50_ms``, ``p95_ms``, ``p99_ms``, ``availability`` (a fraction),
``error_rate`` (a fraction; default ``1 - availability``), ``throughput_rps``
(successful requests per second) and ``demand_rps`` (requests arriving per second,
refused ones included); a missing or None key is not checked, and other keys are
ignored. Throughput is judged only when both of its keys are given."""

_LATENCY_KEYS = ("p50_ms", "p95_ms", "p99_ms")


def check_compliance(slo: SLOFile, metrics: Metrics) -> tuple[bool, list[str]]:
    """Return ``(compliant, violations)``: one message per metric beyond its target.

    Messages read ``"p95 latency 250ms > target 100ms"``,
    ``"availability 99.50% < target 99.90%"``, ``"error rate 0.50% > target 0.10%"``
    and ``"throughput 80.0 rps < target 100.0 rps"``. Equal to the target is compliant.
    """
    violations: list[str] = []
    for key, target in slo.slo.latency.targets().items():
        value = metrics.get(key)
        if value is not None and target is not None and value > target:
            name = key.removesuffix("_ms")
            measured, wanted = _pair(value, target, digits=0)
            violations.append(f"{name} latency {measured}ms > target {wanted}ms")
    availability = metrics.get("availability")
    target = slo.slo.availability.target
    if availability is not None and availability < target:
        measured, wanted = _pair(availability * 100, target * 100, digits=2)
        violations.append(f"availability {measured}% < target {wanted}%")
    error_rate = _error_rate(metrics)
    ceiling = slo.slo.error_rate
    if error_rate is not None and ceiling is not None and error_rate * 100 > ceiling.max_pct:
        measured, wanted = _pair(error_rate * 100, ceiling.max_pct, digits=2)
        violations.append(f"error rate {measured}% > target {wanted}%")
    throughput = judged_throughput(slo, metrics)
    floor = slo.slo.throughput
    if throughput is not None and floor is not None and throughput < floor.min_rps:
        measured, wanted = _pair(throughput, floor.min_rps, digits=1)
        violations.append(f"throughput {measured} rps < target {wanted} rps")
    return not violations, violations


def judged_throughput(slo: SLOFile, metrics: Metrics) -> float | None:
    """The throughput to judge against the SLO's floor: None without a floor, without
    both measures, or while demand is below the floor (too little asked to tell)."""
    floor = slo.slo.throughput
    throughput, demand = metrics.get("throughput_rps"), metrics.get("demand_rps")
    if floor is None or throughput is None or demand is None or demand < floor.min_rps:
        return None
    return throughput


def severity(slo: SLOFile, metrics: Metrics) -> float:
    """How far ``metrics`` are from the targets of ``slo``, the worst measure's ratio:
    ``observed / target`` for latency, ``error rate / allowed`` for availability and
    error rate, ``target / observed`` for a judged throughput. 1.0 is exactly on
    target, 2.0 twice over; 0.0 with nothing measured."""
    worst = 0.0
    for key, target in slo.slo.latency.targets().items():
        observed = metrics.get(key)
        if observed is not None and target is not None:
            worst = max(worst, observed / target)
    availability = metrics.get("availability")
    if availability is not None:
        worst = max(worst, (1.0 - availability) / slo.budget_fraction)
    error_rate = _error_rate(metrics)
    if error_rate is not None and slo.slo.error_rate is not None:
        worst = max(worst, error_rate * 100 / slo.slo.error_rate.max_pct)
    throughput = judged_throughput(slo, metrics)
    if throughput is not None and slo.slo.throughput is not None:
        floor = slo.slo.throughput.min_rps
        worst = max(worst, floor / throughput if throughput > 0 else float("inf"))
    return worst


def _error_rate(metrics: Metrics) -> float | None:
    rate = metrics.get("error_rate")
    if rate is None:
        availability = metrics.get("availability")
        # Rounded as SLOFile.budget_fraction is: 1 - 0.995 is 0.005, not 0.0050000000000000044.
        rate = None if availability is None else round(1.0 - availability, 12)
    return rate


def _pair(value: float, target: float, digits: int) -> tuple[str, str]:
    """Format both numbers with ``digits`` decimals, more when the target needs them
    (99.995) or when ``digits`` would print the same text for both (100.04 > 100)."""
    while digits < 6 and abs(round(target, digits) - target) > 1e-9:
        digits += 1
    while digits < 6 and f"{value:.{digits}f}" == f"{target:.{digits}f}":
        digits += 1
    return f"{value:.{digits}f}", f"{target:.{digits}f}"
