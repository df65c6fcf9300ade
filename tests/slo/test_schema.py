from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sloguard.slo import SheddingConfig, SLOFile

STATE_SLOS = Path(__file__).resolve().parents[2] / "state" / "controller" / "slos"
SEED_FILE = STATE_SLOS / "convert_document_to_pdf.yml"


def seed() -> dict[str, Any]:
    """The seed's example file, as shipped, as plain data."""
    data: dict[str, Any] = yaml.safe_load(SEED_FILE.read_text(encoding="utf-8"))
    return data


def with_value(path: str, value: Any) -> dict[str, Any]:
    """The seed with the dotted ``path`` set to ``value``."""
    data = seed()
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


def error_locs(data: dict[str, Any]) -> list[tuple[int | str, ...]]:
    with pytest.raises(ValidationError) as info:
        SLOFile.model_validate(data)
    return [e["loc"] for e in info.value.errors()]


def test_seed_file_validates() -> None:
    slo = SLOFile.model_validate(seed())
    assert slo.key == "convert:document_to_pdf"
    assert slo.capability.version == "1.0"
    latency = slo.slo.latency
    assert (latency.p50_ms, latency.p95_ms, latency.p99_ms) == (50, 100, 200)
    assert slo.slo.availability.target == 0.999
    assert slo.budget_fraction == 0.001
    assert [(a.threshold, a.channel) for a in slo.slo.error_budget.alerts] == [
        (0.5, "slack"),
        (0.9, "pagerduty"),
    ]
    assert slo.enforcement.reject_on_violation is False
    assert slo.enforcement.grace_period_days == 7
    assert slo.metadata.owner == "document-team"
    assert slo.shedding == SheddingConfig()


def test_optional_sections_take_defaults() -> None:
    data = seed()
    for section in ("enforcement", "metadata"):
        del data[section]
    del data["slo"]["error_budget"]
    slo = SLOFile.model_validate(data)
    assert slo.enforcement.reject_on_violation is False
    assert slo.enforcement.grace_period_days == 0
    assert slo.slo.error_budget.alerts == ()
    assert slo.slo.error_budget.monthly_pct is None
    assert slo.metadata.owner is None


def test_shedding_defaults_and_overrides() -> None:
    assert SheddingConfig() == SheddingConfig(
        enabled=True, min_samples=20, retry_after_s=5, shed_priorities=("low", "normal")
    )
    data = seed()
    data["shedding"] = {"min_samples": 50, "shed_priorities": ["low"]}
    slo = SLOFile.model_validate(data)
    assert slo.shedding.min_samples == 50
    assert slo.shedding.shed_priorities == ("low",)
    assert slo.shedding.enabled is True


def test_models_are_frozen() -> None:
    slo = SLOFile.model_validate(seed())
    with pytest.raises(ValidationError):
        slo.slo.latency.p95_ms = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("path", "value", "loc"),
    [
        # wrong types
        ("slo.latency.p95_ms", "100", ("slo", "latency", "p95_ms")),
        ("slo.latency.p95_ms", True, ("slo", "latency", "p95_ms")),
        ("slo.availability.target", "0.999", ("slo", "availability", "target")),
        ("enforcement.reject_on_violation", "no", ("enforcement", "reject_on_violation")),
        ("enforcement.grace_period_days", 1.5, ("enforcement", "grace_period_days")),
        ("capability.version", 1.0, ("capability", "version")),
        ("capability.verb", 7, ("capability", "verb")),
        ("slo.latency", [50, 100, 200], ("slo", "latency")),
        ("metadata.owner", "", ("metadata", "owner")),
        # out of bounds
        ("slo.latency.p50_ms", 0, ("slo", "latency", "p50_ms")),
        ("slo.latency.p50_ms", -5, ("slo", "latency", "p50_ms")),
        ("slo.latency.p99_ms", float("inf"), ("slo", "latency", "p99_ms")),
        ("slo.availability.target", 1.0, ("slo", "availability", "target")),
        ("slo.availability.target", 0.0, ("slo", "availability", "target")),
        ("slo.availability.target", 99.9, ("slo", "availability", "target")),
        ("slo.error_budget.alerts.1.threshold", 0, ("slo", "error_budget", "alerts", 1)),
        ("slo.error_budget.alerts.0.threshold", 1.5, ("slo", "error_budget", "alerts", 0)),
        ("enforcement.grace_period_days", -1, ("enforcement", "grace_period_days")),
        ("slo.error_budget.min_requests", 0, ("slo", "error_budget", "min_requests")),
        ("slo.error_budget.min_requests", "100", ("slo", "error_budget", "min_requests")),
        ("slo.error_budget.min_requests", 10.5, ("slo", "error_budget", "min_requests")),
        ("capability.name", "document to pdf", ("capability", "name")),
        ("capability.verb", "a:b", ("capability", "verb")),
    ],
)
def test_bad_field_is_reported_at_its_path(
    path: str, value: Any, loc: tuple[int | str, ...]
) -> None:
    locs = error_locs(with_value(path, value))
    assert len(locs) == 1
    assert locs[0][: len(loc)] == loc


@pytest.mark.parametrize(
    ("target", "stated", "needed"),
    [
        (0.9, None, 100),  # at least 100, whatever the target
        (0.99, None, 100),
        (0.999, None, 1_000),  # enough for the budget to allow one failed request
        (0.9999, None, 10_000),
        (0.999, 20, 20),  # the file's own figure wins
    ],
)
def test_alerts_need_a_minimum_of_requests(target: float, stated: int | None, needed: int) -> None:
    data = with_value("slo.availability.target", target)
    del data["slo"]["error_budget"]["monthly_pct"]
    if stated is not None:
        data["slo"]["error_budget"]["min_requests"] = stated
    assert SLOFile.model_validate(data).alert_min_requests == needed


def test_threshold_of_one_is_allowed() -> None:
    slo = SLOFile.model_validate(with_value("slo.error_budget.alerts.1.threshold", 1))
    assert slo.slo.error_budget.alerts[1].threshold == 1.0


@pytest.mark.parametrize(
    "where", [(), ("slo",), ("slo", "latency"), ("enforcement",), ("capability",)]
)
def test_unknown_field_is_rejected(where: tuple[str, ...]) -> None:
    data = seed()
    node = data
    for part in where:
        node = node[part]
    node["surprise"] = 1
    assert error_locs(data) == [(*where, "surprise")]


@pytest.mark.parametrize("missing", ["capability", "slo"])
def test_required_section_is_required(missing: str) -> None:
    data = seed()
    del data[missing]
    assert error_locs(data) == [(missing,)]


def test_decreasing_percentiles_are_rejected_on_the_latency_section() -> None:
    with pytest.raises(ValidationError, match="percentiles must not decrease"):
        SLOFile.model_validate(with_value("slo.latency.p50_ms", 150))
    assert error_locs(with_value("slo.latency.p99_ms", 99)) == [("slo", "latency")]


def test_monthly_pct_must_agree_with_the_target() -> None:
    with pytest.raises(ValidationError, match=r"monthly_pct=0\.5 disagrees"):
        SLOFile.model_validate(with_value("slo.error_budget.monthly_pct", 0.5))


@given(
    st.lists(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False), min_size=3, max_size=3),
    st.floats(min_value=1e-6, max_value=1 - 1e-6),
)
def test_any_ordered_positive_latencies_and_fractional_target_validate(
    latencies: list[float], target: float
) -> None:
    p50, p95, p99 = sorted(latencies)
    data = seed()
    data["slo"]["latency"] = {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99}
    data["slo"]["availability"] = {"target": target}
    del data["slo"]["error_budget"]["monthly_pct"]
    slo = SLOFile.model_validate(data)
    assert slo.slo.latency.p99_ms == p99
    assert 0 < slo.budget_fraction < 1


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_targets_outside_the_open_unit_interval_are_rejected(target: float) -> None:
    data = with_value("slo.availability.target", target)
    del data["slo"]["error_budget"]["monthly_pct"]
    if 0 < target < 1:
        assert SLOFile.model_validate(data).slo.availability.target == target
    else:
        assert ("slo", "availability", "target") in error_locs(data)
