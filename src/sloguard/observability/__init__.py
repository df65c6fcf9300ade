"""Observability: Prometheus metrics (more to come: traces, alert rules, dashboards)."""
