"""The overload scenario of ``sloguard demo``: a service of fixed capacity, 3x its load.

One *run* starts the controller behind SLOGuard under uvicorn on a loopback
port, with one in-process demo worker that works on ``capacity`` requests at a
time (the rest wait in line), and drives it open loop: each request is sent at
its due time whatever happened to the ones before, as real clients do. The
load is steady (half the capacity), then ``load`` times the capacity, then
steady again; 20% of requests are ``X-Priority: high``, the rest ``low``. The
same run is made twice, with shedding off (the SLO file says
``shedding: {enabled: false, concurrency: {mode: off}}``) and on (the defaults of
a file that enforces: the adaptive concurrency limit, behind the SLO window);
everything else is the same, seeds included. Every request's figures are
measured by the client: status, refusal reason, and the time from its due time
to its answer. The limiter's own state (limit, in flight, queued, refusals by
reason) is sampled from the server ten times a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from sloguard.exceptions import ConfigurationError
from sloguard.liveness import stop_task

if TYPE_CHECKING:
    from sloguard.middleware import SLOGuard

CAPABILITY = "convert:document_to_pdf"
ROUTE_PATH = "/route/convert/document_to_pdf"
PRIORITIES = ("high", "low")
REFUSALS = frozenset(
    {"slo_violation", "concurrency_limit", "queue_full", "deadline", "queue_timeout"}
)
"""The ``error`` of SLOGuard's refusals: the SLO window's, and the concurrency limiter's."""


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    start_s: float
    end_s: float
    rate: float
    """Requests a second sent during the phase."""


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """The scenario; every field has a default (``sloguard demo`` takes ``--duration``)."""

    duration_s: float = 60.0
    """Both runs together; each is half of it."""
    load: float = 3.0
    """The overload, as a multiple of the worker's capacity."""
    steady: float = 0.5
    """The load before and after, as a multiple of the capacity."""
    high_share: float = 0.2
    capacity: int = 4
    """Requests the worker works on at once."""
    service_ms: float = 80.0
    """Median time the worker takes for one (log-normal, shape ``service_sigma``). With
    the capacity, ~48 requests a second. At its limit, a high-priority request waits
    for the next of ``capacity`` busy slots to free up: 4 slots of 80 ms free one
    every ~20 ms, a quarter of a service time (2 of 40 ms: half of one, which put
    high priority's p95 at 1.2-1.6x its target)."""
    service_sigma: float = 0.25
    seed: int = 1
    host: str = "127.0.0.1"
    port: int = 0
    """0: a free port, the same for both runs."""

    def __post_init__(self) -> None:
        checks = {
            "duration": (self.duration_s, 4.0, 3600.0),
            "load": (self.load, 1.0, 20.0),
            "steady": (self.steady, 0.05, 1.0),
            "high_share": (self.high_share, 0.0, 1.0),
            "capacity": (self.capacity, 1, 1000),
            "service_ms": (self.service_ms, 1.0, 10_000.0),
            "port": (self.port, 0, 65_535),
        }
        for name, (value, low, high) in checks.items():
            if not low <= value <= high:
                raise ConfigurationError(f"{name} must be in [{low}, {high}], got {value}")

    @property
    def run_s(self) -> float:
        return self.duration_s / 2

    @property
    def capacity_rps(self) -> float:
        """Requests a second the worker can serve: slots over the mean service time."""
        mean_s = self.service_ms / 1000 * math.exp(self.service_sigma**2 / 2)
        return self.capacity / mean_s

    @property
    def timeout_s(self) -> float:
        """How long a client waits for an answer (2 s; less in a short run, to stay in it)."""
        return min(2.0, max(0.5, self.duration_s / 15))

    @property
    def targets_ms(self) -> tuple[float, float, float]:
        """The SLO's p50, p95 and p99: 1.5, 2.5 and 5 times the median service time."""
        return self.service_ms * 1.5, self.service_ms * 2.5, self.service_ms * 5

    @property
    def phases(self) -> tuple[Phase, ...]:
        run, steady, peak = (
            self.run_s,
            self.steady * self.capacity_rps,
            self.load * self.capacity_rps,
        )
        return (
            Phase("steady", 0.0, 0.2 * run, steady),
            # One overload, reported in two parts: its first seconds, while the line that
            # formed before shedding could react drains, and the rest.
            Phase("overload start", 0.2 * run, 0.35 * run, peak),
            Phase("overload", 0.35 * run, 0.75 * run, peak),
            Phase("recovery", 0.75 * run, run, steady),
        )

    def slo_yaml(self, shedding: bool) -> str:
        p50, p95, p99 = self.targets_ms
        # The live window and recovery are scaled to the run (the defaults, 60 s and 10 s,
        # would outlast its phases): 7.5 s and 3.8 s in a 60 s demo.
        window = round(max(2.0, self.run_s / 4), 1)
        recovery = round(max(1.0, self.run_s / 8), 1)
        # Shedding on is what a file that enforces gets by default: the adaptive
        # concurrency limit (the inner loop) behind the SLO window (the outer one).
        concurrency = "adaptive" if shedding else "off"
        return (
            f"capability: {{verb: convert, name: document_to_pdf}}\n"
            f"slo:\n"
            f"  latency: {{p50_ms: {p50:g}, p95_ms: {p95:g}, p99_ms: {p99:g}}}\n"
            f"  availability: {{target: 0.99}}\n"
            f"enforcement: {{reject_on_violation: true, grace_period_days: 0}}\n"
            f"shedding: {{enabled: {str(shedding).lower()}, window_s: {window}, "
            f"recovery_s: {recovery}, concurrency: {{mode: {concurrency}}}}}\n"
            f"metadata: {{owner: sloguard-demo}}\n"
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request, as its client saw it."""

    sent_s: float
    """Due time, seconds from the start of the run."""
    priority: str
    status: int
    """0: no answer within the client's timeout (or the connection failed)."""
    shed: bool
    """Refused by SLOGuard (503, one of :data:`REFUSALS`)."""
    latency_s: float
    reason: str = ""
    """The refusal's ``error`` (``concurrency_limit``, ``deadline``, ...; "" if admitted)."""


@dataclass(frozen=True, slots=True)
class LimitSample:
    """The concurrency limiter of the capability, as the server saw it at ``t_s``."""

    t_s: float
    limit: int
    inflight: int
    queued: int
    refused: dict[str, dict[str, int]]
    """Refusals so far, by reason and priority."""

    @property
    def refused_total(self) -> int:
        return sum(sum(by_priority.values()) for by_priority in self.refused.values())


@dataclass(frozen=True, slots=True)
class PhaseStats:
    """What one phase of one run measured."""

    phase: Phase
    sent: int
    high_sent: int
    high_ok: int
    """High-priority requests answered 2xx within the timeout."""
    high_p95_ms: float | None
    """Over high-priority requests not shed; one with no answer counts as the timeout."""
    high_p95_censored: bool
    """True when that p95 is a request with no answer: the real one is at least it."""
    low_sent: int
    low_shed: int
    low_ok: int

    @property
    def high_ok_ratio(self) -> float | None:
        return self.high_ok / self.high_sent if self.high_sent else None

    @property
    def low_shed_ratio(self) -> float | None:
        return self.low_shed / self.low_sent if self.low_sent else None

    @property
    def low_ok_ratio(self) -> float | None:
        return self.low_ok / self.low_sent if self.low_sent else None


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One time bin of a run, for the plots."""

    t_s: float
    high_p95_ms: float | None
    low_p95_ms: float | None
    low_shed_ratio: float | None
    sent: int


@dataclass(slots=True)
class RunResult:
    shedding: bool
    outcomes: list[Outcome] = field(default_factory=list)
    limits: list[LimitSample] = field(default_factory=list)
    """The limiter sampled through the run (empty when no limit applies)."""

    def limits_in(self, start_s: float, end_s: float) -> list[LimitSample]:
        return [sample for sample in self.limits if start_s <= sample.t_s < end_s]

    def refused_by_reason(self) -> dict[str, int]:
        """Every refusal of the run, as the clients saw them, by reason."""
        counts: dict[str, int] = {}
        for o in self.outcomes:
            if o.shed:
                counts[o.reason] = counts.get(o.reason, 0) + 1
        return counts

    def phase_stats(
        self, config: DemoConfig, phase: Phase, until_s: float | None = None
    ) -> PhaseStats:
        """The phase's figures over the requests sent in it (up to ``until_s``) and answered."""
        end = phase.end_s if until_s is None else min(until_s, phase.end_s)
        rows = [o for o in self.outcomes if phase.start_s <= o.sent_s < end]
        high = [o for o in rows if o.priority == "high"]
        low = [o for o in rows if o.priority == "low"]
        p95, censored = _p95_ms([o for o in high if not o.shed], config.timeout_s)
        return PhaseStats(
            phase=phase,
            sent=len(rows),
            high_sent=len(high),
            high_ok=sum(1 for o in high if 200 <= o.status < 300),
            high_p95_ms=p95,
            high_p95_censored=censored,
            low_sent=len(low),
            low_shed=sum(1 for o in low if o.shed),
            low_ok=sum(1 for o in low if 200 <= o.status < 300),
        )

    def series(self, config: DemoConfig, bins: int = 40) -> list[SeriesPoint]:
        width = config.run_s / bins
        points = []
        for index in range(bins):
            start = index * width
            rows = [o for o in self.outcomes if start <= o.sent_s < start + width]
            low = [o for o in rows if o.priority == "low"]
            high_p95, _ = _p95_ms(
                [o for o in rows if o.priority == "high" and not o.shed], config.timeout_s
            )
            low_p95, _ = _p95_ms([o for o in low if not o.shed], config.timeout_s)
            points.append(
                SeriesPoint(
                    t_s=start + width / 2,
                    high_p95_ms=high_p95,
                    low_p95_ms=low_p95,
                    low_shed_ratio=sum(o.shed for o in low) / len(low) if low else None,
                    sent=len(rows),
                )
            )
        return points


def _p95_ms(outcomes: list[Outcome], timeout_s: float) -> tuple[float | None, bool]:
    """The 95th percentile latency (nearest rank), a request with no answer as the timeout."""
    if not outcomes:
        return None, False
    ranked = sorted(outcomes, key=lambda o: o.latency_s if o.status else timeout_s)
    chosen = ranked[min(len(ranked) - 1, math.ceil(0.95 * len(ranked)) - 1)]
    latency = chosen.latency_s if chosen.status else timeout_s
    return latency * 1000, chosen.status == 0


# -- the server ------------------------------------------------------------------------


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def demo_app(config: DemoConfig, slo_dir: Path) -> SLOGuard:
    """The controller behind SLOGuard, with one in-process worker of fixed capacity."""
    from sloguard.middleware import SLOGuard
    from sloguard.reporting.reporter import Reporter
    from sloguard.routing import LatencyProfile, WorkerRegistry, create_controller_app
    from sloguard.routing.demo import demo_worker_app
    from sloguard.routing.local import LocalWorker
    from sloguard.slo.manager import SLOManager

    manager = SLOManager(slo_dir)
    if manager.errors:
        raise ConfigurationError(str(manager.errors[0]))
    worker = demo_worker_app(
        [CAPABILITY],
        worker_id="demo-worker",
        profiles={CAPABILITY: LatencyProfile(config.service_ms, config.service_sigma)},
        rng=random.Random(config.seed),
        capacity=config.capacity,
    )
    registry = WorkerRegistry()
    reporter = Reporter(manager)  # no history: the demo leaves nothing behind
    app = create_controller_app(
        registry=registry,
        manager=manager,
        reporter=reporter,
        api_token="",  # a loopback server of a minute: the dashboard link works as printed
        health_interval_s=None,
        forward_timeout_s=60.0,
        local_workers=[LocalWorker("demo-worker", (CAPABILITY,), worker)],
    )
    return SLOGuard(app, manager=manager, reporter=reporter, metrics=False, reload_every_s=None)


class _LoopOf:
    """An ASGI app that notes the event loop it runs on (at lifespan startup, first)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)


@contextlib.contextmanager
def serving(app: Any, host: str, port: int) -> Iterator[asyncio.AbstractEventLoop]:
    """uvicorn in a thread until the block ends; requests still queued then are dropped.
    Yields the server's event loop."""
    app = _LoopOf(app)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="critical",  # the overloaded run's cancelled requests at shutdown
            access_log=False,
            timeout_graceful_shutdown=1,
            backlog=4096,
        )
    )
    thread = threading.Thread(target=server.run, name="sloguard-demo-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started or app.loop is None:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the demo server did not start on {host}:{port}")
            time.sleep(0.01)
        # uvicorn's loggers are the process's: an in-process worker's server, started
        # with the controller, sets them back to "warning", and the overloaded run's
        # shutdown would print a traceback for each of hundreds of cancelled requests.
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        yield app.loop
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# -- the clients -----------------------------------------------------------------------


async def _post(host: str, port: int, priority: str, timeout_s: float) -> tuple[int, str]:
    """One request on its own connection: (status, the refusal's reason or ""). Bare
    asyncio streams: the load generator must cost far less than the server it loads (an
    HTTP client's pool costs milliseconds a request with hundreds of connections open)."""
    head = (
        f"POST {ROUTE_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nX-Priority: {priority}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(head.encode())
            await writer.drain()
            raw = await reader.read()
        status = int(raw.split(b" ", 2)[1])
    except (TimeoutError, OSError, ValueError, IndexError):
        return 0, ""
    finally:
        if writer is not None:
            writer.close()
    return status, _refusal_reason(status, raw)


def _refusal_reason(status: int, raw: bytes) -> str:
    """SLOGuard's refusal reason, if ``raw`` is one of its refusals; else ""."""
    if status not in (429, 503):
        return ""
    try:
        error = json.loads(raw.partition(b"\r\n\r\n")[2]).get("error")
    except (ValueError, AttributeError):
        return ""
    return error if error in REFUSALS else ""


Progress = Callable[[RunResult, float], None]
"""Called with the run so far and the seconds since it started, about 5 times a second,
and once more with ``math.inf`` when every request is answered or given up on."""
Watch = Callable[[float], None]
"""Called with the seconds since the run started, ten times a second."""


async def drive(
    config: DemoConfig,
    result: RunResult,
    port: int,
    progress: Progress | None,
    watch: Watch | None = None,
) -> None:
    """Send the run's requests open loop; returns once every one is answered or timed out."""
    rng = random.Random(config.seed)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: set[asyncio.Task[None]] = set()

    async def one(due_s: float, priority: str) -> None:
        status, reason = await _post(config.host, port, priority, config.timeout_s)
        latency = loop.time() - start - due_s
        result.outcomes.append(Outcome(due_s, priority, status, bool(reason), latency, reason))

    async def report() -> None:
        ticks = 0
        while True:
            await asyncio.sleep(0.1)
            ticks += 1
            if watch is not None:
                watch(loop.time() - start)
            if progress is not None and ticks % 2 == 0:
                progress(result, loop.time() - start)

    reporter = asyncio.create_task(report())
    try:
        for phase in config.phases:
            count = round((phase.end_s - phase.start_s) * phase.rate)
            for index in range(count):
                due = phase.start_s + index / phase.rate
                priority = "high" if rng.random() < config.high_share else "low"
                delay = start + due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(due, priority))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        await stop_task(reporter)
        for task in tasks:
            task.cancel()
    if progress is not None:
        progress(result, math.inf)  # every request is answered or given up on


def run_once(
    config: DemoConfig, shedding: bool, port: int, progress: Progress | None = None
) -> RunResult:
    """One run: a fresh server (fresh SLO window) on ``port``, the load, then nothing left."""
    with tempfile.TemporaryDirectory(prefix="sloguard-demo-") as directory:
        slo_dir = Path(directory)
        (slo_dir / "convert_document_to_pdf.yml").write_text(
            config.slo_yaml(shedding), encoding="utf-8"
        )
        guard = demo_app(config, slo_dir)
        result = RunResult(shedding)

        def sample(t_s: float) -> None:  # on the server's loop: the limiter is not shared
            state = guard.admission.concurrency(CAPABILITY)
            if state is not None:
                result.limits.append(
                    LimitSample(
                        t_s, state["limit"], state["inflight"], state["queued"], state["refused"]
                    )
                )

        with serving(guard, config.host, port) as server_loop:

            def watch(t_s: float) -> None:
                server_loop.call_soon_threadsafe(sample, t_s)

            asyncio.run(drive(config, result, port, progress, watch))
        result.outcomes.sort(key=lambda o: o.sent_s)
        return result
