"""The /route controller at proxy speed: a worker directly, through nginx, through sloguard serve.

    apt-get install -y nginx-light wrk && pip install -e ".[bench]" && python benchmarks/route.py

One demo worker (servers.py: ``route_worker``, answering at once with
``?delay_ms=0``) runs under uvicorn in a process of its own. In front of it,
each in its own process(es):

- nginx (Debian's nginx-light, one worker process, a keep-alive upstream):
  the reference proxy;
- ``sloguard serve`` as a user runs it: a state directory with an SLO file for
  the capability (SLOGuard on) and the worker in ``workers.yml``;
- ``sloguard serve --processes 2 --redis redis://127.0.0.1:6379/0``.

wrk (-t1) drives each in turn, rounds alternating between them so that machine
noise hits all alike; the tables give medians over rounds of requests per
second, p50 and p99, and ratios to nginx and to the worker called directly.
Then: a keyed request replayed through each controller (every request after
the first is a replay), a 100 MiB streamed response through each controller
(the peak RSS of the process that forwarded it), and the forwarding clients
alone (sloguard's forwarder vs aiohttp and httpx, POSTing to the worker from
this process). Every process shares the machine's cores: read the figures as
relative; ``route_cpu.py`` compares CPU per request, which moves less.
``--profile`` samples one `sloguard serve` under wrk with py-spy (if installed)
and prints where its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvloop

from servers import BIG_BYTES, ROOT, ROUTE_SLO, free_port

LUA = """
wrk.method = "POST"
wrk.path = "PATH"
wrk.body = '{"pages": 12}'
wrk.headers["Content-Type"] = "application/json"
"""
KEYED = '\nwrk.headers["Idempotency-Key"] = "bench-replay-KEY"\n'
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
REDIS_URL = "redis://127.0.0.1:6379/0"

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  upstream worker {{ server 127.0.0.1:{worker_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://worker;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


@dataclass(frozen=True, slots=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float = math.nan
    """CPU time (user + system) the proxy's processes spent per request; the worker's
    own when it is called directly."""


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str
    script: Path
    pid: int | None = None
    """The process that forwards (for its RSS), when there is one."""


def wrk(target: Target, seconds: float, connections: int) -> Run:
    cpu_before = cpu_seconds(target.pid) if target.pid is not None else math.nan
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(target.script),
            target.url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cpu = cpu_seconds(target.pid) - cpu_before if target.pid is not None else math.nan
    total = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)$", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)$", out, re.MULTILINE)
    if total is None or int(total.group(1)) == 0 or rps is None or p50 is None or p99 is None:
        raise RuntimeError(f"unexpected wrk output for {target.name}:\n{out}")
    if "Non-2xx" in out or "errors" in out:
        raise RuntimeError(f"failed requests through {target.name}:\n{out}")
    return Run(
        float(rps.group(1)),
        float(p50.group(1)) * _UNITS[p50.group(2)],
        float(p99.group(1)) * _UNITS[p99.group(2)],
        cpu / int(total.group(1)) * 1e6,
    )


def family(pid: int) -> list[int]:
    """``pid`` and its children (nginx's workers, `serve --processes`'s processes)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(p) for p in children.read_text().split())] if children.exists() else [pid]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` and its children have used so far."""
    ticks = 0
    for one in family(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_until_answering(
    url: str, process: subprocess.Popen[bytes], what: str, timeout_s: float = 60
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        # A slow first answer (a server under callgrind) is waited for, not retried.
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=30):
            return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.1)


@contextlib.contextmanager
def running(
    command: list[str], ready_url: str, what: str, *, start_timeout_s: float = 60, **popen: object
) -> Iterator[int]:
    """Run ``command`` until the block ends; yield its pid once ``ready_url`` answers
    (every process of several: a bound port accepts before they serve)."""
    process = subprocess.Popen(command, **popen)  # type: ignore[call-overload]
    try:
        wait_until_answering(ready_url, process, what, start_timeout_s)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def nginx(tmp: Path, worker_port: int) -> tuple[contextlib.AbstractContextManager[int], int]:
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, worker_port=worker_port, port=port))
    command = ["nginx", "-c", str(conf), "-p", str(tmp)]
    return running(command, f"http://127.0.0.1:{port}/health", "nginx"), port


def state_dir(tmp: Path, worker_url: str) -> Path:
    """What a user writes: an SLO file for the capability and the worker in workers.yml."""
    state = tmp / "state"
    (state / "controller" / "slos").mkdir(parents=True)
    (state / "controller" / "slos" / "bench_route.yml").write_text(ROUTE_SLO)
    (state / "workers.yml").write_text(
        f"workers:\n  - id: bench-worker\n    url: {worker_url}\n"
        "    capabilities: [bench:route, bench:big]\n"
    )
    return state


def sloguard_serve(state: Path, *args: str) -> tuple[contextlib.AbstractContextManager[int], int]:
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "import sys; from sloguard.cli import main; raise SystemExit(main(sys.argv[1:]))",
        "serve",
        "--state",
        str(state),
        "--port",
        str(port),
        "--log-level",
        "warning",
        *args,
    ]
    ready = f"http://127.0.0.1:{port}/healthz"
    return running(command, ready, "sloguard serve " + " ".join(args), cwd=ROOT), port


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` and its children, in MiB (the largest of each)."""
    rss = hwm = 0.0
    for one in family(pid):
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{one}/status").read_text().splitlines()
        )
        rss = max(rss, int(fields["VmRSS"].split()[0]) / 1024)
        hwm = max(hwm, int(fields["VmHWM"].split()[0]) / 1024)
    return rss, hwm


def big_download(url: str) -> tuple[int, float]:
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "-w",
            "%{size_download} %{time_total}",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return int(out[0]), float(out[1])


# -- the forwarding clients alone ------------------------------------------------------


async def client_rate(kind: str, url: str, in_flight: int, seconds: float) -> tuple[float, float]:
    """Requests per second one client in this process sustains with ``in_flight`` at once,
    and the CPU time this process spent per request (µs)."""
    body, headers = b'{"pages": 12}', {"content-type": "application/json"}
    done = 0
    stop = time.monotonic() + seconds
    cpu = time.process_time()

    if kind == "sloguard":
        from sloguard.routing.forward import Forwarder
        from sloguard.routing.registry import Worker

        forwarder = Forwarder()
        await forwarder.start()
        base, _, path = url.partition("/bench/")
        worker = Worker("bench-worker", base, frozenset())
        listed = list(headers.items())

        async def loop_sloguard() -> None:
            nonlocal done
            while time.monotonic() < stop:
                upstream = await forwarder.send(worker, "/bench/" + path, listed, body, 30)
                await upstream.read(worker)
                done += 1

        start = time.monotonic()
        await asyncio.gather(*(loop_sloguard() for _ in range(in_flight)))
        await forwarder.close()
    elif kind == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, limit_per_host=256)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def loop_aiohttp() -> None:
                nonlocal done
                while time.monotonic() < stop:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                    done += 1

            start = time.monotonic()
            await asyncio.gather(*(loop_aiohttp() for _ in range(in_flight)))
    else:
        import httpx

        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        async with httpx.AsyncClient(limits=limits) as client:

            async def loop_httpx() -> None:
                nonlocal done
                while time.monotonic() < stop:
                    response = await client.post(url, content=body, headers=headers)
                    response.read()
                    done += 1

            start = time.monotonic()
            await asyncio.gather(*(loop_httpx() for _ in range(in_flight)))
    return done / (time.monotonic() - start), (time.process_time() - cpu) / done * 1e6


# -- the profile -------------------------------------------------------------------------


def profile(pid: int, target: Target, seconds: int) -> None:
    """Sample ``pid`` with py-spy while wrk drives it; print self and inclusive shares."""
    if shutil.which("py-spy") is None:
        print("\n(py-spy is not installed: pip install py-spy, to profile)")
        return
    out = Path(tempfile.mkdtemp(prefix="sloguard-route-profile-")) / "stacks.txt"
    spy = subprocess.Popen(
        [
            *("py-spy", "record", "-p", str(pid), "-d", str(seconds), "-r", "500"),
            *("-f", "raw", "-o", str(out), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    run = wrk(target, seconds - 1, 32)
    spy.wait(60)
    stacks: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        samples = int(count)
        total += samples
        stacks[stack] += samples
        own[_short(frames[-1])] += samples
        for name in {_short(f) for f in frames}:
            inclusive[name] += samples
    print(f"\npy-spy, {seconds} s of `sloguard serve` under wrk -c32 ({run.rps:,.0f} req/s):")
    print(f"{total} samples (idle samples excluded)\n\ninclusive, the top 25 frames:")
    for name, samples in inclusive.most_common(25):
        print(f"  {100 * samples / total:5.1f}%  {name}")
    print("\nself, the top 20 frames:")
    for name, samples in own.most_common(20):
        print(f"  {100 * samples / total:5.1f}%  {name}")


def _short(frame: str) -> str:
    # py-spy: "function (path/to/module.py:line)"
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if match is None:
        return frame
    function, path = match.groups()
    parts = Path(path).parts
    where = "/".join(
        parts[parts.index("site-packages") + 1 :] if "site-packages" in parts else parts[-2:]
    )
    return f"{function} ({where})"


# -- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per variant")
    parser.add_argument("--connections", default="1,32", help="comma-separated wrk connections")
    parser.add_argument("--profile", action="store_true", help="py-spy one sloguard serve")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "curl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install -y nginx-light wrk curl)")
    counts = [int(c) for c in args.connections.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="sloguard-route-bench-"))
    tmp.chmod(0o755)  # nginx's worker process (user nobody) keeps its temp files here
    scripts = {}
    for name, path, keyed in (
        ("direct", "/bench/route?delay_ms=0", False),
        ("proxied", "/route/bench/route?delay_ms=0", False),
        ("keyed", "/route/bench/route?delay_ms=0", True),
    ):
        scripts[name] = tmp / f"{name}.lua"
        text = LUA.replace("PATH", path)
        if keyed:
            text += KEYED.replace("KEY", uuid.uuid4().hex)
        scripts[name].write_text(text)

    worker_port = free_port()
    worker_url = f"http://127.0.0.1:{worker_port}"
    state = state_dir(tmp, worker_url)
    prefix = f"sloguard-bench:{uuid.uuid4().hex}:"
    proxy, nginx_port = nginx(tmp, worker_port)
    serve_one, port_one = sloguard_serve(state)
    serve_two, port_two = sloguard_serve(
        state, "--processes", "2", "--redis", REDIS_URL, "--redis-prefix", prefix
    )
    results: dict[tuple[str, int], list[Run]] = {}
    big: list[tuple[str, int, float, float, float, float]] = []
    rates: list[tuple[str, int, tuple[float, float]]] = []
    worker = running(
        [
            *(sys.executable, "-m", "uvicorn", "servers:route_worker"),
            *("--port", str(worker_port), "--log-level", "warning", "--no-access-log"),
        ],
        f"http://127.0.0.1:{worker_port}/health",
        "the worker",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "benchmarks")},
    )
    with (
        worker as worker_pid,
        proxy as nginx_pid,
        serve_one as one_pid,
        serve_two as two_pid,
    ):
        targets = [
            Target("worker directly", worker_url, scripts["direct"], worker_pid),
            Target("nginx", f"http://127.0.0.1:{nginx_port}", scripts["direct"], nginx_pid),
            Target("sloguard serve", f"http://127.0.0.1:{port_one}", scripts["proxied"], one_pid),
            Target(
                "sloguard serve --processes 2",
                f"http://127.0.0.1:{port_two}",
                scripts["proxied"],
                two_pid,
            ),
        ]
        replays = [
            Target("keyed replay, sloguard serve", targets[2].url, scripts["keyed"], one_pid),
            Target(
                "keyed replay, sloguard serve --processes 2",
                targets[3].url,
                scripts["keyed"],
                two_pid,
            ),
        ]
        for target in replays:  # the keyed request, stored before its replays are timed
            wrk(target, 1, 1)
        for connections in counts:  # warm-up: pools, caches
            for target in targets + replays:
                wrk(target, 1, connections)
        for _ in range(args.rounds):
            for connections in counts:
                for target in targets + replays:
                    results.setdefault((target.name, connections), []).append(
                        wrk(target, args.seconds, connections)
                    )

        for target in (targets[1], targets[2], targets[3]):
            assert target.pid is not None
            before = rss_mib(target.pid)
            url = target.url + ("/bench/big" if target.name == "nginx" else "/route/bench/big")
            size, took = big_download(url)
            after = rss_mib(target.pid)
            big.append((target.name, size, took, before[0], after[0], after[1]))

        for in_flight in (1, 32):
            for kind in ("sloguard", "aiohttp", "httpx"):
                url = worker_url + "/bench/route?delay_ms=0"
                rates.append((kind, in_flight, uvloop.run(client_rate(kind, url, in_flight, 3))))
        if args.profile:
            profile(one_pid, targets[2], 10)

    if not results:
        return
    print(
        f"\nwrk -t1, {args.rounds} alternating rounds of {args.seconds:g} s, medians; "
        f"{os.cpu_count()} CPUs shared by wrk, the worker and the proxy\n"
    )
    print(
        "| conns | path | req/s | p50 ms | p99 ms | x nginx | x direct | p50 added over direct "
        "| CPU µs/request |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for connections in counts:
        direct = _median(results["worker directly", connections])
        reference = _median(results["nginx", connections])
        for target in targets + replays:
            row = _median(results[target.name, connections])
            print(
                f"| {connections} | {target.name} | {row.rps:,.0f} | {row.p50_ms:.2f} | "
                f"{row.p99_ms:.2f} | {row.rps / reference.rps:.2f} | {row.rps / direct.rps:.2f} | "
                f"{row.p50_ms - direct.p50_ms:+.2f} ms | {row.cpu_us:.0f} |"
            )
    print("\n100 MiB streamed response (curl, chunked), RSS of the forwarding process(es):\n")
    print("| through | bytes | seconds | RSS before MiB | RSS after MiB | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, size, took, rss_before, rss_after, peak in big:
        print(
            f"| {name} | {size:,} | {took:.2f} | {rss_before:.0f} | {rss_after:.0f} | {peak:.0f} |"
        )
        if size != BIG_BYTES:
            print(f"(expected {BIG_BYTES:,} bytes)")
    print(
        "\nThe forwarding clients alone (this process, on uvloop), POSTing to the worker "
        "(sloguard: the controller's Forwarder):\n"
    )
    print("| client | in flight | req/s | CPU µs/request |")
    print("|---|---:|---:|---:|")
    for kind, in_flight, (rate, cpu_us) in rates:
        print(f"| {kind} | {in_flight} | {rate:,.0f} | {cpu_us:.0f} |")


def _median(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        statistics.median(r.cpu_us for r in runs),
    )


if __name__ == "__main__":
    main()
