"""The exported-names tuple matches what the metrics code really exposes."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sloguard import MemoryStore, SLOManager
from sloguard.observability.metrics import Metrics
from sloguard.observability.names import HISTOGRAMS, METRIC_NAMES, series_names

SLO = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p50_ms: 50, p95_ms: 120, p99_ms: 200}
  availability: {target: 0.99}
"""


def test_names_are_unique_and_histograms_are_listed() -> None:
    assert len(set(METRIC_NAMES)) == len(METRIC_NAMES)
    assert set(HISTOGRAMS) <= set(METRIC_NAMES)
    assert "sloguard_request_duration_seconds_bucket" in series_names()
    assert "sloguard_request_duration_seconds" not in series_names()


def test_every_exported_series_is_named_and_every_name_is_exported(tmp_path: Path) -> None:
    (tmp_path / "pdf.yml").write_text(SLO, encoding="utf-8")
    manager = SLOManager(tmp_path)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.watch(manager, MemoryStore())
    children = metrics.capability("convert:pdf")
    children.request("normal", ok=True, latency_s=0.01)
    children.shed("low", dry_run=False)
    metrics.idempotency_event("hit")

    text = generate_latest(registry).decode()
    exposed = {
        sample.name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")  # prometheus-client's creation timestamps
    }
    assert exposed == series_names()
