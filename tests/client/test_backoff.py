"""Backoff with full jitter and Retry-After parsing: pure functions, no clock, no sleep."""

from __future__ import annotations

import math
from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard.client.backoff import full_jitter, parse_http_date, parse_retry_after

NOW = 784_111_777.0  # Sun, 06 Nov 1994 08:49:37 GMT, the RFC 9110 example


@given(
    retry=st.integers(0, 10_000),
    base=st.floats(0, 10, allow_nan=False),
    cap=st.floats(0, 100, allow_nan=False),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_full_jitter_scales_the_draw_over_the_whole_capped_interval(
    retry: int, base: float, cap: float, draw: float
) -> None:
    delay = full_jitter(retry, base, cap, lambda: draw)

    assert math.isfinite(delay)
    assert 0 <= delay <= min(cap, base * 2.0 ** min(retry, 64))
    assert delay == draw * min(cap, base * 2.0 ** min(retry, 64))


def test_full_jitter_doubles_its_interval_with_each_retry_until_the_cap() -> None:
    ceilings = [full_jitter(retry, 0.1, 1.0, lambda: 1.0) for retry in range(6)]

    assert ceilings[:4] == [0.1, 0.2, 0.4, 0.8]
    assert ceilings[4:] == [1.0, 1.0]


def test_full_jitter_rejects_a_negative_retry() -> None:
    with pytest.raises(ValueError, match="counts from 0"):
        full_jitter(-1, 0.1, 1.0, lambda: 0.5)


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("120", 120.0), (" 7 ", 7.0)])
def test_delay_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:50:07 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:50:07 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:50:07 1994",  # asctime, which carries no zone: GMT
    ],
)
def test_every_http_date_form_is_measured_from_now(value: str) -> None:
    assert parse_retry_after(value, NOW) == 30.0


def test_a_date_in_the_past_means_no_wait() -> None:
    assert parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    ["", "soon", "-5", "1.5", "+3", "\u0663", "Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 06 Nov"],
)
def test_anything_else_is_not_a_retry_after(value: str) -> None:
    assert parse_retry_after(value, NOW) is None


def test_an_absurd_delay_stays_a_finite_number() -> None:
    delay = parse_retry_after("9" * 5000, NOW)

    assert delay is not None
    assert math.isfinite(delay)
    assert delay > 365 * 86400


@given(st.text())
def test_parsing_never_raises_and_never_gives_a_negative_or_infinite_wait(value: str) -> None:
    delay = parse_retry_after(value, NOW)

    assert delay is None or (math.isfinite(delay) and delay >= 0)


@given(st.integers(0, 4_000_000_000), st.integers(-86_400, 86_400))
def test_http_dates_round_trip(when: int, offset: int) -> None:
    text = formatdate(when, usegmt=True)

    assert parse_http_date(text) == when
    assert parse_retry_after(text, when - offset) == max(0, offset)
