"""Overload: one capacity-limited service, four ways to admit, three overloads (issue 23).

    pip install -e ".[bench]" && python benchmarks/overload.py

The service (benchmarks/servers.py: ``limited``) serves 4 requests at once,
25 ms each: 160 requests a second; the rest wait in line inside it. Its SLO:
p50 50 ms, p95 100 ms, p99 250 ms, 99% available, enforced. Under uvicorn, in
another process, it runs four ways:

- ``bare``: the service alone;
- ``window``: behind SLOGuard, with today's SLO-window shedding alone
  (``shedding: {concurrency: {mode: off}}``);
- ``adaptive``: behind SLOGuard with the adaptive concurrency limit (the default
  of a file that enforces);
- ``oracle``: behind SLOGuard with a fixed limit at the service's true capacity
  (``concurrency: {mode: fixed, initial: 4}``), which no real deployment knows.

Each meets three overloads (high-priority demand alone always within capacity):
``3x`` (480 req/s for 20 s, 20% ``X-Priority: high``, the rest ``low``), ``10x``
(1,600 req/s for 20 s, 5% high) and ``step`` (0.5x for 5 s, up to 5x within one
second, 8 s there, back to 0.5x within one second, 10 s more; 10% high).

The load generator is this process: open loop, each request sent at its due
time (at the offered rate, evenly spaced) whatever happened to the ones before,
a bounded count of them over a bounded time, to 127.0.0.1 only. It speaks
HTTP/1.1 over asyncio streams and keeps idle connections for reuse, as a
client's pool does (an HTTP client library would cost more than the server it
loads). A request not answered within the client timeout counts as failed.
Latency is from the request's due time, so the generator's own lateness counts
against the server, never for it.

Per scenario and per 1-second slice (by due time): high-priority success (2xx
within the timeout) and p95 (over the high-priority requests not refused; one
with no answer counts as the timeout), goodput (2xx answers within the p95
target, 100 ms, per second, any priority) and the share of low priority
refused (503/429). Then the targets of issue 23 for ``adaptive``, and what the
machine was doing meanwhile: the CPU used by the generator, by the server and
by everything else (this machine is shared), and how late the generator sent.

``--retries`` adds the earlier table: clients that retry, against the adaptive
server (a naive loop retrying at once, and ``sloguard.client.RetryTransport``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import uvicorn

from servers import CAPACITY, SERVICE_S, uvicorn_process
from sloguard.client import RetryTransport, Throttled

try:  # the generator on uvloop where uvicorn's server has it too (uvicorn[standard])
    from uvloop import run as run_loop
except ImportError:  # pragma: no cover - depends on the environment
    from asyncio import run as run_loop

CAPACITY_RPS = CAPACITY / SERVICE_S
P95_TARGET_S = 0.100
"""The service's p95 target: the per-slice target for high priority, and what an
answer must meet to count as goodput."""
SERVERS = {
    "bare": "servers:limited",
    "window": "servers:limited_window",
    "adaptive": "servers:limited_guarded",
    "oracle": "servers:limited_oracle",
}
REFUSED = frozenset({429, 503})
RECOVERED = 0.9
"""Low priority is admitted again from the first slice after the drop from which
every slice admits at least this share of it."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    knots: tuple[tuple[float, float], ...]
    """(second, load as a multiple of capacity); the load is linear in between."""
    high_share: float
    drop_s: float | None = None
    """When the load is back under capacity (to time the readmission of low)."""

    @property
    def seconds(self) -> float:
        return self.knots[-1][0]

    def load_at(self, t: float) -> float:
        for (t0, x0), (t1, x1) in zip(self.knots, self.knots[1:], strict=False):
            if t0 <= t < t1:
                return x0 + (x1 - x0) * (t - t0) / (t1 - t0)
        return self.knots[-1][1]

    def arrivals(self, seed: int = 1) -> list[tuple[float, str]]:
        """(due second, priority) of every request, evenly spaced at the offered rate."""
        rng = random.Random(seed)
        out, t = [], 0.0
        while t < self.seconds:
            out.append((t, "high" if rng.random() < self.high_share else "low"))
            t += 1.0 / (self.load_at(t) * CAPACITY_RPS)
        return out

    def describe(self) -> str:
        shape = ", ".join(f"{x:g}x at {t:g} s" for t, x in self.knots)
        return f"{self.name}: {shape}; {self.high_share:.0%} high"


SCENARIOS = {
    "3x": Scenario("3x", ((0, 3), (20, 3)), 0.20),
    "10x": Scenario("10x", ((0, 10), (20, 10)), 0.05),
    "step": Scenario(
        "step", ((0, 0.5), (5, 0.5), (6, 5), (14, 5), (15, 0.5), (25, 0.5)), 0.10, drop_s=15
    ),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    sent_at: float
    """Due time, seconds from the start."""
    priority: str
    status: int
    """0: no answer within the timeout (or the connection failed)."""
    latency_s: float
    """From the due time to the end of the answer."""
    lag_s: float = 0.0
    """How late the generator started sending it."""


class Wire:
    """HTTP/1.1 on asyncio streams, with a pool of idle keep-alive connections.

    Cheap enough that the generator is not the bottleneck; counts the attempts.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.sent = self.opened = 0

    async def exchange(self, head: bytes, timeout_s: float) -> tuple[int, bytes, bytes]:
        """Send ``head`` (a whole request); (status, response head, body)."""
        async with asyncio.timeout(timeout_s):
            while True:
                pooled = self._take()
                reused = pooled is not None
                if pooled is None:
                    pooled = await asyncio.open_connection(self.host, self.port)
                    self.opened += 1
                reader, writer = pooled
                self.sent += 1
                try:
                    writer.write(head)
                    await writer.drain()
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    writer.close()
                    partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
                    if reused and not partial:
                        continue  # the server had closed this idle connection
                    raise
                except BaseException:
                    writer.close()
                    raise
                try:
                    status = int(raw.split(b" ", 2)[1])
                    lowered = raw.lower()
                    length = int(lowered.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                    body = await reader.readexactly(length)
                except BaseException:
                    writer.close()
                    raise
                if b"connection: close" in lowered:
                    writer.close()
                else:
                    self.idle.append((reader, writer, time.monotonic()))
                return status, raw, body

    def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The most recently used idle connection, if any is still fresh."""
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now - since < 2.0 and not reader.at_eof():  # uvicorn closes after 5 s idle
                return reader, writer
            writer.close()
        return None

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


def request_head(host: str, port: int, priority: str, body: bytes = b"{}") -> bytes:
    return (
        f"POST /work HTTP/1.1\r\nHost: {host}:{port}\r\nX-Priority: {priority}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass(frozen=True, slots=True)
class Probe:
    """What the server said of itself (benchmarks/servers.py ``Probe``), polled every 100 ms."""

    at: float
    """When the poll was sent, seconds from the start."""
    generator_lag_s: float
    """How late this process's own 100 ms timer fired: the generator starved of CPU."""
    state: dict[str, float | None]
    """The server's loop lag since the last poll, and the limit with what it was made from."""


async def offer(
    url: str, arrivals: Sequence[tuple[float, str]], timeout_s: float
) -> tuple[list[Outcome], list[Probe]]:
    """Send every request at its due time (open loop); each outcome once it is in, and
    the server's probes meanwhile."""
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    wire = Wire(host, port)
    heads = {p: request_head(host, port, p) for p in ("high", "low")}
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    outcomes: list[Outcome] = []
    probes: list[Probe] = []

    async def one(due: float, priority: str) -> None:
        lag = loop.time() - start - due
        try:
            status = (await wire.exchange(heads[priority], timeout_s))[0]
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            status = 0
        outcomes.append(Outcome(due, priority, status, loop.time() - start - due, lag))

    async def poll() -> None:
        probe_wire = Wire(host, port)
        head = f"GET /probe HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        due = start
        while due < start + arrivals[-1][0]:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = loop.time()
            with contextlib.suppress(TimeoutError, OSError, ValueError, IndexError):
                _, _, body = await probe_wire.exchange(head, 1.0)
                probes.append(Probe(sent - start, sent - due, json.loads(body)))
            due = max(due + 0.1, loop.time())
        probe_wire.close()

    poller = asyncio.create_task(poll())
    tasks: set[asyncio.Task[None]] = set()
    for due, priority in arrivals:
        delay = start + due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due, priority))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    await poller
    wire.close()
    return outcomes, probes


# -- what the machine did meanwhile -----------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / _TICK


def _process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


class CollectorPauses:
    """The generator's own garbage-collector pauses while in the block: how many, and
    the longest (a collection over tens of thousands of pending requests can stop the
    generator for tens of milliseconds, and late sends count against the server)."""

    def __init__(self) -> None:
        self.count = 0
        self.longest_s = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count += 1
            self.longest_s = max(self.longest_s, time.perf_counter() - self._started)

    def __enter__(self) -> CollectorPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._callback)


@dataclass(slots=True)
class Meter:
    """CPU used over a run, in cores: by this process, by the server, by everything else."""

    server_pid: int
    wall: float = 0.0
    generator: float = 0.0
    server: float = 0.0
    machine: float = 0.0
    load_avg: float = field(default_factory=lambda: os.getloadavg()[0])
    _start: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def __enter__(self) -> Meter:
        self._start = (
            time.monotonic(),
            time.process_time(),
            _process_cpu_s(self.server_pid),
            _machine_busy_s(),
        )
        return self

    def __exit__(self, *_: object) -> None:
        wall, generator, server, machine = self._start
        self.wall = time.monotonic() - wall
        self.generator = (time.process_time() - generator) / self.wall
        self.server = (_process_cpu_s(self.server_pid) - server) / self.wall
        self.machine = (_machine_busy_s() - machine) / self.wall

    @property
    def others(self) -> float:
        return max(0.0, self.machine - self.generator - self.server)


# -- figures -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Figures:
    """One set of requests (a slice, or a whole scenario), as the clients saw them."""

    seconds: float
    high: int
    high_ok: int
    high_p95_s: float | None
    good: int
    low: int
    low_refused: int
    no_answer: int

    @classmethod
    def of(cls, outcomes: Sequence[Outcome], seconds: float, timeout_s: float) -> Figures:
        high = [o for o in outcomes if o.priority == "high"]
        low = [o for o in outcomes if o.priority == "low"]
        waited = [o.latency_s if o.status else timeout_s for o in high if o.status not in REFUSED]
        return cls(
            seconds=seconds,
            high=len(high),
            high_ok=sum(1 for o in high if 200 <= o.status < 300),
            high_p95_s=percentile(waited, 0.95),
            good=sum(1 for o in outcomes if 200 <= o.status < 300 and o.latency_s <= P95_TARGET_S),
            low=len(low),
            low_refused=sum(1 for o in low if o.status in REFUSED),
            no_answer=sum(1 for o in outcomes if o.status == 0),
        )

    @property
    def high_ok_ratio(self) -> float | None:
        return self.high_ok / self.high if self.high else None

    @property
    def goodput(self) -> float:
        return self.good / self.seconds

    @property
    def low_refused_ratio(self) -> float | None:
        return self.low_refused / self.low if self.low else None


def slices(outcomes: Sequence[Outcome], seconds: float, timeout_s: float) -> list[Figures]:
    by_second: list[list[Outcome]] = [[] for _ in range(math.ceil(seconds))]
    for o in outcomes:
        by_second[min(len(by_second) - 1, int(o.sent_at))].append(o)
    return [Figures.of(rows, 1.0, timeout_s) for rows in by_second]


def recovery_s(scenario: Scenario, per_second: Sequence[Figures]) -> float | None:
    """Seconds from the drop to the first slice from which every slice admits at least
    RECOVERED of low priority; None if it never does (or no drop)."""
    if scenario.drop_s is None or not any(f.low_refused for f in per_second):
        return None  # nothing to recover from
    first = math.ceil(scenario.drop_s)
    for start in range(first, len(per_second)):
        if all((f.low_refused_ratio or 0.0) <= 1 - RECOVERED for f in per_second[start:]):
            return start - scenario.drop_s
    return None


@dataclass(slots=True)
class Run:
    server: str
    outcomes: list[Outcome]
    probes: list[Probe]
    meter: Meter
    collector: CollectorPauses
    whole: Figures
    per_second: list[Figures]
    recovery: float | None

    def lags(self, second: int) -> tuple[float | None, float | None]:
        """The longest the generator's and the server's event loops were late in the
        slice, in seconds (None: no probe answered in it)."""
        here = [p for p in self.probes if second <= p.at < second + 1]
        if not here:
            return None, None
        return (
            max(p.generator_lag_s for p in here),
            max(p.state.get("loop_lag_s") or 0.0 for p in here),
        )

    @property
    def worst_slice(self) -> tuple[int, float | None]:
        """(second, high p95) of the worst slice after the first."""
        worst: tuple[int, float | None] = (0, None)
        for second, f in enumerate(self.per_second[1:], start=1):
            p95 = f.high_p95_s
            if p95 is not None and (worst[1] is None or p95 > worst[1]):
                worst = (second, p95)
        return worst


def run_scenario(scenario: Scenario, server: str, timeout_s: float) -> Run:
    arrivals = scenario.arrivals()
    with (
        uvicorn_process(SERVERS[server], quiet=True) as (url, process),
        Meter(process.pid) as meter,
        CollectorPauses() as collector,
    ):
        outcomes, probes = run_loop(offer(url, arrivals, timeout_s))
    per_second = slices(outcomes, scenario.seconds, timeout_s)
    return Run(
        server,
        outcomes,
        probes,
        meter,
        collector,
        Figures.of(outcomes, scenario.seconds, timeout_s),
        per_second,
        recovery_s(scenario, per_second),
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _pct(ratio: float | None, digits: int = 0) -> str:
    return "-" if ratio is None else f"{ratio * 100:.{digits}f}"


def print_slices(scenario: Scenario, runs: Sequence[Run]) -> None:
    width = 22
    print(f"{'':>8} |" + "|".join(f" {run.server:^{width - 1}}" for run in runs))
    print(
        f"{'s':>3} {'load':>4} |"
        + "|".join(f" {'hi ok':>5} {'p95':>5} {'good':>4} {'lo-':>4}" for _ in runs)
    )
    for second in range(len(runs[0].per_second)):
        cells = []
        for run in runs:
            f = run.per_second[second]
            cells.append(
                f" {_pct(f.high_ok_ratio, 1):>5} {_ms(f.high_p95_s):>5} {f.goodput:>4.0f}"
                f" {_pct(f.low_refused_ratio):>4}"
            )
        print(f"{second:>3} {scenario.load_at(second + 0.5):>4.1f} |" + "|".join(cells))


def print_diagnostics(runs: Sequence[Run]) -> None:
    """Per slice, how late the generator's and the server's timers fired (the longest,
    in ms: a process starved of CPU) and the concurrency limit (lowest-highest polled)."""
    print(
        "\nper slice: gen/srv = the longest the generator's / the server's event loop was late"
        " (ms), limit = the concurrency limit polled (lowest-highest)"
    )
    print(f"{'s':>3} |" + "|".join(f" {run.server:^17}" for run in runs))
    print(f"{'':>3} |" + "|".join(f" {'gen':>4} {'srv':>4} {'limit':>7}" for _ in runs))
    seconds = len(runs[0].per_second)
    for second in range(seconds):
        cells = []
        for run in runs:
            here = [p for p in run.probes if second <= p.at < second + 1]
            gen, srv = run.lags(second)
            limits = [int(v) for p in here if (v := p.state.get("limit")) is not None]
            limit = f"{min(limits)}-{max(limits)}" if limits else "-"
            cells.append(f" {_ms(gen):>4} {_ms(srv):>4} {limit:>7}")
        print(f"{second:>3} |" + "|".join(cells))


def print_summary(runs: Sequence[Run]) -> None:
    print(
        f"\n{'server':<9} {'high ok':>8} {'p95 ms':>6} {'worst s':>12} {'good/s':>6}"
        f" {'low ref':>7} {'no ans':>6} {'recov s':>7} | {'gen cpu':>7} {'srv cpu':>7}"
        f" {'others':>6} {'lag p99':>7} {'gc max':>6} {'load':>5}"
    )
    for run in runs:
        w = run.whole
        second, worst = run.worst_slice
        lags = [o.lag_s for o in run.outcomes]
        lag = percentile(lags, 0.99)
        m = run.meter
        print(
            f"{run.server:<9} {_pct(w.high_ok_ratio, 2):>7}% {_ms(w.high_p95_s):>6}"
            f" {_ms(worst):>6} at {second:>2}s {w.goodput:>6.0f} {_pct(w.low_refused_ratio, 1):>6}%"
            f" {_pct(w.no_answer / (w.high + w.low), 1):>5}%"
            f" {'-' if run.recovery is None else f'{run.recovery:.0f}':>7} |"
            f" {m.generator:>6.0%} {m.server:>7.0%} {m.others:>6.0%} {_ms(lag):>5}ms"
            f" {_ms(run.collector.longest_s):>4}ms {m.load_avg:>5.1f}"
        )


def over_target(run: Run) -> list[str]:
    """The slices after the first whose high p95 is over target, each with how late the
    server's and the generator's event loops were at worst in it (ms)."""
    over = []
    for second, f in enumerate(run.per_second[1:], start=1):
        if f.high_p95_s is not None and f.high_p95_s > P95_TARGET_S:
            generator, server = run.lags(second)
            over.append(
                f"{second}s {f.high_p95_s * 1000:.0f} (srv {_ms(server)}, gen {_ms(generator)})"
            )
    return over


def check_targets(scenario: Scenario, runs: Sequence[Run]) -> list[str]:
    """The issue's targets for the adaptive limit in this scenario, met or not, with the
    oracle's figures under the same machine beside them."""
    by_name = {run.server: run for run in runs}
    adaptive = by_name.get("adaptive")
    if adaptive is None:
        return []
    oracle = by_name.get("oracle")
    slices_after_first = len(adaptive.per_second) - 1
    lines = []
    second, worst = adaptive.worst_slice
    met = worst is not None and worst <= P95_TARGET_S
    over = over_target(adaptive)
    lines.append(
        f"high p95 <= 100 ms in every slice after the first: {'met' if met else 'NOT met'}"
        f" (worst {_ms(worst)} ms at {second} s; over in {len(over)} of {slices_after_first}"
        + (f": {', '.join(over)}" if over else "")
        + ")"
        + ("" if oracle is None else f"; the oracle: over in {len(over_target(oracle))}")
    )
    ok = adaptive.whole.high_ok_ratio or 0.0
    lines.append(
        f"high success >= 99.9%: {'met' if ok >= 0.999 else 'NOT met'} ({ok:.2%},"
        f" {adaptive.whole.high - adaptive.whole.high_ok} of {adaptive.whole.high} failed)"
        + ("" if oracle is None else f"; the oracle: {oracle.whole.high_ok_ratio or 0.0:.2%}")
    )
    if oracle is not None and oracle.whole.good:
        share = adaptive.whole.good / oracle.whole.good
        lines.append(
            f"goodput >= 90% of the oracle's: {'met' if share >= 0.9 else 'NOT met'}"
            f" ({adaptive.whole.goodput:.0f} vs {oracle.whole.goodput:.0f} req/s: {share:.0%})"
        )
    if scenario.drop_s is not None:
        recovery = adaptive.recovery
        met = recovery is not None and recovery <= 5
        lines.append(
            f"low admitted again within 5 s of the drop: {'met' if met else 'NOT met'}"
            f" ({'never' if recovery is None else f'{recovery:.0f} s'})"
        )
    return lines


# -- clients that retry (the earlier table) ------------------------------------------------


class StreamTransport(httpx.AsyncBaseTransport):
    """httpx on a :class:`Wire`, for clients that retry."""

    def __init__(self, host: str, port: int) -> None:
        self.wire = Wire(host, port)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("read") or 30.0
        head = request_head(
            self.wire.host, self.wire.port, request.headers["x-priority"], await request.aread()
        )
        try:
            status, raw, body = await self.wire.exchange(head, timeout)
        except TimeoutError as exc:
            raise httpx.ReadTimeout("timed out", request=request) from exc
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        fields = [tuple(line.split(b": ", 1)) for line in raw.split(b"\r\n")[1:] if b": " in line]
        return httpx.Response(status, headers=fields, content=body)


async def retrying(
    url: str, arrivals: Sequence[tuple[float, str]], timeout_s: float, client: str
) -> tuple[list[Outcome], int]:
    """Each logical request up to 4 attempts: retried at once on a 5xx, 429 or failure
    (``naive``), or through RetryTransport (``sloguard``). Outcomes and attempts sent."""
    parsed = httpx.URL(url)
    wire = StreamTransport(parsed.host, parsed.port or 80)
    transport: httpx.AsyncBaseTransport = wire
    if client == "sloguard":
        transport = RetryTransport(wrapped=wire, max_attempts=4, deadline=4 * timeout_s)
    outcomes: list[Outcome] = []
    start = time.monotonic() + 0.05
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=timeout_s) as http:

        async def one(due: float, priority: str) -> None:
            status = 0
            for _ in range(4 if client == "naive" else 1):
                try:
                    response = await http.post(
                        "/work", content=b"{}", headers={"X-Priority": priority}
                    )
                    status = response.status_code
                except (httpx.HTTPError, Throttled):
                    status = 0
                if client != "naive" or (0 < status < 500 and status != 429):
                    break
            outcomes.append(Outcome(due, priority, status, time.monotonic() - start - due))

        tasks = []
        for due, priority in arrivals:
            delay = start + due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, priority)))
        await asyncio.gather(*tasks)
    wire.wire.close()
    return outcomes, wire.wire.sent


def print_retries(scenario: Scenario, timeout_s: float) -> None:
    print(
        f"\nClients that retry, against 'adaptive', scenario {scenario.name} (a logical request:"
        f" up to 4 attempts; {timeout_s:g} s timeout each):\n"
    )
    print(
        f"{'clients':<16} {'high ok':>8} {'p95 ms':>7} {'low ref':>8} {'low ok':>7}"
        f" {'no answer':>9} {'attempts/s':>11}"
    )
    for name, client in (("naive retries", "naive"), ("RetryTransport", "sloguard")):
        with uvicorn_process(SERVERS["adaptive"], quiet=True) as (url, _):
            outcomes, sent = run_loop(retrying(url, scenario.arrivals(), timeout_s, client))
        whole = Figures.of(outcomes, scenario.seconds, timeout_s)
        low = Counter(o.status for o in outcomes if o.priority == "low")
        low_ok = sum(n for status, n in low.items() if 200 <= status < 300)
        print(
            f"{name:<16} {_pct(whole.high_ok_ratio, 1):>7}% {_ms(whole.high_p95_s):>7}"
            f" {_pct(whole.low_refused_ratio, 1):>7}% {_pct(low_ok / max(1, whole.low), 1):>6}%"
            f" {_pct(whole.no_answer / len(outcomes), 1):>8}% {sent / scenario.seconds:>11.0f}"
        )


def _stack() -> str:
    """What uvicorn picks by default (``--loop auto --http auto``), and this process uses."""
    names = []
    for module, fast, slow in (("uvloop", "uvloop", "asyncio"), ("httptools", "httptools", "h11")):
        try:
            __import__(module)
            names.append(fast)
        except ImportError:
            names.append(slow)
    return " + ".join(names) + f" (uvicorn {uvicorn.__version__})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"of {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"of {', '.join(SERVERS)}")
    parser.add_argument("--timeout", type=float, default=2.0, help="client timeout, seconds")
    parser.add_argument("--retries", action="store_true", help="add the retrying clients")
    args = parser.parse_args()
    scenarios = [SCENARIOS[name] for name in args.scenarios.split(",")]
    servers = args.servers.split(",")
    print(
        f"capacity {CAPACITY_RPS:.0f} req/s ({CAPACITY} at once x {SERVICE_S * 1000:.0f} ms);"
        f" SLO p95 {P95_TARGET_S * 1000:.0f} ms; client timeout {args.timeout:g} s;"
        f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"uvicorn and the generator on {_stack()}")
    print(
        "per slice: hi ok = high-priority success %, p95 = its p95 ms (no answer = the"
        " timeout), good = answers within 100 ms per s, lo- = low refused %"
    )
    verdicts: list[str] = []
    for scenario in scenarios:
        print(f"\n== {scenario.describe()}")
        runs = [run_scenario(scenario, server, args.timeout) for server in servers]
        print_slices(scenario, runs)
        print_diagnostics(runs)
        print_summary(runs)
        verdicts += [f"{scenario.name}: {line}" for line in check_targets(scenario, runs)]
    if verdicts:
        print("\ntargets with the adaptive limit (issue 23):")
        for line in verdicts:
            print(f"  {line}")
    if args.retries:
        print_retries(SCENARIOS["3x"], args.timeout)


if __name__ == "__main__":
    main()
