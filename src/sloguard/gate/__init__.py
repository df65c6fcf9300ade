"""The CI gate: judge measured latencies and availability against SLO files.

``sloguard check`` and the pytest plugin both read or build a metrics file
(``{capability: Measured}``), :func:`judge` it against the SLO files, and
:func:`render` the verdicts as a text table, JSON or JUnit XML.
"""

from sloguard.gate.exposition import histogram_quantile, parse_exposition
from sloguard.gate.measured import Measured, MetricsDocument, metrics_json_schema
from sloguard.gate.metrics_file import (
    METRICS_FORMATS,
    MetricsFormat,
    read_metrics_file,
    write_metrics_file,
)
from sloguard.gate.report import REPORT_FORMATS, ReportFormat, render
from sloguard.gate.verdict import CheckReport, Status, Verdict, judge

__all__ = [
    "METRICS_FORMATS",
    "REPORT_FORMATS",
    "CheckReport",
    "Measured",
    "MetricsDocument",
    "MetricsFormat",
    "ReportFormat",
    "Status",
    "Verdict",
    "histogram_quantile",
    "judge",
    "metrics_json_schema",
    "parse_exposition",
    "read_metrics_file",
    "render",
    "write_metrics_file",
]
