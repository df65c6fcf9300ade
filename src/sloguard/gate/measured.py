"""What was measured of one capability: latency percentiles, availability, request count.

This is one entry of the metrics file that ``sloguard check`` reads and the
pytest plugin writes (``{capability: Measured}``); its JSON Schema is
:func:`metrics_json_schema` (and ``docs/metrics.schema.json``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from sloguard.slo.compliance import Metrics

NonNegativeMs = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Share = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True, ge=0)]
CapabilityKey = Annotated[str, Field(min_length=1)]

_QUANTILES = (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99))


class Measured(BaseModel):
    """One capability's measurements; a None (or missing) value was not measured."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    p50_ms: NonNegativeMs | None = None
    """Median latency in milliseconds."""
    p95_ms: NonNegativeMs | None = None
    """95th percentile latency in milliseconds."""
    p99_ms: NonNegativeMs | None = None
    """99th percentile latency in milliseconds."""
    availability: Share | None = None
    """The share of requests that succeeded (status below 500), from 0 to 1."""
    requests: Count | None = None
    """Requests measured; a verdict needs the SLO's minimum (20 by default). A file
    without it (the seed's form) is judged as insufficient data."""
    errors: Count | None = None
    """Requests that failed; optional (availability is what is checked)."""

    @model_validator(mode="after")
    def _consistent(self) -> Measured:
        if self.errors is not None and self.requests is not None and self.errors > self.requests:
            raise ValueError(f"errors={self.errors} exceeds requests={self.requests}")
        if self.requests == 0 and any(v is not None for v in self.as_metrics().values()):
            raise ValueError("requests is 0 but latencies or availability are given")
        return self

    def as_metrics(self) -> Metrics:
        """The mapping :func:`sloguard.slo.check_compliance` reads."""
        return {
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "availability": self.availability,
        }

    @classmethod
    def from_samples(cls, latencies_s: Sequence[float], errors: int) -> Measured:
        """Exact percentiles of ``latencies_s`` (nearest rank: the smallest latency that
        at least that share of requests did not exceed) and the share that succeeded."""
        requests = len(latencies_s)
        if requests == 0:
            return cls(requests=0, errors=0)
        ordered = sorted(latencies_s)
        values: dict[str, Any] = {
            key: ordered[max(math.ceil(q * requests) - 1, 0)] * 1000.0 for key, q in _QUANTILES
        }
        return cls(
            **values,
            availability=(requests - errors) / requests,
            requests=requests,
            errors=errors,
        )


class MetricsDocument(RootModel[dict[CapabilityKey, Measured]]):
    """A metrics file: ``{capability: Measured}``."""


def metrics_json_schema() -> dict[str, Any]:
    """The JSON Schema of a metrics file (what ``docs/metrics.schema.json`` holds)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **MetricsDocument.model_json_schema(),
        "title": "sloguard metrics file",
        "description": "Measured latency percentiles (ms), availability (0..1) and request "
        "counts per capability (verb:name), as written by sloguard's pytest plugin "
        "(--metrics-output) and read by `sloguard check --metrics`.",
    }
