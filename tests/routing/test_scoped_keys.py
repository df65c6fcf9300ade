"""Idempotency through the /route controller (issue 24, item 8), over real HTTP.

Workers running ``IdempotencyMiddleware`` themselves see every client as the
controller: the key the controller forwards is scoped by the caller's principal, so a
worker never replays one client's response to another. A seed-form body is read, up to
the idempotency limit, before idempotency and admission: a large one skips neither.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sloguard import IdempotencyMiddleware, MemoryStore, SLOGuard
from sloguard._clock import ManualClock
from sloguard.idempotency.keys import Fingerprinter, forwarded_key, parse_idempotency_key
from sloguard.routing import WorkerRegistry, create_controller_app
from sloguard.slo.manager import SLOManager
from tests.routing.workers import RecordingWorker, running
from tests.servers import serving

SLO_DIR = Path(__file__).resolve().parents[2] / "state" / "controller" / "slos"
EMAIL = "classify:email"
EMAIL_PATH = "/route/classify/email"
ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}


class IdempotentWorker:
    """A worker app behind its own ``IdempotencyMiddleware`` (defaults, unchanged):
    counts real executions and records the key each one was sent."""

    def __init__(self) -> None:
        self.runs = 0
        self.keys: list[str] = []
        self.credentials: list[str | None] = []
        self.store = MemoryStore()

    async def work(self, request: Request) -> Response:
        self.runs += 1
        self.keys.append(request.headers.get("idempotency-key", ""))
        self.credentials.append(request.headers.get("authorization"))
        body = await request.body()
        return JSONResponse({"run": self.runs, "bytes": len(body)}, status_code=201)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def app(self) -> IdempotencyMiddleware:
        inner = Starlette(
            routes=[
                Route("/health", self.health, methods=["GET"]),
                Route("/{verb}/{name}", self.work, methods=["POST"]),
            ]
        )
        return IdempotencyMiddleware(inner, store=self.store)


@contextlib.contextmanager
def deployment(
    worker: IdempotentWorker, *, guarded: bool = True, **guard: Any
) -> Iterator[tuple[str, SLOGuard | None]]:
    """A real controller (behind SLOGuard unless ``guarded`` is False) forwarding to a
    real worker; yields the controller's URL and its guard."""
    registry = WorkerRegistry()
    app = create_controller_app(registry=registry, health_interval_s=None)
    front: Any = app
    guard_app = None
    if guarded:
        guard.setdefault("manager", SLOManager(SLO_DIR))
        guard_app = front = SLOGuard(app, metrics=False, reload_every_s=None, **guard)
    with serving(worker.app()) as worker_url, serving(front) as url:
        registry.register("w1", worker_url, [EMAIL])
        yield url, guard_app


def post(url: str, key: str, auth: dict[str, str], body: bytes = b'{"n": 1}') -> httpx.Response:
    return httpx.post(url + EMAIL_PATH, content=body, headers={"Idempotency-Key": key, **auth})


# --- A: the key a worker gets is scoped by the caller's principal ------------------


def test_two_clients_with_one_key_both_run_and_each_retry_replays_its_own() -> None:
    # No SLOGuard in front: every retry reaches the worker, whose own middleware
    # decides, on the key the controller scoped.
    worker = IdempotentWorker()
    with deployment(worker, guarded=False) as (url, _):
        alice = post(url, "order-1", ALICE)
        bob = post(url, "order-1", BOB)
        alice_again = post(url, "order-1", ALICE)
        bob_again = post(url, "order-1", BOB)

    assert worker.runs == 2  # one execution per client, not one for both
    assert (alice.status_code, bob.status_code) == (201, 201)
    assert alice.json()["run"] != bob.json()["run"]
    assert "idempotent-replayed" not in bob.headers  # Bob never got Alice's response
    assert alice_again.headers["idempotent-replayed"] == "true"
    assert alice_again.content == alice.content
    assert bob_again.headers["idempotent-replayed"] == "true"
    assert bob_again.content == bob.content
    # The worker saw two keys, neither with a credential in it, and no credential at all.
    assert len(set(worker.keys)) == 2
    assert all("token" not in key and key.endswith('.order-1"') for key in worker.keys)
    assert worker.credentials == [None, None]


def test_a_repeated_authorization_scopes_the_key_as_the_gate_does() -> None:
    # Unguarded, the controller scopes the key itself: by all of the values, as the gate.
    worker = IdempotentWorker()
    both = [("Authorization", "Bearer mallory"), ("Authorization", "Bearer alice-token")]
    with deployment(worker, guarded=False) as (url, _):
        post(url, "order-1", ALICE)
        headers = [("Idempotency-Key", "order-1"), *both]
        mallory = httpx.post(url + EMAIL_PATH, content=b'{"n": 1}', headers=headers)

    assert worker.runs == 2
    assert "idempotent-replayed" not in mallory.headers
    joined = Fingerprinter().principal(b"Bearer mallory\nBearer alice-token")
    assert worker.keys[1] == forwarded_key(joined, "order-1")


def test_behind_slo_guard_the_key_is_scoped_by_the_gates_principal_digest() -> None:
    # The controller's own gate replays a retry; once its store has forgotten the
    # key (TTL), the retry reaches the worker, whose middleware replays it: the key
    # the gate's lease scoped is the same on every forward.
    clock = ManualClock()
    worker = IdempotentWorker()
    store = MemoryStore(ttl_seconds=60, clock=clock)
    with deployment(worker, store=store) as (url, _):
        alice = post(url, "order-1", ALICE)
        bob = post(url, "order-1", BOB)
        replayed_by_the_controller = post(url, "order-1", ALICE)
        clock.advance(61)
        replayed_by_the_worker = post(url, "order-1", ALICE)
        bob_again = post(url, "order-1", BOB)

    assert worker.runs == 2
    assert alice.json() != bob.json()
    assert replayed_by_the_controller.headers["idempotent-replayed"] == "true"
    for again, first in [(replayed_by_the_worker, alice), (bob_again, bob)]:
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content
    alice_key = forwarded_key(Fingerprinter().principal(b"Bearer alice-token"), "order-1")
    assert worker.keys[0] == alice_key


def test_a_principal_callable_and_a_secret_scope_what_the_worker_sees() -> None:
    # The gate's principal (here a tenant header) and secret, not the Authorization
    # header, decide the scope; two users of one tenant share their tenant's keys.
    worker = IdempotentWorker()
    options = {"principal": lambda scope: dict(scope["headers"])[b"x-tenant"].decode()}
    idempotency = {**options, "fingerprint_secret": "s3cret"}
    with deployment(worker, idempotency=idempotency) as (url, _):
        first = post(url, "k", {"X-Tenant": "acme", **ALICE})
        other_tenant = post(url, "k", {"X-Tenant": "globex", **ALICE})

    assert (first.status_code, other_tenant.status_code) == (201, 201)
    assert worker.runs == 2
    acme = forwarded_key(Fingerprinter("s3cret").principal("acme"), "k")
    unkeyed = forwarded_key(Fingerprinter().principal("acme"), "k")
    assert worker.keys[0] == acme != unkeyed


def test_an_anonymous_key_goes_on_as_sent_and_a_long_key_stays_within_255() -> None:
    worker = IdempotentWorker()
    long_key = "x" * 255
    with deployment(worker) as (url, _):
        anonymous = post(url, "plain-key", {})
        long = post(url, long_key, ALICE)
        long_again_elsewhere = post(url, "y" * 255, ALICE)

    assert (anonymous.status_code, long.status_code, long_again_elsewhere.status_code) == (
        201,
        201,
        201,
    )
    assert worker.keys[0] == "plain-key"
    assert all(len(parse_idempotency_key(k.encode())) <= 255 for k in worker.keys)
    assert worker.keys[1] != worker.keys[2]  # two long keys stay two keys
    assert long_key not in worker.keys[1]


def test_the_seed_forms_key_is_scoped_too() -> None:
    worker = IdempotentWorker()
    seed = {"verb": "classify", "capability": "email", "idempotency_key": "s-1"}
    with deployment(worker, guarded=False) as (url, _):
        alice = httpx.post(url + "/route", json=seed, headers=ALICE)
        bob = httpx.post(url + "/route", json=seed, headers=BOB)
        alice_again = httpx.post(url + "/route", json=seed, headers=ALICE)

    assert worker.runs == 2
    assert "idempotent-replayed" not in bob.headers
    assert alice_again.headers["idempotent-replayed"] == "true"
    assert alice_again.content == alice.content != bob.content
    assert all(key.endswith('.s-1"') for key in worker.keys)


# --- B: a seed-form body is read up to the idempotency limit, and no further ---------


def test_a_2_mib_keyed_seed_body_sent_three_times_reaches_the_worker_once() -> None:
    worker = RecordingWorker("w1")
    registry = WorkerRegistry()
    manager = SLOManager(SLO_DIR)
    guard = SLOGuard(
        create_controller_app(registry=registry, health_interval_s=None),
        manager=manager,
        metrics=False,
        reload_every_s=None,
    )
    # The 2 MiB are in a field the controller ignores: what is under test is reading the
    # seed body, not forwarding a 2 MiB payload.
    seed = {
        "verb": "classify",
        "capability": "email",
        "idempotency_key": "big-1",
        "request_payload": {"n": 1},
        "padding": "x" * (2 * 1024 * 1024),
    }
    body = json.dumps(seed).encode()
    assert 2 * 1024 * 1024 < len(body) < 3 * 1024 * 1024
    with running(worker) as worker_url, serving(guard) as url:
        registry.register("w1", worker_url, [EMAIL])
        responses = [httpx.post(url + "/route", content=body, timeout=30) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert len(worker.received) == 1
    assert [r.headers.get("idempotent-replayed") for r in responses] == [None, "true", "true"]
    # Admission saw its capability too: the request counts against classify:email.
    status = manager.status(EMAIL)
    assert status is not None
    assert status.requests == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_seed_body_over_the_limit_is_a_413_read_no_further(chunked: bool) -> None:
    runs: list[int] = []

    async def route(request: Request) -> Response:
        runs.append(len(await request.body()))
        return JSONResponse({"ok": True})

    guard = SLOGuard(
        Starlette(routes=[Route("/route", route, methods=["POST"])]),
        manager=SLOManager(SLO_DIR),
        metrics=False,
        reload_every_s=None,
        idempotency={"max_request_bytes": 64 * 1024},
    )
    offered: list[int] = []
    prefix = b'{"verb": "classify", "capability": "email", "idempotency_key": "k", "p": "'

    async def chunks() -> Any:
        yield prefix
        for _ in range(1000):  # 1,000 KiB more, offered 1 KiB at a time
            offered.append(1)
            yield b"x" * 1024

    content: Any = chunks() if chunked else prefix + b"x" * (1000 * 1024)
    transport = httpx.ASGITransport(app=guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/route", content=content)
        seed = {"verb": "classify", "capability": "email", "idempotency_key": "k"}
        small = await client.post("/route", json=seed)
        again = await client.post("/route", json=seed)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["error"] == "payload_too_large"
    assert response.json()["type"].endswith("/problems/#payload_too_large")
    assert len(runs) == 1  # only the small one ran, once
    assert small.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    if chunked:
        assert len(offered) < 100  # it stopped reading soon after 64 KiB


def test_a_seed_body_over_10_mib_is_a_413_by_default() -> None:
    worker = IdempotentWorker()
    with deployment(worker) as (url, _):
        body = b'{"verb": "classify", "capability": "email", "p": "' + b"x" * (10 * 1024 * 1024)
        response = httpx.post(url + "/route", content=body + b'"}', timeout=30)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert worker.runs == 0


@pytest.mark.parametrize(
    "keys",
    [("\u65e5\u672c", "\u4e2d\u56fd"), ("caf\u00e9", "caf\u00e8"), ("\U0001f600", "\U0001f601")],
    ids=["cjk", "latin-1", "astral"],
)
def test_distinct_non_ascii_seed_keys_never_share_a_response(keys: tuple[str, str]) -> None:
    worker = IdempotentWorker()
    responses = []
    with deployment(worker) as (url, _):
        for key in (*keys, *keys):
            seed = {"verb": "classify", "capability": "email", "idempotency_key": key}
            responses.append(httpx.post(url + "/route", json=seed, headers=ALICE))

    # Refused (the controller answers a key that cannot be a header 400), never
    # collapsed into one key whose response a different key would get back.
    assert [r.status_code for r in responses] == [400] * 4
    assert all(r.json()["error"] == "invalid_route_request" for r in responses)
    assert all("idempotent-replayed" not in r.headers for r in responses)
    assert worker.runs == 0
