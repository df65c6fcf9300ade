"""A check's verdicts as a text table, a JSON document or JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, Literal

from sloguard.gate.measured import Measured
from sloguard.gate.verdict import CheckReport, Verdict
from sloguard.slo.schema import SLOFile

ReportFormat = Literal["text", "json", "junit"]
REPORT_FORMATS: tuple[ReportFormat, ...] = ("text", "json", "junit")

_LATENCY_KEYS = ("p50_ms", "p95_ms", "p99_ms")
_HEADER = ("capability", "requests", "p50 ms", "p95 ms", "p99 ms", "availability", "status")


def render(report: CheckReport, report_format: ReportFormat) -> str:
    """``report`` in ``report_format``, ending with a newline."""
    renderers: dict[str, Callable[[CheckReport], str]] = {
        "text": render_text,
        "json": render_json,
        "junit": render_junit,
    }
    return renderers[report_format](report)


def render_text(report: CheckReport) -> str:
    """A table of each capability, measured against its targets (``measured/target``),
    then each violation, then the summary line."""
    rows = [_HEADER, *(_row(v) for v in report.verdicts)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = [_line(row, widths) for row in rows]
    details = [
        f"  {v.capability}: {violation}" for v in report.verdicts for violation in v.violations
    ]
    if details:
        lines += ["", "violations:", *details]
    lines += ["", report.summary()]
    return "\n".join(lines) + "\n"


def _line(row: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()


def _row(verdict: Verdict) -> tuple[str, ...]:
    measured, slo = verdict.measured, verdict.slo
    count = None if measured is None else measured.requests
    requests = "0" if measured is None else "-" if count is None else str(count)
    latencies = tuple(_latency_cell(measured, slo, key) for key in _LATENCY_KEYS)
    return (
        verdict.capability,
        requests,
        *latencies,
        _availability_cell(measured, slo),
        _status(verdict),
    )


def _latency_cell(measured: Measured | None, slo: SLOFile | None, key: str) -> str:
    value = None if measured is None else getattr(measured, key)
    shown = "-" if value is None else f"{value:.1f}"
    if slo is None:
        return shown
    target = getattr(slo.slo.latency, key)
    return shown if target is None else f"{shown}/{target:g}"


def _availability_cell(measured: Measured | None, slo: SLOFile | None) -> str:
    value = None if measured is None else measured.availability
    shown = "-" if value is None else f"{value * 100:.2f}%"
    if slo is None:
        return shown
    return f"{shown}/{slo.slo.availability.target * 100:g}%"


def _status(verdict: Verdict) -> str:
    if verdict.status == "violated":
        return "VIOLATED"
    if verdict.status == "insufficient data":
        if verdict.measured is not None and verdict.measured.requests is None:
            return "insufficient data (the file gives no request count)"
        return f"insufficient data ({_requests(verdict)} < {verdict.min_requests} requests)"
    if verdict.status == "unchecked":
        return "unchecked (no SLO file)"
    return "ok"


def _requests(verdict: Verdict) -> int:
    return 0 if verdict.measured is None else verdict.measured.requests or 0


def render_json(report: CheckReport) -> str:
    """``{"passed", "summary", "capabilities": [...]}``; measured values and targets
    in milliseconds and fractions, as in the metrics file and the SLO file."""
    document = {
        "passed": report.passed,
        "summary": {
            status: report.count(status)
            for status in ("ok", "violated", "insufficient data", "unchecked")
        },
        "capabilities": [_verdict_json(v) for v in report.verdicts],
    }
    return json.dumps(document, indent=2) + "\n"


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    targets = None
    if verdict.slo is not None:
        latency = verdict.slo.slo.latency
        targets = {key: getattr(latency, key) for key in _LATENCY_KEYS}
        targets["availability"] = verdict.slo.slo.availability.target
    return {
        "capability": verdict.capability,
        "status": verdict.status,
        "measured": None if verdict.measured is None else verdict.measured.model_dump(),
        "targets": targets,
        "violations": list(verdict.violations),
        "min_requests": verdict.min_requests,
    }


def render_junit(report: CheckReport) -> str:
    """One ``testcase`` per capability: a violation (or, when it fails the check,
    insufficient data) is a ``failure``; insufficient data and unchecked are ``skipped``."""
    failing = {v.capability for v in report.failures}
    suite = ET.Element(
        "testsuite",
        name="sloguard check",
        tests=str(len(report.verdicts)),
        failures=str(len(failing)),
        errors="0",
        skipped=str(
            sum(1 for v in report.verdicts if v.status != "ok" and v.capability not in failing)
        ),
    )
    for verdict in report.verdicts:
        case = ET.SubElement(suite, "testcase", classname="sloguard.slo", name=verdict.capability)
        if verdict.capability in failing:
            message = "; ".join(verdict.violations) or _status(verdict)
            failure = ET.SubElement(
                case, "failure", message=message, type=verdict.status.replace(" ", "_")
            )
            failure.text = "\n".join(verdict.violations) or _status(verdict)
        elif verdict.status != "ok":
            ET.SubElement(case, "skipped", message=_status(verdict))
        row = _row(verdict)
        cells = zip(_HEADER[1:-1], row[1:-1], strict=True)
        measured = ", ".join(f"{name}: {cell}" for name, cell in cells)
        ET.SubElement(case, "system-out").text = measured
    root = ET.Element("testsuites", name="sloguard check")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
