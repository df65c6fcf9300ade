"""SLO reporting: durable history, breaches, alerts and the /slo API."""

from sloguard.reporting.alerts import (
    DEFAULT_BURN_RULES,
    AlertEngine,
    BurnRule,
    budget_period,
)
from sloguard.reporting.breaches import BreachTracker
from sloguard.reporting.events import EventHub, Subscription, alert_event, event_json
from sloguard.reporting.monitor import SLOMonitor
from sloguard.reporting.mount import SLOApp
from sloguard.reporting.notifier import Notifier, NotifierStats
from sloguard.reporting.records import Alert, Breach, BreachState, MinuteAggregate, ReportEvent
from sloguard.reporting.reporter import Reporter
from sloguard.reporting.shedding import LimitTracker, shedding_json
from sloguard.reporting.sinks import AlertsConfig, load_alerts_file

__all__ = [
    "DEFAULT_BURN_RULES",
    "Alert",
    "AlertEngine",
    "AlertsConfig",
    "Breach",
    "BreachState",
    "BreachTracker",
    "BurnRule",
    "EventHub",
    "LimitTracker",
    "MinuteAggregate",
    "Notifier",
    "NotifierStats",
    "ReportEvent",
    "Reporter",
    "SLOApp",
    "SLOMonitor",
    "Subscription",
    "alert_event",
    "budget_period",
    "event_json",
    "load_alerts_file",
    "shedding_json",
]
