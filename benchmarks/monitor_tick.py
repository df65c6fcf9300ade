"""What reading both admission loops costs the SLO monitor, per capability and tick.

Run: ``python benchmarks/monitor_tick.py [COUNT [TICKS]]`` (default 2,000 and 20).

Loads COUNT enforcing SLO files (each with the default adaptive limit), sends one
request per capability through SLOGuard (so each has its limiter), then times
:meth:`SLOMonitor.tick` over every capability (in one pass, no slices), without
and with the ``shedding`` hook the Reporter gives it (``shedding_json`` and the
:class:`LimitTracker` for each capability), alternately, twice each, in CPU time.

For instructions rather than time (repeatable on a shared machine), run one
variant per process under callgrind, with 0 and with TICKS ticks, and subtract::

    valgrind --tool=callgrind python benchmarks/monitor_tick.py 300 20 --only hook
    valgrind --tool=callgrind python benchmarks/monitor_tick.py 300 0 --only hook
    (the same with --only plain)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sloguard import SLOGuard, SLOManager
from sloguard._clock import ManualClock
from sloguard.reporting import SLOMonitor, shedding_json, slicing

TEMPLATE = """\
capability: {{verb: bench, name: cap_{i:05d}}}
slo:
  latency: {{p50_ms: 50, p95_ms: 100, p99_ms: 200}}
  availability: {{target: 0.999}}
enforcement: {{reject_on_violation: true}}
"""


async def setup(count: int) -> tuple[SLOManager, SLOGuard]:
    directory = Path(tempfile.mkdtemp())
    for i in range(count):
        (directory / f"cap_{i:05d}.yml").write_text(TEMPLATE.format(i=i), encoding="utf-8")
    clock = ManualClock()
    manager = SLOManager(directory, clock=clock)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        clock.advance(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    routes = {f"/c{i}": f"bench:cap_{i:05d}" for i in range(count)}
    guard = SLOGuard(app, manager=manager, route_table=routes, clock=clock, metrics=False)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    for path in routes:
        scope = {"type": "http", "method": "POST", "path": path, "headers": []}
        await guard(scope, receive, send)
    return manager, guard


def monitor(manager: SLOManager, guard: SLOGuard, hook: bool, wall: ManualClock) -> SLOMonitor:
    def shedding(capability: str, active: bool) -> dict[str, Any] | None:
        slo = manager.get_slo(capability)
        return None if slo is None else shedding_json(slo, active, guard.admission)

    return SLOMonitor(manager, clock=wall, shedding=shedding if hook else None)


async def main(count: int, ticks: int, only: str | None) -> None:
    slicing.SLICE_S = float("inf")  # the work itself, not the hand-backs to the loop
    manager, guard = await setup(count)
    wall = ManualClock(1_800_000_000.0)
    if only is not None:
        watcher = monitor(manager, guard, only == "hook", wall)
        for _ in range(ticks):
            wall.advance(1)
            await watcher.tick()
        return
    plain, hooked = monitor(manager, guard, False, wall), monitor(manager, guard, True, wall)
    await plain.tick()
    await hooked.tick()
    print(f"{count} capabilities, {ticks} ticks each, CPU time per tick")
    for name, watcher in (("plain", plain), ("hook", hooked), ("plain", plain), ("hook", hooked)):
        start = time.process_time()
        for _ in range(ticks):
            wall.advance(1)
            await watcher.tick()
        cpu = (time.process_time() - start) / ticks
        per = cpu / count * 1e6
        print(f"  {name:6s} {cpu * 1000:8.1f} ms per tick  {per:6.1f} us per capability")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    if only is not None:
        args.remove(only)
    asyncio.run(main(int(args[0]) if args else 2000, int(args[1]) if len(args) > 1 else 20, only))
