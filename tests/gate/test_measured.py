"""Measured: exact percentiles from samples, validation, and the documented JSON Schema."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from sloguard.gate import Measured, metrics_json_schema

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_percentiles_are_nearest_rank_over_every_sample() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    random.Random(3).shuffle(latencies)
    measured = Measured.from_samples(latencies, errors=2)
    assert measured.p50_ms == pytest.approx(50)
    assert measured.p95_ms == pytest.approx(95)
    assert measured.p99_ms == pytest.approx(99)
    assert measured.requests == 100
    assert measured.errors == 2
    assert measured.availability == pytest.approx(0.98)


def test_a_percentile_is_a_latency_that_was_observed() -> None:
    # With 3 requests, p95 and p99 are the slowest one, p50 the middle one.
    measured = Measured.from_samples([0.3, 0.01, 0.02], errors=0)
    assert (measured.p50_ms, measured.p95_ms, measured.p99_ms) == (20.0, 300.0, 300.0)
    assert measured.availability == 1.0


def test_no_samples_measure_nothing() -> None:
    measured = Measured.from_samples([], errors=0)
    assert measured.requests == 0
    assert measured.as_metrics() == {
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "availability": None,
    }


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"requests": -1}, "requests"),
        ({"requests": 1.5}, "requests"),
        ({"requests": 3, "p95_ms": "12"}, "p95_ms"),
        ({"requests": 3, "p95_ms": -1}, "p95_ms"),
        ({"requests": 3, "availability": 1.5}, "availability"),
        ({"requests": 3, "latency": 1}, "latency"),
    ],
)
def test_bad_values_are_refused_naming_the_field(fields: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        Measured.model_validate(fields)
    assert [error["loc"][0] for error in info.value.errors()] == [where]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"requests": 2, "errors": 3}, "errors=3 exceeds requests=2"),
        ({"requests": 0, "p95_ms": 3}, "requests is 0 but latencies or availability"),
    ],
)
def test_inconsistent_counts_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Measured.model_validate(fields)


def test_the_documented_json_schema_is_the_one_the_code_validates_with() -> None:
    documented = json.loads((DOCS / "metrics.schema.json").read_text(encoding="utf-8"))
    assert documented == metrics_json_schema()
    entry = documented["$defs"]["Measured"]
    assert "required" not in entry  # the seed's files give no request count
    assert set(entry["properties"]) == set(Measured.model_fields)
