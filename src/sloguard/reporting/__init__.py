"""SLO reporting: durable history, breaches, alerts and the /slo API."""

from sloguard.reporting.records import Alert, Breach, BreachState, MinuteAggregate, ReportEvent

__all__ = ["Alert", "Breach", "BreachState", "MinuteAggregate", "ReportEvent"]
