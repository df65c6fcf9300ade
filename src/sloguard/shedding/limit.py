"""The concurrency limit of one capability: how many of its requests may run at once.

A :class:`Limit` only computes the number; admitting against it is
:mod:`sloguard.shedding.limiter`'s job (Netflix's concurrency-limits separates
the two the same way). Every finished request is one sample: its latency, how
many requests were in flight when it was admitted (itself included), and
whether it was *dropped* (timed out, or failed because the service was
overloaded).

:class:`AdaptiveLimit` steers the limit so that the capability's latency stays
within its SLO (docs/shedding.md has the full story):

- Samples are gathered over an *interval*: at least ``interval_s`` and one
  median latency long (so that each update sees the effect of the previous
  one), and at least ``min_samples`` samples.
- *SLO pressure*: each targeted percentile, read by nearest rank, over
  ``setpoint`` times its target; the worst of them. 1.0 is on the setpoint.
  The median is read from the interval; a tail percentile from the latest
  samples enough to show it (20 for a p95, 100 for a p99), so that one slow
  answer among ten is not taken for a p99.
- *Knee pressure*: the median over ``tolerance`` times the *no-load latency*,
  the lowest median of an interval with at most ``min_limit`` requests in
  flight on average. The pressure used is the smaller of the two: an SLO the
  service cannot meet even unloaded steers to the knee of its latency curve,
  as Envoy's gradient does, instead of starving the service.
- Drops are pressure too: a share ``d`` of dropped samples is a pressure of at
  least ``1 / (1 - d)``, at most 2.
- Pressure above 1 cuts the limit at once to the concurrency at which the
  samples would have met the setpoint, by Little's law: their mean in-flight
  count over the pressure (at most halving it).
- Pressure below 1 grows the limit half way towards ``limit / pressure`` (at
  most doubling it), only when the limit was reached in the interval: an
  unused limit proves nothing. Near the concurrency of the last cut (from
  90% of it) growth slows to 5% an interval, so a service whose latency
  jumps at a threshold is probed gently instead of overshot; that memory is
  dropped once the service runs 1.5 times past it without pressure, or the
  no-load latency is learned anew.
- A limit that was not reached and is more than twice the peak in flight
  decays a tenth of the way towards twice the peak per interval, so a sudden
  burst meets a limit near what was last tested rather than one never tried.
- The limit stays within ``[min_limit, max_limit]``. After a few intervals at
  its minimum, the no-load latency is learned again from the current median:
  the service itself has become slower.

Time comes from the caller (``now`` of each sample), so tests and simulations
drive it with a manual clock.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping
from typing import Protocol

from sloguard.slo.schema import ConcurrencyConfig, LatencyTarget

_MAX_CUT = 2.0  # one interval at most halves the limit ...
_MAX_GROWTH = 2.0  # ... or doubles it
_GROWTH_STEP = 0.5  # the share of the way to the grown limit taken per interval
_NEAR = 0.9  # growth slows down from this share of the concurrency that last hurt ...
_PROBE = 1.05  # ... to this factor per interval, ...
_FORGET = 1.5  # ... until it runs this far past it without pain
_DECAY_STEP = 0.1  # the share of the way to twice the peak taken per unused interval
_RELEARN_AFTER = 5  # intervals at the minimum before the no-load latency is learned anew
_RECENT = 1024  # successes kept: an interval's, and at least enough to read a p99


class Limit(Protocol):
    """Computes a concurrency limit from the samples of finished requests."""

    @property
    def limit(self) -> int:
        """The number of requests that may be in flight at once now."""
        ...

    def on_sample(self, now: float, latency_s: float, inflight: int, dropped: bool) -> None:
        """One finished request: ``latency_s`` long, admitted with ``inflight`` requests
        in flight (itself included), ``dropped`` if it timed out or failed from overload."""
        ...


class FixedLimit:
    """A limit that never moves: ``limit`` requests in flight at most."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a limit must be at least 1, got {limit}")
        self.limit = limit

    def on_sample(self, now: float, latency_s: float, inflight: int, dropped: bool) -> None:
        """Samples change nothing."""


class AdaptiveLimit:
    """A limit steered so that latency stays within the SLO's targets; see the module docs."""

    __slots__ = (
        "_at_min",
        "_ceiling",
        "_count",
        "_dropped",
        "_estimate",
        "_interval_end",
        "_limit_before",
        "_peak",
        "_recent",
        "_targets",
        "interval_s",
        "limit",
        "max_limit",
        "median_s",
        "min_limit",
        "min_samples",
        "noload_s",
        "pressure",
        "tolerance",
    )

    def __init__(
        self,
        targets: Mapping[float, float],
        *,
        initial: int = 10,
        min_limit: int = 2,
        max_limit: int = 1000,
        setpoint: float = 0.8,
        tolerance: float = 1.5,
        interval_s: float = 0.1,
        min_samples: int = 10,
    ) -> None:
        """``targets`` maps a quantile (0.95) to its latency target in seconds (0.1)."""
        if not targets or not all(0 < q < 1 and t > 0 for q, t in targets.items()):
            raise ValueError(f"targets must map quantiles in (0, 1) to positive seconds: {targets}")
        if not 1 <= min_limit <= initial <= max_limit:
            raise ValueError(
                f"need 1 <= min_limit <= initial <= max_limit, got {min_limit}, {initial}, "
                f"{max_limit}"
            )
        if not (0 < setpoint <= 1 and tolerance > 1 and interval_s > 0 and min_samples >= 1):
            raise ValueError(
                "need 0 < setpoint <= 1, tolerance > 1, interval_s > 0 and min_samples >= 1"
            )
        # (quantile, the latency to steer it to, the samples needed to see it at all)
        self._targets = tuple(
            (q, setpoint * t, math.ceil(round(1 / (1 - q), 6))) for q, t in sorted(targets.items())
        )
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.tolerance = tolerance
        self.interval_s = interval_s
        self.min_samples = min_samples
        self.limit = initial
        """The limit now: the estimate rounded down, within ``[min_limit, max_limit]``."""
        self.noload_s: float | None = None
        """The learned no-load latency: the lowest median of an interval with at most
        ``min_limit`` requests in flight on average (None before one)."""
        self.median_s: float | None = None
        """The median latency of the last interval (None before one)."""
        self.pressure = 0.0
        """The pressure of the last interval: above 1 cuts the limit, below 1 may grow it."""
        self._estimate = float(initial)
        # (latency, in flight at admission) of the latest successes, newest last
        self._recent: deque[tuple[float, int]] = deque(maxlen=_RECENT)
        self._interval_end = -math.inf  # when the current interval may end
        self._count = self._dropped = self._peak = 0
        self._at_min = 0
        self._limit_before = initial
        self._ceiling: float | None = None

    @classmethod
    def from_config(cls, config: ConcurrencyConfig, latency: LatencyTarget) -> AdaptiveLimit:
        """The limit an SLO file's ``shedding.concurrency`` and ``slo.latency`` describe."""
        return cls(
            {  # the percentiles the file sets a target for (at least one)
                q: ms / 1000
                for q, ms in ((0.5, latency.p50_ms), (0.95, latency.p95_ms), (0.99, latency.p99_ms))
                if ms is not None
            },
            initial=config.initial_limit,
            min_limit=config.min,
            max_limit=config.max,
            setpoint=config.setpoint,
            tolerance=config.tolerance,
            interval_s=config.interval_ms / 1000,
        )

    @property
    def estimate(self) -> float:
        """The limit before rounding."""
        return self._estimate

    def on_sample(self, now: float, latency_s: float, inflight: int, dropped: bool) -> None:
        """Add one finished request to the interval; update the limit when it is over."""
        if dropped:
            self._dropped += 1
        else:
            self._recent.append((latency_s if latency_s > 0.0 else 0.0, inflight))
        self._count += 1
        if inflight > self._peak:
            self._peak = inflight
        if now >= self._interval_end:
            if self._interval_end == -math.inf:  # the first sample starts the first interval
                self._interval_end = now + self.interval_s
            elif self._count >= self.min_samples:
                self._update()
                self._interval_end = now + max(self.interval_s, self.median_s or 0.0)
                self._count = self._dropped = self._peak = 0

    def _update(self) -> None:
        recent = self._recent
        fresh = min(self._count - self._dropped, len(recent))
        pressure, inflight = 0.0, float(self._peak)
        if fresh:
            interval = sorted(itertools.islice(reversed(recent), fresh))
            median = self.median_s = interval[math.ceil(0.5 * fresh) - 1][0]
            interval_inflight = sum(n for _, n in interval) / fresh
            for q, goal, needed in self._targets:
                # A tail percentile is read from the latest samples enough to see it.
                if needed > len(recent):
                    continue
                window = (
                    interval
                    if needed <= fresh
                    else sorted(itertools.islice(reversed(recent), needed))
                )
                observed = window[math.ceil(q * len(window)) - 1][0] / goal
                if observed > pressure:
                    pressure = observed
                    inflight = sum(n for _, n in window) / len(window)
            # Only an interval with at most min_limit in flight shows the no-load latency;
            # one long at the minimum shows that the service itself has become slower.
            if interval_inflight <= self.min_limit:
                if self._at_min >= _RELEARN_AFTER:
                    self.noload_s, self._ceiling = median, None
                elif self.noload_s is None or median < self.noload_s:
                    self.noload_s = median
            if self.noload_s:
                knee = median / (self.tolerance * self.noload_s)
                if knee < pressure:
                    pressure, inflight = knee, interval_inflight
        if self._dropped:
            share = min(0.5, self._dropped / self._count)
            if 1.0 / (1.0 - share) > pressure:
                pressure = 1.0 / (1.0 - share)
        self.pressure = pressure

        estimate = self._estimate
        if pressure > 1.0:
            # Little's law: the concurrency at which these samples would have met the goal.
            estimate = min(estimate, inflight / min(pressure, _MAX_CUT))
            self._ceiling = inflight
        elif self._peak >= min(self.limit, self._limit_before):
            grown = estimate * min(_MAX_GROWTH, 1.0 / pressure if pressure > 0 else _MAX_GROWTH)
            grown = estimate + _GROWTH_STEP * (grown - estimate)
            if self._ceiling is not None:
                if inflight > _FORGET * self._ceiling:
                    self._ceiling = None  # far past where it hurt last time: the service changed
                else:
                    grown = min(grown, max(_NEAR * self._ceiling, estimate * _PROBE))
            estimate = grown
        elif 2 * self._peak < estimate:
            estimate -= _DECAY_STEP * (estimate - 2 * self._peak)
        estimate = max(float(self.min_limit), min(float(self.max_limit), estimate))
        self._estimate = estimate
        self._limit_before = self.limit
        self.limit = int(estimate)
        self._at_min = self._at_min + 1 if self.limit == self.min_limit else 0


def limit_for(config: ConcurrencyConfig, latency: LatencyTarget) -> Limit | None:
    """The limit ``config`` asks for (None when its mode is ``off``)."""
    if config.mode == "off":
        return None
    if config.mode == "fixed":
        return FixedLimit(config.initial_limit)
    return AdaptiveLimit.from_config(config, latency)
