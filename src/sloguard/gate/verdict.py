"""Judging measurements against SLO files: one verdict per capability.

The verdict and its violation strings come from
:func:`sloguard.slo.check_compliance`, the function ``SLOManager`` uses for
live windows, so a CI gate and a running service say the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from sloguard.gate.measured import Measured
from sloguard.slo.compliance import check_compliance
from sloguard.slo.schema import SLOFile

Status = Literal["ok", "violated", "insufficient data", "unchecked"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One capability's outcome.

    ``ok``: every measured value meets its target. ``violated``: one or more
    does not (``violations`` says which, in the SLO manager's words).
    ``insufficient data``: fewer than ``min_requests`` requests (or none) were
    measured, or the file does not say how many. ``unchecked``: measured, but no SLO
    file defines the capability.
    """

    capability: str
    status: Status
    measured: Measured | None
    slo: SLOFile | None
    violations: tuple[str, ...] = ()
    min_requests: int | None = None


@dataclass(frozen=True, slots=True)
class CheckReport:
    """The verdicts of a check, sorted by capability, and whether it passes."""

    verdicts: tuple[Verdict, ...]
    fail_on_insufficient_data: bool = False

    def count(self, status: Status) -> int:
        return sum(1 for v in self.verdicts if v.status == status)

    @property
    def failures(self) -> tuple[Verdict, ...]:
        """The verdicts that fail the check: violations, and insufficient data if asked."""
        failing: set[Status] = {"violated"}
        if self.fail_on_insufficient_data:
            failing.add("insufficient data")
        return tuple(v for v in self.verdicts if v.status in failing)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """``1 violated, 2 ok, 1 unchecked: FAIL``."""
        order: tuple[Status, ...] = ("violated", "insufficient data", "ok", "unchecked")
        parts = [f"{self.count(s)} {s}" for s in order if self.count(s)]
        return f"{', '.join(parts) or 'nothing to check'}: {'PASS' if self.passed else 'FAIL'}"


def judge(
    slos: Iterable[SLOFile],
    measured: Mapping[str, Measured],
    *,
    min_requests: int | None = None,
    fail_on_insufficient_data: bool = False,
) -> CheckReport:
    """Judge each capability with an SLO file or a measurement.

    ``min_requests``: requests needed for a verdict; by default each SLO's
    ``shedding.min_samples`` (20 unless set), the count the live policy needs too.
    """
    by_key = {slo.key: slo for slo in slos}
    verdicts = []
    for capability in sorted(by_key.keys() | measured.keys()):
        slo, found = by_key.get(capability), measured.get(capability)
        if slo is None:
            verdicts.append(Verdict(capability, "unchecked", found, None))
            continue
        needed = slo.shedding.min_samples if min_requests is None else min_requests
        if found is None or found.requests is None or found.requests < max(needed, 1):
            verdicts.append(Verdict(capability, "insufficient data", found, slo, (), needed))
            continue
        compliant, violations = check_compliance(slo, found.as_metrics())
        status: Status = "ok" if compliant else "violated"
        verdicts.append(Verdict(capability, status, found, slo, tuple(violations), needed))
    return CheckReport(tuple(verdicts), fail_on_insufficient_data)
