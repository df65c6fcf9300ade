"""Priority load shedding: which requests a capability refuses while it misses its SLO."""

from sloguard.shedding.limit import AdaptiveLimit, FixedLimit, Limit
from sloguard.shedding.limiter import Permit, PriorityLimiter, Refusal, RefusalReason, limiter_for
from sloguard.shedding.policy import SheddingPolicy, severity
from sloguard.shedding.priority import DEFAULT_PRIORITY, PRIORITIES, parse_priority

__all__ = [
    "DEFAULT_PRIORITY",
    "PRIORITIES",
    "AdaptiveLimit",
    "FixedLimit",
    "Limit",
    "Permit",
    "PriorityLimiter",
    "Refusal",
    "RefusalReason",
    "SheddingPolicy",
    "limiter_for",
    "parse_priority",
    "severity",
]
