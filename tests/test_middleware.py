"""SLOGuard end to end: a Starlette app, a manual clock, and batches of concurrent requests.

Latency is simulated without sleeping: a batch of requests enters the handler,
which waits at a gate; the test moves the clock on by the latency and opens
the gate, so every request of the batch takes exactly that long.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sloguard import MemoryStore, SLOGuard
from sloguard._clock import ManualClock
from sloguard.exceptions import ConfigurationError
from sloguard.middleware import add_request_observer, remove_request_observer
from sloguard.slo.manager import SLOManager
from tests.asgi import call, http_scope

CAP = "convert:pdf"
SLO = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p50_ms: 50, p95_ms: 100, p99_ms: 200}
  availability: {target: 0.99}
"""
ENFORCE = "enforcement: {reject_on_violation: true}\n"
# Most tests here drive the SLO-window loop alone; the concurrency limit has tests of its own.
WINDOW_ONLY = 'shedding: {concurrency: {mode: "off"}}\n'


class Backend:
    """The protected app: counts what reaches it and holds requests at a gate."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.waiting = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.status = 200

    async def work(self, request: Request) -> Response:
        self.calls[request.headers.get("x-priority", "-")] += 1
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return JSONResponse({"n": sum(self.calls.values())}, status_code=self.status)

    def app(self, **guard: Any) -> Starlette:
        routes = [
            Route("/work", self.work, methods=["GET", "POST"]),
            Route("/route/{verb}/{name}", self.work, methods=["POST"]),
            Route("/route", self.work, methods=["POST"]),
        ]
        return Starlette(routes=routes, middleware=[Middleware(SLOGuard, **guard)])


class Harness:
    def __init__(self, client: httpx.AsyncClient, backend: Backend, clock: ManualClock) -> None:
        self.client = client
        self.backend = backend
        self.clock = clock

    async def batch(
        self, priorities: list[str], latency_s: float = 0.01, headers: dict[str, str] | None = None
    ) -> list[httpx.Response]:
        """Send one request per priority at once; each admitted one takes ``latency_s``."""
        self.backend.gate.clear()
        tasks = [
            asyncio.ensure_future(
                self.client.post("/work", headers={"X-Priority": p, **(headers or {})})
            )
            for p in priorities
        ]
        for _ in range(10_000):
            if self.backend.waiting + sum(t.done() for t in tasks) == len(tasks):
                break
            await asyncio.sleep(0)
        self.clock.advance(latency_s)
        self.backend.gate.set()
        return list(await asyncio.gather(*tasks))

    async def second(self, latency_s: float, low: int = 20, high: int = 20) -> Counter[str]:
        """One simulated second of traffic; counts of (priority, status) outcomes."""
        responses = await self.batch(["low"] * low + ["high"] * high, latency_s)
        self.clock.advance(1.0 - latency_s)
        return Counter(f"{r.request.headers['x-priority']} {r.status_code}" for r in responses)


@pytest.fixture
def backend() -> Backend:
    return Backend()


@pytest.fixture
def slo_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "slos"
    directory.mkdir()
    return directory


Make = Callable[..., Harness]


@pytest.fixture
async def make(backend: Backend, slo_dir: Path, clock: ManualClock) -> AsyncIterator[Make]:
    clients: list[httpx.AsyncClient] = []

    def make(extra_yaml: str = ENFORCE + WINDOW_ONLY, **guard: Any) -> Harness:
        (slo_dir / "pdf.yml").write_text(SLO + extra_yaml, encoding="utf-8")
        guard.setdefault("slo_dir", slo_dir)
        guard.setdefault("route_table", {"/work": CAP})
        guard.setdefault("clock", clock)
        guard.setdefault("random_source", random.Random(7).random)
        guard.setdefault("trust_capability_header", True)  # these clients are trusted proxies
        transport = httpx.ASGITransport(app=backend.app(**guard), raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://test")
        clients.append(client)
        return Harness(client, backend, clock)

    yield make
    for client in clients:
        await client.aclose()


def guard_of(harness: Harness) -> SLOGuard:
    app = harness.client._transport.app  # type: ignore[attr-defined]
    stack = app.middleware_stack or app.build_middleware_stack()
    app.middleware_stack = stack
    while not isinstance(stack, SLOGuard):
        stack = stack.app
    return stack


async def test_defaults_shed_most_low_within_5s_and_readmit_within_20s(make: Make) -> None:
    h = make()
    seconds_to_shed = None
    for second in range(1, 11):  # p95 3x its 100 ms target
        outcome = await h.second(latency_s=0.3)
        assert outcome["high 200"] == 20  # high is never shed
        if outcome["low 503"] >= 15:
            seconds_to_shed = second
            break
    assert seconds_to_shed is not None
    assert seconds_to_shed <= 5

    # Latency back under target: the window empties of slow samples, then low returns.
    compliant_at = readmitted_at = None
    for second in range(1, 120):
        outcome = await h.second(latency_s=0.01)
        status = guard_of(h).manager.status(CAP)
        assert status is not None
        if compliant_at is None and status.compliant:
            compliant_at = second
        if compliant_at is not None and outcome["low 200"] == 20 and not status.shedding:
            readmitted_at = second
            break
    assert compliant_at is not None
    assert readmitted_at is not None
    assert readmitted_at - compliant_at <= 20


async def test_a_shed_request_gets_503_retry_after_and_the_violations(make: Make) -> None:
    h = make(
        ENFORCE + 'shedding: {retry_after_s: 7, concurrency: {mode: "off"}}\n',
        random_source=lambda: 0.0,
    )
    await h.batch(["high"] * 30, latency_s=0.5)
    h.clock.advance(1)
    before = dict(h.backend.calls)
    [shed] = await h.batch(["low"])
    assert shed.status_code == 503
    assert shed.headers["retry-after"] == "7"
    assert shed.headers["content-type"] == "application/problem+json"
    problem = shed.json()
    assert problem["error"] == "slo_violation"
    assert problem["capability"] == CAP
    # 500 ms, within the sketch's 1% accuracy:
    assert "p95 latency 502ms > target 100ms" in problem["violations"]
    assert CAP in problem["detail"]
    assert "p95 latency" in problem["detail"]
    assert dict(h.backend.calls) == before  # it never reached the app
    assert guard_of(h).shed_counts(CAP) == {"low": 1}
    status = guard_of(h).manager.status(CAP)
    assert status is not None
    assert status.shedding is True
    assert status.requests == 30  # the shed request is not a latency sample


async def test_the_refusal_status_is_configurable(make: Make) -> None:
    h = make(shed_status=429, random_source=lambda: 0.0)
    await h.batch(["high"] * 30, latency_s=0.5)
    h.clock.advance(1)
    [shed] = await h.batch(["low"])
    assert shed.status_code == 429
    assert shed.json()["status"] == 429


async def test_unavailability_sheds_low_priority(make: Make, backend: Backend) -> None:
    h = make(random_source=lambda: 0.0)
    backend.status = 500
    await h.batch(["high"] * 5)
    backend.status = 200
    await h.batch(["high"] * 25)  # 5 errors in 30 against a 1% budget
    h.clock.advance(1)
    [shed] = await h.batch(["low"])
    assert shed.status_code == 503
    assert any(v.startswith("availability") for v in shed.json()["violations"])


async def test_too_few_samples_never_shed(make: Make) -> None:
    h = make(random_source=lambda: 0.0)
    await h.batch(["high"] * 19, latency_s=5.0)
    h.clock.advance(1)
    [low] = await h.batch(["low"])
    assert low.status_code == 200


async def test_dry_run_decides_and_counts_but_refuses_nothing(make: Make) -> None:
    h = make("enforcement: {reject_on_violation: false}\n", random_source=lambda: 0.0)
    await h.batch(["high"] * 30, latency_s=0.5)
    h.clock.advance(1)
    responses = await h.batch(["low"] * 5)
    assert [r.status_code for r in responses] == [200] * 5
    guard = guard_of(h)
    assert guard.shed_counts(CAP) == {}
    assert guard.shed_counts(CAP, dry_run=True) == {"low": 5}
    status = guard.manager.status(CAP)
    assert status is not None
    assert status.shedding is True


async def test_the_grace_period_is_a_dry_run_counted_from_the_first_load(make: Make) -> None:
    h = make(
        "enforcement: {reject_on_violation: true, grace_period_days: 1}\n" + WINDOW_ONLY,
        random_source=lambda: 0.0,
    )
    await h.batch(["high"] * 30, latency_s=0.5)
    h.clock.advance(1)
    [low] = await h.batch(["low"])
    assert low.status_code == 200
    h.clock.advance(86_400)
    await h.batch(["high"] * 30, latency_s=0.5)
    h.clock.advance(1)
    [low] = await h.batch(["low"])
    assert low.status_code == 503


async def test_replays_are_served_while_shedding(make: Make) -> None:
    h = make(random_source=lambda: 0.0)
    key = {"Idempotency-Key": "order-1"}
    [first] = await h.batch(["low"], headers=key)
    await h.batch(["high"] * 30, latency_s=0.5)
    h.clock.advance(1)
    calls = dict(h.backend.calls)
    [replay] = await h.batch(["low"], headers=key)
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    assert dict(h.backend.calls) == calls


async def test_a_shed_keyed_request_gives_its_key_up(make: Make, clock: ManualClock) -> None:
    h = make(random_source=lambda: 0.0, store=MemoryStore(clock=clock))
    await h.batch(["high"] * 30, latency_s=0.5)
    h.clock.advance(1)
    headers = {"X-Priority": "low", "Idempotency-Key": "job-9"}
    [shed] = await h.batch(["low"], headers=headers)
    assert shed.status_code == 503
    h.clock.advance(120)  # the slow window is gone, and with it the shedding
    await h.batch(["high"] * 30)
    h.clock.advance(15)
    await h.batch(["high"] * 30)
    h.clock.advance(1)
    [retry] = await h.batch(["low"], headers=headers)
    assert retry.status_code == 200
    assert "idempotent-replayed" not in retry.headers


async def test_requests_without_an_slo_are_never_shed_but_keep_idempotency(
    make: Make,
) -> None:
    h = make(route_table={}, random_source=lambda: 0.0)
    headers = {"X-Priority": "low", "X-Capability": "unknown:thing", "Idempotency-Key": "k"}
    for _ in range(30):
        await h.client.post("/work", headers={"X-Priority": "high", "X-Capability": CAP})
    first = await h.client.post("/work", headers=headers)
    again = await h.client.post("/work", headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    plain = await h.client.post("/work", headers={"X-Priority": "low"})
    assert plain.status_code == 200


async def test_idempotency_counts_keep_no_capability_a_client_names_without_an_slo(
    make: Make,
) -> None:
    # Any /route/{verb}/{name} names a capability: counted by name, each new one was kept.
    h = make()
    for i in range(20):
        await h.client.post(f"/route/made{i}/up", headers={"Idempotency-Key": f"k{i}"})
    await h.client.post("/work", headers={"Idempotency-Key": "k"})
    counts = guard_of(h).reporter.idempotency
    assert counts.json("made1:up") == {"hits": 0, "misses": 0, "hit_rate": None}
    assert counts.json(CAP) == {"hits": 0, "misses": 1, "hit_rate": 0.0}
    assert len(counts._misses) == 2  # the SLO's capability, and None for all the others


async def test_the_guard_hands_the_key_and_its_principal_to_idempotency(
    make: Make, backend: Backend
) -> None:
    h = make()
    key = {"Idempotency-Key": "k-1"}
    first = await h.client.post("/work", headers={**key, "Authorization": "Bearer a"})
    other = await h.client.post("/work", headers={**key, "Authorization": "Bearer b"})
    replay = await h.client.post("/work", headers={**key, "Authorization": "Bearer a"})
    assert first.status_code == other.status_code == replay.status_code == 200
    assert "idempotent-replayed" not in other.headers  # another principal's key: it runs
    assert replay.headers["idempotent-replayed"] == "true"
    assert sum(backend.calls.values()) == 2
    twice = await h.client.post(
        "/work", headers=[("Idempotency-Key", "x"), ("Idempotency-Key", "y")]
    )
    assert twice.status_code == 400
    assert twice.json()["error"] == "idempotency_key_invalid"
    assert "sent once" in twice.json()["detail"]
    assert sum(backend.calls.values()) == 2


async def test_a_guard_requiring_keys_refuses_unkeyed_requests_only_where_keys_apply(
    make: Make, backend: Backend
) -> None:
    h = make(idempotency={"require_key": True})
    refused = await h.client.post("/work")
    assert refused.status_code == 400
    assert refused.json()["error"] == "idempotency_key_missing"
    assert not backend.calls
    assert (await h.client.get("/work")).status_code == 200  # GET: no key needed
    assert (await h.client.post("/work", headers={"Idempotency-Key": "k"})).status_code == 200
    assert sum(backend.calls.values()) == 2
    status = guard_of(h).manager.status(CAP)
    assert status is not None
    assert status.requests == 2  # the refusal ran nothing to record


async def test_capability_resolution_order(make: Make, slo_dir: Path) -> None:
    for verb in ("table", "path", "header", "seed"):
        (slo_dir / f"{verb}.yml").write_text(
            SLO.replace("verb: convert", f"verb: {verb}"), encoding="utf-8"
        )
    h = make(route_table={"/work": "table:pdf"})
    guard = guard_of(h)
    await h.client.post("/work", headers={"X-Capability": "header:pdf"})
    await h.client.post("/route/path/pdf", headers={"X-Capability": "header:pdf"})
    await h.client.post("/route", headers={"X-Capability": "header:pdf"})
    seed = {"verb": "seed", "capability": "pdf", "request_payload": {"a": 1}}
    response = await h.client.post("/route", json=seed)
    assert response.status_code == 200
    counts = {}
    for verb in ("table", "path", "header", "seed"):
        status = guard.manager.status(f"{verb}:pdf")
        assert status is not None
        counts[verb] = status.requests
    assert counts == {"table": 1, "path": 1, "header": 1, "seed": 1}


async def test_the_seed_form_body_is_handed_on_unchanged_with_its_priority_and_key(
    make: Make, slo_dir: Path
) -> None:
    h = make(random_source=lambda: 0.0)
    await h.batch(["high"] * 30, latency_s=0.5)  # convert:pdf now violates
    h.clock.advance(1)
    body = {"verb": "convert", "capability": "pdf", "priority": "LOW", "request_payload": {}}
    shed = await h.client.post("/route", json=body)
    assert shed.status_code == 503
    body["priority"] = "critical"
    body["idempotency_key"] = "seed-key-1"
    first = await h.client.post("/route", content=json.dumps(body))
    replay = await h.client.post("/route", content=json.dumps(body))
    assert first.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"


SEED = b'"verb": "convert", "capability": "pdf"'


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="an array nested 100,000 deep"),
        pytest.param(b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, id="an object nested 50,000 deep"),
        pytest.param(b"{" + SEED + b', "x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", id="deep"),
        pytest.param(b"{" + SEED + ', "priority": "日本"}'.encode(), id="a non-ASCII priority"),
        pytest.param(b"{" + SEED + b', "priority": "\\ud800"}', id="a lone surrogate priority"),
        pytest.param(b"{" + SEED + b', "priority": "lo\\u0000w"}', id="a NUL in the priority"),
        pytest.param(b"{" + SEED + b', "priority": ["high"]}', id="a list as priority"),
        pytest.param(b"{" + SEED + ', "idempotency_key": "ключ"}'.encode(), id="a non-ASCII key"),
        pytest.param(b"{" + SEED + b', "idempotency_key": "\\udfff"}', id="a surrogate key"),
    ],
)
async def test_a_bad_seed_body_names_nothing_and_reaches_the_app(
    make: Make, backend: Backend, body: bytes
) -> None:
    """The guard reads a seed-form body leniently: whatever it holds, the app answers."""
    h = make()
    response = await h.client.post("/route", content=body)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:  # a key the gate refuses, as a header would be
        assert response.json()["error"] == "idempotency_key_invalid"
    else:
        assert sum(backend.calls.values()) == 1


async def test_non_http_scopes_and_lifespan_pass_through(slo_dir: Path) -> None:
    (slo_dir / "pdf.yml").write_text(SLO, encoding="utf-8")
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "lifespan.startup":
                assert guard._watch is not None  # the SLO directory is being watched
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    guard = SLOGuard(app, slo_dir=slo_dir, reload_every_s=3600)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = await call(guard, {"type": "lifespan"}, messages)
    assert seen == ["lifespan.startup", "lifespan.shutdown"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert guard._watch is None


async def test_slo_guard_works_with_no_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    monkeypatch.chdir(tmp_path)
    assert SLOGuard(app).manager.capabilities == ()
    state = tmp_path / "state" / "controller" / "slos"
    state.mkdir(parents=True)
    (state / "pdf.yml").write_text(SLO, encoding="utf-8")
    guard = SLOGuard(app)
    assert guard.manager.capabilities == (CAP,)
    sent = await call(guard, http_scope(path="/route/convert/pdf"))
    assert sent[0]["status"] == 204
    status = guard.manager.status(CAP)
    assert status is not None
    assert status.requests == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shed_status": 500}, "shed_status must be 429 or 503"),
        ({"evaluate_every_s": 0}, "evaluate_every_s must be positive"),
        ({"reload_every_s": -1}, "reload_every_s must be positive"),
        ({"route_table": {"work": CAP}}, "must start with '/'"),
        ({"route_table": {"/work": "pdf"}}, "not verb:name"),
        ({"idempotency": False, "store": MemoryStore()}, "idempotency is disabled"),
    ],
)
def test_bad_options_are_refused_clearly(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SLOGuard(Starlette(), **options)


class Observed:
    """A request observer that keeps what it is told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float, bool]] = []

    def __call__(self, capability: str, latency_s: float, ok: bool) -> None:
        self.seen.append((capability, latency_s, ok))


@pytest.fixture
def observed() -> Iterator[Observed]:
    observer = Observed()
    add_request_observer(observer)
    yield observer
    remove_request_observer(observer)


@pytest.mark.parametrize("metrics", [True, False])
async def test_request_observers_see_every_request_with_a_capability(
    make: Make, backend: Backend, observed: Observed, metrics: bool
) -> None:
    h = make(metrics=metrics)
    await h.batch(["high"], latency_s=0.25)
    backend.status = 503
    await h.batch(["high"], latency_s=0.5)
    backend.status = 200
    await h.batch(["high"], latency_s=0.125, headers={"X-Capability": "no:slo"})
    await h.client.post("/nothing", headers={"X-Capability": "a:b"})  # no route: 404, seen
    await h.client.post("/nothing", headers={"X-Capability": " "})  # blank: not seen
    await h.client.post("/nothing")  # no capability at all: not seen

    # The route table wins over the header: the third is CAP too.
    assert observed.seen == [
        (CAP, 0.25, True),
        (CAP, 0.5, False),
        (CAP, 0.125, True),
        ("a:b", 0.0, True),
    ]


async def test_a_capability_without_an_slo_file_is_observed(make: Make, observed: Observed) -> None:
    h = make(route_table={}, metrics=False)
    await h.batch(["normal"], latency_s=0.5, headers={"X-Capability": "no:slo"})
    assert observed.seen == [("no:slo", 0.5, True)]


async def test_a_failing_observer_is_logged_and_never_breaks_the_request(
    make: Make, observed: Observed, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(capability: str, latency_s: float, ok: bool) -> None:
        raise RuntimeError("observer bug")

    add_request_observer(broken)
    try:
        responses = await make().batch(["high"], latency_s=0.25)
    finally:
        remove_request_observer(broken)
    assert [r.status_code for r in responses] == [200]
    assert observed.seen == [(CAP, 0.25, True)]  # the others still run
    assert "request observer" in caplog.text
    assert "observer bug" in caplog.text


async def test_a_removed_observer_is_not_called(make: Make) -> None:
    observer = Observed()
    add_request_observer(observer)
    add_request_observer(observer)  # once only
    h = make()
    await h.batch(["high"], latency_s=0.25)
    remove_request_observer(observer)
    await h.batch(["high"], latency_s=0.25)
    assert observer.seen == [(CAP, 0.25, True)]


def test_servers_see_an_asgi_3_app(tmp_path: Path) -> None:
    # uvicorn tells ASGI 3 from ASGI 2 by whether the app's __call__ is a coroutine
    # function; a plain __call__ returning a coroutine would be served as ASGI 2.
    config = uvicorn.Config(SLOGuard(Starlette(), slo_dir=tmp_path))
    config.load()

    assert config.interface == "asgi3"


@pytest.mark.parametrize(
    "headers",
    [[], [(b"idempotency-key", b"k1")]],
    ids=["no key", "key"],
)
async def test_each_run_of_the_app_is_recorded_once_with_its_outcome(
    slo_dir: Path, clock: ManualClock, observed: Observed, headers: list[tuple[bytes, bytes]]
) -> None:
    (slo_dir / "pdf.yml").write_text(SLO, encoding="utf-8")
    outcome = {"status": 201}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        clock.advance(0.5)
        if outcome["status"] == 0:
            raise RuntimeError("handler bug")
        if outcome["status"] == -1:
            return  # no response at all
        await send({"type": "http.response.start", "status": outcome["status"]})
        await send({"type": "http.response.body", "body": b"done"})

    guard = SLOGuard(app, slo_dir=slo_dir, route_table={"/items": CAP}, clock=clock)
    for n, status in enumerate([201, 503, 0, -1, 201]):
        outcome["status"] = status
        scope = http_scope(headers=[(name, value + b"%d" % n) for name, value in headers])
        if status == 0:
            with pytest.raises(RuntimeError):
                await call(guard, scope)
        else:
            await call(guard, scope)
    if headers:  # a replay does not run the app, so it is not recorded again
        await call(guard, http_scope(headers=[(b"idempotency-key", b"k14")]))

    assert observed.seen == [
        (CAP, 0.5, True),
        (CAP, 0.5, False),  # 5xx
        (CAP, 0.5, False),  # raised
        (CAP, 0.5, False),  # returned without a response
        (CAP, 0.5, True),
    ]
    status = guard.manager.status(CAP)
    assert status is not None
    assert (status.requests, status.errors) == (5, 3)


def taking(clock: ManualClock, latency_s: float) -> Callable[[Scope, Receive, Send], Any]:
    """An ASGI app whose every request takes ``latency_s`` on ``clock``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        clock.advance(latency_s)
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"done"})

    return app


async def test_requests_are_recorded_at_the_time_of_the_managers_clock(slo_dir: Path) -> None:
    (slo_dir / "pdf.yml").write_text(SLO, encoding="utf-8")
    guard_clock, manager_clock = ManualClock(0.0), ManualClock(5_000.0)
    manager = SLOManager(slo_dir, clock=manager_clock)
    app = taking(guard_clock, 0.25)
    guard = SLOGuard(app, manager=manager, route_table={"/items": CAP}, clock=guard_clock)
    await call(guard, http_scope())

    # Recorded at the guard's time (0.25 s), the request would have left the
    # manager's 60 s window long ago.
    status = manager.status(CAP)
    assert status is not None
    assert status.requests == 1
    assert status.p50_ms == pytest.approx(250, rel=0.02)


async def test_a_reload_that_changes_the_window_records_into_the_new_window(
    slo_dir: Path, clock: ManualClock
) -> None:
    (slo_dir / "pdf.yml").write_text(SLO, encoding="utf-8")
    guard = SLOGuard(taking(clock, 0.01), slo_dir=slo_dir, route_table={"/items": CAP}, clock=clock)
    for _ in range(3):
        await call(guard, http_scope())
    (slo_dir / "pdf.yml").write_text(SLO + "shedding: {window_s: 30}\n", encoding="utf-8")
    guard.manager.reload()
    await call(guard, http_scope())

    status = guard.manager.status(CAP)
    assert status is not None
    assert (status.window_seconds, status.requests) == (30, 1)


def test_with_no_slo_directory_one_line_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="sloguard"):
        SLOGuard(Starlette(), metrics=False)
    lines = [r.getMessage() for r in caplog.records if "slo_dir" in r.getMessage()]
    assert len(lines) == 1
    assert "state/controller/slos" in lines[0]
    assert str(tmp_path) in lines[0]


@pytest.mark.parametrize(
    "idempotency", [{"methods": "POST"}, {"key_header": ""}], ids=["methods", "key-header"]
)
def test_idempotency_options_that_cannot_work_are_a_configuration_error(
    tmp_path: Path, idempotency: dict[str, object]
) -> None:
    with pytest.raises(ConfigurationError):
        SLOGuard(Starlette(), slo_dir=tmp_path, metrics=False, idempotency=idempotency)


async def test_an_untrusted_capability_header_charges_nothing_to_the_capability(
    make: Make,
) -> None:
    # An attacker naming the victim's capability neither skews its SLO nor makes it shed.
    h = make(route_table={}, trust_capability_header=False)
    for _ in range(30):
        await h.batch(["low"], latency_s=1.0, headers={"X-Capability": CAP})
    status = guard_of(h).manager.status(CAP)
    assert status is not None
    assert status.requests == 0


@pytest.mark.parametrize(("trusted", "counted"), [(["127.0.0.1"], 1), (["10.0.0.1"], 0)])
async def test_the_capability_header_is_trusted_only_from_listed_clients(
    make: Make, trusted: list[str], counted: int
) -> None:
    h = make(route_table={}, trust_capability_header=trusted)
    await h.client.post("/work", headers={"X-Capability": CAP})
    status = guard_of(h).manager.status(CAP)
    assert status is not None
    assert status.requests == counted


async def test_latency_runs_from_the_end_of_the_request_body(
    slo_dir: Path, clock: ManualClock
) -> None:
    # A slow upload is the client's time, not the service's: the window sees 10 ms, not 5 s.
    (slo_dir / "pdf.yml").write_text(SLO, encoding="utf-8")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body", False):
            pass
        clock.advance(0.010)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = SLOGuard(app, slo_dir=slo_dir, route_table={"/up": CAP}, clock=clock, metrics=False)
    chunks = [b"a", b"b", b""]

    async def slow_receive() -> dict[str, Any]:
        clock.advance(2.5)  # each chunk of the upload takes 2.5 s to arrive
        body = chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    scope = http_scope(path="/up", headers=[(b"content-length", b"2")])
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await guard(scope, slow_receive, send)
    status = guard.manager.status(CAP)
    assert status is not None
    assert status.requests == 1
    assert status.p50_ms == pytest.approx(10.0, rel=0.02)


LIMIT_2 = ENFORCE + "shedding: {concurrency: {mode: fixed, initial: 2, min: 1, queue: {size: 4}}}\n"


async def until(condition: Callable[[], bool]) -> None:
    """Let the event loop run until ``condition`` holds (requests in flight reach a point)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def limiter_of(h: Harness):  # type: ignore[no-untyped-def]
    concurrency = guard_of(h).admission.concurrency(CAP)
    assert concurrency is not None
    return concurrency


async def test_at_the_concurrency_limit_low_is_refused_and_a_keyed_refusal_frees_its_key(
    make: Make, backend: Backend
) -> None:
    h = make(LIMIT_2)
    backend.gate.clear()
    held = [
        asyncio.ensure_future(h.client.post("/work", headers={"X-Priority": "high"}))
        for _ in range(2)
    ]
    await until(lambda: backend.waiting == 2)

    key = {"X-Priority": "low", "Idempotency-Key": "low-1"}
    refused = await h.client.post("/work", headers=key)
    assert refused.status_code == 503
    assert refused.json()["error"] == "concurrency_limit"
    assert int(refused.headers["retry-after"]) >= 1
    backend.gate.set()
    await asyncio.gather(*held)

    retried = await h.client.post("/work", headers=key)  # the key was released: it runs
    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers
    assert limiter_of(h)["inflight"] == 0


async def test_a_queued_high_request_runs_once_a_place_frees(make: Make, backend: Backend) -> None:
    h = make(LIMIT_2)
    backend.gate.clear()
    tasks = [
        asyncio.ensure_future(h.client.post("/work", headers={"X-Priority": "high"}))
        for _ in range(3)
    ]
    await until(lambda: backend.waiting == 2 and limiter_of(h)["queued"] == 1)
    assert backend.calls["high"] == 2  # the third waits at the limit, not in the app
    backend.gate.set()
    responses = await asyncio.gather(*tasks)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert limiter_of(h) == {"limit": 2, "inflight": 0, "queued": 0, "refused": {}}


async def test_permits_come_back_when_the_app_raises_or_the_request_is_cancelled(
    slo_dir: Path, clock: ManualClock
) -> None:
    (slo_dir / "pdf.yml").write_text(SLO + LIMIT_2, encoding="utf-8")
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        await release.wait()

    guard = SLOGuard(
        app,
        slo_dir=slo_dir,
        route_table={"/boom": CAP, "/hang": CAP},
        clock=clock,
        metrics=False,
    )
    with pytest.raises(RuntimeError):
        await call(guard, http_scope(path="/boom"))
    hanging = asyncio.ensure_future(call(guard, http_scope(path="/hang")))
    await until(lambda: (guard.admission.concurrency(CAP) or {}).get("inflight") == 1)
    hanging.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await hanging
    assert guard.admission.concurrency(CAP) == {
        "limit": 2,
        "inflight": 0,
        "queued": 0,
        "refused": {},
    }
