"""Step 5: the outcome recorder feeds the live window, the metrics and the observers."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from sloguard import SLOManager
from sloguard._clock import ManualClock
from sloguard.observability.metrics import Metrics, NoMetrics
from sloguard.outcomes import OutcomeRecorder, add_request_observer, remove_request_observer
from sloguard.request import GuardedRequest
from tests.asgi import http_scope

SLO = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p95_ms: 100, p50_ms: 50, p99_ms: 200}
  availability: {target: 0.99}
"""


async def _nothing() -> dict[str, object]:
    return {"type": "http.disconnect"}


def test_a_request_lands_in_its_window_metrics_and_observers(tmp_path: Path) -> None:
    (tmp_path / "pdf.yml").write_text(SLO, encoding="utf-8")
    clock = ManualClock()
    manager = SLOManager(tmp_path, clock=clock)
    metrics = Metrics(CollectorRegistry())
    recorder = OutcomeRecorder(manager, metrics, clock=clock)
    seen: list[tuple[str, float, bool]] = []

    def observer(capability: str, latency_s: float, ok: bool) -> None:
        seen.append((capability, latency_s, ok))

    add_request_observer(observer)
    try:
        request = GuardedRequest(http_scope(), _nothing, clock(), "convert:pdf", "high")
        clock.advance(0.040)
        recorder.record(request, manager.get_slo("convert:pdf"), 200)
        failed = GuardedRequest(http_scope(), _nothing, clock(), "convert:pdf")
        recorder.record(failed, manager.get_slo("convert:pdf"), 503)
    finally:
        remove_request_observer(observer)

    status = manager.status("convert:pdf")
    assert status is not None
    assert (status.requests, status.errors) == (2, 1)
    assert [(c, round(lat, 3), ok) for c, lat, ok in seen] == [
        ("convert:pdf", 0.04, True),
        ("convert:pdf", 0.0, False),
    ]
    series = metrics.capability("convert:pdf")
    assert dict(series._requests) == {("high", True): 1, ("normal", False): 1}


def test_a_request_without_an_slo_counts_as_other_and_touches_no_window(tmp_path: Path) -> None:
    clock = ManualClock()
    manager = SLOManager(tmp_path, clock=clock)
    metrics = Metrics(CollectorRegistry())
    recorder = OutcomeRecorder(manager, metrics, clock=clock)

    recorder.record(GuardedRequest(http_scope(), _nothing, clock(), None), None, 200)
    recorder.record(GuardedRequest(http_scope(), _nothing, clock(), None), None, 200)

    assert sum(metrics.capability(None)._requests.values()) == 2
    assert tuple(manager.capabilities) == ()


def test_with_metrics_off_recording_still_feeds_the_window(tmp_path: Path) -> None:
    (tmp_path / "pdf.yml").write_text(SLO, encoding="utf-8")
    clock = ManualClock()
    manager = SLOManager(tmp_path, clock=clock)
    recorder = OutcomeRecorder(manager, NoMetrics(), clock=clock)
    recorder.record(
        GuardedRequest(http_scope(), _nothing, clock(), "convert:pdf"),
        manager.get_slo("convert:pdf"),
        200,
    )
    status = manager.status("convert:pdf")
    assert status is not None
    assert status.requests == 1


def test_sloguards_own_endpoints_are_not_counted_as_other_traffic(tmp_path: Path) -> None:
    clock = ManualClock()
    manager = SLOManager(tmp_path, clock=clock)
    metrics = Metrics(CollectorRegistry())
    recorder = OutcomeRecorder(manager, metrics, clock=clock)
    for path in ("/metrics", "/slo/ui", "/slo", "/healthz", "/workers", "/orders"):
        request = GuardedRequest(http_scope(path=path), _nothing, clock(), None)
        recorder.record(request, None, 200)
    assert sum(metrics.capability(None)._requests.values()) == 1  # /orders alone
