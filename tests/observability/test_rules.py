"""Prometheus rules generated from SLO files: structure, thresholds, and promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sloguard.observability.names import series_names
from sloguard.observability.rules import (
    BURN_RATE_WINDOWS,
    RATE_WINDOWS,
    build_rules,
    dump_rules,
)
from sloguard.slo import load_slo_dir, load_slo_file
from sloguard.slo.schema import SLOFile
from tests.observability.promql import metric_names

PDF = """\
capability: {verb: convert, name: document_to_pdf}
slo:
  latency: {p50_ms: 50, p95_ms: 100, p99_ms: 200}
  availability: {target: 0.999}
  error_budget:
    alerts: [{threshold: 0.5, channel: slack}, {threshold: 0.9, channel: pagerduty}]
"""
PDF_KEY = "convert:document_to_pdf"

# The SRE workbook's table: long window -> (short window, factor, severity).
WORKBOOK = {
    "1h": ("5m", "14.4", "page"),
    "6h": ("30m", "6", "page"),
    "1d": ("2h", "3", "ticket"),
    "3d": ("6h", "1", "ticket"),
}


def slo_file(tmp_path: Path, text: str, name: str = "slo.yml") -> SLOFile:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_slo_file(path)


def group_of(rules: dict[str, Any], capability: str) -> list[dict[str, Any]]:
    [group] = [g for g in rules["groups"] if g["name"] == f"sloguard:{capability}"]
    rules_: list[dict[str, Any]] = group["rules"]
    return rules_


def alerts(rules: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in rules if r.get("alert") == name]


def test_one_group_per_capability_each_rule_labelled_with_it(state_slos: Path) -> None:
    loaded, errors = load_slo_dir(state_slos)
    assert not errors
    rules = build_rules(loaded.values())
    keys = sorted(slo.key for slo in loaded.values())
    assert [g["name"] for g in rules["groups"]] == [f"sloguard:{k}" for k in keys]
    for key in keys:
        for rule in group_of(rules, key):
            assert rule["labels"]["capability"] == key
            assert f'capability="{key}"' in rule["expr"]


def test_recording_rules_cover_every_window(tmp_path: Path) -> None:
    rules = group_of(build_rules([slo_file(tmp_path, PDF)]), PDF_KEY)
    records = [r["record"] for r in rules if "record" in r]
    assert len(records) == len(set(records))
    expected = {f"sloguard:error_ratio:rate{w}" for w in (*RATE_WINDOWS, "30d")}
    for quantile in ("p95", "p99"):
        expected |= {f"sloguard:latency_over_{quantile}:rate{w}" for w in RATE_WINDOWS}
    assert set(records) == expected
    # Every window an alert reads is recorded.
    needed = {w for b in BURN_RATE_WINDOWS for w in (b.long, b.short)}
    assert needed <= set(RATE_WINDOWS)


def test_latency_rules_read_the_bucket_at_each_target(tmp_path: Path) -> None:
    slo = slo_file(
        tmp_path,
        "capability: {verb: classify, name: email}\n"
        "slo:\n"
        "  latency: {p50_ms: 20, p95_ms: 60, p99_ms: 1500}\n"
        "  availability: {target: 0.995}\n",
    )
    rules = {r["record"]: r["expr"] for r in group_of(build_rules([slo]), slo.key) if "record" in r}
    # prometheus-client writes the 60 ms and 1500 ms buckets as le="0.06" and le="1.5".
    assert 'le="0.06"' in rules["sloguard:latency_over_p95:rate5m"]
    assert 'le="1.5"' in rules["sloguard:latency_over_p99:rate3d"]
    assert "sloguard_request_duration_seconds_count" in rules["sloguard:latency_over_p99:rate3d"]


def test_burn_rate_thresholds_follow_each_capabilitys_budget(tmp_path: Path) -> None:
    strict = slo_file(tmp_path, PDF, "pdf.yml")
    loose = slo_file(
        tmp_path,
        "capability: {verb: classify, name: email}\n"
        "slo:\n"
        "  latency: {p50_ms: 20, p95_ms: 60, p99_ms: 120}\n"
        "  availability: {target: 0.995}\n",
        "email.yml",
    )
    rules = build_rules([strict, loose])
    for slo, budget in ((strict, "0.001"), (loose, "0.005")):
        group = group_of(rules, slo.key)
        availability = alerts(group, "SloguardAvailabilityBurnRate")
        assert len(availability) == 4
        for alert in availability:
            labels = alert["labels"]
            short, factor, severity = WORKBOOK[labels["long_window"]]
            assert (labels["short_window"], labels["burn_rate"], labels["severity"]) == (
                short,
                factor,
                severity,
            )
            threshold = f"> ({factor} * {budget})"
            long_series = f"sloguard:error_ratio:rate{labels['long_window']}"
            short_series = f"sloguard:error_ratio:rate{short}"
            assert f'{long_series}{{capability="{slo.key}"}} {threshold}' in alert["expr"]
            assert f'{short_series}{{capability="{slo.key}"}} {threshold}' in alert["expr"]
        for quantile, allowed in (("P95", "0.05"), ("P99", "0.01")):
            latency = alerts(group, f"SloguardLatency{quantile}BurnRate")
            assert sorted(a["labels"]["long_window"] for a in latency) == sorted(WORKBOOK)
            for alert in latency:
                assert f"* {allowed})" in alert["expr"]


def test_budget_alerts_carry_each_threshold_and_its_channel(tmp_path: Path) -> None:
    rules = group_of(build_rules([slo_file(tmp_path, PDF)]), PDF_KEY)
    budget = alerts(rules, "SloguardErrorBudgetConsumed")
    got = [(a["labels"]["threshold"], a["labels"]["channel"]) for a in budget]
    assert got == [("0.5", "slack"), ("0.9", "pagerduty")]
    assert budget[0]["expr"] == (
        f'sloguard:error_ratio:rate30d{{capability="{PDF_KEY}"}} / 0.001 >= 0.5'
    )


def test_no_budget_alerts_without_thresholds_and_none_twice(tmp_path: Path) -> None:
    bare = slo_file(
        tmp_path,
        "capability: {verb: a, name: b}\n"
        "slo:\n"
        "  latency: {p50_ms: 1, p95_ms: 2, p99_ms: 3}\n"
        "  availability: {target: 0.9}\n",
        "bare.yml",
    )
    assert alerts(group_of(build_rules([bare]), "a:b"), "SloguardErrorBudgetConsumed") == []
    twice = slo_file(
        tmp_path,
        PDF.replace("channel: pagerduty", "channel: slack").replace("0.9", "0.5"),
        "twice.yml",
    )
    budget = alerts(group_of(build_rules([twice]), PDF_KEY), "SloguardErrorBudgetConsumed")
    assert len(budget) == 1


def test_the_yaml_round_trips_and_names_only_exported_metrics(state_slos: Path) -> None:
    loaded, _ = load_slo_dir(state_slos)
    rules = build_rules(loaded.values())
    assert yaml.safe_load(dump_rules(rules)) == rules
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:  # raw metrics only
                names = metric_names(rule["expr"])
                assert names, rule["expr"]
                assert names <= series_names(), rule["expr"]
            else:  # recorded series, or raw metrics
                assert metric_names(rule["expr"]) <= series_names() | recorded, rule["expr"]


def test_promtool_accepts_the_rules(promtool: str, state_slos: Path, tmp_path: Path) -> None:
    loaded, _ = load_slo_dir(state_slos)
    path = tmp_path / "rules.yml"
    path.write_text(dump_rules(build_rules(loaded.values())), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(a_bucket{capability="x:y",le="0.1"}[5m]))', {"a_bucket"}),
        (
            'rec:ratio:rate1h{capability="a"} > (14.4 * 1e-05)\nand\nb > 1',
            {"rec:ratio:rate1h", "b"},
        ),
        (
            'histogram_quantile(0.99, sum by (le) (rate(h_bucket{c="by(x)"}[$__rate_interval])))',
            {"h_bucket"},
        ),
        ("c unless on (capability) d offset 5m", {"c", "d"}),
    ],
)
def test_metric_names_finds_the_selected_metrics(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    inside = ",".join(f'{k}="{v}"' for k, v in {"capability": PDF_KEY, **labels}.items())
    return {"series": f"{name}{{{inside}}}", "values": values}


def _burn_alert(long: str) -> dict[str, Any]:
    short, factor, severity = WORKBOOK[long]
    labels = {
        "capability": PDF_KEY,
        "severity": severity,
        "long_window": long,
        "short_window": short,
        "burn_rate": factor,
    }
    return {"exp_labels": labels}


def _budget_alert(threshold: str, channel: str) -> dict[str, Any]:
    labels = {"capability": PDF_KEY, "severity": "notify", "channel": channel}
    return {"exp_labels": {**labels, "threshold": threshold}}


def _requests(ok: str, error: str) -> list[dict[str, str]]:
    total = "sloguard_requests_total"
    return [
        _series(total, ok, priority="normal", outcome="ok"),
        _series(total, error, priority="normal", outcome="error"),
    ]


def _availability_case(
    requests: list[dict[str, str]], at: str, burning: list[str], budget: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": requests,
        "alert_rule_test": [
            {
                "eval_time": at,
                "alertname": "SloguardAvailabilityBurnRate",
                "exp_alerts": [_burn_alert(w) for w in burning],
            },
            {"eval_time": at, "alertname": "SloguardErrorBudgetConsumed", "exp_alerts": budget},
        ],
    }


def test_alerts_fire_as_the_workbook_says(promtool: str, tmp_path: Path) -> None:
    """promtool evaluates the rules over synthetic series (7 hours at one sample a minute).

    Traffic is 1000 requests a minute against a 99.9% target (budget 0.1%).
    """
    rules = build_rules([slo_file(tmp_path, PDF)])
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)  # templated text; the labels are what is tested
    (tmp_path / "rules.yml").write_text(dump_rules(rules), encoding="utf-8")
    both_budget_alerts = [_budget_alert("0.5", "slack"), _budget_alert("0.9", "pagerduty")]
    bucket = "sloguard_request_duration_seconds_bucket"
    count = "sloguard_request_duration_seconds_count"
    tests = [
        # 2% errors: 20x the budget; every window burns, both budget thresholds passed.
        _availability_case(
            _requests("0+980x420", "0+20x420"), "7h", list(WORKBOOK), both_budget_alerts
        ),
        # 0.5% errors: 5x; only the ticket alerts (3x, 1x) fire.
        _availability_case(
            _requests("0+995x420", "0+5x420"), "7h", ["1d", "3d"], both_budget_alerts
        ),
        # 0.07% errors: 0.7x; no burn-rate alert, 70% of the budget spent: slack only.
        _availability_case(
            _requests("0+9993x420", "0+7x420"), "7h", [], [_budget_alert("0.5", "slack")]
        ),
        # 2% errors for 6 hours, then none: 10 minutes later the 1h window still burns
        # over 14.4x, but the 5m window does not, so the fast page has stopped.
        _availability_case(
            _requests("0+980x370", "0+20x359 7200+0x10"),
            "370m",
            ["6h", "1d", "3d"],
            both_budget_alerts,
        ),
        # Every request takes 150 ms: all over the p95 target (100 ms), none over p99 (200 ms).
        {
            "interval": "1m",
            "input_series": [
                _series(bucket, "0+0x420", le="0.1"),
                _series(bucket, "0+100x420", le="0.2"),
                _series(bucket, "0+100x420", le="+Inf"),
                _series(count, "0+100x420"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "7h",
                    "alertname": "SloguardLatencyP95BurnRate",
                    "exp_alerts": [_burn_alert(w) for w in WORKBOOK],
                },
                {"eval_time": "7h", "alertname": "SloguardLatencyP99BurnRate", "exp_alerts": []},
                {
                    "eval_time": "7h",
                    "alertname": "SloguardLatencyTargetBucketMissing",
                    "exp_alerts": [],
                },
            ],
        },
        # Traffic, but the process has no bucket at the targets (created before a target
        # changed): the latency alerts cannot work, and that is reported after 15 minutes.
        {
            "interval": "1m",
            "input_series": [
                _series(bucket, "0+100x60", le="+Inf"),
                _series(count, "0+100x60"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "10m",
                    "alertname": "SloguardLatencyTargetBucketMissing",
                    "exp_alerts": [],
                },
                {
                    "eval_time": "30m",
                    "alertname": "SloguardLatencyTargetBucketMissing",
                    "exp_alerts": [
                        {"exp_labels": {"capability": PDF_KEY, "severity": "ticket", "quantile": q}}
                        for q in ("p95", "p99")
                    ],
                },
            ],
        },
    ]
    unit = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(unit, sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [promtool, "test", "rules", "test.yml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
