"""Per-capability SLOs: YAML files, live latency windows, compliance and error budgets."""

from sloguard.slo.budget import BudgetStatus, OutcomeCounter, budget_status, burn_rate
from sloguard.slo.compliance import Metrics, check_compliance
from sloguard.slo.loader import load_slo_dir, load_slo_file, parse_slo_text
from sloguard.slo.manager import SLOManager, SLOStatus
from sloguard.slo.schema import (
    AvailabilityTarget,
    BudgetAlert,
    CapabilitySpec,
    ConcurrencyConfig,
    EnforcementSpec,
    ErrorBudgetSpec,
    ErrorRateTarget,
    LatencyTarget,
    Metadata,
    Priority,
    QueueConfig,
    SheddingConfig,
    SLOFile,
    SLOSpec,
    ThroughputTarget,
)
from sloguard.slo.window import LatencyWindow, WindowSnapshot

__all__ = [
    "AvailabilityTarget",
    "BudgetAlert",
    "BudgetStatus",
    "CapabilitySpec",
    "ConcurrencyConfig",
    "EnforcementSpec",
    "ErrorBudgetSpec",
    "ErrorRateTarget",
    "LatencyTarget",
    "LatencyWindow",
    "Metadata",
    "Metrics",
    "OutcomeCounter",
    "Priority",
    "QueueConfig",
    "SLOFile",
    "SLOManager",
    "SLOSpec",
    "SLOStatus",
    "SheddingConfig",
    "ThroughputTarget",
    "WindowSnapshot",
    "budget_status",
    "burn_rate",
    "check_compliance",
    "load_slo_dir",
    "load_slo_file",
    "parse_slo_text",
]
