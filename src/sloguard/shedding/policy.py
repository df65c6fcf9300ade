"""The admission policy of one capability: how much of each priority to refuse.

The policy reads the capability's live status (once per evaluation, not per
request) and keeps one rejection ratio per sheddable priority. Admitting a
request is then a dictionary lookup and a random draw: a request of priority
``p`` is refused with probability ``ratios[p]``.

How the ratios move (docs/shedding.md has the full story):

- *Severity* measures the violation: the worst of ``observed / target`` over
  the latency percentiles, ``error rate / error budget`` for availability, and
  ``error rate / ceiling`` for an ``error_rate`` target (never throughput).
  A compliant capability, or one with fewer than ``min_samples`` requests in
  its window, is not violating, whatever its severity.
- Shedding starts when a violating capability reaches severity
  ``1 + hysteresis`` and, once started, follows the severity down to 1: a
  latency hovering around its target neither starts shedding nor flaps.
- A priority's target ratio grows linearly from 0 at severity 1 to its
  ``max_rejection`` at ``full_at`` (Envoy's admission control, graded by
  priority as in the SRE book): ``low`` whenever shedding; ``normal`` only when
  the violation is severe (``severe_at``) or has lasted ``persist_s``; ``high``,
  if listed at all, only when it is both; ``critical`` never.
- Ratios rise at once and fall at most ``max_rejection / recovery_s`` per
  second, so a capability that just became compliant readmits its low-priority
  traffic gradually instead of all at once.

Time comes from the caller, so tests drive it with a manual clock.
"""

from __future__ import annotations

from sloguard.slo.compliance import severity as severity_of
from sloguard.slo.manager import SLOStatus
from sloguard.slo.schema import Priority, SheddingConfig, SLOFile

_NEGLIGIBLE = 1e-9  # a ratio decayed to float dust is zero


def severity(slo: SLOFile, status: SLOStatus, *, latency: bool = True) -> float:
    """How far ``status`` is from the objectives of ``slo``: 1.0 is exactly on
    target, 2.0 twice over; 0.0 with no requests. ``latency`` False: errors only
    (availability and error rate). Throughput never counts: shedding cannot raise it."""
    measured = {"availability": status.availability}
    if latency:
        measured.update(p50_ms=status.p50_ms, p95_ms=status.p95_ms, p99_ms=status.p99_ms)
    return severity_of(slo, measured)


class SheddingPolicy:
    """The rejection ratios of one capability's priorities; see the module docs."""

    __slots__ = (
        "_updated_at",
        "_violating_since",
        "active",
        "config",
        "latency",
        "ratios",
        "severity",
    )

    def __init__(self, config: SheddingConfig, *, latency: bool = True) -> None:
        self.config = config
        self.latency = latency
        """Whether latency violations count; False while a concurrency limit keeps
        latency in check, so that this loop answers availability and budget burn."""
        self.ratios: dict[Priority, float] = {}
        """Non-zero rejection ratios by priority; a priority absent is always admitted."""
        self.active = False
        """Whether any priority is being refused (or would be, in a dry run)."""
        self.severity = 0.0
        """The severity seen at the last update (0.0 while not violating)."""
        self._violating_since: float | None = None
        self._updated_at: float | None = None

    def update(self, now: float, slo: SLOFile, status: SLOStatus) -> None:
        """Move the ratios towards what ``status``, seen at ``now``, calls for."""
        config = self.config
        elapsed = 0.0 if self._updated_at is None else max(0.0, now - self._updated_at)
        self._updated_at = now
        violating = (
            config.enabled and status.requests >= config.min_samples and not status.compliant
        )
        if violating and not self.latency:
            violating = severity(slo, status, latency=False) > 1.0
        if not violating:
            self._violating_since = None
            self.severity = level = 0.0
        else:
            if self._violating_since is None:
                self._violating_since = now
            self.severity = level = severity(slo, status, latency=self.latency)
            if not self.active and level < 1.0 + config.hysteresis:
                level = 0.0  # not yet: inside the hysteresis band
        ramp = min(1.0, max(0.0, (level - 1.0) / (config.full_at - 1.0)))
        severe = level >= config.severe_at
        persistent = (
            self._violating_since is not None and now - self._violating_since >= config.persist_s
        )
        ratios: dict[Priority, float] = {}
        for priority in config.shed_priorities:
            maximum: float = getattr(config.max_rejection, priority)
            if priority == "low":
                eligible = True
            elif priority == "normal":
                eligible = severe or persistent
            else:  # high
                eligible = severe and persistent
            target = maximum * ramp if eligible else 0.0
            current = self.ratios.get(priority, 0.0)
            if target < current:
                target = max(target, current - maximum * elapsed / config.recovery_s)
            if target > _NEGLIGIBLE:
                ratios[priority] = target
        self.ratios = ratios
        self.active = bool(ratios)
