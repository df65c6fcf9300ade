"""The Markdown incident report of one breach: timeline, violations, impact, budget spent."""

from __future__ import annotations

import datetime as dt
import math

from sloguard.reporting.records import DAY_SECONDS, Alert, Breach, HistoryPoint
from sloguard.reporting.repository import HistoryRepository
from sloguard.slo.schema import SLOFile

MAX_TIMELINE_ROWS = 120
_MONTH = 30 * DAY_SECONDS


def iso(t: float) -> str:
    """Unix seconds as ISO 8601 UTC, to the second."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def targets_text(slo: SLOFile) -> str:
    """``p95 ≤ 100 ms, p99 ≤ 200 ms, availability ≥ 99.9%, ...``: every target the SLO sets."""
    spec = slo.slo
    parts = [
        f"{key.removesuffix('_ms')} ≤ {ms:g} ms"
        for key, ms in spec.latency.targets().items()
        if ms is not None
    ]
    parts.append(f"availability ≥ {spec.availability.target * 100:g}%")
    if spec.error_rate is not None:
        parts.append(f"error rate ≤ {spec.error_rate.max_pct:g}%")
    if spec.throughput is not None:
        parts.append(f"throughput ≥ {spec.throughput.min_rps:g} rps")
    tier = "" if slo.tier is None else f" (tier {slo.tier})"
    return ", ".join(parts) + tier


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h " if hours else "") + f"{minutes}m {secs}s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def incident_report(
    repository: HistoryRepository, breach: Breach, slo: SLOFile | None, now: float
) -> str:
    """The report as Markdown; reads the breach's minutes and alerts from ``repository``."""
    end = breach.ended_at if breach.ended_at is not None else now
    first_minute = int(breach.started_at // 60) * 60
    last_minute = math.ceil(end / 60) * 60
    span = max(60, last_minute - first_minute)
    step = max(1, math.ceil(span / 60 / MAX_TIMELINE_ROWS)) * 60
    points = repository.history(breach.capability, first_minute, last_minute, step)
    alerts = [
        a
        for a in repository.alerts(breach.capability, since=breach.started_at)
        if a.fired_at <= end
    ]
    requests = sum(p.requests for p in points)
    errors = sum(p.errors for p in points)
    shed = sum(p.shed for p in points)

    state = {"open": "open (ongoing)", "resolved": "resolved", "warning": "warning"}[breach.state]
    lines = [
        f"# Incident report: `{breach.capability}`, breach `{breach.id}`",
        "",
        f"- **Status:** {state}",
        f"- **Started:** {iso(breach.started_at)}",
        f"- **Ended:** {iso(breach.ended_at) if breach.ended_at is not None else 'not yet'}",
        f"- **Duration:** {_duration(end - breach.started_at)}"
        + ("" if breach.ended_at is not None else " so far"),
    ]
    if breach.severity is not None:
        lines.append(f"- **Severity:** {breach.severity}")
    if slo is not None:
        lines.append(f"- **SLO:** {targets_text(slo)}")
    if breach.credit_pct is not None:
        cap = None if slo is None else slo.max_credit_pct
        limit = "" if cap is None else f" (at most {cap:g}% a breach)"
        lines.append(f"- **Service credit:** {breach.credit_pct:g}%{limit}")
    lines += ["", "## Violations", ""]
    lines += [f"- {v}" for v in breach.violations] or ["- none recorded"]
    if breach.worst:
        lines += ["", "Worst values seen:", "", "| measure | worst |", "| --- | --- |"]
        for measure, value in sorted(breach.worst.items()):
            shown = f"{value * 100:.3f}%" if measure == "availability" else _ms(value)
            lines.append(f"| {measure} | {shown} |")
    lines += ["", "## Impact", ""]
    lines += _impact(repository, breach, slo, end, requests, errors, shed)
    lines += ["", "## Timeline", ""]
    lines += _timeline(breach, points, alerts, step)
    return "\n".join(lines) + "\n"


def _impact(
    repository: HistoryRepository,
    breach: Breach,
    slo: SLOFile | None,
    end: float,
    requests: int,
    errors: int,
    shed: int,
) -> list[str]:
    lines = [
        f"- **Requests affected:** {requests} served during the breach, {errors} of them "
        f"failed; {shed} refused by load shedding",
    ]
    if slo is None:
        lines.append("- **Error budget spent:** unknown (the capability has no SLO file now)")
        return lines
    month_since = int(end - _MONTH) // 60 * 60
    month = repository.history(breach.capability, month_since, int(end // 60 + 1) * 60, _MONTH)
    month_requests = sum(p.requests for p in month)
    allowed = slo.budget_fraction * month_requests
    if allowed > 0:
        spent = f"{100.0 * errors / allowed:.2f}% of the month's error budget"
        detail = f"{errors} errors of {allowed:.1f} allowed over {month_requests} requests"
        lines.append(f"- **Error budget spent:** {spent} ({detail} in the 30 days to its end)")
    else:
        lines.append("- **Error budget spent:** none measurable (no requests in the month)")
    return lines


def _timeline(
    breach: Breach, points: list[HistoryPoint], alerts: list[Alert], step: int
) -> list[str]:
    events: list[tuple[float, str]] = [(breach.started_at, "breach started")]
    events += [(a.fired_at, f"alert ({a.severity}, {a.channel}): {a.summary}") for a in alerts]
    if breach.ended_at is not None:
        events.append((breach.ended_at, "breach resolved"))
    lines = [f"- {iso(t)}: {what}" for t, what in sorted(events)]
    if not points:
        return [*lines, "", "No minute history was recorded during the breach."]
    unit = "minute" if step == 60 else f"{step // 60} minutes"
    lines += [
        "",
        f"Per {unit} (all replicas):",
        "",
        "| from | requests | errors | availability | p95 | p99 | shed | non-compliant minutes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in points:
        availability = "-" if p.availability is None else f"{p.availability * 100:.2f}%"
        lines.append(
            f"| {iso(p.start)} | {p.requests} | {p.errors} | {availability} | {_ms(p.p95_ms)} "
            f"| {_ms(p.p99_ms)} | {p.shed} | {p.downtime_minutes} |"
        )
    return lines
