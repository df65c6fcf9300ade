"""Priority load shedding: which requests a capability refuses while it misses its SLO."""

from sloguard.shedding.policy import SheddingPolicy, severity
from sloguard.shedding.priority import DEFAULT_PRIORITY, PRIORITIES, parse_priority

__all__ = ["DEFAULT_PRIORITY", "PRIORITIES", "SheddingPolicy", "parse_priority", "severity"]
