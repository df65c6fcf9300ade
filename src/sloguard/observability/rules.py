"""Prometheus recording and alerting rules generated from SLO files.

One rule group per capability. Its recording rules turn the exported counters
into ratios over the windows the alerts need:

- ``sloguard:error_ratio:rate<W>``: share of requests that failed;
- ``sloguard:latency_over_p95:rate<W>`` / ``..._p99``: share of requests slower
  than the file's p95 / p99 target (when it sets one), read from the histogram
  bucket whose ``le`` is that target (the metrics add every target to the buckets).

for ``W`` in 5m, 30m, 1h, 2h, 6h, 1d, 3d, plus ``sloguard:error_ratio:rate30d``
for the month's error budget; and with a ``throughput`` floor,
``sloguard:throughput:rate5m`` (successful requests per second) and
``sloguard:demand:rate5m`` (requests arriving, enforced refusals included).
Each series carries the ``capability`` label.

Alerts follow the SRE workbook's multi-window, multi-burn-rate recipe. A
*burn rate* is the observed bad share divided by the share the SLO allows:
``1 - availability.target`` for errors, 5% for "slower than p95", 1% for
"slower than p99". Each alert needs both its long and its short window over
the burn-rate factor (the short window makes it stop soon after the problem
does):

======== ============= ============ ==========
factor   long window   short window severity
======== ============= ============ ==========
14.4     1h            5m           page
6        6h            30m          page
3        1d            2h           ticket
1        3d            6h           ticket
======== ============= ============ ==========

An ``error_rate`` target alerts when the error ratio stays above it for 5
minutes (over 5m windows); a ``throughput`` floor when, for 5 minutes, demand
reaches the floor and throughput stays below it (``SloguardThroughputBelowTarget``).

Error-budget alerts fire once the share of the month's budget spent over the
last 30 days reaches each of the file's ``error_budget.alerts`` thresholds,
labelled with the threshold's ``channel``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml
from prometheus_client.utils import floatToGoString

from sloguard.exceptions import ConfigurationError
from sloguard.observability.names import REQUEST_DURATION_SECONDS, REQUESTS_TOTAL, SHED_TOTAL
from sloguard.slo.loader import load_slo_dir
from sloguard.slo.schema import SLOFile

Rule = dict[str, Any]
RuleGroup = dict[str, Any]


@dataclass(frozen=True)
class BurnRateWindow:
    """One multi-window alert: fire when both windows burn faster than ``factor``."""

    factor: float
    long: str
    short: str
    severity: str


BURN_RATE_WINDOWS: tuple[BurnRateWindow, ...] = (
    BurnRateWindow(14.4, "1h", "5m", "page"),
    BurnRateWindow(6.0, "6h", "30m", "page"),
    BurnRateWindow(3.0, "1d", "2h", "ticket"),
    BurnRateWindow(1.0, "3d", "6h", "ticket"),
)
"""The SRE workbook's windows (chapter 5, "Alerting on SLOs")."""

RATE_WINDOWS: tuple[str, ...] = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
"""Every window an alert reads, shortest first."""

BUDGET_WINDOW = "30d"
"""The error budget's period: the SLO files give a monthly budget."""

LATENCY_QUANTILES: tuple[tuple[str, float], ...] = (("p95", 0.05), ("p99", 0.01))
"""Latency objectives alerted on, with the share of requests allowed over the target."""

ERROR_RATIO = "sloguard:error_ratio:rate{window}"
LATENCY_OVER = "sloguard:latency_over_{quantile}:rate{window}"
THROUGHPUT = "sloguard:throughput:rate5m"
DEMAND = "sloguard:demand:rate5m"

AVAILABILITY_ALERT = "SloguardAvailabilityBurnRate"
LATENCY_ALERT = "SloguardLatency{Quantile}BurnRate"
BUDGET_ALERT = "SloguardErrorBudgetConsumed"
MISSING_BUCKET_ALERT = "SloguardLatencyTargetBucketMissing"
ERROR_RATE_ALERT = "SloguardErrorRateAboveTarget"
THROUGHPUT_ALERT = "SloguardThroughputBelowTarget"


def _number(value: float) -> str:
    """A float as PromQL reads it back exactly: ``0.001``, ``14.4``, ``1``."""
    return f"{value:.0f}" if value == int(value) else repr(value)


def _human(value: float) -> str:
    """A float for people: ``0.1``, not ``0.10000000000000002``."""
    return f"{value:.6g}"


def _le(ms: float) -> str:
    """The ``le`` label prometheus-client gives the bucket of a target in milliseconds."""
    return str(floatToGoString(ms / 1000.0))  # type: ignore[no-untyped-call]


def _selector(capability: str, **labels: str) -> str:
    matchers = {"capability": capability, **labels}
    inside = ",".join(f"{name}={_quote(value)}" for name, value in matchers.items())
    return "{" + inside + "}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sum_rate(series: str, window: str) -> str:
    return f"sum by (capability) (rate({series}[{window}]))"


def recording_rules(slo: SLOFile) -> list[Rule]:
    """The ratios one capability's alerts read, over every window they need."""
    cap = slo.key
    rules: list[Rule] = []
    for window in (*RATE_WINDOWS, BUDGET_WINDOW):
        errors = _sum_rate(REQUESTS_TOTAL + _selector(cap, outcome="error"), window)
        total = _sum_rate(REQUESTS_TOTAL + _selector(cap), window)
        rules.append(
            {
                "record": ERROR_RATIO.format(window=window),
                "expr": f"{errors}\n/\n{total}",
                "labels": {"capability": cap},
            }
        )
    targets = _latency_targets(slo)
    for quantile in targets:
        le = _le(targets[quantile])
        for window in RATE_WINDOWS:
            fast = _sum_rate(f"{REQUEST_DURATION_SECONDS}_bucket{_selector(cap, le=le)}", window)
            total = _sum_rate(f"{REQUEST_DURATION_SECONDS}_count{_selector(cap)}", window)
            rules.append(
                {
                    "record": LATENCY_OVER.format(quantile=quantile, window=window),
                    "expr": f"1 - (\n{fast}\n/\n{total}\n)",
                    "labels": {"capability": cap},
                }
            )
    if slo.slo.throughput is not None:
        served = _sum_rate(REQUESTS_TOTAL + _selector(cap, outcome="ok"), "5m")
        arrived = _sum_rate(REQUESTS_TOTAL + _selector(cap), "5m")
        refused = _sum_rate(SHED_TOTAL + _selector(cap, dry_run="false"), "5m")
        rules += [
            {"record": THROUGHPUT, "expr": served, "labels": {"capability": cap}},
            # A capability never refused has no shed series: `or` keeps the arrivals alone.
            {
                "record": DEMAND,
                "expr": f"(\n{arrived}\n+\n{refused}\n)\nor\n{arrived}",
                "labels": {"capability": cap},
            },
        ]
    return rules


def _latency_targets(slo: SLOFile) -> dict[str, float]:
    """The alerted quantiles (p95, p99) the file sets a target for, in milliseconds."""
    latency = slo.slo.latency
    targets = {"p95": latency.p95_ms, "p99": latency.p99_ms}
    return {quantile: ms for quantile, ms in targets.items() if ms is not None}


def _burn_alert(
    name: str, series: str, cap: str, budget: float, window: BurnRateWindow, what: str
) -> Rule:
    threshold = f"({_number(window.factor)} * {_number(budget)})"
    long = series.format(window=window.long) + _selector(cap)
    short = series.format(window=window.short) + _selector(cap)
    return {
        "alert": name,
        "expr": f"{long} > {threshold}\nand\n{short} > {threshold}",
        "labels": {
            "capability": cap,
            "severity": window.severity,
            "long_window": window.long,
            "short_window": window.short,
            "burn_rate": _number(window.factor),
        },
        "annotations": {
            "summary": (
                f"{cap}: {what} burning the budget {_number(window.factor)}x too fast "
                f"over {window.long} and {window.short}"
            ),
            "description": (
                f"{what} over the last {window.long}: {{{{ $value | humanizePercentage }}}} "
                f"(the SLO allows {_human(budget * 100)}%; alerting at "
                f"{_number(window.factor)}x that over {window.long} and {window.short})."
            ),
        },
    }


def alerting_rules(slo: SLOFile) -> list[Rule]:
    """Burn-rate alerts for availability and latency, and the error-budget alerts."""
    cap = slo.key
    budget = slo.budget_fraction
    rules: list[Rule] = [
        _burn_alert(AVAILABILITY_ALERT, ERROR_RATIO, cap, budget, window, "error ratio")
        for window in BURN_RATE_WINDOWS
    ]
    targets = _latency_targets(slo)
    for quantile, allowed in LATENCY_QUANTILES:
        if quantile not in targets:
            continue
        series = LATENCY_OVER.replace("{quantile}", quantile)
        what = f"share of requests over the {quantile} target ({targets[quantile]:g} ms)"
        name = LATENCY_ALERT.format(Quantile=quantile.upper())
        rules.extend(
            _burn_alert(name, series, cap, allowed, window, what) for window in BURN_RATE_WINDOWS
        )
    for quantile in targets:
        le = _le(targets[quantile])
        count = f"{REQUEST_DURATION_SECONDS}_count{_selector(cap)}"
        bucket = f"{REQUEST_DURATION_SECONDS}_bucket{_selector(cap, le=le)}"
        rules.append(
            {
                "alert": MISSING_BUCKET_ALERT,
                "expr": (
                    f"sum by (capability) (rate({count}[5m])) > 0\n"
                    f"unless\nsum by (capability) (rate({bucket}[5m]))"
                ),
                "for": "15m",
                "labels": {"capability": cap, "severity": "ticket", "quantile": quantile},
                "annotations": {
                    "summary": f"{cap}: no latency bucket at the {quantile} target ({le} s)",
                    "description": (
                        f"{cap} has traffic but no {REQUEST_DURATION_SECONDS} bucket with "
                        f'le="{le}", so its {quantile} latency alerts cannot fire. The '
                        "process's buckets are fixed when its metrics are created: restart it "
                        "after changing a latency target."
                    ),
                },
            }
        )
    rules += _error_rate_and_throughput_alerts(slo)
    spent = f"{ERROR_RATIO.format(window=BUDGET_WINDOW)}{_selector(cap)} / {_number(budget)}"
    # A threshold listed twice for one channel would be one alert twice (promtool refuses).
    for alert in dict.fromkeys(slo.slo.error_budget.alerts):
        rules.append(
            {
                "alert": BUDGET_ALERT,
                "expr": f"{spent} >= {_number(alert.threshold)}",
                "labels": {
                    "capability": cap,
                    "severity": "notify",
                    "channel": alert.channel,
                    "threshold": _number(alert.threshold),
                },
                "annotations": {
                    "summary": (
                        f"{cap}: {{{{ $value | humanizePercentage }}}} of the error budget "
                        f"spent over {BUDGET_WINDOW} (alert at "
                        f"{_human(alert.threshold * 100)}%)"
                    ),
                    "description": (
                        f"The SLO allows {_human(budget * 100)}% of requests to fail over "
                        f"{BUDGET_WINDOW}; the share failed, divided by that, has reached "
                        f"{_number(alert.threshold)}."
                    ),
                },
            }
        )
    return rules


def _error_rate_and_throughput_alerts(slo: SLOFile) -> list[Rule]:
    cap = slo.key
    rules: list[Rule] = []
    if slo.slo.error_rate is not None:
        ceiling = slo.slo.error_rate.max_pct / 100
        ratio = ERROR_RATIO.format(window="5m") + _selector(cap)
        rules.append(
            {
                "alert": ERROR_RATE_ALERT,
                "expr": f"{ratio} > {_number(ceiling)}",
                "for": "5m",
                "labels": {"capability": cap, "severity": "ticket"},
                "annotations": {
                    "summary": f"{cap}: error rate above its {_human(ceiling * 100)}% target",
                    "description": (
                        f"{cap} failed {{{{ $value | humanizePercentage }}}} of its requests "
                        f"over 5m for 5 minutes; its error_rate target is "
                        f"{_human(ceiling * 100)}%."
                    ),
                },
            }
        )
    if slo.slo.throughput is not None:
        floor = _number(slo.slo.throughput.min_rps)
        served, asked = THROUGHPUT + _selector(cap), DEMAND + _selector(cap)
        rules.append(
            {
                "alert": THROUGHPUT_ALERT,
                "expr": f"{served} < {floor}\nand\n{asked} >= {floor}",
                "for": "5m",
                "labels": {"capability": cap, "severity": "ticket"},
                "annotations": {
                    "summary": f"{cap}: throughput below its {floor} rps floor",
                    "description": (
                        f"{cap} served {{{{ $value | humanize }}}} successful requests per "
                        f"second over 5m while at least {floor} were asked of it (refusals "
                        f"included): below its throughput floor of {floor} rps."
                    ),
                },
            }
        )
    return rules


def rule_group(slo: SLOFile) -> RuleGroup:
    """One capability's recording and alerting rules, as one Prometheus rule group."""
    return {
        "name": f"sloguard:{slo.key}",
        "rules": recording_rules(slo) + alerting_rules(slo),
    }


def build_rules(slos: Iterable[SLOFile]) -> dict[str, list[RuleGroup]]:
    """A Prometheus rule file (as data) for ``slos``: one group per capability, by key."""
    return {"groups": [rule_group(slo) for slo in sorted(slos, key=lambda s: s.key)]}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the PromQL stays readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_rules(rules: dict[str, list[RuleGroup]]) -> str:
    """The rule file as YAML text."""
    return yaml.dump(rules, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def load_all(directory: str | os.PathLike[str], stderr: TextIO) -> list[SLOFile] | None:
    """Every SLO file of ``directory``; ``None`` (errors written) if any is missing or bad."""
    try:
        loaded, errors = load_slo_dir(directory)
    except ConfigurationError as exc:
        print(f"sloguard: {exc}", file=stderr)
        return None
    for error in errors:
        print(error, file=stderr)
    if errors:
        return None
    if not loaded:
        print(f"sloguard: no SLO files (*.yml, *.yaml) in {Path(directory)}", file=stderr)
        return None
    return list(loaded.values())


def rules_main(
    directory: str | os.PathLike[str],
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``sloguard rules DIR``: print the rule file; 1 when ``DIR`` is missing or a file is bad."""
    return print_for_slos(directory, lambda slos: dump_rules(build_rules(slos)), stdout, stderr)


def print_for_slos(
    directory: str | os.PathLike[str],
    render: Callable[[list[SLOFile]], str],
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Print what ``render`` makes of every SLO file of ``directory``; exit status 1
    (and nothing printed) when the directory is missing, empty or has a bad file."""
    slos = load_all(directory, sys.stderr if stderr is None else stderr)
    if slos is None:
        return 1
    (sys.stdout if stdout is None else stdout).write(render(slos))
    return 0
