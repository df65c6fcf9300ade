"""The live sketch of an open bucket, drained and merged, against ddsketch's own DDSketch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from ddsketch import DDSketch
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.store import DenseStore
from hypothesis import given, settings
from hypothesis import strategies as st

import sloguard
from sloguard.slo.sketch import (
    DEFAULT_RELATIVE_ACCURACY,
    FrozenBucket,
    KeyMapping,
    LiveSketch,
    latency_mapping,
)

QUANTILES = tuple(i / 100 for i in range(101))
ACCURACIES = st.sampled_from([0.005, 0.01, 0.02, 0.05])
# Zeros, values too small for a bin (subnormal: they count as zeros), and up to an hour.
latencies = st.lists(
    st.one_of(
        st.just(0.0),
        st.floats(min_value=0.0, max_value=2e-308),
        st.floats(min_value=1e-9, max_value=3_600.0),
    ),
    max_size=200,
)


def reference(mapping: KeyMapping, values: list[float]) -> tuple[BaseDDSketch, DenseStore]:
    """A DDSketch of ``values`` on ``mapping``, and its store of positive values."""
    store = DenseStore(32)
    sketch = BaseDDSketch(mapping, store, DenseStore(32), 0.0)
    for value in values:
        sketch.add(value)
    return sketch, store


def live(mapping: KeyMapping, values: list[float]) -> LiveSketch:
    sketch = LiveSketch(mapping)
    for value in values:
        sketch.add(value)
    return sketch


@settings(max_examples=200, deadline=None)
@given(latencies, ACCURACIES)
def test_each_latency_goes_to_the_bin_the_ddsketch_puts_it_in(
    values: list[float], accuracy: float
) -> None:
    mapping = latency_mapping(accuracy)
    _, store = reference(mapping, values)
    sketch = live(mapping, values)
    assert sketch.count == len(values)
    # Equal bytes: the same keys with the same counts, and the same zeros.
    assert sketch.drain(epoch=9, errors=2) == FrozenBucket.freeze(
        store, epoch=9, requests=len(values), errors=2
    )


@settings(max_examples=100, deadline=None)
@given(latencies, latencies, ACCURACIES)
def test_live_quantiles_with_a_closed_bucket_are_the_merged_ddsketch_quantiles(
    open_values: list[float], closed_values: list[float], accuracy: float
) -> None:
    mapping = latency_mapping(accuracy)
    closed = live(mapping, closed_values).drain(epoch=0, errors=0)
    both, _ = reference(mapping, open_values + closed_values)
    expected = (
        tuple(both.get_quantile_value(q) for q in QUANTILES)
        if open_values or closed_values
        else (None,) * len(QUANTILES)
    )
    assert live(mapping, open_values).quantiles(QUANTILES, closed) == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(latencies, max_size=6))
def test_drained_buckets_merge_into_the_merged_ddsketch(groups: list[list[float]]) -> None:
    mapping = latency_mapping()
    merged, _ = reference(mapping, [])
    sketch = LiveSketch(mapping)  # one sketch, drained once per bucket
    buckets = []
    for epoch, values in enumerate(groups):
        for value in values:
            sketch.add(value)
        buckets.append(sketch.drain(epoch=epoch, errors=epoch))
        merged.merge(reference(mapping, values)[0])
        assert sketch.count == 0
    bucket = FrozenBucket.merge(7, buckets)
    total = sum(map(len, groups))
    assert (bucket.epoch, bucket.requests, bucket.errors) == (7, total, sum(range(len(groups))))
    expected = tuple(merged.get_quantile_value(q) if total else None for q in QUANTILES)
    assert bucket.quantiles(QUANTILES, mapping) == expected


def test_the_default_mapping_is_a_ddsketch_of_one_percent() -> None:
    values = [0.0005 * 1.3**i for i in range(60)]
    bucket = live(latency_mapping(), values).drain(epoch=0, errors=0)
    plain = DDSketch(DEFAULT_RELATIVE_ACCURACY)
    for value in values:
        plain.add(value)
    assert bucket.quantiles(QUANTILES, latency_mapping()) == tuple(
        plain.get_quantile_value(q) for q in QUANTILES
    )


@pytest.mark.parametrize("accuracy", [0.01, 0.05])
def test_quantiles_stay_within_the_relative_accuracy(accuracy: float) -> None:
    values = [0.001 * 1.07**i for i in range(150)]
    sketch = live(latency_mapping(accuracy), values)
    empty = FrozenBucket.merge(0, [])
    for q, estimate in zip(QUANTILES, sketch.quantiles(QUANTILES, empty), strict=True):
        exact = values[int(q * (len(values) - 1))]
        assert estimate is not None
        assert abs(estimate - exact) <= accuracy * exact * (1 + 1e-9)


def test_only_the_sketch_module_imports_ddsketch() -> None:
    source = Path(sloguard.__file__).resolve().parent
    importers = set()
    for path in source.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name.split(".")[0] == "ddsketch" for name in names):
                importers.add(path.relative_to(source).as_posix())
    assert importers == {"slo/sketch.py"}
