"""The behaviours three peers test, as HTTP scenarios of our own, on both stores.

The peers: ``snok/asgi-idempotency-header`` (AIH), ``ronango/fastapi-idempotency``
(FI) and ``Luan1Schons/fastapi-idempotency-key`` (FIK). Their test suites were read
for what each asserts a client sees; every scenario here is written afresh against
``IdempotencyMiddleware`` and names, in its docstring, the peer test(s) it covers.
Where sloguard deliberately differs (it scopes keys per principal, stores any
response, answers 413 for a large keyed body...), the scenario asserts sloguard's
documented behaviour (docs/idempotency.md) and says so: "Differs:".

Not repeated here, being covered already: non-HTTP scopes passing through (AIH, FI,
FIK; test_middleware.py), a handler slower than its lease (FI's in-flight TTL;
test_conformance.py), and the peers' unit tests of their own internals (fingerprint
functions, body buffers, store classes, decorators), which have no HTTP behaviour of
their own beyond what the scenarios below cover.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sloguard import IdempotencyMiddleware, MemoryStore, RedisStore, Store
from sloguard.idempotency import StoredResponse
from sloguard.idempotency.keys import Fingerprinter, store_key
from tests.asgi import call, http_scope
from tests.idempotency.conftest import Backend, MemoryBackend
from tests.idempotency.test_middleware import assert_problem, is_replay

DUMMY = {"test": "test"}
XML = '<?xml version="1.0"?>\n<shampoo><Header>Apply here.</Header></shampoo>\n'
HTML = "<html><head><title>t</title></head><body><h1>Look ma! HTML!</h1></body></html>"


class Service:
    """The app behind the middleware: its routes count how often they really run."""

    def __init__(self, tmp_path: Path) -> None:
        self.runs: Counter[str] = Counter()
        self.teapots: Counter[str] = Counter()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.file = tmp_path / "image.bin"
        self.file.write_bytes(bytes(range(256)) * 40)

    async def _count(self, request: Request) -> int:
        name = request.url.path.strip("/").split("/")[0]
        self.runs[name] += 1
        return self.runs[name]

    async def json(self, request: Request) -> Response:
        await self._count(request)
        return JSONResponse(DUMMY, 201)

    async def echo(self, request: Request) -> Response:
        n = await self._count(request)
        body = await request.body()
        return JSONResponse({"run": n, "size": len(body), "head": body[:16].decode("latin-1")})

    async def kind(self, request: Request) -> Response:
        await self._count(request)
        kind = request.path_params["kind"]
        if kind == "xml":
            return Response(XML, media_type="application/xml")
        if kind == "html":
            return HTMLResponse(HTML)
        if kind == "plain":
            return PlainTextResponse("test")
        if kind == "file":
            return FileResponse(self.file)
        if kind == "redirect":
            return RedirectResponse("/elsewhere")
        if kind == "bad-type":  # JSON sent as XML
            return Response('{"test": "test"}', media_type="application/xml")
        return Response(b'{"test":"test"}', status_code=201)

    async def stream(self, request: Request) -> Response:
        n = await self._count(request)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(4):
                yield f"chunk-{i}-{n}\n".encode()

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def slow(self, request: Request) -> Response:
        n = await self._count(request)
        self.entered.set()
        await self.release.wait()
        return JSONResponse({"run": n})

    async def flaky(self, request: Request) -> Response:
        n = await self._count(request)
        if n == 1:
            raise HTTPException(500, "temporary outage")
        return JSONResponse({"run": n})

    async def explicit_500(self, request: Request) -> Response:
        n = await self._count(request)
        return JSONResponse({"run": n}, status_code=500 if n == 1 else 200)

    async def crash(self, request: Request) -> Response:
        n = await self._count(request)
        if n == 1:
            raise RuntimeError("connection pool exhausted")
        return JSONResponse({"run": n})

    async def teapot(self, request: Request) -> Response:
        await self._count(request)
        self.teapots[request.headers["idempotency-key"]] += 1
        n = self.teapots[request.headers["idempotency-key"]]
        return PlainTextResponse(f"teapot {n}", status_code=418 if n == 1 else 200)

    async def slow_fail(self, request: Request) -> Response:
        n = await self._count(request)
        self.entered.set()
        await self.release.wait()
        return JSONResponse({"run": n}, status_code=500 if n == 1 else 200)

    async def volatile(self, request: Request) -> Response:
        await self._count(request)
        response = JSONResponse({"ok": True})
        response.set_cookie("session", "A")
        response.headers["authorization"] = "Bearer leaked"
        response.headers["www-authenticate"] = "Basic realm=x"
        response.headers["x-trace-id"] = "req-1"
        return response

    def sync(self, request: Request) -> Response:  # Starlette runs it in a thread
        self.runs["sync"] += 1
        return PlainTextResponse(f"sync response {self.runs['sync']}", status_code=201)

    def app(self) -> Starlette:
        unsafe = ["POST", "PATCH", "PUT", "DELETE"]
        every = [*unsafe, "GET", "OPTIONS"]  # HEAD comes with GET
        return Starlette(
            routes=[
                Route("/json", self.json, methods=every),
                Route("/echo", self.echo, methods=every),
                Route("/echo/", self.echo, methods=unsafe),
                Route("/kind/{kind}", self.kind, methods=unsafe),
                Route("/stream", self.stream, methods=unsafe),
                Route("/slow", self.slow, methods=unsafe),
                Route("/slow-fail", self.slow_fail, methods=unsafe),
                Route("/flaky", self.flaky, methods=unsafe),
                Route("/explicit-500", self.explicit_500, methods=unsafe),
                Route("/crash", self.crash, methods=unsafe),
                Route("/teapot", self.teapot, methods=unsafe),
                Route("/volatile", self.volatile, methods=unsafe),
                Route("/sync", self.sync, methods=unsafe),
            ]
        )

    async def hold(self, request: Awaitable[httpx.Response]) -> asyncio.Task[httpx.Response]:
        """Start ``request`` (to /slow or /slow-fail); return once it holds its key in
        the handler."""
        self.release.clear()
        self.entered.clear()
        task = asyncio.ensure_future(request)
        await asyncio.wait_for(self.entered.wait(), 30)
        return task


Client = Callable[..., httpx.AsyncClient]


@pytest.fixture
def service(tmp_path: Path) -> Service:
    return Service(tmp_path)


@pytest.fixture
async def client_for(store: Store, service: Service) -> AsyncIterator[Client]:
    """``client_for(**options)``: a client of the service behind IdempotencyMiddleware
    (on the test's store unless ``store=`` is given; ``app=`` replaces the service)."""
    clients: list[httpx.AsyncClient] = []

    def make(*, app: Any = None, raise_app_exceptions: bool = True, **options: Any) -> Any:
        options.setdefault("store", store)
        guarded = IdempotencyMiddleware(app or service.app(), **options)
        transport = httpx.ASGITransport(app=guarded, raise_app_exceptions=raise_app_exceptions)
        client = httpx.AsyncClient(transport=transport, base_url="http://test")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(client_for: Client) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for() as default:
        yield default


def key(value: str = "order-42") -> dict[str, str]:
    return {"Idempotency-Key": value}


# === asgi-idempotency-header (AIH) ====================================================


async def test_aih_no_key_the_response_is_the_apps_untouched(client: httpx.AsyncClient) -> None:
    """AIH test_no_idempotence: without a key the response carries exactly the app's
    headers; nothing is added."""
    response = await client.post("/json")
    again = await client.post("/json")
    assert response.json() == DUMMY
    assert dict(response.headers) == {"content-length": "15", "content-type": "application/json"}
    assert not is_replay(again)


@pytest.mark.parametrize("method", ["post", "patch"])
@pytest.mark.parametrize("endpoint", ["/json", "/kind/bytes"])
async def test_aih_a_json_response_is_replayed_and_marked(
    client: httpx.AsyncClient, service: Service, method: str, endpoint: str
) -> None:
    """AIH test_idempotence_works_for_json_responses (every applicable method): the
    first response has no replay header, the retry has ``Idempotent-Replayed: true``
    and the same JSON."""
    send = getattr(client, method)
    first = await send(endpoint, headers=key())
    again = await send(endpoint, headers=key())
    assert first.json() == again.json() == DUMMY
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert sum(service.runs.values()) == 1


@pytest.mark.parametrize("kind", ["xml", "html", "plain", "file", "bad-type"])
async def test_aih_any_response_is_replayed_byte_for_byte(
    client: httpx.AsyncClient, service: Service, kind: str
) -> None:
    """AIH test_non_json_responses. Differs: AIH stores JSON responses only, so its
    retry of an XML, HTML, plain-text or file response runs again; sloguard stores
    and replays any response, byte for byte (docs: "stored whole")."""
    first = await client.post(f"/kind/{kind}", headers=key())
    again = await client.post(f"/kind/{kind}", headers=key())
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert "idempotent-replayed" not in first.headers
    assert is_replay(again)
    assert service.runs["kind"] == 1


@pytest.mark.parametrize("endpoint", ["/kind/redirect", "/stream"])
async def test_aih_redirects_and_streams_are_replayed_too(
    client: httpx.AsyncClient, service: Service, endpoint: str
) -> None:
    """AIH test_wrong_response_encoding. Differs: AIH cannot store a redirect or a
    streaming response and runs the retry again; sloguard stores both (a stream
    joined, as it was sent) and replays them."""
    first = await client.post(endpoint, headers=key())
    again = await client.post(endpoint, headers=key())
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert is_replay(again)
    assert sum(service.runs.values()) == 1


@pytest.mark.parametrize(
    ("methods", "inapplicable"),
    [
        (None, ["GET", "DELETE", "OPTIONS", "HEAD", "PUT"]),
        (["POST"], ["GET", "DELETE", "OPTIONS", "HEAD", "PUT", "PATCH"]),
        (["POST", "PATCH", "PUT"], ["GET", "DELETE", "OPTIONS", "HEAD"]),
    ],
    ids=["default", "post-only", "with-put"],
)
async def test_aih_methods_not_covered_pass_through_with_a_key(
    client_for: Client, service: Service, methods: list[str] | None, inapplicable: list[str]
) -> None:
    """AIH test_idempotent_method and its three method configurations: a key on a
    method the middleware does not cover is ignored (the handler runs every time,
    nothing is marked); a covered one replays."""
    options = {} if methods is None else {"methods": methods}
    async with client_for(**options) as client:
        for method in inapplicable:
            responses = [await client.request(method, "/json", headers=key(method)) for _ in "ab"]
            assert not any(is_replay(r) for r in responses), method
        assert service.runs["json"] == 2 * len(inapplicable)
        for method in methods or ["POST", "PATCH"]:
            await client.request(method, "/json", headers=key(f"covered-{method}"))
            again = await client.request(method, "/json", headers=key(f"covered-{method}"))
            assert is_replay(again), method


async def test_aih_two_concurrent_requests_one_runs_one_gets_409(
    client: httpx.AsyncClient, service: Service
) -> None:
    """AIH test_multiple_concurrent_requests: two requests with one key at once; one
    runs, the other is told it is in flight (409)."""
    first = await service.hold(client.post("/slow", headers=key()))
    second = await client.post("/slow", headers=key())
    service.release.set()
    assert (await first).status_code == 200
    assert_problem(second, 409, "idempotency_request_in_flight")
    assert service.runs["slow"] == 1


@pytest.mark.parametrize("value", ["test", "123", "s" * 20, "0b5e1c3a9f1e4d2b8c7a6f5e4d3c2b1u"])
async def test_aih_keys_need_not_be_uuids(
    client: httpx.AsyncClient, service: Service, value: str
) -> None:
    """AIH test_bad_header_formatting / test_uuid_formatting. Differs: AIH can require
    v4 UUIDs (422 otherwise); sloguard takes any 1-255 printable ASCII key, as the
    draft does, and refuses only what is not one (400, below)."""
    first = await client.post("/json", headers=key(value))
    again = await client.post("/json", headers=key(value))
    assert first.status_code == 201
    assert is_replay(again)
    assert service.runs["json"] == 1


@pytest.mark.parametrize("raw", [b"", b"a b\x01", b"\xf1", b"x" * 256, b'"open'])
async def test_aih_a_key_that_is_not_one_is_a_400(
    client: httpx.AsyncClient, service: Service, raw: bytes
) -> None:
    """AIH test_bad_header_formatting (the refusal half). Differs in status: a
    malformed key is a 400 problem (draft), not AIH's 422 (which sloguard keeps for
    a key reused on another request)."""
    response = await client.post("/json", headers=httpx.Headers([(b"Idempotency-Key", raw)]))
    assert_problem(response, 400, "idempotency_key_invalid")
    assert service.runs["json"] == 0


async def test_aih_a_stored_response_expires_after_its_ttl(
    backend: Backend, client_for: Client, service: Service
) -> None:
    """AIH test_backend (expiry); FIK test_memory_backend_ttl_expiration: once the
    store's TTL has passed, the key is free and the request runs again."""
    async with client_for(store=backend.make_store(ttl_seconds=60)) as client:
        first = await client.post("/echo", headers=key())
        await backend.travel(30)
        replay = await client.post("/echo", headers=key())
        await backend.travel(31)
        after = await client.post("/echo", headers=key())
    assert is_replay(replay)
    assert not is_replay(after)
    assert (first.json()["run"], after.json()["run"]) == (1, 2)


# === fastapi-idempotency (FI) =========================================================


async def test_fi_a_secret_keys_the_digests_and_replay_still_works(
    client_for: Client, service: Service
) -> None:
    """FI test_hmac_secret_caches_response: with a per-deployment secret the
    fingerprints are keyed, and a retry replays as without one."""
    async with client_for(fingerprint_secret=b"production-secret") as client:
        first = await client.post("/echo", headers=key("k"), content=b"hi")
        again = await client.post("/echo", headers=key("k"), content=b"hi")
    assert first.status_code == 200
    assert is_replay(again)
    assert service.runs["echo"] == 1


async def test_fi_two_secrets_never_replay_each_others_responses(
    client_for: Client, service: Service
) -> None:
    """FI test_hmac_different_secret_isolates_fingerprint: two deployments with
    different secrets share one store; the same key and body is never a replay
    across them. Anonymous requests (no principal) see FI's mismatch, 422. Differs
    with a credential: sloguard keys the principal digest in the store key too, so
    the other deployment never finds the key at all, and the request simply runs."""
    bearer = {"Authorization": "Bearer one-client"}
    async with client_for(fingerprint_secret=b"secret-A") as one:
        anonymous = await one.post("/echo", headers=key("k"), content=b"body")
        identified = await one.post("/echo", headers={**key("k"), **bearer}, content=b"body")
    async with client_for(fingerprint_secret=b"secret-B") as two:
        anonymous_two = await two.post("/echo", headers=key("k"), content=b"body")
        identified_two = await two.post("/echo", headers={**key("k"), **bearer}, content=b"body")
    assert (anonymous.status_code, identified.status_code) == (200, 200)
    assert_problem(anonymous_two, 422, "idempotency_key_reused")
    assert identified_two.status_code == 200
    assert not is_replay(identified_two)
    assert service.runs["echo"] == 3


@pytest.mark.parametrize("method", ["GET", "OPTIONS", "HEAD"])
async def test_fi_safe_methods_pass_through_even_when_keys_are_required(
    client_for: Client, method: str
) -> None:
    """FI test_get_passes_through_to_handler, test_options_passes_through_to_handler,
    test_require_key_true_safe_methods_pass_through."""
    for required in (False, True):
        async with client_for(require_key=required) as client:
            response = await client.request(method, "/json")
        assert response.status_code == 201


async def test_fi_without_a_key_a_post_runs_every_time(
    client: httpx.AsyncClient, service: Service
) -> None:
    """FI test_post_without_key_passes_through_to_handler,
    test_require_key_default_off_missing_key_passes_through."""
    responses = [await client.post("/echo", content=b"hello") for _ in range(2)]
    assert [r.json()["run"] for r in responses] == [1, 2]
    assert responses[0].json()["head"] == "hello"


async def test_fi_a_required_key_that_is_missing_is_a_400_naming_the_method(
    client_for: Client, service: Service
) -> None:
    """FI test_require_key_true_missing_key_returns_400,
    test_require_key_true_400_message_quotes_actual_method."""
    async with client_for(require_key=True, methods=["POST", "PATCH", "DELETE"]) as client:
        for method in ("POST", "PATCH", "DELETE"):
            response = await client.request(method, "/echo")
            assert method in assert_problem(response, 400, "idempotency_key_missing")["detail"]
    assert service.runs["echo"] == 0


async def test_fi_a_required_key_that_is_present_runs_then_replays(
    client_for: Client, service: Service
) -> None:
    """FI test_require_key_true_present_key_runs_normal_flow."""
    async with client_for(require_key=True) as client:
        first = await client.post("/echo", headers=key("abc"), content=b"hi")
        again = await client.post("/echo", headers=key("abc"), content=b"hi")
    assert first.status_code == 200
    assert is_replay(again)
    assert service.runs["echo"] == 1


async def test_fi_an_empty_key_is_invalid_not_missing(client_for: Client, service: Service) -> None:
    """FI test_require_key_true_empty_header_falls_to_invalid_not_missing,
    test_empty_key_returns_400: an empty header is a malformed key, not a missing one."""
    for required in (False, True):
        async with client_for(require_key=required) as client:
            response = await client.post("/echo", headers=key(""), content=b"x")
        assert_problem(response, 400, "idempotency_key_invalid")
    assert service.runs["echo"] == 0


@pytest.mark.parametrize("raw", [b"a" * 256, b"\xf1"], ids=["256-chars", "non-ascii"])
async def test_fi_a_too_long_or_non_ascii_key_is_a_400(
    client: httpx.AsyncClient, service: Service, raw: bytes
) -> None:
    """FI test_too_long_key_returns_400, test_non_ascii_key_returns_400."""
    headers = httpx.Headers([(b"Idempotency-Key", raw)])
    response = await client.post("/echo", headers=headers, content=b"x")
    assert_problem(response, 400, "idempotency_key_invalid")
    assert service.runs["echo"] == 0


async def test_fi_the_first_request_runs_and_its_response_is_replayed(
    client: httpx.AsyncClient, service: Service
) -> None:
    """FI test_first_post_runs_handler_and_returns_response,
    test_first_post_stores_completed_record,
    test_replay_returns_cached_response_with_replayed_header."""
    first = await client.post("/echo", headers=key("abc"), content=b"hello")
    again = await client.post("/echo", headers=key("abc"), content=b"hello")
    assert first.status_code == again.status_code == 200
    assert first.json()["head"] == "hello"
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert service.runs["echo"] == 1


async def test_fi_a_replay_never_carries_the_first_clients_cookie(
    client: httpx.AsyncClient,
) -> None:
    """FI test_replay_strips_volatile_headers_but_keeps_safe_ones. The first client
    gets every header; the replay has no ``Set-Cookie`` and keeps the safe headers.
    Differs: FI also strips ``Authorization`` and ``WWW-Authenticate`` response
    headers; sloguard replays them, since a replay only ever goes to the principal
    whose request produced them (keys are scoped per principal)."""
    first = await client.post("/volatile", headers=key("abc"), content=b"hi")
    again = await client.post("/volatile", headers=key("abc"), content=b"hi")
    assert first.headers["set-cookie"].startswith("session=A")
    assert "set-cookie" not in again.headers
    assert is_replay(again)
    for name in ("content-type", "x-trace-id", "authorization", "www-authenticate"):
        assert again.headers[name] == first.headers[name]


async def test_fi_the_same_key_with_another_body_is_a_422(
    client: httpx.AsyncClient, service: Service
) -> None:
    """FI test_same_key_different_body_returns_422; its store conformance tests
    test_acquire_different_fingerprint_returns_mismatch and
    test_acquire_mismatch_after_complete (a mismatch, never a replay, whether the
    first is still running or done)."""
    running = await service.hold(client.post("/slow", headers=key(), content=b"first"))
    while_running = await client.post("/slow", headers=key(), content=b"second")
    service.release.set()
    await running
    after = await client.post("/slow", headers=key(), content=b"second")
    for response in (while_running, after):
        assert_problem(response, 422, "idempotency_key_reused")
    assert service.runs["slow"] == 1


@pytest.mark.parametrize("path", ["/explicit-500", "/flaky"], ids=["response", "http-exception"])
async def test_fi_a_5xx_releases_the_key_so_the_retry_runs(
    client: httpx.AsyncClient, service: Service, path: str
) -> None:
    """FI test_5xx_response_releases_slot, test_5xx_then_retry_runs_handler_again;
    FIK test_middleware_server_error_releases_lock,
    test_middleware_explicit_500_response_releases_lock."""
    first = await client.post(path, headers=key("x"), content=b"a")
    retry = await client.post(path, headers=key("x"), content=b"a")
    assert (first.status_code, retry.status_code) == (500, 200)
    assert retry.json()["run"] == 2
    assert not is_replay(retry)


async def test_fi_a_released_key_takes_another_request(
    client: httpx.AsyncClient, service: Service
) -> None:
    """FI test_acquire_after_release_returns_created (store conformance); FIK
    test_memory_backend_release_lock: once a 5xx released the key, it is free, even
    for a request with another body."""
    await client.post("/explicit-500", headers=key("x"), content=b"a")
    other = await client.post("/explicit-500", headers=key("x"), content=b"b")
    assert other.status_code == 200


async def test_fi_a_handler_exception_releases_the_key(
    client_for: Client, service: Service
) -> None:
    """FI test_handler_exception_releases_slot; FIK
    test_middleware_unhandled_exception_releases_lock: the client gets a 500, and
    the retry with the same key runs and succeeds."""
    async with client_for(raise_app_exceptions=False) as client:
        first = await client.post("/crash", headers=key("x"), content=b"a")
        retry = await client.post("/crash", headers=key("x"), content=b"a")
    assert first.status_code == 500
    assert retry.json() == {"run": 2}


async def test_fi_a_keyed_body_over_the_limit_is_a_413(
    client_for: Client, service: Service
) -> None:
    """FI test_oversized_body_passes_through_without_idempotency. Differs: FI runs a
    keyed request whose Content-Length is over its limit without idempotency;
    sloguard answers 413 without running it (issue 24: a keyed request runs
    idempotently or not at all)."""
    async with client_for(max_request_bytes=100) as client:
        response = await client.post("/echo", headers=key("x"), content=b"a" * 200)
    assert_problem(response, 413, "idempotency_request_too_large")
    assert service.runs["echo"] == 0


@pytest.mark.parametrize(
    "parts", [[b"a" * 60, b"b" * 60], [b"a" * 200]], ids=["two-chunks", "one-chunk"]
)
async def test_fi_a_streamed_body_over_the_limit_is_a_413(
    client_for: Client, service: Service, parts: list[bytes]
) -> None:
    """FI test_chunked_body_overflow_returns_413, test_single_oversized_chunk_returns_413
    (no Content-Length: the limit holds on what arrives)."""

    async def chunks() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async with client_for(max_request_bytes=100) as client:
        response = await client.post("/echo", headers=key("x"), content=chunks())
    assert_problem(response, 413, "idempotency_request_too_large")
    assert service.runs["echo"] == 0


async def test_fi_a_body_of_exactly_the_limit_runs_and_is_stored(
    client_for: Client, service: Service
) -> None:
    """FI test_chunked_body_at_exact_limit_passes, test_undersized_body_uses_idempotency."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"a" * 100

    async with client_for(max_request_bytes=100) as client:
        first = await client.post("/echo", headers=key("x"), content=chunks())
        small = await client.post("/echo", headers=key("y"), content=b"a" * 50)
        small_again = await client.post("/echo", headers=key("y"), content=b"a" * 50)
    assert first.json()["size"] == 100
    assert is_replay(small_again)
    assert small.json() == small_again.json()


class _Unstorable:
    """Makes a store whose writes of responses fail (its claims work)."""

    @staticmethod
    def make(backend: Backend) -> Store:
        if isinstance(backend, MemoryBackend):

            class FailingMemory(MemoryStore):
                async def complete(self, key: str, token: int, response: StoredResponse) -> bool:
                    raise ConnectionError("store went away")

            return FailingMemory(clock=backend.clock)

        class FailingRedis(RedisStore):
            async def complete(self, key: str, token: int, response: StoredResponse) -> bool:
                raise ConnectionError("store went away")

        store = FailingRedis(backend.keys.url, prefix=backend.keys.prefix, timeout_seconds=5)
        backend.stores.append(store)
        return store


async def test_fi_a_response_the_store_cannot_keep_still_reaches_the_client(
    backend: Backend, client_for: Client, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """FI test_store_error_on_complete_adds_idempotency_stored_false_header,
    test_store_error_logs_warning_with_hashed_key. Differs: FI buffers the whole
    response and can add ``Idempotency-Stored: false``; sloguard stores as the last
    chunk leaves, after the headers, so it releases the key at once (the retry runs,
    rather than meeting 409s) and logs a digest of the key, never the key."""
    with caplog.at_level(logging.WARNING, logger="sloguard.idempotency"):
        async with client_for(store=_Unstorable.make(backend)) as client:
            first = await client.post("/echo", headers=key("order-user-pii-9999"), content=b"a")
            retry = await client.post("/echo", headers=key("order-user-pii-9999"), content=b"a")
    assert (first.json()["run"], retry.json()["run"]) == (1, 2)
    assert Fingerprinter().log_id("order-user-pii-9999") in caplog.text
    assert "order-user-pii-9999" not in caplog.text


async def test_fi_an_orphaned_lease_frees_its_key_after_the_lease(
    backend: Backend, store: Store, client: httpx.AsyncClient, service: Service
) -> None:
    """FI test_in_flight_ttl_expiry_reclaims_orphaned_slot (the crash half; a live
    slow handler keeps its lease renewed, test_conformance.py): a lease whose
    process died holds the key until it expires, then the retry runs."""
    fingerprint = Fingerprinter().request("POST", "/echo", b"", [b"a"])
    await store.claim(store_key("", "x"), fingerprint, 30)  # a request that never finishes
    blocked = await client.post("/echo", headers=key("x"), content=b"a")
    await backend.travel(31)
    retry = await client.post("/echo", headers=key("x"), content=b"a")
    assert_problem(blocked, 409, "idempotency_request_in_flight")
    assert retry.json()["run"] == 1


async def test_fi_a_duplicate_while_the_first_runs_is_a_409(
    client: httpx.AsyncClient, service: Service
) -> None:
    """FI test_concurrent_request_with_same_key_returns_409,
    test_acquire_duplicate_same_fingerprint_returns_in_flight."""
    first = await service.hold(client.post("/slow", headers=key("x"), content=b"a"))
    second = await client.post("/slow", headers=key("x"), content=b"a")
    service.release.set()
    assert (await first).status_code == 200
    assert_problem(second, 409, "idempotency_request_in_flight")


def _tenant(scope: Scope) -> str:
    return dict(scope["headers"])[b"x-tenant-id"].decode()


async def test_fi_a_principal_keeps_tenants_apart_and_replays_within_one(
    client_for: Client, service: Service
) -> None:
    """FI test_scope_factory_different_scope_does_not_replay,
    test_scope_factory_same_scope_replays, test_scope_factory_orthogonal_to_fingerprint:
    sloguard's ``principal=`` is FI's scope factory."""
    async with client_for(principal=_tenant) as client:

        async def post(tenant: str, body: bytes) -> httpx.Response:
            headers = {**key("abc"), "X-Tenant-Id": tenant}
            return await client.post("/echo", headers=headers, content=body)

        a = await post("tenant-a", b"hi")
        b = await post("tenant-b", b"hi")
        a_again = await post("tenant-a", b"hi")
        a_other_body = await post("tenant-a", b"other")
        b_other_body = await post("tenant-b", b"other")
    assert not is_replay(b)
    assert (a.json()["run"], b.json()["run"]) == (1, 2)
    assert is_replay(a_again)
    assert_problem(a_other_body, 422, "idempotency_key_reused")
    assert_problem(b_other_body, 422, "idempotency_key_reused")
    assert service.runs["echo"] == 2


async def test_fi_a_principal_that_fails_runs_nothing(client_for: Client, service: Service) -> None:
    """FI test_scope_factory_raising_returns_500_without_handler. Differs in status:
    sloguard answers 503 ``idempotency_principal_unavailable`` (nothing ran; a retry
    is safe), never a 500."""
    async with client_for(principal=_tenant) as client:
        response = await client.post("/echo", headers=key("abc"), content=b"hi")
    assert_problem(response, 503, "idempotency_principal_unavailable")
    assert service.runs["echo"] == 0


async def test_fi_an_empty_principal_is_the_anonymous_one(
    client_for: Client, service: Service
) -> None:
    """FI test_scope_factory_empty_bytes_returns_400_without_handler. Differs: FI
    refuses an empty scope (400); for sloguard an empty principal is the anonymous
    principal, the one a request without credentials has (docs: "" for a request
    with no credential), so the request runs, scoped with every anonymous request."""
    async with client_for(principal=lambda scope: "") as client:
        first = await client.post("/echo", headers=key("abc"), content=b"hi")
    async with client_for() as anonymous:
        same_owner = await anonymous.post("/echo", headers=key("abc"), content=b"hi")
    assert first.status_code == 200
    assert is_replay(same_owner)
    assert service.runs["echo"] == 1


async def test_fi_a_streamed_response_is_stored_and_replayed(
    client: httpx.AsyncClient, service: Service
) -> None:
    """FI test_streaming_response_flows_through_with_stored_false_header,
    test_streaming_response_releases_slot_so_retry_runs_handler_again,
    test_starlette_streaming_response_passes_through,
    test_non_streaming_response_still_caches_and_replays; FIK
    test_streaming_response_buffering_and_replay (which sloguard shares). Differs: FI passes a
    stream through unstored (``Idempotency-Stored: false``) and runs the retry
    again; sloguard forwards each chunk as it comes, keeps a copy (up to
    ``max_body_bytes``) and replays the whole body."""
    first = await client.post("/stream", headers=key("stream-1"), content=b"req")
    again = await client.post("/stream", headers=key("stream-1"), content=b"req")
    assert first.text == "chunk-0-1\nchunk-1-1\nchunk-2-1\nchunk-3-1\n"
    assert "idempotency-stored" not in first.headers
    assert again.content == first.content
    assert is_replay(again)
    assert service.runs["stream"] == 1


async def test_fi_a_stream_that_breaks_off_releases_the_key(store: Store) -> None:
    """FI test_streaming_app_raises_mid_stream_releases_slot: the app raises after
    its first chunk; nothing is stored, and the retry runs."""
    runs = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal runs
        runs += 1
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        if runs == 1:
            raise RuntimeError("boom")
        await send({"type": "http.response.body", "body": b"b"})

    middleware = IdempotencyMiddleware(app, store=store)
    scope = http_scope(headers=[(b"idempotency-key", b"k-flaky")])
    with pytest.raises(RuntimeError, match="boom"):
        await call(middleware, scope)
    retry = await call(middleware, scope)
    assert runs == 2
    assert b"".join(m.get("body", b"") for m in retry if "body" in m) == b"ab"


async def test_fi_an_app_that_never_answers_releases_the_key(store: Store) -> None:
    """FI test_handler_returns_without_emitting_start_yields_500. Differs: the
    middleware sends nothing in the app's place (the server answers 500, as for any
    app that returns without a response); the key is released, so the retry runs."""
    runs = 0

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal runs
        runs += 1
        await receive()

    middleware = IdempotencyMiddleware(silent, store=store)
    scope = http_scope(headers=[(b"idempotency-key", b"k-silent")])
    assert await call(middleware, scope) == []
    assert await call(middleware, scope) == []
    assert runs == 2


async def test_fi_the_raw_key_never_reaches_a_log_and_the_common_paths_log_nothing(
    client_for: Client, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """FI test_mismatch_logs_warning_with_hashed_key, test_in_flight_logs_info_with_hashed_key,
    test_handler_exception_logs_with_hashed_key_no_raw_leak,
    test_created_and_replay_do_not_log, test_log_context_never_includes_raw_key: a
    miss and a replay log nothing; no record of a mismatch, a 409 or a failing
    handler holds the key (sloguard logs a 12-hex digest where it logs one)."""
    secret_key = "order-user-pii-9999"
    async with client_for(raise_app_exceptions=False) as client:
        with caplog.at_level(logging.DEBUG, logger="sloguard"):
            await client.post("/echo", headers=key("kk"), content=b"a")
            await client.post("/echo", headers=key("kk"), content=b"a")
            quiet = list(caplog.records)
            await client.post("/echo", headers=key(secret_key), content=b"a")
            await client.post("/echo", headers=key(secret_key), content=b"b")  # 422
            held = await service.hold(client.post("/slow", headers=key(secret_key + "-slow")))
            await client.post("/slow", headers=key(secret_key + "-slow"))  # 409
            service.release.set()
            await held
            await client.post("/crash", headers=key(secret_key + "-crash"))  # 500
    assert quiet == []
    for record in caplog.records:
        assert secret_key not in record.getMessage()
        assert secret_key not in str(record.__dict__)


# === fastapi-idempotency-key (FIK) ====================================================


async def test_fik_a_json_handler_runs_once_and_its_retry_is_marked(
    client_for: Client, service: Service
) -> None:
    """FIK test_middleware_replays_cached_response. Its replay header is
    ``Idempotency-Replayed``; sloguard's are the draft's ``Idempotent-Replayed`` and
    ``X-Idempotent-Replay``, and ``replay_headers`` names others (here FIK's)."""
    async with client_for(replay_headers=["Idempotency-Replayed"]) as client:
        first = await client.post("/echo", headers=key("key_1"), json={"name": "Book"})
        again = await client.post("/echo", headers=key("key_1"), json={"name": "Book"})
    assert "idempotency-replayed" not in first.headers
    assert again.headers["idempotency-replayed"] == "true"
    assert again.json() == first.json()
    assert service.runs["echo"] == 1


async def test_fik_another_payload_under_the_key_is_a_422_that_says_why(
    client: httpx.AsyncClient,
) -> None:
    """FIK test_middleware_payload_mismatch_returns_422, test_decorator_conflict_and_mismatch."""
    await client.post("/echo", headers=key("key_mismatch"), json={"name": "First"})
    response = await client.post("/echo", headers=key("key_mismatch"), json={"name": "Other"})
    problem = assert_problem(response, 422, "idempotency_key_reused")
    assert "different request" in problem["detail"]


async def test_fik_a_duplicate_in_progress_is_a_409_that_says_why(
    client: httpx.AsyncClient, service: Service
) -> None:
    """FIK test_middleware_conflict_returns_409."""
    first = await service.hold(client.post("/slow", headers=key("concurrent_key"), json={}))
    second = await client.post("/slow", headers=key("concurrent_key"), json={})
    service.release.set()
    assert (await first).status_code == 200
    problem = assert_problem(second, 409, "idempotency_request_in_flight")
    assert "still being processed" in problem["detail"]


async def test_fik_get_with_a_key_and_post_without_one_pass_through(
    client: httpx.AsyncClient, service: Service
) -> None:
    """FIK test_middleware_passthrough_safe_methods_and_missing_key."""
    gets = [await client.get("/json", headers=key("get_key")) for _ in "ab"]
    posts = [await client.post("/json") for _ in "ab"]
    assert all(r.status_code == 201 and not is_replay(r) for r in gets + posts)
    assert service.runs["json"] == 4


async def test_fik_a_required_key(client_for: Client) -> None:
    """FIK test_middleware_required_flag, test_decorator_required_missing_header."""
    async with client_for(require_key=True) as client:
        missing = await client.post("/json", json={})
        present = await client.post("/json", json={}, headers=key("valid_key"))
    assert "Idempotency-Key" in assert_problem(missing, 400, "idempotency_key_missing")["detail"]
    assert present.status_code == 201


async def test_fik_a_large_payload_replays_and_a_one_byte_change_is_a_422(
    client: httpx.AsyncClient, service: Service
) -> None:
    """FIK test_large_payload_handling_and_mismatch: a 1 MiB body is fingerprinted
    whole: the same bytes replay, one byte more is another request."""
    data = b"x" * (1024 * 1024)
    headers = {**key("large_key_1"), "Content-Type": "application/octet-stream"}
    first = await client.post("/echo", content=data, headers=headers)
    again = await client.post("/echo", content=data, headers=headers)
    altered = await client.post("/echo", content=data + b"y", headers=headers)
    assert first.json()["size"] == 1024 * 1024
    assert is_replay(again)
    assert again.json() == first.json()
    assert_problem(altered, 422, "idempotency_key_reused")
    assert service.runs["echo"] == 1


async def test_fik_custom_key_and_replay_header_names(client_for: Client) -> None:
    """FIK test_decorator_custom_header_names."""
    options = {"key_header": "X-Custom-Idempotency", "replay_headers": ["X-Custom-Replayed"]}
    async with client_for(**options) as client:
        headers = {"X-Custom-Idempotency": "custom_key_100"}
        first = await client.post("/echo", json={"tag": "prod"}, headers=headers)
        again = await client.post("/echo", json={"tag": "prod"}, headers=headers)
        standard = await client.post("/echo", json={"tag": "prod"}, headers=key("k"))
        standard_again = await client.post("/echo", json={"tag": "prod"}, headers=key("k"))
    assert "x-custom-replayed" not in first.headers
    assert again.headers["x-custom-replayed"] == "true"
    assert not is_replay(standard_again)  # the standard header is no key here
    assert standard_again.json()["run"] == standard.json()["run"] + 1


async def test_fik_which_statuses_are_results_is_configurable(
    client_for: Client, service: Service
) -> None:
    """FIK test_decorator_custom_cache_statuses. Differs in the default: a 4xx such as
    418 is the request's result in sloguard, stored and replayed (only 5xx and 429
    are "try later"); ``released_statuses`` makes 418 release the key, as FIK's
    ``cache_statuses=(200, 201)`` does."""
    async with client_for() as client:
        stored = await client.post("/teapot", headers=key("teapot_key"))
        replayed = await client.post("/teapot", headers=key("teapot_key"))
    async with client_for(released_statuses={418, 429}) as client:
        released = await client.post("/teapot", headers=key("teapot_key_2"))
        retried = await client.post("/teapot", headers=key("teapot_key_2"))
    assert (stored.status_code, replayed.status_code) == (418, 418)
    assert is_replay(replayed)
    assert (released.status_code, retried.status_code) == (418, 200)
    assert retried.text == "teapot 2"


async def test_fik_a_sync_handler_is_replayed_too(
    client: httpx.AsyncClient, service: Service
) -> None:
    """FIK test_decorator_sync_endpoints (a plain function endpoint, run in a thread)."""
    first = await client.post("/sync", headers=key("sync_resp_k"))
    again = await client.post("/sync", headers=key("sync_resp_k"))
    assert (first.status_code, first.text) == (201, "sync response 1")
    assert (again.status_code, again.text) == (201, "sync response 1")
    assert is_replay(again)


async def _ten_at_once(
    client: httpx.AsyncClient, service: Service, *, waiting: bool
) -> list[httpx.Response]:
    """Ten requests with one key at once. The one that runs is held in its handler
    until the nine others have their answers (409s), or, when they wait
    (``waiting``), until they have had the time to begin waiting: any of them that
    had not would claim after it finished and replay, as a waiter does."""
    service.release.clear()
    service.entered.clear()
    tasks = [
        asyncio.ensure_future(client.post("/slow", headers=key("k10"), json={"item": "laptop"}))
        for _ in range(10)
    ]
    if waiting:
        await asyncio.wait_for(service.entered.wait(), 30)
        await asyncio.sleep(0.1)
    else:
        pending: set[asyncio.Future[httpx.Response]] = set(tasks)
        while len(pending) > 1:
            done, pending = await asyncio.wait(
                pending, timeout=30, return_when=asyncio.FIRST_COMPLETED
            )
            assert done, "the duplicates got no answer in 30 s"
    service.release.set()
    return list(await asyncio.gather(*tasks))


async def test_fik_ten_at_once_one_runs_nine_get_409_then_it_replays(
    client: httpx.AsyncClient, service: Service
) -> None:
    """FIK test_concurrency_memory_backend_10_requests (and its SQLite twin, here
    Redis): exactly one of ten runs, nine get 409, the next request replays."""
    responses = await _ten_at_once(client, service, waiting=False)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 409: 9}
    replay = await client.post("/slow", headers=key("k10"), json={"item": "laptop"})
    assert is_replay(replay)
    assert replay.json() == next(r.json() for r in responses if r.status_code == 200)
    assert service.runs["slow"] == 1


async def test_fik_ten_at_once_waiting_all_get_the_one_response(
    client_for: Client, service: Service
) -> None:
    """FIK test_concurrency_with_timeout_waiting_replays_all, test_memory_backend_timeout_wait:
    with ``wait_seconds`` the nine wait for the first and replay its response."""
    async with client_for(wait_seconds=30) as client:
        responses = await _ten_at_once(client, service, waiting=True)
    assert [r.status_code for r in responses] == [200] * 10
    assert sum(is_replay(r) for r in responses) == 9
    assert len({r.content for r in responses}) == 1
    assert service.runs["slow"] == 1


async def test_fik_replicas_sharing_a_store_run_a_key_once(
    backend: Backend, store: Store, service: Service
) -> None:
    """FI test_acquire_serializes_across_processes; FIK's concurrency tests: replicas
    (one middleware each, each with its own store client on Redis; one process's
    store shared, in memory) racing on one key: exactly one runs."""
    replicas = []
    for _ in range(5):
        own = store if isinstance(backend, MemoryBackend) else backend.make_store()
        app = IdempotencyMiddleware(service.app(), store=own)
        transport = httpx.ASGITransport(app=app)
        replicas.append(httpx.AsyncClient(transport=transport, base_url="http://test"))
    service.release.clear()
    sends = [
        asyncio.ensure_future(c.post("/slow", headers=key("race"), content=b"x")) for c in replicas
    ]
    pending: set[asyncio.Future[httpx.Response]] = set(sends)
    while len(pending) > 1:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED, timeout=30)
        assert done, "the duplicates got no answer in 30 s"
    service.release.set()
    responses = await asyncio.gather(*sends)
    for replica in replicas:
        await replica.aclose()
    assert Counter(r.status_code for r in responses) == {200: 1, 409: 4}
    assert service.runs["slow"] == 1


async def test_fik_a_replay_has_a_content_length(client: httpx.AsyncClient) -> None:
    """FIK test_middleware_filters_existing_replay_header_and_content_length (the
    Content-Length half)."""
    await client.post("/echo", headers=key("filter_k"))
    again = await client.post("/echo", headers=key("filter_k"))
    assert int(again.headers["content-length"]) == len(again.content)


async def test_fik_an_apps_own_replay_header_is_not_replayed_beside_ours(store: Store) -> None:
    """FIK test_middleware_filters_existing_replay_header_and_content_length (the
    replay-header half): the replay says ``Idempotent-Replayed: true`` once, whatever
    the app itself sent."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        headers = [(b"idempotent-replayed", b"false"), (b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"payload"})

    middleware = IdempotencyMiddleware(app, store=store)
    scope = http_scope(headers=[(b"idempotency-key", b"filter_k")])
    await call(middleware, scope)
    replay = await call(middleware, scope)
    start = next(m for m in replay if m["type"] == "http.response.start")
    assert [v for n, v in start["headers"] if n == b"idempotent-replayed"] == [b"true"]


@pytest.mark.parametrize(
    ("first", "second"),
    [("/echo", "/echo/"), ("/echo?a=1&b=2", "/echo?b=2&a=1")],
    ids=["trailing-slash", "query-order"],
)
async def test_fik_a_key_belongs_to_one_exact_operation(
    client: httpx.AsyncClient, service: Service, first: str, second: str
) -> None:
    """FIK test_fingerprint_path_trailing_slash_normalization,
    test_fingerprint_query_string_order_independent. Differs: FIK normalises the
    path and the query's order before fingerprinting; sloguard fingerprints them as
    sent (the draft leaves it to the server), so another spelling of the path or
    query is another request under the same key: 422, nothing runs."""
    await client.post(first, headers=key("k"), content=b"{}")
    response = await client.post(second, headers=key("k"), content=b"{}")
    assert_problem(response, 422, "idempotency_key_reused")
    assert service.runs["echo"] == 1


async def test_fik_other_request_headers_do_not_make_another_request(
    client: httpx.AsyncClient, service: Service
) -> None:
    """FIK test_fingerprint_headers_canonicalization. Differs: FIK can fingerprint
    chosen headers; sloguard's fingerprint is method, path, query and body, and
    identity goes in the principal (``Authorization``, or ``principal=``): a retry
    whose other headers changed (a new trace id, another X-Tenant) replays."""
    await client.post("/echo", headers={**key("k"), "X-Tenant": "Alpha"}, content=b"{}")
    again = await client.post("/echo", headers={**key("k"), "X-Tenant": "Beta"}, content=b"{}")
    other_owner = await client.post(
        "/echo", headers={**key("k"), "Authorization": "Bearer 123"}, content=b"{}"
    )
    assert is_replay(again)
    assert not is_replay(other_owner)  # another principal: its own key
    assert service.runs["echo"] == 2


async def test_fik_a_full_store_evicts_by_its_own_rule(
    backend: Backend, client_for: Client, service: Service
) -> None:
    """FIK test_memory_backend_lru_eviction: with room for two responses, a third
    evicts one. ``MemoryStore(max_entries=2)`` evicts the least recently used (a
    replay counts as a use), as FIK does. Differs on Redis: Redis has no LRU of its
    own keys; ``RedisStore(max_entries_per_principal=2)`` deletes the principal's
    oldest stored response."""
    if isinstance(backend, MemoryBackend):
        bounded = backend.make_store(max_entries=2, principal_share=1)
        evicted, kept = "k2", "k1"
    else:
        bounded = backend.make_store(max_entries_per_principal=2)
        evicted, kept = "k1", "k2"
    async with client_for(store=bounded) as client:
        for name in ("k1", "k2"):
            await client.post("/echo", headers=key(name))
        await client.post("/echo", headers=key("k1"))  # a replay: k1 was used last
        await client.post("/echo", headers=key("k3"))
        kept_again = await client.post("/echo", headers=key(kept))
        evicted_again = await client.post("/echo", headers=key(evicted))
    assert is_replay(kept_again)
    assert not is_replay(evicted_again)
    assert service.runs["echo"] == 4


async def test_fik_a_waiting_duplicate_gives_up_with_a_409(
    client_for: Client, service: Service
) -> None:
    """FIK test_backend_timeout_expiry: a duplicate waits up to ``wait_seconds`` for
    the first, then gets 409 without running."""
    async with client_for(wait_seconds=0.2) as client:
        first = await service.hold(client.post("/slow", headers=key("held_k")))
        second = await client.post("/slow", headers=key("held_k"))
        service.release.set()
        await first
    assert_problem(second, 409, "idempotency_request_in_flight")
    assert service.runs["slow"] == 1


async def test_fik_a_waiter_runs_when_the_first_gives_the_key_up(
    client_for: Client, service: Service
) -> None:
    """FIK test_backend_timeout_unlock_acquisition: while a duplicate waits, the first
    ends in a 5xx, which releases its key: the waiter takes the key and runs."""
    async with client_for(wait_seconds=30) as client:
        first = await service.hold(client.post("/slow-fail", headers=key("release_later_k")))
        waiting = asyncio.ensure_future(client.post("/slow-fail", headers=key("release_later_k")))
        await asyncio.sleep(0.1)  # time to begin waiting (one that had not would run anyway)
        service.release.set()
        failed, second = await first, await waiting
    assert (failed.status_code, second.status_code) == (500, 200)
    assert not is_replay(second)
    assert second.json() == {"run": 2}
