"""Measurements per capability from a Prometheus text exposition (a saved ``/metrics``).

Latency percentiles come from the ``sloguard_request_duration_seconds`` histogram
the way PromQL's ``histogram_quantile`` computes them: find the bucket the rank
falls in and interpolate linearly inside it (from 0 in the first bucket; a rank
in the ``+Inf`` bucket gives the highest finite bound). SLOGuard adds every
SLO's targets to its bucket bounds, so whether a percentile is over its target
is exact, even though the percentile itself is an estimate.

Availability is ``ok / (ok + error)`` from ``sloguard_requests_total``. The
``capability="other"`` series (requests with no SLO file, whatever they named)
are not a capability and are left out. Series
of one capability are added up across every other label (``priority``, ``pid``,
``instance``...), so several processes' scrapes concatenated, or repeated
series, count once each.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sloguard.exceptions import MetricsFileError
from sloguard.gate.measured import Measured
from sloguard.observability.metrics import OTHER_CAPABILITY
from sloguard.observability.names import REQUEST_DURATION_SECONDS, REQUESTS_TOTAL

_BUCKET = REQUEST_DURATION_SECONDS + "_bucket"
_QUANTILES = (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99))

Buckets = list[tuple[float, float]]
"""Cumulative ``(upper bound, count)`` pairs, sorted by bound, the last one ``+Inf``."""


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """PromQL's ``histogram_quantile(q, ...)`` over cumulative ``buckets`` (None for
    an empty histogram, or one with only a ``+Inf`` bucket)."""
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        return None
    counts = list(_monotonic(count for _, count in buckets))
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, count in enumerate(counts) if count >= rank)
    upper = buckets[index][0]
    if upper == math.inf:
        return buckets[-2][0]
    if index == 0 and upper <= 0:
        return upper
    lower = 0.0 if index == 0 else buckets[index - 1][0]
    below = 0.0 if index == 0 else counts[index - 1]
    return lower + (upper - lower) * (rank - below) / (counts[index] - below)


def _monotonic(counts: Iterable[float]) -> Iterable[float]:
    # PromQL's fix for counts read across a scrape race: never let a count fall.
    highest = 0.0
    for count in counts:
        highest = max(highest, count)
        yield highest


def parse_exposition(text: str, path: Path) -> dict[str, Measured]:
    """The measurements of each capability in ``text``; ``path`` is only used in errors.

    Raises :class:`MetricsFileError` when the text does not parse, holds no
    sloguard request series, or a capability's histograms disagree on their buckets.
    """
    try:
        samples = [
            (sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name in (_BUCKET, REQUESTS_TOTAL)
        ]
    except ValueError as exc:  # the parser's message quotes the offending line
        raise MetricsFileError(path, (("", f"not a Prometheus text exposition: {exc}"),)) from exc
    if not samples:
        raise MetricsFileError(
            path, (("", f"no {REQUEST_DURATION_SECONDS} or {REQUESTS_TOTAL} series in it"),)
        )
    # capability -> the series' other labels -> le -> count
    histograms: dict[str, dict[_Labels, dict[float, float]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(float))
    )
    outcomes: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for name, labels, value in samples:
        capability = labels.pop("capability", None)
        if capability is None:
            raise MetricsFileError(path, ((name, "a series has no capability label"),))
        if capability == OTHER_CAPABILITY:
            continue
        if name == REQUESTS_TOTAL:
            outcomes[capability][labels.get("outcome", "")] += value
            continue
        le = labels.pop("le", None)
        if le is None:
            raise MetricsFileError(path, ((name, "a bucket has no le label"),))
        histograms[capability][tuple(sorted(labels.items()))][float(le)] += value
    for capability, series in histograms.items():
        _check_bounds(capability, series, path)
    return {
        capability: _measured(histograms.get(capability, {}), outcomes.get(capability))
        for capability in sorted(histograms.keys() | outcomes.keys())
    }


_Labels = tuple[tuple[str, str], ...]


def _check_bounds(
    capability: str, series: Mapping[_Labels, Mapping[float, float]], path: Path
) -> None:
    """Refuse series of one capability with different bucket bounds (adding them up
    bucket by bucket would be meaningless), or without a ``+Inf`` bucket."""
    field = f"{_BUCKET}{{capability={capability!r}}}"
    layouts = {tuple(sorted(counts)) for counts in series.values()}
    if len(layouts) > 1:
        raise MetricsFileError(path, ((field, "series with different bucket bounds"),))
    if math.inf not in next(iter(layouts)):
        raise MetricsFileError(path, ((field, "no +Inf bucket"),))


def _measured(
    series: Mapping[_Labels, Mapping[float, float]], outcomes: Mapping[str, float] | None
) -> Measured:
    merged: dict[float, float] = defaultdict(float)
    for counts in series.values():
        for le, count in counts.items():
            merged[le] += count
    buckets = sorted(merged.items())
    if outcomes is not None:
        ok, errors = round(outcomes.get("ok", 0.0)), round(outcomes.get("error", 0.0))
    else:  # no outcomes: the histogram's count, availability unknown
        ok, errors = (round(buckets[-1][1]) if buckets else 0), 0
    requests = ok + errors
    if requests == 0:
        return Measured(requests=0, errors=None if outcomes is None else 0)
    latencies: dict[str, Any] = {
        key: None if (value := histogram_quantile(q, buckets)) is None else value * 1000.0
        for key, q in _QUANTILES
    }
    if outcomes is None:
        return Measured(**latencies, requests=requests)
    return Measured(**latencies, availability=ok / requests, requests=requests, errors=errors)
