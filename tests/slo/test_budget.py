from __future__ import annotations

from pathlib import Path

import pytest

from sloguard.slo import OutcomeCounter, SLOFile, budget_status, burn_rate, load_slo_file

DAY = 86_400.0
NOW = 100 * DAY  # far from zero, like a monotonic clock on a long-running host


@pytest.fixture
def seed(state_slos: Path) -> SLOFile:
    """Availability 99.9% (budget 0.1%), alerts at 50% (slack) and 90% (pagerduty)."""
    return load_slo_file(state_slos / "convert_document_to_pdf.yml")


def test_burn_rate_is_error_rate_over_budget() -> None:
    assert burn_rate(10_000, 10, 0.001) == pytest.approx(1.0)
    assert burn_rate(1_000, 144, 0.01) == pytest.approx(14.4)
    assert burn_rate(0, 0, 0.001) == 0.0


def test_multi_window_burn_rates_and_month_consumption(seed: SLOFile) -> None:
    counter = OutcomeCounter()
    counter.add(NOW - 40 * DAY, 1_000_000, 1_000_000)  # before the month: forgotten
    counter.add(NOW - 10 * DAY, 60_000, 30)
    counter.add(NOW - 3 * 3_600, 20_000, 0)
    counter.add(NOW - 30 * 60, 10_000, 100)
    counter.add(NOW - 30, 10_000, 20)
    status = budget_status(seed, counter, NOW)
    assert status.budget == 0.001
    assert status.burn_rate_5m == pytest.approx((20 / 10_000) / 0.001)  # 2.0
    assert status.burn_rate_1h == pytest.approx((120 / 20_000) / 0.001)  # 6.0
    assert status.burn_rate_6h == pytest.approx((120 / 40_000) / 0.001)  # 3.0
    assert (status.requests, status.errors) == (100_000, 150)
    assert status.consumed == pytest.approx(1.5)
    assert status.remaining == pytest.approx(-0.5)
    assert [a.channel for a in status.alerts_crossed] == ["slack", "pagerduty"]


def test_pending_counts_join_every_span(seed: SLOFile) -> None:
    counter = OutcomeCounter()
    counter.add(NOW - 2 * 3_600, 1_000, 0)
    status = budget_status(seed, counter, NOW, pending=(1_000, 2))
    assert status.burn_rate_5m == pytest.approx(2.0)
    assert status.burn_rate_1h == pytest.approx(2.0)
    assert status.burn_rate_6h == pytest.approx(1.0)
    assert status.consumed == pytest.approx(1.0)


def test_no_traffic_spends_nothing(seed: SLOFile) -> None:
    status = budget_status(seed, None, NOW)
    assert (status.requests, status.consumed, status.burn_rate_5m) == (0, 0.0, 0.0)
    assert status.alerts_crossed == ()
    assert status.remaining == 1.0


@pytest.mark.parametrize(
    ("errors", "channels"),
    [(49, []), (50, ["slack"]), (89, ["slack"]), (90, ["slack", "pagerduty"])],
)
def test_alert_is_crossed_at_its_threshold_exactly(
    seed: SLOFile, errors: int, channels: list[str]
) -> None:
    counter = OutcomeCounter()
    counter.add(NOW - DAY, 100_000, errors)  # budget: 100 errors
    status = budget_status(seed, counter, NOW)
    assert status.consumed == pytest.approx(errors / 100)
    assert [a.channel for a in status.alerts_crossed] == channels


def test_spans_slide_with_time(seed: SLOFile) -> None:
    counter = OutcomeCounter()
    counter.add(NOW, 1_000, 10)  # burn rate 10 wherever it is counted
    later = [
        (0.0, (10.0, 10.0, 10.0, 1_000)),
        (10 * 60, (0.0, 10.0, 10.0, 1_000)),
        (2 * 3_600, (0.0, 0.0, 10.0, 1_000)),
        (7 * 3_600, (0.0, 0.0, 0.0, 1_000)),
        (31 * DAY, (0.0, 0.0, 0.0, 0)),
    ]
    for elapsed, (r5m, r1h, r6h, requests) in later:
        status = budget_status(seed, counter, NOW + elapsed)
        assert (status.burn_rate_5m, status.burn_rate_1h, status.burn_rate_6h) == pytest.approx(
            (r5m, r1h, r6h)
        ), elapsed
        assert status.requests == requests, elapsed


def test_rings_reuse_their_slots_without_leaking_old_counts(seed: SLOFile) -> None:
    counter = OutcomeCounter()
    # Two months of steady traffic, one batch a minute: every slot is reused.
    minute = 60.0
    start = NOW - 60 * DAY
    t = start
    while t < NOW:
        counter.add(t, 10, 0)
        t += minute
    counter.add(NOW - 1, 100, 5)
    status = budget_status(seed, counter, NOW)
    assert status.requests == pytest.approx(30 * 24 * 60 * 10 + 100, rel=0.01)
    assert status.errors == 5
    # 5m is the open 1-minute slot (empty: NOW starts it) and the four before it,
    # each of 10 requests, the last also holding the 100.
    assert status.burn_rate_5m == pytest.approx((5 / 140) / 0.001)


@pytest.mark.parametrize("big", [65_535, 65_536, 2**32 - 1, 2**32, 2**40])
def test_counts_are_exact_whatever_their_size(seed: SLOFile, big: int) -> None:
    # Counts start 2 bytes wide and widen when one would not fit, never losing a request.
    counter = OutcomeCounter()
    counter.add(NOW - 10 * DAY, 3, 1)
    counter.add(NOW - 60, big - 1, big // 4)
    counter.add(NOW - 30, 1, 1)  # the same 1-minute slot: big requests in it now
    counter.add(NOW - 10, 7, 0)
    status = budget_status(seed, counter, NOW)
    assert (status.requests, status.errors) == (big + 10, big // 4 + 2)
    assert counter.totals(NOW, 300.0) == (big + 7, big // 4 + 1)
    assert counter.totals(NOW, 6 * 3_600.0) == (big + 7, big // 4 + 1)
