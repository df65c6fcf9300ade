"""Machine instructions per request for hot_path.py's variants, counted by valgrind.

    apt-get install valgrind && pip install -e ".[bench]" && python benchmarks/instructions.py

hot_path.py times requests, and on a shared machine its medians move with the
neighbours: the same commit measured a full-stack miss at 1.6x and 2.2x the bare
app an hour apart. Instructions retired do not move: each variant runs in a
child process under ``valgrind --tool=callgrind`` (PYTHONHASHSEED fixed), which
serves ``--warmup`` requests, then counts the instructions of ``--requests``
more (callgrind zeroes its counters when the child calls ``getppid`` and dumps
them when it calls ``getpgrp``, the two calls around the counted requests).
SLOGuard's clock is a manual one that moves 25 µs a request, so its
time-driven work comes at full speed's pace, not callgrind's. Two runs of one
commit agree to within 0.05% (most rows to the instruction), so a change of a
few hundred instructions a request is visible.

``--server`` counts the same way inside a real server: each app runs under
uvicorn under callgrind, wrk warms it up, then callgrind_control zeroes the
counters, wrk drives it for ``--seconds`` (4 connections: callgrind slows the
server ~50x) and callgrind_control dumps them; the count is divided by the
requests wrk completed. The rows are throughput.py's. Background work runs on
wall-clock timers (SLOGuard's SLO file watcher every 2 s, its reporter every
5-10 s), so under callgrind each request carries ~50x its share of it at full
speed: with the watcher off, a full-stack miss counted ~3.5k fewer.

An instruction is not a nanosecond: cache misses and branch mispredictions do not
count here, and they are much of what a request costs inside a real server
(throughput.py). Use this to compare two versions of the code, hot_path.py and
throughput.py for what a request costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VARIANTS = (
    "bare Starlette app",
    "IdempotencyMiddleware, no key",
    "IdempotencyMiddleware, miss (fresh key)",
    "IdempotencyMiddleware, replay",
    "SLOGuard full stack, no key",
    "SLOGuard full stack, miss",
    "SLOGuard full stack, replay",
    "SLOGuard, metrics off, miss",
    "peer asgi-idempotency-header, miss",
)
REQUEST_S = 25e-6
"""How far SLOGuard's clock moves per request in the in-process count."""
_SUMMARY = re.compile(r"^summary: (\d+)$", re.MULTILINE)


def run_child(name: str, warmup: int, requests: int) -> None:
    """Serve ``warmup`` requests of the variant called ``name``, then ``requests``
    more between the two marker calls (run under valgrind)."""
    from hot_path import request_once, variants
    from sloguard._clock import ManualClock

    # SLOGuard's time-driven work (its evaluation every 0.5 s, the window's bucket
    # rotation) comes at the pace of this clock, one request's worth at a time, and
    # not ~50x as often as at full speed, as it would on the wall clock under callgrind.
    clock = ManualClock()
    found = {variant.name: variant for variant in variants(redis_rows=False, clock=clock)}
    if name not in found:
        sys.exit(f"no variant {name!r}; there are: {', '.join(found)}")
    variant = found[name]

    async def serve(count: int) -> None:
        for _ in range(count):
            await request_once(variant)
            clock.advance(REQUEST_S)

    async def counted() -> None:
        await serve(warmup)
        os.getppid()  # callgrind: zero the counters
        await serve(requests)
        os.getpgrp()  # callgrind: dump them

    asyncio.run(counted())


def per_request(name: str, warmup: int, requests: int) -> float:
    """Instructions retired per request of ``name``, counted by callgrind in a child."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--zero-before=getppid",
            "--dump-before=getpgrp",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            name,
            str(warmup),
            str(requests),
        ]
        # A PYTHONPATH of the caller's (another checkout's src/) comes after ours.
        pythonpath = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": pythonpath}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        counted = _first_dump(out)
    if done.returncode != 0 or counted is None:
        raise RuntimeError(f"{name}: valgrind failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return counted / requests


def _first_dump(out: Path) -> int | None:
    """The instructions in callgrind's first dump of a run writing to ``out`` (the one
    asked for, ``out.1``; ``out`` itself is the dump at exit), or None if there is none."""
    dump = out.with_name(out.name + ".1")
    found = _SUMMARY.search(dump.read_text()) if dump.exists() else None
    return None if found is None else int(found.group(1))


SERVER_ROWS = (
    # (row, app, requests sent, the row it is compared with): throughput.py's
    ("bare Starlette app", "servers:bare", "nokey", "bare Starlette app"),
    (
        "bare Starlette app, keyed requests",
        "servers:bare",
        "key",
        "bare Starlette app, keyed requests",
    ),
    ("SLOGuard full stack, no key", "servers:guarded", "nokey", "bare Starlette app"),
    ("SLOGuard full stack, miss", "servers:guarded", "key", "bare Starlette app, keyed requests"),
    (
        "IdempotencyMiddleware, miss",
        "servers:idempotency",
        "key",
        "bare Starlette app, keyed requests",
    ),
)


def server_per_request(app: str, mode: str, seconds: int) -> float:
    """Instructions retired per request by uvicorn serving ``app`` under callgrind."""
    from servers import free_port, uvicorn_server
    from throughput import lua_script, wrk_run

    script = lua_script()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        os.environ["PYTHONHASHSEED"] = "0"  # the server inherits it
        with uvicorn_server(app, port, quiet=True, wrapper=wrapper, start_timeout_s=300) as url:
            wrk_run(url, script, mode, 3, 4, timeout_s=30)
            pid = _callgrind_pid(port)
            subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
            requests, _ = wrk_run(url, script, mode, seconds, 4, timeout_s=30)
            subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
        counted = _first_dump(out)
    if counted is None:
        raise RuntimeError(f"{app}: callgrind left no dump")
    return counted / requests


def _callgrind_pid(port: int) -> str:
    """The pid of the callgrind process serving on ``port`` (callgrind_control lists them)."""
    listing = subprocess.run(["callgrind_control"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        found = re.match(rf"PID (\d+): .*--port {port}\b", line)
        if found:
            return found.group(1)
    raise RuntimeError(f"no callgrind process serves port {port}:\n{listing}")


def main_server(seconds: int) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    costs = {row: server_per_request(app, mode, seconds) for row, app, mode, _ in SERVER_ROWS}
    width = max(map(len, costs))
    print(
        f"{'variant (through uvicorn)':<{width}}  {'instructions':>12}  {'x bare':>6}  {'added':>8}"
    )
    for row, _, _, baseline in SERVER_ROWS:
        cost, bare = costs[row], costs[baseline]
        print(f"{row:<{width}}  {cost:12,.0f}  {cost / bare:6.2f}  {cost - bare:8,.0f}")
    print(
        f"\ninstructions per request in the server process, over {seconds} s of wrk after 3 s"
        " of warm-up; x bare: against the bare app sent the same requests (keyed or not);"
        f" PYTHONHASHSEED=0; Python {sys.version.split()[0]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests counted")
    parser.add_argument("--warmup", type=int, default=200, help="requests before them")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, metavar="NAME")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--server", action="store_true", help="count inside uvicorn instead")
    parser.add_argument("--seconds", type=int, default=10, help="--server: wrk's run")
    args = parser.parse_args()
    if args.child is not None:
        run_child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind not found: apt-get install valgrind")
    if args.server:
        main_server(args.seconds)
        return
    names = list(dict.fromkeys(["bare Starlette app", *args.variants]))
    with ThreadPoolExecutor(args.jobs) as pool:
        costs = dict(
            zip(
                names,
                pool.map(lambda n: per_request(n, args.warmup, args.requests), names),
                strict=True,
            )
        )
    bare = costs["bare Starlette app"]
    width = max(map(len, names))
    print(f"{'variant':<{width}}  {'instructions':>12}  {'x bare':>6}  {'added':>8}")
    for name, cost in costs.items():
        print(f"{name:<{width}}  {cost:12,.0f}  {cost / bare:6.2f}  {cost - bare:8,.0f}")
    print(
        f"\ninstructions per request: {args.requests} requests counted after "
        f"{args.warmup}; PYTHONHASHSEED=0; Python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main()
