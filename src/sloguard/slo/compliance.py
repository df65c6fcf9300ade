"""Comparing measured metrics with an SLO's targets, in the seed's words."""

from __future__ import annotations

from collections.abc import Mapping

from sloguard.slo.schema import SLOFile

Metrics = Mapping[str, float | None]
"""Optional keys ``p50_ms``, ``p95_ms``, ``p99_ms`` and ``availability`` (a fraction);
a missing or None key is not checked, and other keys are ignored."""

_LATENCY_KEYS = ("p50_ms", "p95_ms", "p99_ms")


def check_compliance(slo: SLOFile, metrics: Metrics) -> tuple[bool, list[str]]:
    """Return ``(compliant, violations)``: one message per metric beyond its target.

    Messages read ``"p95 latency 250ms > target 100ms"`` and
    ``"availability 99.50% < target 99.90%"``. Equal to the target is compliant.
    """
    violations: list[str] = []
    latency = slo.slo.latency
    for key in _LATENCY_KEYS:
        value = metrics.get(key)
        target: float = getattr(latency, key)
        if value is not None and value > target:
            name = key.removesuffix("_ms")
            measured, wanted = _pair(value, target, digits=0)
            violations.append(f"{name} latency {measured}ms > target {wanted}ms")
    availability = metrics.get("availability")
    target = slo.slo.availability.target
    if availability is not None and availability < target:
        measured, wanted = _pair(availability * 100, target * 100, digits=2)
        violations.append(f"availability {measured}% < target {wanted}%")
    return not violations, violations


def _pair(value: float, target: float, digits: int) -> tuple[str, str]:
    """Format both numbers with ``digits`` decimals, more when the target needs them
    (99.995) or when ``digits`` would print the same text for both (100.04 > 100)."""
    while digits < 6 and abs(round(target, digits) - target) > 1e-9:
        digits += 1
    while digits < 6 and f"{value:.{digits}f}" == f"{target:.{digits}f}":
        digits += 1
    return f"{value:.{digits}f}", f"{target:.{digits}f}"
