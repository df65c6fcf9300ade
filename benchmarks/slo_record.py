"""Cost of recording one request: quantile sketch candidates, then SLOManager.record itself.

Run: ``python benchmarks/slo_record.py`` (hdrhistogram comes with the ``bench`` extra).
Prints the median of 7 repeats, in microseconds per call, of adding one
lognormal latency (median 50 ms) to:

- ``ddsketch`` (Datadog) DDSketch, the unbounded and the collapsing variant;
- ``hdrhistogram`` HdrHistogram (1 µs .. 60 s, 2 significant digits);
- SLOManager.record on a known capability, on an unknown one, and
  SLOManager.status (a window merge: not per request), with all the requests
  in the open bucket, and spread over the 12 buckets of the window (the closed
  buckets' merge is cached until the next rotation, the open one is not).
"""

from __future__ import annotations

import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ddsketch import DDSketch, LogCollapsingLowestDenseDDSketch

from sloguard import SLOManager
from sloguard._clock import ManualClock

N = 20_000
REPEATS = 7

SLO = """\
capability: {verb: convert, name: document_to_pdf}
slo:
  latency: {p50_ms: 50, p95_ms: 100, p99_ms: 200}
  availability: {target: 0.999}
"""


def per_call_us(make: Callable[[], Callable[[float], object]], values: list[float]) -> float:
    """Median over REPEATS fresh targets of the time per call, in microseconds."""
    samples = []
    for _ in range(REPEATS):
        add = make()
        start = time.perf_counter_ns()
        for value in values:
            add(value)
        samples.append((time.perf_counter_ns() - start) / len(values) / 1_000)
    return statistics.median(samples)


def loop_overhead_us(values: list[float]) -> float:
    def noop(value: float) -> None:
        return None

    return per_call_us(lambda: noop, values)


def main() -> None:
    rng = random.Random(1)
    values = [rng.lognormvariate(math.log(0.05), 0.6) for _ in range(N)]
    rows: list[tuple[str, float]] = []

    rows.append(("ddsketch DDSketch(0.01).add", per_call_us(lambda: DDSketch(0.01).add, values)))
    rows.append(
        (
            "ddsketch LogCollapsingLowestDense(0.01).add",
            per_call_us(lambda: LogCollapsingLowestDenseDDSketch(0.01, 2048).add, values),
        )
    )
    try:
        from hdrh.histogram import HdrHistogram
    except ImportError:
        print("(hdrhistogram not installed: pip install -e '.[bench]')")
    else:

        def hdr() -> Callable[[float], object]:
            histogram = HdrHistogram(1, 60_000_000, 2)
            record = histogram.record_value
            return lambda value: record(int(value * 1_000_000))

        rows.append(("hdrhistogram record_value(µs)", per_call_us(hdr, values)))

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "convert.yml").write_text(SLO, encoding="utf-8")

        def known() -> Callable[[float], object]:
            mgr = SLOManager(tmp)
            record = mgr.record
            return lambda value: record("convert:document_to_pdf", latency_s=value, ok=True)

        def unknown() -> Callable[[float], object]:
            mgr = SLOManager(tmp)
            record = mgr.record
            return lambda value: record("convert:unknown", latency_s=value, ok=True)

        rows.append(("SLOManager.record (known capability)", per_call_us(known, values)))
        rows.append(("SLOManager.record (unknown capability)", per_call_us(unknown, values)))

        mgr = SLOManager(tmp)
        for value in values:
            mgr.record("convert:document_to_pdf", latency_s=value, ok=True)
        status_values = values[:200]
        rows.append(
            (
                "SLOManager.status (window merge)",
                per_call_us(lambda: lambda _: mgr.status("convert:document_to_pdf"), status_values),
            )
        )
        clock = ManualClock()
        spread = SLOManager(tmp, clock=clock)
        for value in values:
            clock.advance(59.9 / len(values))
            spread.record("convert:document_to_pdf", latency_s=value, ok=True)
        rows.append(
            (
                "SLOManager.status (12 busy buckets)",
                per_call_us(
                    lambda: lambda _: spread.status("convert:document_to_pdf"), status_values
                ),
            )
        )

    overhead = loop_overhead_us(values)
    print(f"{'operation':48s} {'median µs/call':>15s}  (loop + lambda overhead {overhead:.3f} µs)")
    for name, us in rows:
        print(f"{name:48s} {us:15.3f}")


if __name__ == "__main__":
    main()
