"""CPU per forwarded request of ``sloguard serve``: this checkout against a git ref, same run.

    python benchmarks/route_cpu.py --against main              # process CPU time, wrk
    python benchmarks/route_cpu.py --against main --callgrind  # instructions, callgrind
    python benchmarks/route_cpu.py --profile                   # cProfile: where it goes

route.py's rates move with whatever else the machine runs; a proxy's CPU per
request moves much less. One worker (servers.py: ``route_worker``) runs in a
process of its own; in front of it one ``sloguard serve`` per source tree (this
checkout's ``src/``, and ``git archive REF src`` for each ``--against``), as
route.py runs it (SLOGuard on, an SLO file for the capability). wrk drives
each in turn for ``--seconds``, rounds alternating; a row is the median over
rounds of the controller's user + system CPU time (``/proc/PID/stat``) divided
by the requests wrk completed.

``--callgrind`` runs each controller under ``valgrind --tool=callgrind``
instead and counts the instructions it retires over one wrk run after a
warm-up (callgrind_control zeroes and dumps the counters), divided by the
requests: a count that does not depend on the neighbours (callgrind slows the
server ~50x, so background timers weigh more per request than at full speed).

``--profile`` runs this checkout's controller under cProfile for one wrk run
and prints the functions that take the most time per forwarded request
(cProfile's own overhead inflates every Python call: read the shares, not the
microseconds).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pstats
import re
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from route import LUA, Target, running, state_dir, wrk
from servers import ROOT, free_port

SERVE = "import sys; from sloguard.cli import main; raise SystemExit(main(sys.argv[1:]))"
_PROFILED = """
import cProfile, signal, sys
from sloguard.cli import main
profile = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
signal.signal(signal.SIGUSR2, lambda *_: (profile.disable(), profile.dump_stats(sys.argv[1])))
raise SystemExit(main(sys.argv[2:]))
"""


def source_tree(ref: str, into: Path) -> Path:
    """``src/`` of git ref ``ref``, extracted under ``into``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "src"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    target = into / re.sub(r"[^A-Za-z0-9_.-]", "_", ref)
    target.mkdir(parents=True)
    archive_path = target / "src.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


@contextlib.contextmanager
def serve(
    state: Path, src: Path, *, wrapper: list[str] | None = None, code: str = SERVE, extra=()
) -> Iterator[tuple[int, str]]:
    port = free_port()
    command = [
        *(wrapper or []),
        sys.executable,
        "-c",
        code,
        *extra,
        *("serve", "--state", str(state), "--port", str(port), "--log-level", "warning"),
    ]
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
    url = f"http://127.0.0.1:{port}"
    # Under callgrind, starting takes minutes.
    what = f"sloguard serve ({src})"
    with running(command, url + "/healthz", what, start_timeout_s=600, cwd=ROOT, env=env) as pid:
        yield pid, url


def measure(pid: int, url: str, script: Path, seconds: float, conns: int) -> tuple[float, ...]:
    """User and system CPU µs per request of ``pid`` over one wrk run, and its rate."""
    stat = Path(f"/proc/{pid}/stat")
    before = stat.read_text().rpartition(")")[2].split()
    start = time.monotonic()
    requests = _requests(Target("controller", url, script), seconds, conns)
    took = time.monotonic() - start
    after = stat.read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    user, system = ((int(after[i]) - int(before[i])) / tick for i in (11, 12))
    return user / requests * 1e6, system / requests * 1e6, requests / took


def callgrind_count(state: Path, src: Path, script: Path, seconds: float, conns: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        with serve(state, src, wrapper=wrapper) as (pid, url):
            target = Target("controller", url, script)
            _requests(target, 3, conns)  # warm-up: pools, caches
            subprocess.run(
                ["callgrind_control", "--zero", str(pid)], check=True, capture_output=True
            )
            requests = _requests(target, seconds, conns)
            subprocess.run(
                ["callgrind_control", "--dump", str(pid)], check=True, capture_output=True
            )
        dumps = sorted(Path(tmp).glob("callgrind.out.*"))
        found = re.search(r"^summary: (\d+)$", dumps[0].read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError("callgrind left no dump")
    return int(found.group(1)) / requests


def _requests(target: Target, seconds: float, conns: int) -> int:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "-s", str(target.script), target.url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = re.search(r"(\d+) requests in", out)
    if found is None or "Non-2xx" in out:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return int(found.group(1))


def profile(state: Path, script: Path, seconds: float, conns: int, top: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stats_path = Path(tmp) / "stats"
        with serve(state, ROOT / "src", code=_PROFILED, extra=(str(stats_path),)) as (pid, url):
            target = Target("controller", url, script)
            wrk(target, 2, conns)
            os.kill(pid, signal.SIGUSR1)
            requests = _requests(target, seconds, conns)
            os.kill(pid, signal.SIGUSR2)
            for _ in range(100):
                if stats_path.exists():
                    break
                time.sleep(0.1)
            time.sleep(0.5)
        stats = pstats.Stats(str(stats_path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in entries.values())
    print(
        f"cProfile, {requests} forwarded requests (wrk -c{conns}), {total / requests * 1e6:.0f} "
        "µs of profiled time per request\n"
    )
    print("| function | self µs/request | self share | inclusive µs/request | calls/request |")
    print("|---|---:|---:|---:|---:|")
    rows = sorted(entries.items(), key=lambda item: -item[1][2])[:top]
    for (path, line, name), (_, calls, tt, ct, _) in rows:
        where = _short(path, line, name)
        print(
            f"| {where} | {tt / requests * 1e6:.1f} | {100 * tt / total:.1f}% | "
            f"{ct / requests * 1e6:.1f} | {calls / requests:.2f} |"
        )
    groups: dict[str, float] = {}
    for (path, _, _), (_, _, tt, _, _) in entries.items():
        groups[_component(path)] = groups.get(_component(path), 0.0) + tt
    print("\n| component (self time) | µs/request | share |\n|---|---:|---:|")
    for component, tt in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"| {component} | {tt / requests * 1e6:.1f} | {100 * tt / total:.1f}% |")
    print("\ninclusive, the top functions:\n")
    rows = sorted(entries.items(), key=lambda item: -item[1][3])[: top * 2]
    for (path, line, name), (_, _, _, ct, _) in rows:
        print(
            f"  {ct / requests * 1e6:8.1f} µs  {100 * ct / total:5.1f}%  {_short(path, line, name)}"
        )


_COMPONENTS = (
    ("sloguard/routing/forward.py", "the forwarder (routing/forward.py)"),
    ("sloguard/routing/", "the controller app (routing/app.py, body.py, registry.py)"),
    ("sloguard/", "SLOGuard (middleware, request, admission, outcomes, metrics)"),
    ("uvicorn/", "uvicorn (its protocol and response cycle)"),
    ("starlette/", "Starlette"),
    ("asyncio/", "asyncio (Python parts)"),
)


def _component(path: str) -> str:
    if path == "~":
        return "builtins (C functions called from all of the above)"
    for fragment, name in _COMPONENTS:
        if fragment in path:
            return name
    return "other"


def _short(path: str, line: int, name: str) -> str:
    if path == "~":
        return name
    parts = Path(path).parts
    for anchor in ("site-packages", "src", "lib"):
        if anchor in parts:
            parts = parts[len(parts) - parts[::-1].index(anchor) :]
            break
    return f"{name} ({'/'.join(parts[-2:])}:{line})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", action="append", default=[], metavar="REF")
    parser.add_argument(
        "--tree", action="append", default=[], metavar="NAME=SRC", help="another src/ directory"
    )
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sloguard-route-cpu-"))
    script = tmp / "proxied.lua"
    script.write_text(LUA.replace("PATH", "/route/bench/route?delay_ms=0"))
    worker_port = free_port()
    worker_url = f"http://127.0.0.1:{worker_port}"
    state = state_dir(tmp, worker_url)
    trees = {"this checkout": ROOT / "src"}
    for ref in args.against:
        trees[ref] = source_tree(ref, tmp / "trees")
    for tree in args.tree:
        name, _, src = tree.partition("=")
        trees[name] = Path(src).resolve()
    worker = running(
        [
            *(sys.executable, "-m", "uvicorn", "servers:route_worker"),
            *("--port", str(worker_port), "--log-level", "warning", "--no-access-log"),
        ],
        f"{worker_url}/health",
        "the worker",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "benchmarks")},
    )
    with worker:
        if args.profile:
            profile(state, script, args.seconds, args.connections[-1], args.top)
            return
        if args.callgrind:
            print("| tree | conns | instructions/request |\n|---|---:|---:|")
            for conns in args.connections:
                for name, src in trees.items():
                    count = callgrind_count(state, src, script, args.seconds, conns)
                    print(f"| {name} | {conns} | {count:,.0f} |", flush=True)
            return
        cpu: dict[tuple[str, int], list[float]] = {}
        system: dict[tuple[str, int], list[float]] = {}
        rate: dict[tuple[str, int], list[float]] = {}
        with contextlib.ExitStack() as stack:
            served = {name: stack.enter_context(serve(state, src)) for name, src in trees.items()}
            for conns in args.connections:  # warm-up
                for _, url in served.values():
                    wrk(Target("warm-up", url, script), 1, conns)
            for _ in range(args.rounds):
                for conns in args.connections:
                    for name, (pid, url) in served.items():
                        user_us, system_us, rps = measure(pid, url, script, args.seconds, conns)
                        cpu.setdefault((name, conns), []).append(user_us + system_us)
                        system.setdefault((name, conns), []).append(system_us)
                        rate.setdefault((name, conns), []).append(rps)
        load = os.getloadavg()
        print(
            f"\nwrk -t1, {args.rounds} alternating rounds of {args.seconds:g} s, medians "
            f"(load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end)\n"
        )
        print(
            "| tree | conns | CPU µs/request | range | of which system | req/s |\n"
            "|---|---:|---:|---|---:|---:|"
        )
        for conns in args.connections:
            for name in trees:
                values = cpu[name, conns]
                print(
                    f"| {name} | {conns} | {statistics.median(values):.0f} | "
                    f"{min(values):.0f} to {max(values):.0f} | "
                    f"{statistics.median(system[name, conns]):.0f} | "
                    f"{statistics.median(rate[name, conns]):,.0f} |"
                )


if __name__ == "__main__":
    main()
