"""The Grafana dashboard: valid JSON, one row per capability, only exported metrics."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from sloguard.observability.dashboard import build_dashboard, dashboard_main
from sloguard.observability.names import series_names
from sloguard.slo import load_slo_dir
from tests.observability.promql import metric_names


def dashboard(directory: Path) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    assert dashboard_main(directory, out, err) == 0, err.getvalue()
    model: dict[str, Any] = json.loads(out.getvalue())
    return model


def rows(model: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each row's title and the panels under it (those that follow it, up to the next row)."""
    out: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    for panel in model["panels"]:
        if panel["type"] == "row":
            assert panel["title"] not in out, f"row {panel['title']} twice"
            current = out[panel["title"]] = []
        else:
            assert current is not None, f"panel {panel['title']} is not in a row"
            current.append(panel)
    return out


def exprs(model: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in model["panels"] for t in p.get("targets", [])]


def test_one_row_per_capability_then_idempotency(state_slos: Path) -> None:
    model = dashboard(state_slos)
    loaded, _ = load_slo_dir(state_slos)
    keys = sorted(slo.key for slo in loaded.values())
    assert len(keys) == 3
    by_row = rows(model)
    assert list(by_row) == [*keys, "Idempotency"]
    for key in keys:
        titles = {p["title"] for p in by_row[key]}
        assert {
            "Latency quantiles vs targets",
            "Availability",
            "Error budget remaining",
            "Burn rate",
            "Shed rate by priority",
        } <= titles
        # Every query of a capability's row is about that capability, and only it.
        for panel in by_row[key]:
            for target in panel["targets"]:
                assert f'capability="{key}"' in target["expr"]
                assert target["expr"].count("capability=") == target["expr"].count(
                    f'capability="{key}"'
                )
    assert "Idempotency hit rate" in {p["title"] for p in by_row["Idempotency"]}


def test_every_expression_names_only_exported_metrics(state_slos: Path) -> None:
    found = exprs(dashboard(state_slos))
    assert found
    for expr in found:
        names = metric_names(expr)
        assert names, f"names no metric: {expr}"
        assert names <= series_names(), f"{sorted(names - series_names())} in {expr}"


def test_latency_and_availability_panels_show_the_files_targets(state_slos: Path) -> None:
    loaded, _ = load_slo_dir(state_slos)
    by_row = rows(build_dashboard(loaded.values()))
    for slo in loaded.values():
        panels = {p["title"]: p for p in by_row[slo.key]}
        latency = panels["Latency quantiles vs targets"]
        steps = [s["value"] for s in latency["fieldConfig"]["defaults"]["thresholds"]["steps"]]
        targets = slo.slo.latency
        expected = sorted({ms / 1000 for ms in (targets.p50_ms, targets.p95_ms, targets.p99_ms)})
        assert steps == [None, *expected]
        quantiles = [t["expr"] for t in latency["targets"]]
        assert [e.split(",")[0] for e in quantiles] == [
            "histogram_quantile(0.5",
            "histogram_quantile(0.95",
            "histogram_quantile(0.99",
        ]
        availability = panels["Availability"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert availability[-1]["value"] == slo.slo.availability.target


def test_panels_have_unique_ids_and_do_not_overlap(state_slos: Path) -> None:
    model = dashboard(state_slos)
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in model["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_every_expression_parses(promtool: str, state_slos: Path, tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule; Grafana's $__rate_interval as 5m)."""
    found = exprs(dashboard(state_slos))
    rules = [
        {"record": f"dashboard:query:{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, e in enumerate(found)
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(found)} rules found" in result.stdout
