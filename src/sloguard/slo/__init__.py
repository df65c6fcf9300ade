"""Per-capability SLOs: YAML files, live latency windows, compliance and error budgets."""

from sloguard.slo.loader import load_slo_dir, load_slo_file, parse_slo_text
from sloguard.slo.schema import (
    AvailabilityTarget,
    BudgetAlert,
    CapabilitySpec,
    EnforcementSpec,
    ErrorBudgetSpec,
    LatencyTarget,
    Metadata,
    Priority,
    SheddingConfig,
    SLOFile,
    SLOSpec,
)

__all__ = [
    "AvailabilityTarget",
    "BudgetAlert",
    "CapabilitySpec",
    "EnforcementSpec",
    "ErrorBudgetSpec",
    "LatencyTarget",
    "Metadata",
    "Priority",
    "SLOFile",
    "SLOSpec",
    "SheddingConfig",
    "load_slo_dir",
    "load_slo_file",
    "parse_slo_text",
]
