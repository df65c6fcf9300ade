"""Which alerts to fire: error-budget thresholds, fast burns, and breaches.

:class:`AlertEngine` reads the same live :class:`SLOStatus` as the breach
tracker and returns the :class:`Alert` records that are new. Ids are built
from what the alert is about, never from a counter, so a restarted process or
a second replica fires the *same* id for the same event; a shared store
(``save_alert``) then tells the notifier it was already sent.

- **Budget**: once per budget period for each ``error_budget.alerts`` entry
  whose threshold ``consumed`` has reached. The period is the calendar month
  (UTC) of the wall clock, e.g. ``2026-11``; id
  ``{capability}:budget:{threshold}:{channel}:{period}``. Consumption itself is
  the SLO manager's rolling 30 days in this process (approximation: the
  month the id names and the 30 days measured are not the same span). Only
  once those 30 days hold ``slo.error_budget.min_requests`` requests (by
  default 100, or ``1 / budget`` if more: 1,000 at 99.9%): one failed request
  in a fresh process pages nobody.
- **Burn**: the SRE workbook's multi-window alerts, on the windows the SLO
  manager keeps (5 m, 1 h, 6 h). ``page`` is the workbook's pair, 14.4x over
  1 h and 5 m; ``ticket`` is 6x over 6 h with 1 h as the short window (the
  workbook's is 30 m, which the manager does not keep). An alert fires when
  both windows burn at least ``factor``, the live window holds
  ``min_samples`` requests and the month ``min_requests`` (as for budget
  alerts); it fires again only after the condition has cleared, and at most once per long window (id
  ``{capability}:burn:{rule}:{start of the 1 h / 6 h slot}``). Rules are in
  order of precedence: while one burns, the later ones (a fast burn is also a
  slow one) are noted but not sent, as Alertmanager's inhibition would do.
- **Breach** (optional, on by default): a breach opening fires an alert whose
  id is the breach's id; its resolution fires one with ``resolves`` set to it.
- **Warning** (optional, on by default): a breach record starting (the 5%
  warning buffer, or the first bad evaluation) fires one alert on the channel
  ``warning``, id ``{breach id}:warning``, severity ``info``: once per breach,
  however long it lasts. When the record ends (resolved, or a near miss that
  never opened) a resolution with ``resolves`` set to it follows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sloguard._clock import Clock
from sloguard.exceptions import ConfigurationError
from sloguard.reporting.records import Alert, Breach, ReportEvent
from sloguard.slo.budget import BURN_RATE_WINDOWS, BudgetStatus
from sloguard.slo.manager import SLOStatus
from sloguard.slo.schema import SLOFile

Window = Literal["5m", "1h", "6h"]

DEFAULT_BURN_CHANNEL = "burn_rate"
"""Where burn-rate alerts go unless told otherwise; map it to sinks in alerts.yml."""
DEFAULT_BREACH_CHANNEL = "breach"
"""Where breach alerts go unless told otherwise."""
DEFAULT_WARNING_CHANNEL = "warning"
"""Where warnings go unless told otherwise (unmapped in alerts.yml: the log)."""


@dataclass(frozen=True, slots=True)
class BurnRule:
    """Fire when the error budget burns at least ``factor`` over both windows."""

    name: str
    factor: float
    long: Window
    short: Window
    severity: Literal["warning", "critical"]

    def __post_init__(self) -> None:
        for window in (self.long, self.short):
            if window not in BURN_RATE_WINDOWS:
                known = ", ".join(BURN_RATE_WINDOWS)
                raise ConfigurationError(
                    f"burn rule {self.name!r}: window {window!r} not in {known}"
                )
        if BURN_RATE_WINDOWS[self.short] > BURN_RATE_WINDOWS[self.long]:
            raise ConfigurationError(f"burn rule {self.name!r}: short window longer than long")
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise ConfigurationError(f"burn rule {self.name!r}: factor must be > 0")

    def rates(self, budget: BudgetStatus) -> tuple[float, float]:
        """The long and short windows' burn rates."""
        return _rate(budget, self.long), _rate(budget, self.short)


DEFAULT_BURN_RULES: tuple[BurnRule, ...] = (
    BurnRule("page", 14.4, "1h", "5m", "critical"),
    BurnRule("ticket", 6.0, "6h", "1h", "warning"),
)
"""14.4x over 1 h and 5 m spends 2% of a month's budget in an hour; 6x over 6 h, 5% in 6 h."""


def _rate(budget: BudgetStatus, window: Window) -> float:
    if window == "5m":
        return budget.burn_rate_5m
    if window == "1h":
        return budget.burn_rate_1h
    return budget.burn_rate_6h


def budget_period(at: float) -> str:
    """The budget period a wall-clock time falls in: its calendar month in UTC (``2026-11``)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m")


class RecentIds:
    """A set of ids that forgets the oldest once it holds ``max_size``: bounded dedupe."""

    __slots__ = ("_ids", "max_size")

    def __init__(self, max_size: int = 100_000) -> None:
        if max_size < 1:
            raise ConfigurationError(f"max_size must be at least 1, got {max_size!r}")
        self.max_size = max_size
        self._ids: dict[str, None] = {}

    def add(self, alert_id: str) -> bool:
        """Remember ``alert_id``; False if it was already there."""
        if alert_id in self._ids:
            return False
        if len(self._ids) >= self.max_size:
            del self._ids[next(iter(self._ids))]
        self._ids[alert_id] = None
        return True

    def discard(self, alert_id: str) -> None:
        self._ids.pop(alert_id, None)

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


class AlertEngine:
    """Turns statuses (and breach events) into new alerts; see the module docs.

    ``evaluate`` remembers what it fired, so calling it every few seconds fires
    each alert once. Times are wall-clock Unix seconds (``clock``, default
    ``time.time``). Not thread-safe: evaluate from one task.
    """

    def __init__(
        self,
        *,
        burn_rules: Iterable[BurnRule] = DEFAULT_BURN_RULES,
        burn_channel: str = DEFAULT_BURN_CHANNEL,
        breach_channel: str = DEFAULT_BREACH_CHANNEL,
        breach_alerts: bool = True,
        warning_channel: str = DEFAULT_WARNING_CHANNEL,
        warning_alerts: bool = True,
        min_samples: int | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.burn_rules = tuple(burn_rules)
        names = [rule.name for rule in self.burn_rules]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"burn rule names must be distinct, got {names}")
        self.burn_channel = burn_channel
        self.breach_channel = breach_channel
        self.breach_alerts = breach_alerts
        self.warning_channel = warning_channel
        self.warning_alerts = warning_alerts
        self.min_samples = min_samples
        self._clock = clock
        self._fired = RecentIds()
        self._burning: set[tuple[str, str]] = set()  # (capability, rule) while its condition holds

    def evaluate(
        self,
        status: SLOStatus,
        slo: SLOFile,
        events: Iterable[ReportEvent] = (),
        now: float | None = None,
    ) -> list[Alert]:
        """The alerts ``status`` (and the tracker's ``events`` for it) fire that are new."""
        at = self._clock() if now is None else now
        candidates = [
            *self._budget_alerts(status, slo, at),
            *self._burn_alerts(status, slo, at),
            *self._warning_alerts(events, at),
            *self._breach_alerts(events, at),
        ]
        return [alert for alert in candidates if self._fired.add(alert.id)]

    def _budget_alerts(self, status: SLOStatus, slo: SLOFile, at: float) -> Iterable[Alert]:
        budget = status.budget
        if budget.requests < slo.alert_min_requests:
            return  # a budget measured on a handful of requests means nothing yet
        period = budget_period(at)
        for crossed in budget.alerts_crossed:
            threshold = crossed.threshold
            yield Alert(
                id=f"{status.capability}:budget:{threshold:g}:{crossed.channel}:{period}",
                capability=status.capability,
                kind="budget",
                channel=crossed.channel,
                severity="critical" if threshold >= 1.0 else "warning",
                summary=(
                    f"{status.capability}: {budget.consumed:.0%} of the error budget spent "
                    f"(alert at {threshold:.0%})"
                ),
                fired_at=at,
                details={
                    "threshold": threshold,
                    "consumed": budget.consumed,
                    "period": period,
                    "budget": budget.budget,
                    "requests": budget.requests,
                    "errors": budget.errors,
                },
            )

    def _burn_alerts(self, status: SLOStatus, slo: SLOFile, at: float) -> Iterable[Alert]:
        needed = self.min_samples if self.min_samples is not None else slo.shedding.min_samples
        if status.requests < needed or status.budget.requests < slo.alert_min_requests:
            return  # too few requests to trust a rate; neither fire nor clear
        outranked = False  # an earlier rule burns: later ones are noted, not sent
        for rule in self.burn_rules:
            key = (status.capability, rule.name)
            long_rate, short_rate = rule.rates(status.budget)
            if long_rate < rule.factor or short_rate < rule.factor:
                self._burning.discard(key)
                continue
            was_burning = key in self._burning
            self._burning.add(key)
            if was_burning or outranked:
                outranked = True
                continue
            outranked = True
            slot_s = BURN_RATE_WINDOWS[rule.long]
            slot = int(at // slot_s * slot_s)
            yield Alert(
                id=f"{status.capability}:burn:{rule.name}:{slot}",
                capability=status.capability,
                kind="burn",
                channel=self.burn_channel,
                severity=rule.severity,
                summary=(
                    f"{status.capability}: error budget burning {long_rate:.1f}x over "
                    f"{rule.long} and {short_rate:.1f}x over {rule.short} "
                    f"({rule.name} at {rule.factor:g}x)"
                ),
                fired_at=at,
                details={
                    "rule": rule.name,
                    "factor": rule.factor,
                    "long_window": rule.long,
                    "short_window": rule.short,
                    "burn_rate_long": long_rate,
                    "burn_rate_short": short_rate,
                    "consumed": status.budget.consumed,
                },
            )

    def _warning_alerts(self, events: Iterable[ReportEvent], at: float) -> Iterable[Alert]:
        if not self.warning_alerts:
            return
        for event in events:
            breach = event.data.get("breach")
            if not isinstance(breach, Breach) or event.type not in ("warning", "resolved"):
                continue
            warning_id = f"{breach.id}:warning"
            if event.type == "warning":
                yield Alert(
                    id=warning_id,
                    capability=breach.capability,
                    kind="warning",
                    channel=self.warning_channel,
                    severity="info",
                    summary=(
                        f"{breach.capability}: SLO warning, within 5% of a target or past "
                        f"one: {'; '.join(breach.violations) or _near(breach)}"
                    ),
                    fired_at=at,
                    details=_breach_details(breach),
                )
            else:
                yield Alert(
                    id=f"{warning_id}:resolved",
                    capability=breach.capability,
                    kind="warning",
                    channel=self.warning_channel,
                    severity="info",
                    summary=f"{breach.capability}: SLO warning over ({breach.state})",
                    fired_at=at,
                    details=_breach_details(breach),
                    resolves=warning_id,
                )

    def _breach_alerts(self, events: Iterable[ReportEvent], at: float) -> Iterable[Alert]:
        if not self.breach_alerts:
            return
        for event in events:
            breach = event.data.get("breach")
            if not isinstance(breach, Breach):
                continue
            if event.type == "breach":
                yield Alert(
                    id=breach.id,
                    capability=breach.capability,
                    kind="breach",
                    channel=self.breach_channel,
                    severity="warning",
                    summary=f"{breach.capability}: SLO breach: {'; '.join(breach.violations)}",
                    fired_at=at,
                    details=_breach_details(breach),
                )
            elif event.type == "resolved" and breach.state == "resolved":
                yield Alert(
                    id=f"{breach.id}:resolved",
                    capability=breach.capability,
                    kind="breach",
                    channel=self.breach_channel,
                    severity="warning",  # as the alert it resolves: Alertmanager matches labels
                    summary=(
                        f"{breach.capability}: SLO breach resolved after "
                        f"{breach.duration_s or 0.0:.0f}s"
                    ),
                    fired_at=at,
                    details=_breach_details(breach),
                    resolves=breach.id,
                )


def _breach_details(breach: Breach) -> dict[str, object]:
    return {
        "breach_id": breach.id,
        "started_at": breach.started_at,
        "ended_at": breach.ended_at,
        "violations": list(breach.violations),
        "worst": dict(breach.worst),
        "severity": breach.severity,
        "credit_pct": breach.credit_pct,
    }


def _near(breach: Breach) -> str:
    """The worst values of a warning that has not missed a target yet."""
    shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(breach.worst.items()))
    return f"near its targets ({shown})" if shown else "near its targets"
