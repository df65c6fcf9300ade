"""The names of the Prometheus metrics sloguard exports, in one place.

The metrics code registers these names; the generated alert rules and Grafana
dashboard query them. A query may only name a metric listed here (a test checks
every generated expression against :func:`series_names`).
"""

from __future__ import annotations

REQUESTS_TOTAL = "sloguard_requests_total"
"""Counter ``{capability, priority, outcome}``: requests that reached the app."""
REQUEST_DURATION_SECONDS = "sloguard_request_duration_seconds"
"""Histogram ``{capability}``; its buckets include every SLO's latency targets."""
SHED_TOTAL = "sloguard_shed_total"
"""Counter ``{capability, priority, dry_run}``: requests refused by admission."""
IDEMPOTENCY_EVENTS_TOTAL = "sloguard_idempotency_events_total"
"""Counter ``{event}``: hit, miss, conflict, mismatch, released, stored, too_large."""
IDEMPOTENCY_ENTRIES = "sloguard_idempotency_entries"
"""Gauge: stored responses in the idempotency store."""
IDEMPOTENCY_BYTES = "sloguard_idempotency_bytes"
"""Gauge: bytes held by the idempotency store's responses."""
SLO_COMPLIANT = "sloguard_slo_compliant"
"""Gauge ``{capability}``: 1 when the live window meets the SLO."""
SHEDDING_ACTIVE = "sloguard_shedding_active"
"""Gauge ``{capability}``: 1 while the admission policy refuses requests."""
ERROR_BUDGET_REMAINING_RATIO = "sloguard_error_budget_remaining_ratio"
"""Gauge ``{capability}``: share of the month's error budget left."""
BURN_RATE = "sloguard_burn_rate"
"""Gauge ``{capability, window}``: error-budget burn rate, window 5m, 1h or 6h."""
REPORT_FLUSH_ERRORS_TOTAL = "sloguard_report_flush_errors_total"
"""Counter: flushes of SLO history to the report store that failed."""
REPORT_ROWS_DROPPED_TOTAL = "sloguard_report_rows_dropped_total"
"""Counter: minute rows of SLO history dropped because the retry backlog was full."""

METRIC_NAMES: tuple[str, ...] = (
    REQUESTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    SHED_TOTAL,
    IDEMPOTENCY_EVENTS_TOTAL,
    IDEMPOTENCY_ENTRIES,
    IDEMPOTENCY_BYTES,
    SLO_COMPLIANT,
    SHEDDING_ACTIVE,
    ERROR_BUDGET_REMAINING_RATIO,
    BURN_RATE,
    REPORT_FLUSH_ERRORS_TOTAL,
    REPORT_ROWS_DROPPED_TOTAL,
)
"""Every metric sloguard exports, as given to prometheus-client."""

HISTOGRAMS: tuple[str, ...] = (REQUEST_DURATION_SECONDS,)
"""The histograms among :data:`METRIC_NAMES`; Prometheus stores each as three series."""

HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def series_names() -> frozenset[str]:
    """The metric names a PromQL query can select: a histogram's ``_bucket``,
    ``_count`` and ``_sum`` series, every other metric under its own name."""
    names: set[str] = set()
    for name in METRIC_NAMES:
        if name in HISTOGRAMS:
            names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
        else:
            names.add(name)
    return frozenset(names)
