"""How long to wait before a retry: exponential backoff with full jitter, and ``Retry-After``.

Pure functions; the random source and the current time are arguments.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from datetime import UTC

Random = Callable[[], float]
"""A source of floats uniform in [0, 1), like ``random.random``."""

# Far beyond any deadline; keeps a hostile Retry-After a finite float.
_MAX_SECONDS = 2**31


def full_jitter(retry: int, base: float, cap: float, random: Random) -> float:
    """A delay uniform in [0, min(cap, base * 2**retry)) ("full jitter"); ``retry`` counts from 0.

    Spreading each client's wait over the whole interval keeps a fleet that failed
    together from retrying together.
    """
    if retry < 0:
        raise ValueError(f"retry counts from 0, got {retry!r}")
    ceiling = base * 2.0 ** min(retry, 64)  # 2**64 * base is past any sane cap already
    return random() * min(cap, ceiling)


def parse_http_date(value: str) -> float | None:
    """An HTTP-date (RFC 9110 section 5.6.7, any of its three forms) as a POSIX timestamp;
    ``None`` when ``value`` is not one."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # asctime dates carry no zone; HTTP dates are GMT
    try:
        return when.timestamp()
    except (OverflowError, ValueError):
        return None


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110 section 10.2.3).

    ``value`` is delay-seconds (``120``) or an HTTP-date, which is measured from
    ``now`` (a POSIX timestamp: the response's ``Date`` when it has one, so that the
    two clocks compared are the server's). A date in the past means no wait.
    Anything else is ``None``: the caller falls back to its own backoff.
    """
    value = value.strip()
    if value.isascii() and value.isdigit():
        try:
            return float(min(int(value), _MAX_SECONDS))
        except ValueError:  # more digits than int() will convert
            return float(_MAX_SECONDS)
    when = parse_http_date(value)
    if when is None or not math.isfinite(when - now):
        return None
    return min(max(0.0, when - now), float(_MAX_SECONDS))
