"""AlertEngine: budget thresholds once per period, multi-window burn rates, breach alerts."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest

from sloguard._clock import ManualClock
from sloguard.exceptions import ConfigurationError
from sloguard.reporting import Alert, AlertEngine, BreachTracker, BurnRule, budget_period
from sloguard.slo import OutcomeCounter, SLOFile, SLOManager, SLOStatus
from tests.reporting.statuses import DAY, NOW, make_slo, make_status

HOUR = 3_600.0
SEED_SLO = Path(__file__).resolve().parents[2] / "state/controller/slos/convert_document_to_pdf.yml"
CAPABILITY = "convert:document_to_pdf"


@pytest.fixture
def slo() -> SLOFile:
    return make_slo()  # budget 0.1%; alerts at 50% (slack) and 90% (pagerduty)


@pytest.fixture
def plain() -> SLOFile:
    """The same SLO without budget alerts, so that burn tests see only burn alerts."""
    return make_slo(alerts=())


def spent(slo: SLOFile, fraction: float, now: float = NOW, **values: Any) -> SLOStatus:
    """A status whose month has spent ``fraction`` of the budget, a day ago (no fast burn)."""
    counter = OutcomeCounter()
    counter.add(now - DAY, 1_000_000, round(1_000_000 * 0.001 * fraction))
    return make_status(slo, counter=counter, now=now, **values)


def burning(slo: SLOFile, long_1h: float, short_5m: float, six_h: float | None = None) -> SLOStatus:
    """A status burning ``short_5m`` x over the last 5 minutes and ``long_1h`` x over the hour."""
    counter = OutcomeCounter()
    # 10,000 requests in the last minute, 10,000 earlier in the hour: rates add up as given.
    counter.add(NOW - 30, 10_000, round(10_000 * 0.001 * short_5m))
    earlier = 2 * long_1h - short_5m
    counter.add(NOW - 30 * 60, 10_000, round(10_000 * 0.001 * earlier))
    if six_h is not None:  # 20,000 more, 3 hours ago, to set the 6 h rate
        counter.add(NOW - 3 * HOUR, 20_000, round(20_000 * 0.001 * (2 * six_h - long_1h)))
    return make_status(slo, counter=counter, now=NOW)


def ids(alerts: list[Alert]) -> list[str]:
    return [a.id for a in alerts]


def test_budget_alerts_fire_once_per_threshold_and_period(slo: SLOFile) -> None:
    engine = AlertEngine()
    assert engine.evaluate(spent(slo, 0.4), slo, now=NOW) == []
    [half] = engine.evaluate(spent(slo, 0.6), slo, now=NOW)
    assert half.id == "convert:document_to_pdf:budget:0.5:slack:2025-11"
    assert (half.kind, half.channel, half.severity) == ("budget", "slack", "warning")
    assert half.summary == "convert:document_to_pdf: 60% of the error budget spent (alert at 50%)"
    assert half.details["consumed"] == pytest.approx(0.6)
    assert half.details["period"] == "2025-11"
    assert engine.evaluate(spent(slo, 0.7), slo, now=NOW + 60) == []  # once
    [ninety] = engine.evaluate(spent(slo, 0.95), slo, now=NOW + 120)
    assert (ninety.channel, ninety.details["threshold"]) == ("pagerduty", 0.9)
    assert engine.evaluate(spent(slo, 0.95), slo, now=NOW + 180) == []


def test_budget_alerts_fire_again_in_the_next_period(slo: SLOFile) -> None:
    engine = AlertEngine()
    first = engine.evaluate(spent(slo, 0.95), slo, now=NOW)
    december = NOW + 7 * DAY
    assert budget_period(december) == "2025-12"
    again = engine.evaluate(spent(slo, 0.95, now=december), slo, now=december)
    assert [a.details["threshold"] for a in again] == [0.5, 0.9]
    assert set(ids(first)).isdisjoint(ids(again))


def test_a_restarted_engine_fires_the_same_ids(slo: SLOFile) -> None:
    """Ids come from what an alert is about: a shared store can dedupe across restarts."""
    before = AlertEngine().evaluate(spent(slo, 0.95), slo, now=NOW)
    after = AlertEngine().evaluate(spent(slo, 0.95), slo, now=NOW + 3_000)
    assert ids(before) == ids(after)


def test_a_threshold_of_1_is_critical() -> None:
    slo = make_slo(alerts=((1.0, "pagerduty"),))
    [exhausted] = AlertEngine().evaluate(spent(slo, 1.2), slo, now=NOW)
    assert exhausted.severity == "critical"


def test_a_fast_burn_pages_once_while_it_lasts(plain: SLOFile) -> None:
    engine = AlertEngine()
    status = burning(plain, long_1h=15.0, short_5m=20.0)
    assert status.budget.burn_rate_1h == pytest.approx(15.0)
    assert status.budget.burn_rate_5m == pytest.approx(20.0)
    [page] = engine.evaluate(status, plain, now=NOW)
    slot = int(NOW // HOUR * HOUR)
    assert page.id == f"convert:document_to_pdf:burn:page:{slot}"
    assert (page.kind, page.channel, page.severity) == ("burn", "burn_rate", "critical")
    assert page.summary == (
        "convert:document_to_pdf: error budget burning 15.0x over 1h and 20.0x over 5m "
        "(page at 14.4x)"
    )
    assert page.details["burn_rate_long"] == pytest.approx(15.0)
    assert engine.evaluate(status, plain, now=NOW + 2 * HOUR) == []  # still the same burn


def test_both_windows_must_burn(plain: SLOFile) -> None:
    def rules(status: SLOStatus) -> list[str]:
        return [a.details["rule"] for a in AlertEngine().evaluate(status, plain, now=NOW)]

    # No page without both the hour and the 5 minutes at 14.4x; the ticket (6 h, 1 h) holds.
    assert rules(burning(plain, long_1h=10.0, short_5m=20.0)) == ["ticket"]
    assert rules(burning(plain, long_1h=15.0, short_5m=10.0)) == ["ticket"]
    assert rules(burning(plain, long_1h=5.0, short_5m=10.0)) == []


def test_a_burn_that_stops_and_starts_again_pages_again_in_a_later_slot(plain: SLOFile) -> None:
    engine = AlertEngine()
    fast, calm = burning(plain, 15.0, 20.0), burning(plain, 15.0, 1.0)
    assert len(engine.evaluate(fast, plain, now=NOW)) == 1
    assert engine.evaluate(calm, plain, now=NOW + 60) == []
    assert engine.evaluate(fast, plain, now=NOW + 120) == []  # same hour: same id, sent already
    assert engine.evaluate(calm, plain, now=NOW + 180) == []
    [later] = engine.evaluate(fast, plain, now=NOW + HOUR)
    assert later.id == f"convert:document_to_pdf:burn:page:{int(NOW // HOUR * HOUR + HOUR)}"


def test_a_page_outranks_the_ticket_of_the_same_burn(plain: SLOFile) -> None:
    engine = AlertEngine()
    status = burning(plain, long_1h=15.0, short_5m=20.0)
    assert status.budget.burn_rate_6h >= 6.0  # the ticket's condition holds too
    assert [a.details["rule"] for a in engine.evaluate(status, plain, now=NOW)] == ["page"]
    slower = burning(plain, long_1h=8.0, short_5m=8.0)
    assert engine.evaluate(slower, plain, now=NOW + 60) == []  # the same burn, calmer: no ticket


def test_a_slow_burn_opens_a_ticket(plain: SLOFile) -> None:
    status = burning(plain, long_1h=8.0, short_5m=8.0, six_h=7.0)
    assert status.budget.burn_rate_6h == pytest.approx(7.0)
    [ticket] = AlertEngine().evaluate(status, plain, now=NOW)
    assert (ticket.details["rule"], ticket.severity) == ("ticket", "warning")
    assert ticket.details["long_window"] == "6h"
    assert ticket.details["short_window"] == "1h"


def test_burn_alerts_need_enough_requests_in_the_live_window(plain: SLOFile) -> None:
    few = dataclasses.replace(burning(plain, 15.0, 20.0), requests=19)  # min_samples is 20
    engine = AlertEngine()
    assert engine.evaluate(few, plain, now=NOW) == []
    assert len(AlertEngine(min_samples=10).evaluate(few, plain, now=NOW)) == 1


def test_one_failed_request_in_a_fresh_process_pages_nobody(tmp_path: Path) -> None:
    """The seed's SLO (99.9%, alerts at 50% slack and 90% pagerduty) in a fresh process."""
    shutil.copy(SEED_SLO, tmp_path)
    manager = SLOManager(tmp_path, clock=ManualClock(1_000.0))
    engine = AlertEngine()
    manager.record(CAPABILITY, latency_s=0.01, ok=False)
    status = manager.status(CAPABILITY)
    slo = manager.get_slo(CAPABILITY)
    assert status is not None
    assert slo is not None
    assert status.budget.consumed == pytest.approx(1_000.0)  # 1 of 1 failed: 100,000% spent
    assert engine.evaluate(status, slo, now=NOW) == []
    for i in range(30):  # a burst: 31 requests, 6 failed, enough for the live window
        manager.record(CAPABILITY, latency_s=0.01, ok=i % 6 != 0)
    status = manager.status(CAPABILITY)
    assert status is not None
    assert status.requests >= slo.shedding.min_samples
    assert status.budget.burn_rate_5m > 14.4
    assert engine.evaluate(status, slo, now=NOW) == []  # no page from 31 requests either


def test_budget_and_burn_alerts_fire_once_the_month_holds_enough_requests(tmp_path: Path) -> None:
    shutil.copy(SEED_SLO, tmp_path)
    manager = SLOManager(tmp_path, clock=ManualClock(1_000.0))
    slo = manager.get_slo(CAPABILITY)
    assert slo is not None
    assert slo.alert_min_requests == 1_000
    engine = AlertEngine()
    for i in range(999):
        manager.record(CAPABILITY, latency_s=0.01, ok=i % 50 != 0)  # 2% fail: 20x the budget
    status = manager.status(CAPABILITY)
    assert status is not None
    assert engine.evaluate(status, slo, now=NOW) == []
    manager.record(CAPABILITY, latency_s=0.01)
    status = manager.status(CAPABILITY)
    assert status is not None
    fired = engine.evaluate(status, slo, now=NOW)
    assert sorted(a.kind for a in fired) == ["budget", "budget", "burn"]
    assert {a.channel for a in fired} == {"slack", "pagerduty", "burn_rate"}


def test_the_minimum_of_requests_is_the_slo_files(tmp_path: Path) -> None:
    text = SEED_SLO.read_text(encoding="utf-8")
    assert "  error_budget:\n" in text
    (tmp_path / "pdf.yml").write_text(
        text.replace("  error_budget:\n", "  error_budget:\n    min_requests: 10\n"),
        encoding="utf-8",
    )
    manager = SLOManager(tmp_path, clock=ManualClock(1_000.0))
    slo = manager.get_slo(CAPABILITY)
    assert slo is not None
    for _ in range(9):
        manager.record(CAPABILITY, latency_s=0.01, ok=False)
    status = manager.status(CAPABILITY)
    assert status is not None
    assert AlertEngine().evaluate(status, slo, now=NOW) == []
    manager.record(CAPABILITY, latency_s=0.01, ok=False)
    status = manager.status(CAPABILITY)
    assert status is not None
    assert [a.kind for a in AlertEngine().evaluate(status, slo, now=NOW)] == ["budget", "budget"]


def test_channels_and_rules_are_configurable(plain: SLOFile) -> None:
    rule = BurnRule("fast", 2.0, "1h", "5m", "warning")
    engine = AlertEngine(burn_rules=[rule], burn_channel="oncall")
    [alert] = engine.evaluate(burning(plain, 3.0, 3.0), plain, now=NOW)
    assert (alert.channel, alert.details["rule"]) == ("oncall", "fast")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("x", 2.0, "1d", "5m", "warning"), "window '1d'"),
        (("x", 2.0, "5m", "1h", "warning"), "short window longer"),
        (("x", 0.0, "1h", "5m", "warning"), "factor"),
    ],
)
def test_bad_burn_rules_are_refused(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        BurnRule(*args)


def test_burn_rule_names_are_distinct() -> None:
    rule = BurnRule("x", 2.0, "1h", "5m", "warning")
    with pytest.raises(ConfigurationError, match="distinct"):
        AlertEngine(burn_rules=[rule, rule])


def test_a_breach_fires_an_alert_and_its_resolution_resolves_it(slo: SLOFile) -> None:
    tracker, engine = BreachTracker(open_after_s=0, resolve_after_s=0), AlertEngine()
    bad = make_status(slo, p95=150.0)
    events = tracker.observe(bad, slo, NOW)
    warned, opened = engine.evaluate(bad, slo, events, now=NOW)
    assert (warned.kind, warned.channel) == ("warning", "warning")
    breach = events[-1].data["breach"]
    assert (opened.id, opened.kind, opened.channel) == (breach.id, "breach", "breach")
    assert opened.summary == "convert:document_to_pdf: SLO breach: p95 latency 150ms > target 100ms"
    assert opened.resolves is None
    good = make_status(slo)
    events = tracker.observe(good, slo, NOW + 90)
    warning_over, resolved = engine.evaluate(good, slo, events, now=NOW + 90)
    assert warning_over.resolves == warned.id
    assert resolved.resolves == breach.id
    assert resolved.id == f"{breach.id}:resolved"
    assert resolved.summary == "convert:document_to_pdf: SLO breach resolved after 90s"


def test_a_warning_alerts_the_warning_channel_once_per_breach(slo: SLOFile) -> None:
    tracker, engine = BreachTracker(open_after_s=0, resolve_after_s=0), AlertEngine()
    near = make_status(slo, p95=97.0)
    events = tracker.observe(near, slo, NOW)
    assert [e.type for e in events] == ["warning"]
    [warning] = engine.evaluate(near, slo, events, now=NOW)
    breach = events[0].data["breach"]
    assert (warning.id, warning.kind, warning.channel, warning.severity) == (
        f"{breach.id}:warning",
        "warning",
        "warning",
        "info",
    )
    assert warning.summary.startswith("convert:document_to_pdf: SLO warning, within 5%")
    assert "p95_ms 97" in warning.summary
    # Still near: no second warning for the same breach.
    assert engine.evaluate(near, slo, tracker.observe(near, slo, NOW + 5), now=NOW + 5) == []
    ended = tracker.observe(make_status(slo), slo, NOW + 10)
    assert [e.type for e in ended] == ["resolved"]
    [over] = engine.evaluate(make_status(slo), slo, ended, now=NOW + 10)
    assert (over.resolves, over.channel) == (warning.id, "warning")  # a near miss: no breach


def test_warning_and_breach_alerts_can_be_off(slo: SLOFile) -> None:
    bad = make_status(slo, p95=150.0)
    opened = BreachTracker(open_after_s=0).observe(bad, slo, NOW)
    quiet = AlertEngine(breach_alerts=False, warning_alerts=False)
    assert quiet.evaluate(bad, slo, opened, now=NOW) == []
    [warning] = AlertEngine(breach_alerts=False).evaluate(bad, slo, opened, now=NOW)
    assert warning.kind == "warning"
