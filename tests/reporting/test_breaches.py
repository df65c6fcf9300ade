"""BreachTracker: warning, open after 60 s, resolve after 60 s, no flapping, no noise."""

from __future__ import annotations

from typing import Any

import pytest

from sloguard._clock import ManualClock
from sloguard.exceptions import ConfigurationError
from sloguard.reporting import Breach, BreachTracker, ReportEvent
from sloguard.slo import SLOFile, SLOManager
from tests.reporting.statuses import NOW, make_slo, make_status

GOOD: dict[str, Any] = {"p95": 50.0}
NEAR: dict[str, Any] = {"p95": 96.0}  # within 5% of the 100 ms target, still compliant
BAD: dict[str, Any] = {"p95": 150.0}


@pytest.fixture
def slo() -> SLOFile:
    return make_slo()  # p95 target 100 ms, availability 99.9%, min_samples 20


class Feed:
    """Feeds the tracker one status every ``step`` seconds and keeps every event."""

    def __init__(self, tracker: BreachTracker, slo: SLOFile, step: float = 5.0) -> None:
        self.tracker, self.slo, self.step = tracker, slo, step
        self.now = NOW
        self.events: list[ReportEvent] = []

    def __call__(self, seconds: float, **values: Any) -> list[ReportEvent]:
        """Observe ``values`` for ``seconds`` (one observation per step, the first at once)."""
        new: list[ReportEvent] = []
        end = self.now + seconds
        while self.now < end:
            new += self.tracker.observe(make_status(self.slo, **values), self.slo, self.now)
            self.now += self.step
        self.events += new
        return new

    def types(self) -> list[str]:
        return [e.type for e in self.events]


def breach_of(event: ReportEvent) -> Breach:
    breach = event.data["breach"]
    assert isinstance(breach, Breach)
    return breach


def test_a_compliant_capability_has_no_events(slo: SLOFile) -> None:
    feed = Feed(BreachTracker(), slo)
    assert feed(600, **GOOD) == []
    assert feed.tracker.active() == []


def test_within_5_percent_of_a_target_is_a_warning_at_once(slo: SLOFile) -> None:
    tracker = BreachTracker()
    assert tracker.classify(make_status(slo, p95=94.9), slo) == "good"
    assert tracker.classify(make_status(slo, p95=95.0), slo) == "near"
    assert tracker.classify(make_status(slo, p95=100.0), slo) == "near"  # equal is compliant
    assert tracker.classify(make_status(slo, p95=100.1), slo) == "bad"
    # Availability is near when the error rate is within 5% of the budget (0.1%): 0.095%.
    assert tracker.classify(make_status(slo, availability=0.99906), slo) == "good"
    assert tracker.classify(make_status(slo, availability=0.99905), slo) == "near"
    feed = Feed(tracker, slo)
    [event] = feed(5, **NEAR)
    assert event.type == "warning"
    warning = breach_of(event)
    assert (warning.state, warning.started_at, warning.ended_at) == ("warning", NOW, None)
    assert warning.violations == ()  # near is not a violation
    assert tracker.current(slo.key) == warning


def test_a_breach_opens_within_60_s_of_the_first_violating_evaluation(slo: SLOFile) -> None:
    feed = Feed(BreachTracker(), slo)
    first = feed(55, **BAD)  # observations at 0, 5, ..., 50 s
    assert [e.type for e in first] == ["warning"]
    assert breach_of(first[0]).violations == ("p95 latency 150ms > target 100ms",)
    [opened] = feed(5, **BAD)  # the one at 55 s: with 5 s ticks, within 60 s of the first
    assert opened.type == "breach"
    breach = breach_of(opened)
    assert breach.id == breach_of(first[0]).id  # one record, upserted as it evolves
    assert (breach.state, breach.started_at, breach.ended_at) == ("open", NOW, None)
    assert feed(300, **BAD) == []  # stays open, quietly
    assert [b.state for b in feed.tracker.active()] == ["open"]


def test_open_after_is_configurable(slo: SLOFile) -> None:
    feed = Feed(BreachTracker(open_after_s=0), slo)
    assert [e.type for e in feed(5, **BAD)] == ["warning", "breach"]
    slow = Feed(BreachTracker(open_after_s=120), slo)
    assert [e.type for e in slow(120, **BAD)] == ["warning"]
    assert [e.type for e in slow(5, **BAD)] == ["breach"]


def test_a_breach_started_by_a_warning_starts_when_the_violation_did(slo: SLOFile) -> None:
    feed = Feed(BreachTracker(), slo)
    feed(120, **NEAR)
    violation_began = feed.now
    feed(65, **BAD)
    assert feed.types() == ["warning", "breach"]
    breach = breach_of(feed.events[-1])
    assert breach.started_at == violation_began
    assert breach.id == f"{slo.key}@{int(NOW)}"  # the id it got as a warning


def test_a_breach_resolves_after_60_s_compliant(slo: SLOFile) -> None:
    feed = Feed(BreachTracker(), slo)
    feed(65, **BAD)
    compliant_again = feed.now
    assert feed(60, **NEAR) == []  # near is compliant: it counts towards resolving
    [resolved] = feed(5, **GOOD)
    assert resolved.type == "resolved"
    breach = breach_of(resolved)
    assert breach.state == "resolved"
    assert breach.ended_at == compliant_again
    assert breach.duration_s == compliant_again - NOW
    assert feed.tracker.active() == []


def test_a_warning_that_never_opens_ends_as_a_warning(slo: SLOFile) -> None:
    feed = Feed(BreachTracker(), slo)
    feed(30, **BAD)  # too short to open
    feed(100, **NEAR)  # near keeps the warning on
    cleared = feed.now
    feed(65, **GOOD)
    assert feed.types() == ["warning", "resolved"]
    warning = breach_of(feed.events[-1])
    assert (warning.state, warning.started_at, warning.ended_at) == ("warning", NOW, cleared)
    assert warning.violations == ("p95 latency 150ms > target 100ms",)  # what it came close to


def test_flapping_does_not_open_or_close_repeatedly(slo: SLOFile) -> None:
    feed = Feed(BreachTracker(), slo)
    for _ in range(30):  # 10 minutes: 10 s over the target, 10 s under
        feed(10, **BAD)
        feed(10, **GOOD)
    assert feed.types() == ["warning"]  # one warning, never a breach
    feed(65, **BAD)
    assert feed.types() == ["warning", "breach"]
    for _ in range(30):  # an open breach flapping around the target stays open
        feed(30, **GOOD)
        feed(10, **BAD)
    assert feed.types() == ["warning", "breach"]
    feed(65, **GOOD)
    assert feed.types() == ["warning", "breach", "resolved"]


def test_too_few_samples_never_start_anything(slo: SLOFile) -> None:
    feed = Feed(BreachTracker(), slo)
    assert feed(600, p95=900.0, availability=0.5, requests=19) == []  # min_samples is 20
    assert feed.tracker.classify(make_status(slo, **BAD, requests=19), slo) == "quiet"
    override = BreachTracker(min_samples=5)
    assert override.classify(make_status(slo, **BAD, requests=5), slo) == "bad"


def test_quiet_breaks_a_violation_and_lets_a_breach_resolve(slo: SLOFile) -> None:
    feed = Feed(BreachTracker(), slo)
    feed(50, **BAD)
    feed(5, **BAD, requests=3)  # traffic drops: the violation run starts again
    feed(55, **BAD)
    assert feed.types() == ["warning"]
    feed(10, **BAD)
    assert feed.types() == ["warning", "breach"]
    feed(65, requests=0, p50=None, p95=None, p99=None, availability=None)
    assert feed.types() == ["warning", "breach", "resolved"]  # no traffic, nothing missed


def test_worst_values_and_their_violations(slo: SLOFile) -> None:
    feed = Feed(BreachTracker(), slo)
    feed(20, p95=120.0, availability=0.995)
    feed(20, p95=300.0, p99=250.0, availability=0.999)
    feed(30, p95=150.0, availability=0.98)
    breach = breach_of(feed.events[-1])
    assert breach.state == "open"
    assert breach.worst == {"p50_ms": 10.0, "p95_ms": 300.0, "p99_ms": 250.0, "availability": 0.98}
    assert breach.violations == (
        "p95 latency 300ms > target 100ms",
        "p99 latency 250ms > target 200ms",
        "availability 98.00% < target 99.90%",
    )
    feed(20, p95=400.0)
    current = feed.tracker.current(slo.key)
    assert current is not None
    assert current.worst["p95_ms"] == 400.0  # kept up to date between events
    feed(65, **GOOD)
    assert breach_of(feed.events[-1]).worst["p95_ms"] == 400.0


def test_a_second_breach_gets_a_new_id(slo: SLOFile) -> None:
    feed = Feed(BreachTracker(), slo)
    feed(65, **BAD)
    feed(65, **GOOD)
    feed(65, **BAD)
    ids = [breach_of(e).id for e in feed.events if e.type == "breach"]
    assert len(ids) == 2
    assert ids[0] != ids[1]


def test_shedding_changes_are_events(slo: SLOFile) -> None:
    feed = Feed(BreachTracker(), slo)
    feed(10, **GOOD)
    [started] = feed(10, **GOOD, shedding=True)
    assert (started.type, started.data["shedding"]) == ("shedding", True)
    [stopped] = feed(10, **GOOD)
    assert (stopped.type, stopped.data["shedding"]) == ("shedding", False)


def test_forget_drops_a_capability(slo: SLOFile) -> None:
    feed = Feed(BreachTracker(), slo)
    feed(65, **BAD)
    feed.tracker.forget(slo.key)
    assert feed.tracker.current(slo.key) is None
    assert feed.tracker.active() == []


def test_capabilities_are_tracked_apart(slo: SLOFile) -> None:
    other = make_slo(verb="classify", name="email")
    tracker = BreachTracker(open_after_s=0)
    tracker.observe(make_status(slo, **BAD), slo, NOW)
    tracker.observe(make_status(other, **GOOD), other, NOW)
    assert [(b.capability, b.state) for b in tracker.active()] == [(slo.key, "open")]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"open_after_s": -1.0}, "open_after_s"),
        ({"resolve_after_s": float("nan")}, "resolve_after_s"),
        ({"warning_margin": 1.0}, "warning_margin"),
        ({"min_samples": 0}, "min_samples"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        BreachTracker(**options)


def test_a_real_manager_s_window_opens_and_resolves_a_breach(tmp_path: Any) -> None:
    """End to end with SLOManager: slow requests for over a minute, then fast ones."""
    (tmp_path / "pdf.yml").write_text(
        "capability: {verb: convert, name: document_to_pdf}\n"
        "slo:\n"
        "  latency: {p50_ms: 50, p95_ms: 100, p99_ms: 200}\n"
        "  availability: {target: 0.999}\n",
        encoding="utf-8",
    )
    clock = ManualClock(start=NOW)
    manager = SLOManager(tmp_path, clock=clock)
    slo = manager.get_slo("convert:document_to_pdf")
    assert slo is not None
    tracker = BreachTracker(clock=clock)
    types: list[str] = []

    def run(seconds: int, latency_s: float) -> None:
        for _ in range(seconds):
            for _ in range(5):
                manager.record(slo.key, latency_s=latency_s, ok=True)
            status = manager.status(slo.key)
            assert status is not None
            types.extend(e.type for e in tracker.observe(status, slo))
            clock.advance(1.0)

    run(90, 0.3)  # 300 ms: p95 way over 100 ms
    assert types == ["warning", "breach"]
    run(200, 0.01)  # the 60 s window fills with fast requests, then 60 s compliant
    assert types == ["warning", "breach", "resolved"]
