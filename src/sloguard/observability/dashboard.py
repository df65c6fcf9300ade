"""A Grafana dashboard (JSON model) for the capabilities of an SLO directory.

One collapsible row per capability: latency quantiles against the file's
targets, availability against its target, error budget remaining, burn rates,
shed rate by priority, requests by outcome, and the SLO state gauges; then one
row for the idempotency store (hit rate, events, size). Every query reads a
metric from :mod:`sloguard.observability.names` and nothing else, so the
dashboard works without the generated recording rules.

Import it in Grafana (Dashboards, New, Import) and pick the Prometheus data
source that scrapes sloguard; the ``datasource`` variable switches it later.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any, TextIO

from sloguard.observability.names import (
    BURN_RATE,
    ERROR_BUDGET_REMAINING_RATIO,
    IDEMPOTENCY_BYTES,
    IDEMPOTENCY_ENTRIES,
    IDEMPOTENCY_EVENTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    REQUESTS_TOTAL,
    SHED_TOTAL,
    SHEDDING_ACTIVE,
    SLO_COMPLIANT,
)
from sloguard.observability.rules import print_for_slos
from sloguard.slo.schema import SLOFile

Panel = dict[str, Any]

DASHBOARD_UID = "sloguard"
SCHEMA_VERSION = 39
"""Grafana's dashboard JSON schema version this model is written for (Grafana 10/11)."""

RATE = "$__rate_interval"
"""Grafana's rate window: at least four scrape intervals, whatever the zoom."""

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

_WIDTH = 24  # Grafana's grid is 24 columns wide
_HEIGHT = 8
_QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
_COLOURS = ("green", "yellow", "orange", "red")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


def _thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


class _Layout:
    """Hands out panel ids and grid positions, left to right, then down."""

    def __init__(self) -> None:
        self.next_id = 1
        self.x = 0
        self.y = 0

    def panel(self, width: int, height: int = _HEIGHT) -> dict[str, Any]:
        if self.x + width > _WIDTH:
            self.x, self.y = 0, self.y + height
        position = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.x += width
        panel_id = self.next_id
        self.next_id += 1
        return {"id": panel_id, "gridPos": position}

    def row(self, title: str) -> Panel:
        if self.x:
            self.x, self.y = 0, self.y + _HEIGHT
        position = {"h": 1, "w": _WIDTH, "x": 0, "y": self.y}
        self.y += 1
        panel_id = self.next_id
        self.next_id += 1
        return {
            "id": panel_id,
            "type": "row",
            "title": title,
            "collapsed": False,
            "gridPos": position,
            "panels": [],
        }


def _timeseries(
    layout: _Layout,
    title: str,
    targets: list[dict[str, Any]],
    *,
    unit: str,
    description: str,
    width: int = 8,
    thresholds: dict[str, Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Panel:
    defaults: dict[str, Any] = {"unit": unit}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if thresholds is not None:
        defaults["thresholds"] = thresholds
        # Targets drawn as dashed lines across the graph.
        defaults["custom"] = {"thresholdsStyle": {"mode": "dashed"}}
    return {
        **layout.panel(width),
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
    }


def capability_panels(slo: SLOFile, layout: _Layout) -> list[Panel]:
    """The panels of one capability's row."""
    cap = _quote(slo.key)
    latency = slo.slo.latency
    targets_ms = {
        name.removesuffix("_ms"): ms for name, ms in latency.targets().items() if ms is not None
    }
    availability = slo.slo.availability.target

    buckets = f"sum by (le) (rate({REQUEST_DURATION_SECONDS}_bucket{{capability={cap}}}[{RATE}]))"
    quantiles = [
        _target(
            f"histogram_quantile({q}, {buckets})",
            f"{name} (target {targets_ms[name]:g} ms)" if name in targets_ms else name,
            chr(ord("A") + i),
        )
        for i, (name, q) in enumerate(_QUANTILES)
    ]
    shown = ", ".join(f"{name} {ms:g} ms" for name, ms in targets_ms.items())
    steps = sorted({ms / 1000.0 for ms in targets_ms.values()})
    latency_thresholds = _thresholds(
        ("green", None), *((_COLOURS[i + 1], s) for i, s in enumerate(steps))
    )
    ok = f'sum(rate({REQUESTS_TOTAL}{{capability={cap},outcome="ok"}}[{RATE}]))'
    total = f"sum(rate({REQUESTS_TOTAL}{{capability={cap}}}[{RATE}]))"
    return [
        *_target_panels(slo, layout),
        _timeseries(
            layout,
            "Latency quantiles vs targets",
            quantiles,
            unit="s",
            description=(
                "p50/p95/p99 from the latency histogram; dashed lines are the SLO's targets "
                f"({shown})."
            ),
            thresholds=latency_thresholds,
            minimum=0,
        ),
        _timeseries(
            layout,
            "Availability",
            [_target(f"{ok}\n/\n{total}", "availability", "A")],
            unit="percentunit",
            description=(
                f"Share of requests that reached the app and succeeded; the dashed line is "
                f"the target ({availability:g})."
            ),
            thresholds=_thresholds(("red", None), ("green", availability)),
            maximum=1,
        ),
        _timeseries(
            layout,
            "Error budget remaining",
            [_target(f"{ERROR_BUDGET_REMAINING_RATIO}{{capability={cap}}}", "{{instance}}", "A")],
            unit="percentunit",
            description=(
                "Share of the month's error budget left, as each sloguard process sees it "
                "(negative once overspent)."
            ),
            thresholds=_thresholds(("red", None), ("yellow", 0.0), ("green", 0.5)),
        ),
        _timeseries(
            layout,
            "Burn rate",
            [_target(f"{BURN_RATE}{{capability={cap}}}", "{{window}} {{instance}}", "A")],
            unit="none",
            description=(
                "Error-budget burn rate per window (1 spends the budget in exactly a month; "
                "the page alerts start at 14.4 over 1h and 6 over 6h)."
            ),
            thresholds=_thresholds(("green", None), ("orange", 1.0), ("red", 14.4)),
            minimum=0,
        ),
        _timeseries(
            layout,
            "Shed rate by priority",
            [
                _target(
                    f"sum by (priority, dry_run) (rate({SHED_TOTAL}{{capability={cap}}}[{RATE}]))",
                    "{{priority}} (dry run: {{dry_run}})",
                    "A",
                )
            ],
            unit="reqps",
            description=(
                "Requests refused by priority load shedding; dry run: true counts the "
                "refusals a dry run would have made."
            ),
            minimum=0,
        ),
        _timeseries(
            layout,
            "Requests by outcome and priority",
            [
                _target(
                    f"sum by (outcome, priority) "
                    f"(rate({REQUESTS_TOTAL}{{capability={cap}}}[{RATE}]))",
                    "{{priority}} {{outcome}}",
                    "A",
                )
            ],
            unit="reqps",
            description="Requests that reached the app.",
            minimum=0,
        ),
        _timeseries(
            layout,
            "SLO state",
            [
                _target(f"{SLO_COMPLIANT}{{capability={cap}}}", "compliant {{instance}}", "A"),
                _target(f"{SHEDDING_ACTIVE}{{capability={cap}}}", "shedding {{instance}}", "B"),
            ],
            unit="bool",
            description="1 when the live window meets the SLO; 1 while shedding is active.",
            width=24,
            minimum=0,
            maximum=1,
        ),
    ]


def _target_panels(slo: SLOFile, layout: _Layout) -> list[Panel]:
    """Panels for the optional targets the file sets: error rate, throughput."""
    cap = _quote(slo.key)
    panels: list[Panel] = []
    if slo.slo.error_rate is not None:
        ceiling = slo.slo.error_rate.max_pct / 100
        errors = f'sum(rate({REQUESTS_TOTAL}{{capability={cap},outcome="error"}}[{RATE}]))'
        total = f"sum(rate({REQUESTS_TOTAL}{{capability={cap}}}[{RATE}]))"
        panels.append(
            _timeseries(
                layout,
                "Error rate",
                [_target(f"{errors}\n/\n{total}", "error rate", "A")],
                unit="percentunit",
                description=(
                    "Share of requests that reached the app and failed; the dashed line is "
                    f"the error_rate target ({ceiling:g})."
                ),
                thresholds=_thresholds(("green", None), ("red", ceiling)),
                minimum=0,
            )
        )
    if slo.slo.throughput is not None:
        floor = slo.slo.throughput.min_rps
        ok = f'sum(rate({REQUESTS_TOTAL}{{capability={cap},outcome="ok"}}[{RATE}]))'
        arrived = f"sum(rate({REQUESTS_TOTAL}{{capability={cap}}}[{RATE}]))"
        refused = f'sum(rate({SHED_TOTAL}{{capability={cap},dry_run="false"}}[{RATE}]))'
        panels.append(
            _timeseries(
                layout,
                "Throughput vs demand",
                [
                    _target(ok, "throughput (successful)", "A"),
                    _target(f"({arrived}\n+\n{refused})\nor\n{arrived}", "demand", "B"),
                ],
                unit="reqps",
                description=(
                    "Successful requests per second, and requests asked of the capability "
                    f"(refusals included); the dashed line is the throughput floor ({floor:g} "
                    "rps), judged only while demand reaches it."
                ),
                thresholds=_thresholds(("red", None), ("green", floor)),
                minimum=0,
            )
        )
    return panels


def idempotency_panels(layout: _Layout) -> list[Panel]:
    """The idempotency row: hit rate, events by kind, store size."""
    events = IDEMPOTENCY_EVENTS_TOTAL
    hits = f'sum(rate({events}{{event="hit"}}[{RATE}]))'
    looked_up = f'sum(rate({events}{{event=~"hit|miss"}}[{RATE}]))'
    return [
        _timeseries(
            layout,
            "Idempotency hit rate",
            [_target(f"{hits}\n/\n{looked_up}", "replayed / (replayed + ran)", "A")],
            unit="percentunit",
            description="Share of keyed requests answered with a stored response.",
            minimum=0,
            maximum=1,
        ),
        _timeseries(
            layout,
            "Idempotency events",
            [_target(f"sum by (event) (rate({events}[{RATE}]))", "{{event}}", "A")],
            unit="ops",
            description=(
                "hit: replayed; miss: ran; conflict: 409; mismatch: 422; released: key freed "
                "after an error; stored; too_large: response not stored."
            ),
            minimum=0,
        ),
        _timeseries(
            layout,
            "Idempotency store size",
            [
                _target(IDEMPOTENCY_ENTRIES, "entries {{instance}}", "A"),
                _target(IDEMPOTENCY_BYTES, "bytes {{instance}}", "B"),
            ],
            unit="short",
            description="Stored responses and the bytes they hold, per process.",
            minimum=0,
        ),
    ]


def build_dashboard(slos: Iterable[SLOFile], title: str = "sloguard") -> dict[str, Any]:
    """The dashboard's JSON model: one row per capability (by key), then idempotency."""
    layout = _Layout()
    panels: list[Panel] = []
    for slo in sorted(slos, key=lambda s: s.key):
        panels.append(layout.row(slo.key if slo.tier is None else f"{slo.key} (tier {slo.tier})"))
        panels.extend(capability_panels(slo, layout))
    panels.append(layout.row("Idempotency"))
    panels.extend(idempotency_panels(layout))
    return {
        "uid": DASHBOARD_UID,
        "title": title,
        "tags": ["sloguard", "slo"],
        "timezone": "browser",
        "editable": True,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_main(
    directory: str | os.PathLike[str],
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``sloguard dashboard DIR``: print the JSON; 1 when ``DIR`` is missing or a file is bad."""
    return print_for_slos(
        directory, lambda slos: json.dumps(build_dashboard(slos), indent=2) + "\n", stdout, stderr
    )
