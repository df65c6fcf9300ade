"""The /route controller's cost: a worker called through it vs. the same worker directly.

    apt-get install wrk && pip install -e ".[bench]" && python benchmarks/route.py

One demo worker (benchmarks/servers.py: ``route_worker``, answering at once with
``?delay_ms=0``) and the controller behind SLOGuard (``route_controller``, what
``sloguard serve`` runs, with that worker as its only one) each run under
uvicorn in a process of their own; wrk drives them from a third. Rounds
alternate between "direct" (``POST /bench/route`` on the worker) and "through
the controller" (``POST /route/bench/route`` on the controller, which forwards
it to the worker over HTTP), so machine noise hits both alike. For each wrk
connection count the table gives the median over rounds of requests per second
and of wrk's p50 and p99, the ratio of the throughputs and the controller's
added p50 latency. Every process shares the machine's cores: read the figures
as relative.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from servers import free_port, uvicorn_server

LUA = """
function request()
  return wrk.format("POST", "PATH", {["Content-Type"] = "application/json"}, '{"pages": 12}')
end
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True, slots=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float


def wrk(url: str, script: Path, seconds: int, connections: int) -> Run:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)$", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)$", out, re.MULTILINE)
    if rps is None or p50 is None or p99 is None or "Non-2xx" in out or "errors" in out:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return Run(
        float(rps.group(1)),
        float(p50.group(1)) * _UNITS[p50.group(2)],
        float(p99.group(1)) * _UNITS[p99.group(2)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per variant")
    parser.add_argument(
        "--connections", default="1,32", help="comma-separated wrk connection counts"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    counts = [int(c) for c in args.connections.split(",")]

    scripts = Path(tempfile.mkdtemp(prefix="sloguard-route-bench-"))
    direct_lua, routed_lua = scripts / "direct.lua", scripts / "routed.lua"
    direct_lua.write_text(LUA.replace("PATH", "/bench/route?delay_ms=0"))
    routed_lua.write_text(LUA.replace("PATH", "/route/bench/route?delay_ms=0"))

    worker_port = free_port()
    os.environ["BENCH_WORKER_URL"] = f"http://127.0.0.1:{worker_port}"
    results: dict[tuple[str, int], list[Run]] = {}
    with (
        uvicorn_server("servers:route_worker", worker_port) as worker,
        uvicorn_server("servers:route_controller") as controller,
    ):
        for connections in counts:  # warm-up: connection pools, caches
            wrk(worker, direct_lua, 1, connections)
            wrk(controller, routed_lua, 1, connections)
        for _ in range(args.rounds):
            for connections in counts:
                for name, url, script in (
                    ("direct", worker, direct_lua),
                    ("controller", controller, routed_lua),
                ):
                    run = wrk(url, script, args.seconds, connections)
                    results.setdefault((name, connections), []).append(run)

    print(
        f"wrk -t1, {args.rounds} rounds of {args.seconds} s, medians; "
        f"{os.cpu_count()} CPUs shared by wrk, the controller and the worker\n"
    )
    print("| connections | path | requests/s | p50 ms | p99 ms | throughput ratio | added p50 ms |")
    print("|---|---|---|---|---|---|---|")
    for connections in counts:
        direct = _median(results["direct", connections])
        routed = _median(results["controller", connections])
        for name, row in (("worker directly", direct), ("through the controller", routed)):
            extra = (
                f"{routed.rps / direct.rps:.2f} | {routed.p50_ms - direct.p50_ms:+.2f}"
                if row is routed
                else "1.00 | "
            )
            print(
                f"| {connections} | {name} | {row.rps:,.0f} | {row.p50_ms:.2f} | "
                f"{row.p99_ms:.2f} | {extra} |"
            )


def _median(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
    )


if __name__ == "__main__":
    main()
