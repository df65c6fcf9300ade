"""The controller over real HTTP: a uvicorn controller forwarding to uvicorn workers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sloguard import SLOGuard
from sloguard._clock import ManualClock
from sloguard.exceptions import ConfigurationError
from sloguard.idempotency.keys import Fingerprinter, forwarded_key
from sloguard.reporting.reporter import Reporter
from sloguard.routing import HealthChecker, WorkerRegistry, create_controller_app
from sloguard.slo.manager import SLOManager
from tests.routing.workers import RecordingWorker, running
from tests.servers import free_port, serving

SLO_DIR = Path(__file__).resolve().parents[2] / "state" / "controller" / "slos"
PDF = "convert:document_to_pdf"
PDF_PATH = "/route/convert/document_to_pdf"
TOKEN = "registry-s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def first_pick(n: int) -> int:
    """A P2C random source that makes the first-registered worker the first choice."""
    return 0


@contextlib.contextmanager
def controller(registry: WorkerRegistry, **options: Any) -> Iterator[str]:
    options.setdefault("health_interval_s", None)  # tests run the checks themselves
    if not options.get("open_registry"):
        options.setdefault("registry_token", TOKEN)
    with serving(create_controller_app(registry=registry, **options)) as url:
        yield url


def test_forwards_payload_headers_and_query_and_returns_the_workers_answer() -> None:
    worker = RecordingWorker("w1", status=201, content_type="application/x-result")
    registry = WorkerRegistry()
    with running(worker) as worker_url, controller(registry) as url:
        registry.register("w1", worker_url, [PDF])
        sent_headers = {
            "Idempotency-Key": "k-1",
            "X-Priority": "high",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=1",
            "X-Request-ID": "req-7",
            "Authorization": "Bearer secret",
            "Content-Type": "text/csv",
        }
        response = httpx.post(
            url + PDF_PATH + "?delay_ms=5", content=b"a,b\n1,2\n", headers=sent_headers
        )

    assert response.status_code == 201
    assert response.headers["content-type"] == "application/x-result"
    assert response.headers["x-worker-id"] == "w1"
    assert response.json() == {"worker": "w1", "bytes": 8}
    [got] = worker.received
    assert (got.path, got.query, got.body) == (
        "/convert/document_to_pdf",
        "delay_ms=5",
        b"a,b\n1,2\n",
    )
    for name, value in sent_headers.items():
        if name not in ("Authorization", "Idempotency-Key"):
            assert got.headers[name.lower()] == value
    assert "authorization" not in got.headers
    # The key goes on scoped by the caller's principal (a digest, never the credential).
    scoped = forwarded_key(Fingerprinter().principal(b"Bearer secret"), "k-1")
    assert got.headers["idempotency-key"] == scoped


def test_the_seed_form_forwards_its_payload_key_and_priority() -> None:
    worker = RecordingWorker("w1")
    registry = WorkerRegistry()
    with running(worker) as worker_url, controller(registry) as url:
        registry.register("w1", worker_url, ["classify:email"])
        response = httpx.post(
            url + "/route",
            json={
                "verb": "classify",
                "capability": "email",
                "idempotency_key": "seed-1",
                "priority": "low",
                "request_payload": {"subject": "hello"},
            },
        )

    assert response.status_code == 200
    [got] = worker.received
    assert got.path == "/classify/email"
    assert got.body == b'{"subject":"hello"}'
    assert got.headers["content-type"] == "application/json"
    assert got.headers["idempotency-key"] == "seed-1"
    assert got.headers["x-priority"] == "low"


def test_a_seed_body_without_request_payload_forwards_an_empty_object() -> None:
    worker = RecordingWorker("w1")
    registry = WorkerRegistry()
    with running(worker) as worker_url, controller(registry) as url:
        registry.register("w1", worker_url, ["classify:email"])
        response = httpx.post(url + "/route", json={"verb": "classify", "capability": "email"})

    assert response.status_code == 200
    [got] = worker.received
    assert (got.path, got.body) == ("/classify/email", b"{}")


async def test_power_of_two_choices_spreads_concurrent_requests_evenly() -> None:
    # With two workers P2C always compares both, so each request goes to the one
    # with fewer outstanding: held requests split evenly.
    arrived = threading.Semaphore(0)
    workers = [RecordingWorker(n, mode="hold", arrived=arrived) for n in ("a", "b")]
    registry = WorkerRegistry()
    with running(workers[0]) as url_a, running(workers[1]) as url_b, controller(registry) as url:
        registry.register("a", url_a, [PDF])
        registry.register("b", url_b, [PDF])
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            sends = [asyncio.create_task(client.post(PDF_PATH, content=b"{}")) for _ in range(20)]
            for _ in range(20):
                assert await asyncio.to_thread(arrived.acquire, timeout=30)
            counts = [len(w.received) for w in workers]
            outstanding = [w["outstanding"] for w in registry.snapshot()]
            for w in workers:
                w.release.set()
            responses = await asyncio.gather(*sends)

    assert sum(counts) == 20
    assert abs(counts[0] - counts[1]) <= 1
    assert outstanding == counts
    assert {r.status_code for r in responses} == {200}


async def test_failing_health_checks_eject_a_worker_until_it_passes_again() -> None:
    sick, well = RecordingWorker("sick"), RecordingWorker("well")
    registry = WorkerRegistry(random_source=first_pick)
    checker = HealthChecker(registry, unhealthy_after=2)
    with running(sick) as url_s, running(well) as url_w, controller(registry) as url:
        registry.register("sick", url_s, [PDF], static=True)
        registry.register("well", url_w, [PDF], static=True)
        async with httpx.AsyncClient() as checks, httpx.AsyncClient(base_url=url) as client:
            sick.healthy = False
            await checker.check_once(checks)
            still_in = (await client.post(PDF_PATH)).headers["x-worker-id"]
            await checker.check_once(checks)
            listed = {w["id"]: w for w in (await client.get("/workers")).json()["workers"]}
            while_ejected = [(await client.post(PDF_PATH)).headers["x-worker-id"] for _ in range(5)]
            sick.healthy = True
            await checker.check_once(checks)
            back = (await client.post(PDF_PATH)).headers["x-worker-id"]

    assert still_in == "sick"  # one failed check is not enough
    assert listed["sick"]["healthy"] is False
    assert listed["sick"]["last_error"] == "health check answered 503"
    assert listed["well"]["healthy"] is True
    assert while_ejected == ["well"] * 5
    assert back == "sick"


async def test_a_worker_that_does_not_answer_its_health_check_is_ejected() -> None:
    registry = WorkerRegistry()
    registry.register("gone", f"http://127.0.0.1:{free_port()}", [PDF], static=True)
    async with httpx.AsyncClient() as checks:
        await HealthChecker(registry, unhealthy_after=1).check_once(checks)
    [entry] = registry.snapshot()
    assert entry["healthy"] is False
    assert entry["last_error"].startswith("health check failed: ConnectError")


async def test_a_worker_that_misses_heartbeats_gets_no_traffic_until_the_next_one(
    clock: ManualClock,
) -> None:
    worker = RecordingWorker("w1")
    registry = WorkerRegistry(clock=clock, heartbeat_ttl_s=10)
    with running(worker) as worker_url, controller(registry) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            spec = {"id": "w1", "url": worker_url, "capabilities": [PDF]}
            registered = await client.post("/workers", json=spec, headers=AUTH)
            fresh = await client.post(PDF_PATH)
            clock.advance(10.5)
            expired = await client.post(PDF_PATH)
            [listed] = (await client.get("/workers")).json()["workers"]
            beat = await client.post("/workers/w1/heartbeat", headers=AUTH)
            again = await client.post(PDF_PATH)

    assert registered.status_code == 201
    assert fresh.status_code == 200
    assert expired.status_code == 503
    assert expired.json()["error"] == "no_worker_available"
    assert listed["healthy"] is False
    assert listed["last_error"] == "no heartbeat for 10.5 s (limit 10 s)"
    assert beat.json() == {"id": "w1", "healthy": True}
    assert again.status_code == 200
    assert len(worker.received) == 2


def test_an_idempotent_request_fails_over_when_its_worker_drops_the_connection() -> None:
    broken, spare = RecordingWorker("broken", mode="break"), RecordingWorker("spare")
    registry = WorkerRegistry(random_source=first_pick)
    with running(broken) as url_b, running(spare) as url_s, controller(registry) as url:
        registry.register("broken", url_b, [PDF])
        registry.register("spare", url_s, [PDF])
        keyed = httpx.post(url + PDF_PATH, headers={"Idempotency-Key": "k-9"}, content=b"{}")

    assert keyed.status_code == 200
    assert keyed.headers["x-worker-id"] == "spare"
    assert len(broken.received) == 1
    assert spare.received[0].headers["idempotency-key"] == "k-9"


def test_a_request_without_a_key_is_not_retried_after_its_worker_may_have_run_it() -> None:
    broken, spare = RecordingWorker("broken", mode="break"), RecordingWorker("spare")
    registry = WorkerRegistry(random_source=first_pick)
    with running(broken) as url_b, running(spare) as url_s, controller(registry) as url:
        registry.register("broken", url_b, [PDF])
        registry.register("spare", url_s, [PDF])
        unkeyed = httpx.post(url + PDF_PATH, content=b"{}")

    assert unkeyed.status_code == 502
    assert unkeyed.headers["content-type"] == "application/problem+json"
    problem = unkeyed.json()
    assert problem["error"] == "worker_unreachable"
    assert "not retried" in problem["detail"]
    assert len(broken.received) == 1
    assert spare.received == []


def test_a_worker_that_refuses_connections_is_skipped_even_without_a_key() -> None:
    spare = RecordingWorker("spare")
    registry = WorkerRegistry(random_source=first_pick)
    with running(spare) as url_s, controller(registry) as url:
        registry.register("down", f"http://127.0.0.1:{free_port()}", [PDF])
        registry.register("spare", url_s, [PDF])
        response = httpx.post(url + PDF_PATH, content=b"{}")
        listed = {w["id"]: w for w in httpx.get(url + "/workers").json()["workers"]}

    assert response.status_code == 200
    assert response.headers["x-worker-id"] == "spare"
    assert listed["down"]["healthy"] is False
    assert listed["down"]["last_error"].startswith("ConnectError")


def test_the_only_worker_unreachable_is_a_502() -> None:
    registry = WorkerRegistry()
    with controller(registry) as url:
        registry.register("down", f"http://127.0.0.1:{free_port()}", [PDF])
        response = httpx.post(url + PDF_PATH, headers={"Idempotency-Key": "k"})

    assert response.status_code == 502
    assert response.json()["error"] == "worker_unreachable"
    assert response.json()["workers"] == ["down"]


def test_a_worker_that_takes_too_long_is_a_504() -> None:
    slow = RecordingWorker("slow", mode="hold")
    registry = WorkerRegistry()
    with running(slow) as worker_url, controller(registry, forward_timeout_s=0.2) as url:
        registry.register("slow", worker_url, [PDF])
        response = httpx.post(url + PDF_PATH, headers={"Idempotency-Key": "k"})

    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["error"] == "worker_timeout"
    assert len(slow.received) == 1  # a timeout is not retried: the worker may still run it


def test_unknown_capability_is_a_404_and_one_with_an_slo_but_no_worker_a_503() -> None:
    with controller(WorkerRegistry(), manager=SLOManager(SLO_DIR), retry_after_s=3) as url:
        unknown = httpx.post(url + "/route/nothing/here")
        no_worker = httpx.post(url + PDF_PATH)

    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["error"] == "unknown_capability"
    assert no_worker.status_code == 503
    assert no_worker.headers["retry-after"] == "3"
    assert no_worker.json()["error"] == "no_worker_available"
    assert no_worker.json()["capability"] == PDF


@pytest.mark.parametrize(
    ("body", "error", "detail"),
    [
        (b'{"verb": "classify"', "invalid_json", "the body is not valid JSON"),
        (b"[1, 2]", "invalid_route_request", "the body must be a JSON object, got list"),
        (
            b'{"verb": "classify"}',
            "invalid_route_request",
            "capability: field required",
        ),
        (
            b'{"verb": 3, "request_payload": {}}',
            "invalid_route_request",
            "verb: input should be a valid string; capability: field required",
        ),
    ],
)
def test_a_bad_seed_body_is_a_400_naming_the_field(body: bytes, error: str, detail: str) -> None:
    worker = RecordingWorker("w1")
    registry = WorkerRegistry()
    with running(worker) as worker_url, controller(registry) as url:
        registry.register("w1", worker_url, ["classify:email"])
        response = httpx.post(url + "/route", content=body)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["error"] == error
    assert response.json()["detail"].startswith(detail)
    assert worker.received == []


async def test_a_replayed_request_never_reaches_a_worker_twice() -> None:
    worker = RecordingWorker("w1")
    registry = WorkerRegistry()
    guarded = SLOGuard(
        create_controller_app(registry=registry, health_interval_s=None),
        manager=SLOManager(SLO_DIR),
        metrics=False,
    )
    seed = {"verb": "classify", "capability": "email", "idempotency_key": "s-1"}
    with running(worker) as worker_url, serving(guarded) as url:
        registry.register("w1", worker_url, [PDF, "classify:email"])
        async with httpx.AsyncClient(base_url=url) as client:
            key = {"Idempotency-Key": "p-1"}
            path_first = await client.post(PDF_PATH, content=b"{}", headers=key)
            path_again = await client.post(PDF_PATH, content=b"{}", headers=key)
            seed_first = await client.post("/route", json={**seed, "request_payload": {}})
            seed_again = await client.post("/route", json={**seed, "request_payload": {}})

    assert [r.headers["idempotency-key"] for r in worker.received] == ["p-1", "s-1"]
    for first, again in [(path_first, path_again), (seed_first, seed_again)]:
        assert first.status_code == again.status_code == 200
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"


def test_workers_register_heartbeat_and_leave_over_http() -> None:
    registry = WorkerRegistry()
    spec = {"id": "w1", "url": "http://127.0.0.1:9001/", "capabilities": [PDF]}
    with controller(registry) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        created = client.post("/workers", json=spec)
        replaced = client.post("/workers", json={**spec, "capabilities": [PDF, "a:b"]})
        listed = client.get("/workers").json()["workers"]
        health = client.get("/healthz").json()
        beat = client.post("/workers/w1/heartbeat")
        deleted = client.delete("/workers/w1")
        deleted_again = client.delete("/workers/w1")
        beat_unknown = client.post("/workers/w1/heartbeat")

    assert created.status_code == 201
    assert created.json()["url"] == "http://127.0.0.1:9001"
    assert replaced.status_code == 200
    assert [(w["id"], w["capabilities"]) for w in listed] == [("w1", ["a:b", PDF])]
    assert listed[0]["outstanding"] == 0
    assert listed[0]["last_error"] is None
    assert (health["status"], health["workers"], health["healthy"]) == ("ok", 1, 1)
    assert health["loops"]["health_checks"]["state"] == "idle"  # these tests check by hand
    assert beat.status_code == 200
    assert deleted.status_code == 204
    assert deleted_again.status_code == 404
    assert beat_unknown.status_code == 404
    assert beat_unknown.json()["error"] == "unknown_worker"


@pytest.mark.parametrize(
    ("spec", "detail"),
    [
        ({"id": "w", "url": "ftp://x", "capabilities": [PDF]}, "url: must start with http://"),
        ({"id": "w", "url": "http://x", "capabilities": []}, "capabilities: list should have"),
        ({"id": "w", "url": "http://x", "capabilities": ["pdf"]}, "capabilities[0]: 'pdf' is not"),
        ({"url": "http://x", "capabilities": [PDF]}, "id: field required"),
        ({"id": "w", "url": "http://x", "capabilities": [PDF], "x": 1}, "x: extra inputs"),
        ({"id": "w", "url": "http://x:0", "capabilities": [PDF]}, "url: port must be a number"),
        ({"id": "w", "url": "http://x:99999", "capabilities": [PDF]}, "url: port must be"),
        ({"id": "w", "url": "http://u:p@x:1", "capabilities": [PDF]}, "url: must not contain user"),
        ({"id": "w", "url": "http://x/?to=y", "capabilities": [PDF]}, "url: must not have a query"),
        ({"id": "w", "url": "http://x/#f", "capabilities": [PDF]}, "url: must not have a query"),
        ({"id": "w", "url": "http://:80", "capabilities": [PDF]}, "url: must name a host"),
        ({"id": "w", "url": "http://2130706433", "capabilities": [PDF]}, "url: '2130706433' is"),
    ],
)
def test_a_bad_registration_is_a_400_naming_the_field(spec: dict[str, Any], detail: str) -> None:
    registry = WorkerRegistry()
    with controller(registry) as url:
        response = httpx.post(url + "/workers", json=spec, headers=AUTH)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_worker"
    assert response.json()["detail"].startswith(detail)
    assert len(registry) == 0


def test_with_tracing_the_forward_is_a_child_span_the_worker_continues() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    worker = RecordingWorker("w1")
    registry = WorkerRegistry()
    app = create_controller_app(
        registry=registry, health_interval_s=None, tracing=True, tracer_provider=provider
    )
    guarded = SLOGuard(app, metrics=False, tracing=True, tracer_provider=provider)
    with running(worker) as worker_url, serving(guarded) as url:
        registry.register("w1", worker_url, [PDF])
        response = httpx.post(url + PDF_PATH, content=b"{}", headers={"X-Priority": "high"})

    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    [forward] = [s for s in spans if s.name == "POST /convert/document_to_pdf"]
    [server] = [s for s in spans if s.parent is None]
    assert forward.parent is not None
    assert forward.parent.span_id == server.context.span_id
    assert server.attributes is not None
    assert server.attributes["sloguard.capability"] == PDF
    assert server.attributes["sloguard.priority"] == "high"
    [got] = worker.received
    trace_id, span_id = forward.context.trace_id, forward.context.span_id
    version, got_trace, got_parent, _flags = got.headers["traceparent"].split("-")
    assert (version, got_trace, got_parent) == ("00", f"{trace_id:032x}", f"{span_id:016x}")


async def test_healthz_reports_the_background_loops(tmp_path: Path) -> None:
    manager = SLOManager(tmp_path)
    reporter = Reporter(manager, monitor_every_s=None)
    app = create_controller_app(tmp_path, manager=manager, reporter=reporter, demo=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        health = (await client.get("/healthz")).json()
    assert health["status"] == "ok"
    assert "slo_watcher" in health["loops"]
    assert "alert_notifier" in health["loops"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"verb": "convert", "capability": "pdf", "priority": "lo\\u0000w"}',
        b'{"verb": "convert", "capability": "pdf", "idempotency_key": "a\\r\\nb"}',
        b'{"verb": "convert", "capability": "pdf", "idempotency_key": "\\u65e5\\u672c"}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["control-in-priority", "crlf-in-key", "non-ascii-key", "nested-deep"],
)
async def test_bad_seed_bodies_are_400s_never_500s(tmp_path: Path, body: bytes) -> None:
    app = create_controller_app(tmp_path, manager=SLOManager(tmp_path), demo=False)
    guard = SLOGuard(app, slo_dir=tmp_path, metrics=False, reload_every_s=None)
    transport = httpx.ASGITransport(app=guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/route", content=body)
        openapi = await client.get("/openapi.json")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert "/route" in openapi.json()["paths"]


# -- registry writes: a credential, one URL per live id, allowed hosts, a bound --------


def assert_problem(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["error"] == error


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Bearer", TOKEN, f"Bearer {TOKEN}x", f"Basic {TOKEN}"],
)
def test_registry_writes_without_the_token_are_401_problems(authorization: str | None) -> None:
    registry = WorkerRegistry()
    registry.register("w1", "http://127.0.0.1:9001", [PDF])
    headers = {} if authorization is None else {"authorization": authorization}
    spec = {"id": "w2", "url": "http://127.0.0.1:9002", "capabilities": [PDF]}
    with controller(registry) as url, httpx.Client(base_url=url, headers=headers) as client:
        answers = [
            client.post("/workers", json=spec),
            client.post("/workers", json={**spec, "id": "w1"}),  # a hijack, unauthenticated
            client.post("/workers/w1/heartbeat"),
            client.delete("/workers/w1"),
        ]
        listed = client.get("/workers")  # reads stay open

    for answer in answers:
        assert_problem(answer, 401, "unauthorized")
        assert answer.headers["www-authenticate"] == 'Bearer realm="sloguard"'
        assert "registry.token" in answer.json()["detail"]
    assert [w["id"] for w in listed.json()["workers"]] == ["w1"]
    assert registry.get("w1") is not None
    assert registry.get("w1").url == "http://127.0.0.1:9001"  # type: ignore[union-attr]


def test_the_registry_is_closed_by_default_with_a_token_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("SLOGUARD_REGISTRY_TOKEN", "SLOGUARD_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    app = create_controller_app(registry=WorkerRegistry(), health_interval_s=None)
    token = app.state.controller.registry_token
    spec = {"id": "w1", "url": "http://127.0.0.1:9001", "capabilities": [PDF]}
    with serving(app) as url:
        refused = httpx.post(url + "/workers", json=spec)
        accepted = httpx.post(
            url + "/workers", json=spec, headers={"authorization": f"Bearer {token}"}
        )

    assert len(token) >= 32
    assert_problem(refused, 401, "unauthorized")
    assert accepted.status_code == 201


def test_the_token_comes_from_the_environment_and_the_api_token_stands_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLOGUARD_API_TOKEN", "api")
    monkeypatch.delenv("SLOGUARD_REGISTRY_TOKEN", raising=False)
    from_api = create_controller_app(registry=WorkerRegistry()).state.controller
    monkeypatch.setenv("SLOGUARD_REGISTRY_TOKEN", "reg")
    from_env = create_controller_app(registry=WorkerRegistry()).state.controller
    given = create_controller_app(registry=WorkerRegistry(), registry_token="given")
    opened = create_controller_app(registry=WorkerRegistry(), open_registry=True)

    assert from_api.registry_token == "api"
    assert from_env.registry_token == "reg"
    assert given.state.controller.registry_token == "given"
    assert opened.state.controller.registry_token is None
    with pytest.raises(ConfigurationError, match="choose one"):
        create_controller_app(registry=WorkerRegistry(), open_registry=True, registry_token="x")


def test_an_open_registry_takes_writes_without_a_token() -> None:
    worker = RecordingWorker("w1")
    registry = WorkerRegistry()
    with running(worker) as worker_url, controller(registry, open_registry=True) as url:
        spec = {"id": "w1", "url": worker_url, "capabilities": [PDF]}
        created = httpx.post(url + "/workers", json=spec)
        beat = httpx.post(url + "/workers/w1/heartbeat")
        routed = httpx.post(url + PDF_PATH, content=b"{}")
        deleted = httpx.delete(url + "/workers/w1")

    assert [created.status_code, beat.status_code, routed.status_code, deleted.status_code] == [
        201,
        200,
        200,
        204,
    ]


async def test_a_live_worker_keeps_its_url_until_it_leaves_or_expires(clock: ManualClock) -> None:
    mine, theirs = RecordingWorker("mine"), RecordingWorker("theirs")
    registry = WorkerRegistry(clock=clock, heartbeat_ttl_s=10)
    with (
        running(mine) as mine_url,
        running(theirs) as theirs_url,
        controller(registry) as url,
    ):
        async with httpx.AsyncClient(base_url=url, headers=AUTH) as client:
            spec = {"id": "w1", "url": mine_url, "capabilities": [PDF]}
            await client.post("/workers", json=spec)
            hijack = await client.post("/workers", json={**spec, "url": theirs_url})
            routed = await client.post(PDF_PATH)
            same_url = await client.post("/workers", json={**spec, "url": mine_url + "/"})
            clock.advance(10.5)  # no heartbeat: it is no longer live, its id is free
            moved = await client.post("/workers", json={**spec, "url": theirs_url})
            await client.delete("/workers/w1")
            back = await client.post("/workers", json=spec)

    assert_problem(hijack, 409, "worker_id_in_use")
    assert mine_url in hijack.json()["detail"]
    assert hijack.json()["worker"] == "w1"
    assert routed.headers["x-worker-id"] == "w1"
    assert len(mine.received) == 1
    assert theirs.received == []
    assert same_url.status_code == 200  # re-registering where it is: a refresh
    assert moved.status_code == 200
    assert back.status_code == 201


def test_static_workers_are_never_written_over_http() -> None:
    worker = RecordingWorker("static")
    registry = WorkerRegistry()
    with running(worker) as worker_url, controller(registry) as url:
        registry.register("s1", worker_url, [PDF], static=True)
        with httpx.Client(base_url=url, headers=AUTH) as client:
            spec = {"id": "s1", "url": "http://127.0.0.1:9", "capabilities": [PDF]}
            answers = [
                client.post("/workers", json=spec),
                client.post("/workers/s1/heartbeat"),
                client.delete("/workers/s1"),
            ]
            routed = client.post(PDF_PATH, content=b"{}")

    for answer in answers:
        assert_problem(answer, 409, "static_worker")
    assert routed.headers["x-worker-id"] == "s1"
    assert registry.get("s1") is not None
    assert registry.get("s1").last_heartbeat is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("worker_url", "allowed"),
    [
        ("http://127.0.0.1:9001", True),
        ("http://10.1.2.3:80", True),
        ("https://pdf.example.internal", True),
        ("http://example.internal:8000", True),
        ("http://[::ffff:10.0.0.1]:80", True),
        ("http://169.254.169.254", False),  # a cloud metadata service
        ("http://192.168.0.1:9001", False),
        ("http://localhost:9001", False),  # a name, not resolved: not 127.0.0.1
        ("http://example.internal.evil.com", False),
        ("http://[::1]:9001", False),
    ],
)
def test_hosts_off_the_allow_list_are_403(worker_url: str, allowed: bool) -> None:
    registry = WorkerRegistry()
    hosts = "127.0.0.0/8,10.0.0.0/8,example.internal,*.example.internal"
    with controller(registry, worker_hosts=hosts) as url:
        spec = {"id": "w1", "url": worker_url, "capabilities": [PDF]}
        answer = httpx.post(url + "/workers", json=spec, headers=AUTH)

    if allowed:
        assert answer.status_code == 201
    else:
        assert_problem(answer, 403, "worker_host_not_allowed")
        assert answer.json()["detail"].startswith(f"url: {worker_url} is not on a host")
        assert len(registry) == 0


def test_the_registry_holds_at_most_max_workers(clock: ManualClock) -> None:
    registry = WorkerRegistry(max_workers=2, clock=clock, heartbeat_ttl_s=10)
    registry.register("static", "http://127.0.0.1:9000", [PDF], static=True)  # not counted
    with controller(registry) as url, httpx.Client(base_url=url, headers=AUTH) as client:

        def join(worker_id: str) -> httpx.Response:
            spec = {"id": worker_id, "url": f"http://10.0.0.1/{worker_id}", "capabilities": [PDF]}
            return client.post("/workers", json=spec)

        first = [join("w1").status_code, join("w2").status_code]
        full = join("w3")
        again = join("w1")  # a known id takes no more room
        client.delete("/workers/w2")
        after_leaving = join("w3")
        clock.advance(5)
        client.post("/workers/w3/heartbeat")
        clock.advance(6)  # w1 is silent for 11 s, w3 for 6 s
        after_expiry = join("w4")
        listed = sorted(w["id"] for w in client.get("/workers").json()["workers"])

    assert first == [201, 201]
    assert_problem(full, 409, "registry_full")
    assert "limit of 2" in full.json()["detail"]
    assert again.status_code == 200
    assert after_leaving.status_code == 201
    assert after_expiry.status_code == 201  # the silent one made room
    assert listed == ["static", "w3", "w4"]


async def test_healthz_reports_the_health_loop_without_a_reporter() -> None:
    registry = WorkerRegistry()
    app = create_controller_app(registry=registry, health_interval_s=0.01, open_registry=True)
    with serving(app) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(200):
                health = (await client.get("/healthz")).json()
                if health["loops"]["health_checks"]["passes"] >= 2:
                    break
                await asyncio.sleep(0.01)

    assert health["status"] == "ok"
    assert health["loops"]["health_checks"]["state"] == "running"
