"""10,000 capabilities under the SLO monitor and the history recorder: the longest event-loop stall.

Run: ``python benchmarks/monitor_stall.py [COUNT [SECONDS]] [--distinct]`` (default
10,000 and 30). The SLO files are alike but for their names; with ``--distinct`` each
has its own latency targets too (no two files can share their ``slo`` section).

Loads COUNT SLO files, gives every capability traffic in every 5-second bucket
(recorded twenty capabilities at a time, about a millisecond of work, so the
traffic itself hardly stalls the loop), and runs a :class:`Reporter` as SLOGuard
does: the monitor every second (breaches, alerts: every capability's live status) and the history
recorder every 2 s (every capability's closed buckets into minute rows, written
to SQLite in a worker thread). A probe task sleeps 1 ms in a loop; each wake-up's
lateness is how long the loop was held by something else: a request arriving then
would have waited that long. The run is made five times, in one process:

- ``one pass``: ``SLICE_S`` infinite, each pass over the capabilities done at once
  (how the monitor and the recorder ran before they were sliced);
- ``sliced``: the default ``SLICE_S`` (1 ms) between hand-backs to the loop;
- ``settled``: sliced, and one ``gc.collect()`` once the service has started (after
  its warm-up traffic): the full collection that building 10,000 windows brings
  sooner or later, over before the probe starts, so that what is left is the steady
  state;
- ``+ freeze``: settled, then ``gc.freeze()``, as ``sloguard serve`` does once
  started: frozen, the collector walks only what was allocated since;
- ``serve``: what ``sloguard serve`` does: ``gc.collect()`` and ``gc.freeze()`` once its
  SLO files are loaded and before any traffic, nothing after (the windows are built
  by the traffic that follows, and the full collection they bring falls in the run);
- ``no report``: frozen too, the same traffic, no monitor and no recorder: what
  the loop's stalls are without them (the collector and the traffic itself).

Printed per run: the longest stall, its 99.9th and 99th percentiles, the most CPU
time the loop's thread spent during one probe's sleep (the stall without the time
the OS gave the core to other processes), the longest monitor tick and recorder
flush (wall time, from start to end, slices included), the full (generation 2)
collections CPython made while the probe ran and the CPU time of the longest, and
the CPU time of one full collection forced at the end (what one costs with this
heap, whenever it comes). The budget (issue 27): a longest stall of at most 20 ms.
"""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sloguard import SLOManager
from sloguard.reporting import slicing
from sloguard.reporting.reporter import Reporter

TEMPLATE = """\
capability: {{verb: bench, name: cap_{i:05d}, version: "1.0"}}
slo:
  latency: {{p50_ms: 50, p95_ms: 100, p99_ms: {p99}}}
  availability: {{target: 0.999}}
  error_budget:
    monthly_pct: 0.1
    alerts: [{{threshold: 0.5, channel: slack}}, {{threshold: 0.9, channel: pagerduty}}]
"""
PROBE_S = 0.001
TRAFFIC_STEP = 20


class Timed:
    """Wraps an async method; keeps the wall time of each call."""

    def __init__(self, method: Any) -> None:
        self.method = method
        self.seconds: list[float] = []

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await self.method(*args, **kwargs)
        finally:
            self.seconds.append(time.perf_counter() - start)


async def traffic(manager: SLOManager, stop: asyncio.Event) -> None:
    """One request per capability per 0.5 s (20 ms, all succeeding: nothing to alert on,
    so the log stays quiet); twenty capabilities per step."""
    capabilities = manager.capabilities
    while not stop.is_set():
        for start in range(0, len(capabilities), TRAFFIC_STEP):
            for capability in capabilities[start : start + TRAFFIC_STEP]:
                manager.record(capability, latency_s=0.02)
            await asyncio.sleep(0.5 * TRAFFIC_STEP / len(capabilities))


class FullCollections:
    """The CPU time of each full collection CPython makes (a ``gc.callbacks`` entry)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._start = time.thread_time()
        else:
            self.seconds.append(time.thread_time() - self._start)


def full_collection_s() -> float:
    """The CPU time of one full collection of the heap as it is."""
    start = time.thread_time()
    gc.collect()
    return time.thread_time() - start


async def probe(stop: asyncio.Event, lateness: list[float], held: list[float]) -> None:
    """Sleep 1 ms, over and over: how late each wake-up was (wall time), and how much CPU
    the loop's thread spent meanwhile (the loop held by work, not by the machine's other
    processes: this machine's 2 cores are shared)."""
    while not stop.is_set():
        start, cpu = time.perf_counter(), time.thread_time()
        await asyncio.sleep(PROBE_S)
        lateness.append(time.perf_counter() - start - PROBE_S)
        held.append(time.thread_time() - cpu)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def run(
    slos: Path,
    history: Path,
    seconds: float,
    *,
    settle: bool,
    freeze: bool,
    reporting: bool,
    freeze_at_start: bool = False,
) -> dict[str, float]:
    manager = SLOManager(slos)
    reporter = Reporter(manager, history=history, monitor_every_s=1.0, flush_every_s=2.0)
    if freeze_at_start:  # as `sloguard serve` does once its app is built
        gc.collect()
        gc.freeze()
    tick = Timed(reporter.monitor.tick)
    reporter.monitor.tick = tick  # type: ignore[method-assign]
    assert reporter.recorder is not None
    flush = Timed(reporter.recorder.flush)
    reporter.recorder.flush = flush  # type: ignore[method-assign]
    stop = asyncio.Event()
    lateness: list[float] = []
    held: list[float] = []
    load = asyncio.create_task(traffic(manager, stop))
    await asyncio.sleep(6.0)  # every capability has a closed bucket before the loops start
    if settle:
        gc.collect()
    if freeze:  # what `sloguard serve` does once started: its heap out of the collector's way
        gc.freeze()
    collections = FullCollections()
    gc.callbacks.append(collections)
    probing = asyncio.create_task(probe(stop, lateness, held))
    if reporting:
        await reporter.start()
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(load, probing)
    gc.callbacks.remove(collections)
    full_gc_s = full_collection_s()
    if reporting:
        await reporter.stop()
    gc.unfreeze()
    return {
        "stall_max_ms": max(lateness) * 1000,
        "stall_p999_ms": quantile(lateness, 0.999) * 1000,
        "stall_p99_ms": quantile(lateness, 0.99) * 1000,
        "held_max_ms": max(held) * 1000,
        "tick_max_ms": max(tick.seconds, default=math.nan) * 1000,
        "ticks": len(tick.seconds),
        "flush_max_ms": max(flush.seconds, default=math.nan) * 1000,
        "flushes": len(flush.seconds),
        "probes": len(lateness),
        "gen2": len(collections.seconds),
        "gen2_max_ms": max(collections.seconds, default=math.nan) * 1000,
        "full_gc_ms": full_gc_s * 1000,
    }


def main() -> None:
    only = None
    if "--only" in sys.argv:
        at = sys.argv.index("--only")
        only = sys.argv[at + 1]
        del sys.argv[at : at + 2]
    args = [arg for arg in sys.argv[1:] if arg != "--distinct"]
    distinct = "--distinct" in sys.argv[1:]
    count = int(args[0]) if args else 10_000
    seconds = float(args[1]) if len(args) > 1 else 30.0
    with tempfile.TemporaryDirectory() as tmp:
        slos = Path(tmp) / "slos"
        slos.mkdir()
        for i in range(count):
            p99 = 200 + i if distinct else 200
            text = TEMPLATE.format(i=i, p99=p99)
            (slos / f"cap_{i:05d}.yml").write_text(text, encoding="utf-8")
        default = slicing.SLICE_S
        print(
            f"{count} capabilities ({'distinct' if distinct else 'equal'} targets), "
            f"{seconds:g} s under the monitor (1 s) and recorder (2 s)"
        )
        print(
            f"{'':9} {'stall max':>10} {'p99.9':>8} {'p99':>8} {'CPU held max':>13} "
            f"{'tick max':>9} {'ticks':>6} {'flush max':>10} {'flushes':>8} "
            f"{'gen2':>5} {'gen2 max':>9} {'full gc':>8}"
        )
        runs = (  # name, SLICE_S, after start-up: gc.collect(), gc.freeze(); reporting
            ("one pass", math.inf, False, False, True),
            ("sliced", default, False, False, True),
            ("settled", default, True, False, True),
            ("+ freeze", default, True, True, True),
            ("serve", default, False, False, True),
            ("no report", default, True, True, False),
        )
        for name, slice_s, settle, freeze, reporting in runs:
            if only is not None and name != only:
                continue
            slicing.SLICE_S = slice_s
            history = Path(tmp) / f"{name}.sqlite3"
            result = asyncio.run(
                run(
                    slos,
                    history,
                    seconds,
                    settle=settle,
                    freeze=freeze,
                    reporting=reporting,
                    freeze_at_start=name == "serve",
                )
            )
            print(
                f"{name:9} {result['stall_max_ms']:8.1f}ms {result['stall_p999_ms']:6.1f}ms "
                f"{result['stall_p99_ms']:6.1f}ms {result['held_max_ms']:11.1f}ms "
                f"{result['tick_max_ms']:7.0f}ms "
                f"{result['ticks']:6} {result['flush_max_ms']:8.0f}ms {result['flushes']:8} "
                f"{result['gen2']:5} {result['gen2_max_ms']:7.1f}ms {result['full_gc_ms']:6.1f}ms"
            )
        slicing.SLICE_S = default


if __name__ == "__main__":
    main()
