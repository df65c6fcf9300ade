"""10,000 capabilities: how long SLOManager takes to load them, and the memory they hold.

Run: ``python benchmarks/slo_scale.py [COUNT [BUCKETS [RELATIVE_ACCURACY]]]``
(default 10,000, 12 and 0.01).

Writes COUNT SLO files to a temporary directory, then reports:

- load time of ``SLOManager(dir)`` (median of 3, no tracing), and of a ``reload()``;
- Python heap held (tracemalloc, a separate pass) after loading, after one
  request per capability (the window and budget counters are allocated on
  first record), after traffic in every bucket of every window (worst case:
  all capabilities busy for a whole minute), and after a ``status`` of each;
- for the busy case, the heap split by the file that allocated it: the budget
  counters (budget.py), the windows (window.py), the closed buckets and the
  open buckets' sketches (sketch.py), and the open buckets' bins (ddsketch).
"""

from __future__ import annotations

import gc
import math
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from sloguard import SLOManager
from sloguard._clock import ManualClock

TEMPLATE = """\
capability: {{verb: bench, name: cap_{i:05d}, version: "1.0"}}
slo:
  latency: {{p50_ms: 50, p95_ms: 100, p99_ms: 200}}
  availability: {{target: 0.999}}
  error_budget:
    monthly_pct: 0.1
    alerts: [{{threshold: 0.5, channel: slack}}, {{threshold: 0.9, channel: pagerduty}}]
enforcement: {{reject_on_violation: false, grace_period_days: 7}}
metadata: {{owner: team-{i}, cost_center: engineering, tier: production}}
"""


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:7.1f} MiB"


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    buckets = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    accuracy = float(sys.argv[3]) if len(sys.argv) > 3 else 0.01
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for i in range(count):
            (directory / f"cap_{i:05d}.yml").write_text(TEMPLATE.format(i=i), encoding="utf-8")

        times = []
        for _ in range(3):
            start = time.perf_counter()
            mgr = SLOManager(directory)
            times.append(time.perf_counter() - start)
        assert len(mgr.capabilities) == count
        assert not mgr.errors
        start = time.perf_counter()
        mgr.reload()
        reload_s = time.perf_counter() - start
        print(
            f"{count} capabilities: load {statistics.median(times):.2f} s (median of 3), "
            f"reload {reload_s:.2f} s"
        )
        del mgr
        gc.collect()

        clock = ManualClock(start=1_000_000.0)
        rng = random.Random(3)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        mgr = SLOManager(directory, clock=clock, buckets=buckets, relative_accuracy=accuracy)
        keys = mgr.capabilities
        loaded = tracemalloc.get_traced_memory()[0]
        print(
            f"heap, files loaded (models only)          {mib(loaded - base)}"
            f"  {(loaded - base) / count:7.0f} B/capability"
        )

        for key in keys:
            mgr.record(key, latency_s=rng.lognormvariate(math.log(0.05), 0.6), ok=True)
        once = tracemalloc.get_traced_memory()[0]
        print(
            f"+ one request per capability              {mib(once - loaded)}"
            f"  {(once - loaded) / count:7.0f} B/capability"
        )

        # A full minute of traffic: 10 requests per capability in each bucket.
        for _ in range(buckets):
            clock.advance(60.0 / buckets)
            for key in keys:
                for _ in range(10):
                    latency = rng.lognormvariate(math.log(0.05), 0.6)
                    mgr.record(key, latency_s=latency, ok=rng.random() > 0.001)
        busy = tracemalloc.get_traced_memory()[0]
        print(
            f"+ all {buckets:2d} buckets of every window busy  {mib(busy - loaded)}"
            f"  {(busy - loaded) / count:7.0f} B/capability"
        )
        by_file = tracemalloc.take_snapshot().statistics("filename")
        for label, part in (
            ("budget counters (budget.py)", "/sloguard/slo/budget.py"),
            ("windows (window.py)", "/sloguard/slo/window.py"),
            ("closed buckets, open sketches (sketch.py)", "/sloguard/slo/sketch.py"),
            ("open buckets' bins (ddsketch)", "/ddsketch/"),
        ):
            size = sum(stat.size for stat in by_file if part in stat.traceback[0].filename)
            print(f"    of which {label:42s} {mib(size)}  {size / count:7.0f} B/capability")
        del by_file

        for key in keys:
            mgr.status(key)
        after_status = tracemalloc.get_traced_memory()[0]
        print(
            f"+ status() of each (merge caches)         {mib(after_status - loaded)}"
            f"  {(after_status - loaded) / count:7.0f} B/capability"
        )
        tracemalloc.stop()


if __name__ == "__main__":
    main()
