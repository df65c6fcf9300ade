"""SLO files and live statuses for the breach and alert tests, built as the manager builds them."""

from __future__ import annotations

from typing import Any

from sloguard.slo import OutcomeCounter, SLOFile, SLOStatus, budget_status
from sloguard.slo.compliance import check_compliance

DAY = 86_400.0
NOW = 1_764_000_000.0  # 2025-11-24T16:00:00Z: a wall-clock time, as reports use


def make_slo(
    *,
    p50: float = 50,
    p95: float = 100,
    p99: float = 200,
    target: float = 0.999,
    alerts: tuple[tuple[float, str], ...] = ((0.5, "slack"), (0.9, "pagerduty")),
    min_samples: int = 20,
    verb: str = "convert",
    name: str = "document_to_pdf",
) -> SLOFile:
    data: dict[str, Any] = {
        "capability": {"verb": verb, "name": name},
        "slo": {
            "latency": {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99},
            "availability": {"target": target},
            "error_budget": {"alerts": [{"threshold": t, "channel": c} for t, c in alerts]},
        },
        "shedding": {"min_samples": min_samples},
    }
    return SLOFile.model_validate(data)


def make_status(
    slo: SLOFile,
    *,
    p50: float | None = 10.0,
    p95: float | None = 50.0,
    p99: float | None = 100.0,
    availability: float | None = 1.0,
    requests: int = 100,
    shedding: bool = False,
    counter: OutcomeCounter | None = None,
    now: float = NOW,
) -> SLOStatus:
    """A status whose compliance is judged as the manager judges it; budget from ``counter``."""
    metrics = {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "availability": availability}
    compliant, violations = check_compliance(slo, metrics)
    return SLOStatus(
        capability=slo.key,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        availability=availability,
        requests=requests,
        errors=round(requests * (1 - availability)) if availability is not None else 0,
        compliant=compliant,
        violations=tuple(violations),
        shedding=shedding,
        window_seconds=60.0,
        budget=budget_status(slo, counter, now),
    )
