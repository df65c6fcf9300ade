"""The SLO file: one YAML document per capability, validated into frozen pydantic models.

The schema is the seed's (``capability``, ``slo``, ``enforcement``,
``metadata``) plus optional ``tier`` (an SLA tier's preset targets, applied by
the loader: :mod:`sloguard.slo.tiers`), ``shedding``, ``credits`` and
``max_credit_pct``; ``slo`` may add ``error_rate`` and ``throughput`` targets,
and its latency targets are each optional (at least one). Unknown fields are errors,
numbers must be numbers (``"100"`` is not a latency), and bounds are checked
once at load so that the hot path only reads plain attributes.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)

Priority = Literal["critical", "high", "normal", "low"]
"""Request priorities, most important first; ``critical`` is never shed."""

SheddablePriority = Literal["high", "normal", "low"]

# Strict: YAML already types its scalars, so a quoted number is a mistake, not a number.
PositiveMs = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(strict=True, gt=0, lt=1, allow_inf_nan=False)]
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def _name(value: str) -> str:
    if not _NAME.match(value):
        # Said in words: the pattern itself helps no one who wrote `verb: Convert PDF`.
        raise ValueError(
            f"{value!r} is not a valid name: use letters, digits, '_', '.' and '-' "
            "(no spaces or ':'), starting with a letter, a digit or '_'"
        )
    return value


Name = Annotated[str, Field(strict=True), AfterValidator(_name)]
Label = Annotated[str, Field(strict=True, min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CapabilitySpec(_Model):
    """Which capability the file is about; its key is ``verb:name``."""

    verb: Name
    name: Name
    version: StrictStr = "1.0"


class LatencyTarget(_Model):
    """Latency percentiles not to exceed, in milliseconds: at least one of them, and
    those given must not decrease (p50 <= p95 <= p99)."""

    p50_ms: PositiveMs | None = None
    p95_ms: PositiveMs | None = None
    p99_ms: PositiveMs | None = None

    @model_validator(mode="after")
    def _ordered(self) -> LatencyTarget:
        given = [(k, v) for k, v in self.targets().items() if v is not None]
        if not given:
            raise ValueError("give at least one of p50_ms, p95_ms and p99_ms")
        if any(a[1] > b[1] for a, b in itertools.pairwise(given)):
            shown = ", ".join(f"{k}={v:g}" for k, v in given)
            raise ValueError(f"percentiles must not decrease: {shown}")
        return self

    def targets(self) -> dict[str, float | None]:
        """``{"p50_ms": ..., "p95_ms": ..., "p99_ms": ...}``, None where no target is set."""
        return {"p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms}


class AvailabilityTarget(_Model):
    """The fraction of requests that must succeed, strictly between 0 and 1."""

    target: Fraction

    @field_validator("target", mode="before")
    @classmethod
    def _not_a_percentage(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool) and 1 < value < 100:
            raise ValueError(
                f"{value:g} is a percentage; the target is a fraction between 0 and 1: "
                f"did you mean {value / 100:g}?"
            )
        return value


class ErrorRateTarget(_Model):
    """The largest share of requests that may fail (5xx), in percent, over the live
    window: a ceiling of its own, beside the availability target (an SLA may state both)."""

    max_pct: Annotated[float, Field(strict=True, gt=0, lt=100, allow_inf_nan=False)]


class ThroughputTarget(_Model):
    """A floor on successful requests per second, judged only while demand (requests
    arriving, refused ones included) reaches it. Reported and alerted; never a reason
    to shed (shedding lowers throughput)."""

    min_rps: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]


class BudgetAlert(_Model):
    """Notify ``channel`` once this fraction of the month's error budget is spent."""

    threshold: Annotated[float, Field(strict=True, gt=0, le=1, allow_inf_nan=False)]
    channel: Label


MIN_ALERT_REQUESTS = 100
"""The fewest requests budget and burn-rate alerts are judged on, whatever the target."""


class ErrorBudgetSpec(_Model):
    """The month's error budget and the alerts on its consumption.

    ``monthly_pct`` is the budget as a percentage of requests; it is implied by
    the availability target (``(1 - target) * 100``) and, when given, must agree.
    """

    monthly_pct: Annotated[float, Field(strict=True, gt=0, lt=100, allow_inf_nan=False)] | None = (
        None
    )
    alerts: tuple[BudgetAlert, ...] = ()
    min_requests: Annotated[int, Field(strict=True, ge=1)] | None = None
    """Requests the month must hold (in this process) before budget or burn-rate alerts
    fire; default :data:`MIN_ALERT_REQUESTS`, or more: enough for the budget to allow one
    failed request (``1 / (1 - target)``). See :attr:`SLOFile.alert_min_requests`."""


class SLOSpec(_Model):
    """The objectives themselves."""

    latency: LatencyTarget
    availability: AvailabilityTarget
    error_rate: ErrorRateTarget | None = None
    throughput: ThroughputTarget | None = None
    error_budget: ErrorBudgetSpec = ErrorBudgetSpec()

    @model_validator(mode="after")
    def _budget_matches_target(self) -> SLOSpec:
        stated = self.error_budget.monthly_pct
        implied = (1.0 - self.availability.target) * 100.0
        # Two statements of one number: refuse a file that says two different things.
        if stated is not None and abs(stated - implied) > 1e-9 + 1e-6 * implied:
            raise ValueError(
                f"error_budget.monthly_pct={stated:g} disagrees with availability.target="
                f"{self.availability.target:g}, which implies {implied:.6g}"
            )
        return self


class EnforcementSpec(_Model):
    """Whether violations refuse requests; ``false`` is a dry run (decide, log, count)."""

    reject_on_violation: StrictBool = False
    grace_period_days: Annotated[int, Field(strict=True, ge=0)] = 0


Ratio = Annotated[float, Field(strict=True, gt=0, le=1, allow_inf_nan=False)]
Severity = Annotated[float, Field(strict=True, gt=1, allow_inf_nan=False)]
Seconds = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]


class MaxRejection(_Model):
    """The largest share of a priority's requests refused, reached at ``full_at``."""

    low: Ratio = 0.95
    normal: Ratio = 0.5
    high: Ratio = 0.25


LatencyPercentile = Literal["p50", "p95", "p99"]


class QueueConfig(_Model):
    """The short priority queue in front of a capability at its concurrency limit."""

    size: Annotated[int, Field(strict=True, ge=0)] = 100
    """Requests that may wait at once; 0 refuses at the limit instead of queueing."""
    max_wait_ms: PositiveMs = 1000.0
    """The longest a request waits for a place, whatever its deadline."""
    deadline: LatencyPercentile = "p99"
    """The latency target a queued request must be able to meet: a request that
    would finish after ``start + slo.latency.<deadline>`` is refused, not served late."""


class ConcurrencyConfig(_Model):
    """The concurrency limit of a capability (the fast inner loop of admission).

    ``adaptive`` steers the limit so that latency stays within the SLO's targets;
    ``fixed`` holds it at ``initial``; ``off`` admits without a limit. See
    docs/shedding.md for the algorithm.
    """

    mode: Literal["adaptive", "fixed", "off"] = "adaptive"
    initial: Annotated[int, Field(strict=True, ge=1)] | None = None
    """The starting limit (the limit itself in ``fixed`` mode); default 10, kept within
    ``[min, max]``."""
    min: Annotated[int, Field(strict=True, ge=1)] = 2
    """The limit never goes below this."""
    max: Annotated[int, Field(strict=True, ge=1)] = 1000
    """The limit never goes above this."""
    setpoint: Ratio = 0.8
    """Steer each latency percentile to this share of its target; the rest is room
    for queueing and noise."""
    tolerance: Annotated[float, Field(strict=True, gt=1, allow_inf_nan=False)] = 1.5
    """Never steer the median below this multiple of the learned no-load latency:
    a limit cannot make the service faster than it is unloaded."""
    interval_ms: PositiveMs = 100.0
    """The shortest interval between two limit updates (also at least one latency)."""
    queue: QueueConfig = QueueConfig()

    @field_validator("mode", mode="before")
    @classmethod
    def _unquoted_off(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted `off` as false: `mode: off` means what it says.
        return "off" if value is False else value

    @model_validator(mode="after")
    def _bounds_ordered(self) -> ConcurrencyConfig:
        if self.min > self.max:
            raise ValueError(f"min={self.min} is above max={self.max}")
        if self.initial is not None and not self.min <= self.initial <= self.max:
            raise ValueError(
                f"initial={self.initial} is outside [min, max] = [{self.min}, {self.max}]"
            )
        return self

    @property
    def initial_limit(self) -> int:
        """``initial``, or 10 kept within ``[min, max]`` when it is not given."""
        if self.initial is not None:
            return self.initial
        return max(self.min, min(self.max, _DEFAULT_INITIAL_LIMIT))


_DEFAULT_INITIAL_LIMIT = 10


class SheddingConfig(_Model):
    """Priority load-shedding tuning for this capability; every field has a default.

    The capability's *severity* is how far its worst objective is off target:
    ``observed / target`` for a latency percentile, ``error rate / error budget``
    for availability (2.0 = twice the target). See docs/shedding.md.
    """

    enabled: StrictBool = True
    """Shed at all; ``false`` keeps the SLO reported but never refuses a request."""
    min_samples: Annotated[int, Field(strict=True, ge=1)] = 20
    """Requests the live window must hold before a violation can start shedding."""
    retry_after_s: Annotated[int, Field(strict=True, ge=1)] = 5
    """The ``Retry-After`` answered with a refusal, in seconds."""
    shed_priorities: tuple[SheddablePriority, ...] = ("low", "normal")
    """Priorities that may be refused; ``critical`` cannot be listed."""
    max_rejection: MaxRejection = MaxRejection()
    """Per priority, the share of requests refused at full severity."""
    full_at: Severity = 1.5
    """Severity at which a priority's rejection reaches its maximum (it grows linearly from 1)."""
    hysteresis: Annotated[float, Field(strict=True, ge=0, lt=1, allow_inf_nan=False)] = 0.1
    """Shedding starts at severity ``1 + hysteresis`` and stops only once compliant again."""
    severe_at: Severity = 2.0
    """Severity from which ``normal`` is shed at once (and ``high``, if listed, once persistent)."""
    persist_s: Seconds = 30.0
    """A violation this old sheds ``normal`` whatever its severity."""
    recovery_s: Seconds = 10.0
    """Once compliant, rejection falls to zero over this many seconds instead of at once."""
    window_s: Seconds | None = None
    """The live window this capability is judged over; default the manager's (60 s)."""
    concurrency: ConcurrencyConfig = ConcurrencyConfig()
    """The concurrency limit and its queue (the inner loop); see docs/shedding.md."""

    @model_validator(mode="after")
    def _distinct_priorities(self) -> SheddingConfig:
        if len(set(self.shed_priorities)) != len(self.shed_priorities):
            raise ValueError(
                f"shed_priorities lists a priority twice: {list(self.shed_priorities)}"
            )
        return self


Percent = Annotated[float, Field(strict=True, gt=0, le=100, allow_inf_nan=False)]


class CreditBracket(_Model):
    """A service credit: ``credit_pct`` of the month's bill is owed when the month's
    compliance falls below ``below_pct`` percent."""

    below_pct: Percent
    credit_pct: Percent


class Metadata(_Model):
    """Who owns the capability; free-form labels for reports."""

    owner: Label | None = None
    cost_center: Label | None = None
    tier: Label | None = None


class SLOFile(_Model):
    """One SLO file, validated."""

    capability: CapabilitySpec
    tier: Name | None = None
    """The SLA tier whose preset targets the file's own ``slo`` values override
    (``bronze``, ``silver``, ``gold``, ``platinum``, or one of ``tiers.yml``)."""
    slo: SLOSpec
    enforcement: EnforcementSpec = EnforcementSpec()
    shedding: SheddingConfig = SheddingConfig()
    metadata: Metadata = Metadata()
    credits: tuple[CreditBracket, ...] = ()
    """Service credit brackets for the monthly compliance report (``GET /slo/compliance/monthly``);
    the lowest bracket the month falls below applies. Each resolved breach gets a credit
    from them too (see :func:`sloguard.reporting.compliance.breach_credit`)."""
    max_credit_pct: Percent | None = None
    """The most one breach, and one month's breaches together, can owe (percent)."""

    @model_validator(mode="after")
    def _credits_grow_as_compliance_falls(self) -> SLOFile:
        brackets = sorted(self.credits, key=lambda b: -b.below_pct)
        for higher, lower in itertools.pairwise(brackets):
            if higher.below_pct == lower.below_pct:
                raise ValueError(f"credits: two brackets below {lower.below_pct:g}%")
            if lower.credit_pct < higher.credit_pct:
                raise ValueError(
                    f"credits: below {lower.below_pct:g}% owes {lower.credit_pct:g}%, less than "
                    f"the {higher.credit_pct:g}% owed below {higher.below_pct:g}%"
                )
        return self

    @property
    def key(self) -> str:
        """The capability key, ``verb:name``."""
        return f"{self.capability.verb}:{self.capability.name}"

    @property
    def budget_fraction(self) -> float:
        """The fraction of requests allowed to fail: ``1 - availability.target``."""
        # Rounded so that 1 - 0.999 is 0.001, not 0.0010000000000000009.
        return round(1.0 - self.slo.availability.target, 12)

    @property
    def alert_min_requests(self) -> int:
        """Requests the month must hold before budget and burn-rate alerts fire:
        ``slo.error_budget.min_requests``, or by default the larger of
        :data:`MIN_ALERT_REQUESTS` and ``1 / budget`` (below that, one failed request
        spends more than the whole budget: 1,000 requests at 99.9%)."""
        stated = self.slo.error_budget.min_requests
        if stated is not None:
            return stated
        return max(MIN_ALERT_REQUESTS, math.ceil(round(1.0 / self.budget_fraction, 6)))
