"""SLA tiers: named presets of targets that an SLO file's ``tier:`` applies.

Four tiers ship built in, the seed's (the availability, p99 latency and error
rate it names; a throughput floor each):

========  ============  =========  ==========  ==========
tier      availability  p99        error rate  throughput
========  ============  =========  ==========  ==========
bronze    99.0%         1000 ms    1%          10 rps
silver    99.5%         500 ms     0.5%        50 rps
gold      99.9%         200 ms     0.1%        100 rps
platinum  99.99%        100 ms     0.01%       500 rps
========  ============  =========  ==========  ==========

``state/controller/tiers.yml`` (beside the SLO directory) defines more, or
redefines these (a tier listed there replaces the built-in one whole)::

    tiers:
      gold:
        slo:
          latency: {p95_ms: 120, p99_ms: 200}
          availability: {target: 0.999}
        credits: [{below_pct: 99.9, credit_pct: 10}, {below_pct: 99, credit_pct: 25}]
        max_credit_pct: 30

A tier is the ``slo`` targets (any of ``latency``, ``availability``,
``error_rate``, ``throughput``), ``credits`` and ``max_credit_pct``. Applying
it is a merge: the file's own values override the tier's field by field
(``latency: {p95_ms: 80}`` keeps the tier's p99), lists are replaced whole.
Tier names are case-insensitive. Errors name the file and the field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from sloguard.exceptions import SLOFileError, TiersFileError
from sloguard.slo.schema import (
    AvailabilityTarget,
    CreditBracket,
    ErrorRateTarget,
    LatencyTarget,
    Name,
    Percent,
    ThroughputTarget,
    _Model,
)
from sloguard.slo.yamlfile import YAMLDocumentError, parse_yaml, validation_problems

TIERS_FILE_NAME = "tiers.yml"


class SLOPreset(_Model):
    """The targets a tier sets; each optional (the SLO file must end up with the
    required ones, from the tier or its own)."""

    latency: LatencyTarget | None = None
    availability: AvailabilityTarget | None = None
    error_rate: ErrorRateTarget | None = None
    throughput: ThroughputTarget | None = None


class TierSpec(_Model):
    """One tier: preset targets and, optionally, service credits."""

    description: str | None = None
    slo: SLOPreset = SLOPreset()
    credits: tuple[CreditBracket, ...] | None = None
    max_credit_pct: Percent | None = None

    def preset(self) -> dict[str, Any]:
        """The tier as SLO-file data (what a file's own values are merged over)."""
        return self.model_dump(exclude_none=True, exclude={"description"})


class TiersDocument(_Model):
    """The whole ``tiers.yml``."""

    tiers: dict[Name, TierSpec] = Field(default_factory=dict)


def _builtin(availability: float, p99_ms: float, error_pct: float, min_rps: float) -> TierSpec:
    return TierSpec(
        slo=SLOPreset(
            latency=LatencyTarget(p99_ms=p99_ms),
            availability=AvailabilityTarget(target=availability),
            error_rate=ErrorRateTarget(max_pct=error_pct),
            throughput=ThroughputTarget(min_rps=min_rps),
        )
    )


BUILTIN_TIERS: Mapping[str, TierSpec] = {
    "bronze": _builtin(0.99, 1000, 1.0, 10),
    "silver": _builtin(0.995, 500, 0.5, 50),
    "gold": _builtin(0.999, 200, 0.1, 100),
    "platinum": _builtin(0.9999, 100, 0.01, 500),
}


@dataclass(frozen=True, slots=True)
class TierTable:
    """The tiers SLO files may name. ``unusable``: why none can be applied (the tiers
    file failed to load and there is no good version of it to fall back on)."""

    tiers: Mapping[str, TierSpec] = field(default_factory=lambda: dict(BUILTIN_TIERS))
    unusable: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.tiers))

    def apply(self, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``data`` (an SLO file's mapping) with its tier's preset merged under it, and
        the values the tier supplied by field path; raises ValueError naming the problem
        with the ``tier`` field. ``data`` without a tier comes back unchanged."""
        name = data.get("tier")
        if name is None:
            return data, {}
        if not isinstance(name, str):
            raise ValueError(f"must be a tier name (a string), got {type(name).__name__}")
        key = name.strip().lower()
        if self.unusable is not None:
            raise ValueError(f"tier {name!r} cannot be applied: {self.unusable}")
        spec = self.tiers.get(key)
        if spec is None:
            raise ValueError(f"unknown tier {name!r} (known: {', '.join(self.names)})")
        preset = spec.preset()
        merged = _merge(preset, {**data, "tier": key})
        supplied = {
            path: value
            for path, value in _leaves(preset, "")
            if _lookup(data, path) is _MISSING  # not overridden by the file
        }
        return merged, supplied


def tiers_path_for(slo_dir: str | os.PathLike[str]) -> Path:
    """Where the tiers of an SLO directory are read from: ``tiers.yml`` beside it."""
    return Path(slo_dir).resolve().parent / TIERS_FILE_NAME


def load_tiers_file(path: str | os.PathLike[str]) -> TierTable:
    """The built-in tiers plus those of ``path`` (a missing file: the built-ins only).

    Raises :class:`TiersFileError` naming the file and each bad field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return TierTable()
    except (OSError, UnicodeDecodeError) as exc:
        raise TiersFileError(path, (("", f"cannot read file: {exc}"),)) from exc
    try:
        data = parse_yaml(text)
    except YAMLDocumentError as exc:
        raise TiersFileError(path, exc.problems) from exc
    if data is None:
        return TierTable()
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise TiersFileError(path, (("", f"expected a mapping with 'tiers', got {kind}"),))
    try:
        document = TiersDocument.model_validate(data)
    except ValidationError as exc:
        raise TiersFileError(path, validation_problems(exc)) from exc
    tiers = dict(BUILTIN_TIERS)
    seen: dict[str, str] = {}
    for name, spec in document.tiers.items():
        key = name.lower()
        if key in seen:
            message = f"tier names are case-insensitive: {name!r} repeats {seen[key]!r}"
            raise TiersFileError(path, ((f"tiers.{name}", message),))
        seen[key] = name
        tiers[key] = spec
    return TierTable(tiers)


def read_tiers(
    path: Path | None, last_good: TierTable | None = None
) -> tuple[TierTable, SLOFileError | None]:
    """The tiers of ``path`` (None: the built-ins), and its error if it fails to load.

    A failing file falls back on ``last_good``; without one, no tier can be applied
    (the files that name one are refused rather than judged by other targets).
    """
    if path is None:
        return TierTable(), None
    try:
        return load_tiers_file(path), None
    except TiersFileError as exc:
        if last_good is not None:
            return last_good, exc
        return TierTable(unusable=f"{path} does not load"), exc


_MISSING = object()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        below = out.get(key)
        out[key] = (
            _merge(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
        )
    return out


def _leaves(data: dict[str, Any], prefix: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        out += _leaves(value, path) if isinstance(value, dict) else [(path, value)]
    return out


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data
