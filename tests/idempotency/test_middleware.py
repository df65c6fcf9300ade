"""IdempotencyMiddleware, through its public behaviour: what a client sees."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from sloguard import (
    ConfigurationError,
    IdempotencyMiddleware,
    MemoryStore,
    Store,
    StoreUnavailable,
)
from sloguard.http import Exchange
from sloguard.idempotency import Claim, ClaimStatus, IdempotencyGate, Lease, StoredResponse
from sloguard.idempotency.keys import Fingerprinter, store_key
from sloguard.idempotency.memory import PRINCIPAL_OVERHEAD, entry_nbytes
from sloguard.request import Classifier
from tests.asgi import body_of, call, headers_of, http_scope
from tests.idempotency.conftest import BIG_BODY, Backend, Factory, Handlers, Travel

KEY = {"Idempotency-Key": "order-42"}
REPLAYED = ("idempotent-replayed", "x-idempotent-replay")


def assert_problem(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    document: dict[str, Any] = response.json()
    assert document["status"] == status
    assert document["error"] == error
    assert document["type"] == f"https://sloguard.readthedocs.io/en/latest/problems/#{error}"
    assert document["title"]
    assert document["detail"]
    return document


def is_replay(response: httpx.Response) -> bool:
    return all(response.headers.get(name) == "true" for name in REPLAYED)


# --- the basic contract -------------------------------------------------------------


async def test_a_repeated_key_replays_the_first_response(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    first = await client.post("/items", content=b"payload", headers=KEY)
    second = await client.post("/items", content=b"payload", headers=KEY)

    assert handlers.calls["items"] == 1
    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second.headers["x-handler"] == "items"
    assert second.headers["content-type"] == first.headers["content-type"]
    assert not is_replay(first)
    assert is_replay(second)


async def test_quoted_and_bare_forms_name_the_same_key(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    await client.post("/items", headers={"Idempotency-Key": '"abc"'})
    replay = await client.post("/items", headers={"Idempotency-Key": "abc"})

    assert handlers.calls["items"] == 1
    assert is_replay(replay)


async def test_requests_without_a_key_run_every_time(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    responses = [await client.post("/items", content=b"x") for _ in range(3)]

    assert handlers.calls["items"] == 3
    assert [r.json()["n"] for r in responses] == [1, 2, 3]
    assert not any(is_replay(r) for r in responses)


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_other_methods_pass_through_even_with_a_key(
    client: httpx.AsyncClient, handlers: Handlers, method: str
) -> None:
    for _ in range(2):
        response = await client.request(method, "/items", headers=KEY)
        assert not is_replay(response)
    assert handlers.calls["items"] == 2


async def test_patch_is_covered_by_default(client: httpx.AsyncClient, handlers: Handlers) -> None:
    await client.patch("/items", headers=KEY)
    replay = await client.patch("/items", headers=KEY)

    assert handlers.calls["items"] == 1
    assert is_replay(replay)


async def test_methods_and_paths_are_configurable(make_client: Factory, handlers: Handlers) -> None:
    client = make_client(methods=["put"], paths=["/items"])
    for _ in range(2):
        await client.put("/items", headers=KEY)  # covered: runs once
        await client.post("/items", headers=KEY)  # POST no longer covered: runs each time
        await client.request("PUT", "/other", headers=KEY)  # 405 from the app, path not covered

    assert handlers.calls["items"] == 1 + 2


async def test_replay_header_names_are_configurable(make_client: Factory) -> None:
    client = make_client(replay_headers=["Replayed"])
    await client.post("/items", headers=KEY)
    replay = await client.post("/items", headers=KEY)

    assert replay.headers["replayed"] == "true"
    assert "idempotent-replayed" not in replay.headers


async def test_key_header_name_is_configurable(make_client: Factory, handlers: Handlers) -> None:
    client = make_client(key_header="X-Request-Key")
    await client.post("/items", headers={"X-Request-Key": "k"})
    replay = await client.post("/items", headers={"X-Request-Key": "k"})

    assert handlers.calls["items"] == 1
    assert is_replay(replay)


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        '""',
        '"unterminated',
        '"bad\\escape"',
        '"inner"quote"',
        "x" * 256,
        "caf\u00e9",
        "tab\there",
    ],
    ids=[
        "empty",
        "blank",
        "empty-quoted",
        "unterminated",
        "bad-escape",
        "inner-quote",
        "too-long",
        "non-ascii",
        "control-char",
    ],
)
async def test_a_malformed_key_is_a_400_and_runs_nothing(
    client: httpx.AsyncClient, handlers: Handlers, value: str
) -> None:
    response = await client.post("/items", headers=[("Idempotency-Key", value.encode("utf-8"))])

    document = assert_problem(response, 400, "idempotency_key_invalid")
    assert "Idempotency-Key" in document["detail"]
    assert handlers.calls["items"] == 0


async def test_a_key_sent_twice_is_a_400(client: httpx.AsyncClient, handlers: Handlers) -> None:
    response = await client.post(
        "/items", headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    )

    assert_problem(response, 400, "idempotency_key_invalid")
    assert handlers.calls["items"] == 0


async def test_the_longest_allowed_key_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", headers={"Idempotency-Key": "k" * 255})
    assert response.status_code == 201


async def test_a_required_key_that_is_missing_is_a_400(
    make_client: Factory, handlers: Handlers
) -> None:
    client = make_client(require_key=True)
    response = await client.post("/items")

    document = assert_problem(response, 400, "idempotency_key_missing")
    assert "/items" in document["detail"]
    assert handlers.calls["items"] == 0
    assert (await client.get("/items")).status_code == 201  # GET never needs a key


@pytest.mark.parametrize(
    "options",
    [{"lease_seconds": 0}, {"wait_seconds": -1}, {"max_body_bytes": -1}],
)
def test_bad_options_are_rejected_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(options))):
        IdempotencyMiddleware(Handlers().app(), **options)


# --- scope: one client never sees another's response -----------------------------------


async def test_keys_are_scoped_per_principal(client: httpx.AsyncClient, handlers: Handlers) -> None:
    alice = {**KEY, "Authorization": "Bearer alice"}
    bob = {**KEY, "Authorization": "Bearer bob"}
    a1 = await client.post("/items", content=b"same", headers=alice)
    b1 = await client.post("/items", content=b"same", headers=bob)
    anonymous = await client.post("/items", content=b"same", headers=KEY)
    a2 = await client.post("/items", content=b"same", headers=alice)

    assert handlers.calls["items"] == 3
    assert not is_replay(b1)
    assert not is_replay(anonymous)
    assert is_replay(a2)
    assert a2.content == a1.content != b1.content


async def test_a_repeated_authorization_is_a_principal_of_its_own(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    # An app reads the first value (Starlette), the last or all (Django joins them): the
    # principal was the last, so a request whose app saw "Bearer mallory" got alice's replay.
    alice = [("Idempotency-Key", "k-1"), ("Authorization", "Bearer alice")]
    both = [("Authorization", "Bearer mallory"), *alice]
    first = await client.post("/items", content=b"same", headers=alice)
    mallory = await client.post("/items", content=b"same", headers=both)
    again = await client.post("/items", content=b"same", headers=both)
    empty_first = [("Authorization", ""), *alice]
    empty = await client.post("/items", content=b"same", headers=empty_first)

    assert handlers.calls["items"] == 3
    assert not is_replay(mallory)
    assert mallory.content != first.content
    assert is_replay(again)
    assert again.content == mallory.content
    assert not is_replay(empty)


async def test_a_key_belongs_to_one_operation(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    # Issue 24: the same principal and key on another method or path is a 422 and
    # nothing runs a second time (the key was once part of the store key instead).
    await client.post("/items", headers=KEY)
    other_path = await client.post("/other", headers=KEY)
    other_method = await client.patch("/items", headers=KEY)

    assert handlers.calls["items"] == 1
    assert_problem(other_path, 422, "idempotency_key_reused")
    assert_problem(other_method, 422, "idempotency_key_reused")


async def test_a_principal_callable_replaces_the_authorization_default(
    make_client: Factory, handlers: Handlers
) -> None:
    def tenant(scope: Scope) -> str:
        return dict(scope["headers"]).get(b"x-tenant", b"").decode()

    client = make_client(principal=tenant)
    await client.post("/items", headers={**KEY, "X-Tenant": "t1", "Authorization": "a"})
    same_tenant = await client.post(
        "/items", headers={**KEY, "X-Tenant": "t1", "Authorization": "b"}
    )
    other_tenant = await client.post("/items", headers={**KEY, "X-Tenant": "t2"})

    assert is_replay(same_tenant)
    assert not is_replay(other_tenant)
    assert handlers.calls["items"] == 2


@pytest.mark.parametrize(
    "principal",
    [
        pytest.param(lambda scope: scope["user"].id, id="raises"),
        pytest.param(lambda scope: None, id="returns None"),
    ],
)
async def test_a_principal_callable_that_fails_is_a_503_and_nothing_runs(
    make_client: Factory,
    handlers: Handlers,
    caplog: pytest.LogCaptureFixture,
    principal: Callable[[Scope], str],
) -> None:
    """The app's bug, not the client's: nothing runs under no identity (that would break
    once per principal and key), and the 503 says a retry with the same key is safe."""
    client = make_client(principal=principal)
    for _ in range(3):
        response = await client.post("/items", headers=KEY)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["error"] == "idempotency_principal_unavailable"
        assert "retrying it with the same key is safe" in response.json()["detail"]
    assert handlers.calls["items"] == 0
    assert (await client.post("/items")).status_code == 201  # unkeyed: no principal needed
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # logged once, with its traceback
    assert errors[0].exc_info is not None


# --- fingerprints --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "body"),
    [("/items", b"other payload"), ("/items?page=2", b"payload")],
    ids=["other-body", "other-query"],
)
async def test_the_same_key_for_a_different_request_is_a_422(
    client: httpx.AsyncClient, handlers: Handlers, url: str, body: bytes
) -> None:
    await client.post("/items", content=b"payload", headers=KEY)
    response = await client.post(url, content=body, headers=KEY)

    assert_problem(response, 422, "idempotency_key_reused")
    assert handlers.calls["items"] == 1


async def test_a_different_request_while_the_first_runs_is_a_422(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    first = await handlers.hold(client.post("/items", content=b"one", headers=KEY))
    response = await client.post("/items", content=b"two", headers=KEY)
    handlers.gate.set()
    await first

    assert_problem(response, 422, "idempotency_key_reused")


async def test_the_request_body_reaches_the_app_unchanged(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    parts = [b"first,", b"", b"second,", bytes(range(256))]

    async def chunked() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    response = await client.post("/items", content=chunked(), headers=KEY)

    assert response.status_code == 201
    assert handlers.seen_bodies == [b"".join(parts)]


async def test_request_messages_are_handed_on_as_received() -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            seen.append(message)
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    incoming = [
        {"type": "http.request", "body": b"a", "more_body": True},
        {"type": "http.request", "body": b"b", "more_body": False},
    ]
    scope = http_scope(headers=[(b"idempotency-key", b"k")])
    await call(IdempotencyMiddleware(app), scope, incoming)

    assert seen == incoming


# --- in flight ---------------------------------------------------------------------------


async def test_a_duplicate_while_the_first_runs_is_a_409_then_a_replay(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    first = await handlers.hold(client.post("/items", headers=KEY))

    conflict = await client.post("/items", headers=KEY)
    handlers.gate.set()
    original = await first
    replay = await client.post("/items", headers=KEY)

    assert_problem(conflict, 409, "idempotency_request_in_flight")
    assert conflict.headers["retry-after"] == "1"
    assert original.status_code == 201
    assert is_replay(replay)
    assert replay.content == original.content
    assert handlers.calls["items"] == 1


async def test_fifty_concurrent_duplicates_run_once_and_get_the_same_response(
    make_client: Factory, handlers: Handlers
) -> None:
    client = make_client(wait_seconds=30)
    handlers.gate.clear()
    tasks = [
        asyncio.create_task(client.post("/items", content=b"same", headers=KEY)) for _ in range(50)
    ]
    await handlers.entered.wait()
    for _ in range(10):  # let every duplicate reach its wait
        await asyncio.sleep(0)
    handlers.gate.set()
    responses = await asyncio.gather(*tasks)

    assert handlers.calls["items"] == 1
    assert {r.status_code for r in responses} == {201}
    assert {r.content for r in responses} == {responses[0].content}
    assert sum(is_replay(r) for r in responses) == 49


async def test_fifty_concurrent_duplicates_without_waiting_get_409s(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    handlers.gate.clear()
    tasks = [asyncio.create_task(client.post("/items", headers=KEY)) for _ in range(50)]
    completed = asyncio.as_completed(tasks)
    responses = [await next(completed) for _ in range(49)]  # all answered while one runs
    handlers.gate.set()
    responses.append(await next(completed))

    assert handlers.calls["items"] == 1
    assert [r.status_code for r in responses] == [409] * 49 + [201]


async def test_a_waiting_duplicate_gives_up_with_a_409(
    make_client: Factory, handlers: Handlers
) -> None:
    client = make_client(wait_seconds=0.01)
    first = await handlers.hold(client.post("/items", headers=KEY))
    conflict = await client.post("/items", headers=KEY)
    handlers.gate.set()
    await first

    assert_problem(conflict, 409, "idempotency_request_in_flight")


async def test_a_crashed_request_holds_its_key_only_until_the_lease_expires(
    make_client: Factory, handlers: Handlers, travel: Travel
) -> None:
    client = make_client(lease_seconds=30)
    hung = await handlers.hold(client.post("/items", headers=KEY))
    # The first request never finishes (as if its process died). Within the lease: 409.
    assert (await client.post("/items", headers=KEY)).status_code == 409
    await travel(31)
    handlers.gate.set()
    takeover = await client.post("/items", headers=KEY)
    late = await hung

    assert takeover.status_code == 201
    assert handlers.calls["items"] == 2
    # The request whose lease had expired cannot overwrite the one that took over.
    replay = await client.post("/items", headers=KEY)
    assert is_replay(replay)
    assert replay.content == takeover.content != late.content


# --- what is stored, and what is not --------------------------------------------------


async def test_a_streaming_response_is_replayed_byte_for_byte(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    first = await client.post("/stream", headers=KEY)
    replay = await client.post("/stream", headers=KEY)

    assert handlers.calls["stream"] == 1
    assert first.content == b"".join(f"chunk-{i}-1;".encode() for i in range(5))
    assert replay.content == first.content
    assert is_replay(replay)


async def test_set_cookie_and_hop_by_hop_headers_are_never_replayed(store: Store) -> None:
    headers = [
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"session=secret"),
        (b"Connection", b"close"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"x-kept", b"1"),
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    middleware = IdempotencyMiddleware(app, store=store)
    scope = http_scope(headers=[(b"idempotency-key", b"k")])
    first = await call(middleware, scope)
    replay = await call(middleware, scope)

    assert headers_of(first) == headers
    # The first client gets the response as the app streamed it, chunk by chunk.
    assert [m["body"] for m in first if m["type"] == "http.response.body"] == [b"a", b"b"]
    assert headers_of(replay) == [
        (b"content-type", b"text/plain"),
        (b"x-kept", b"1"),
        (b"idempotent-replayed", b"true"),
        (b"x-idempotent-replay", b"true"),
    ]
    assert body_of(replay) == body_of(first) == b"ab"


@pytest.mark.parametrize(
    "dropped",
    [[], [(b"set-cookie", b"session=secret"), (b"Connection", b"close")]],
    ids=["all kept", "some dropped"],
)
async def test_a_memory_store_counts_the_bytes_of_the_responses_it_keeps(
    dropped: list[tuple[bytes, bytes]],
) -> None:
    headers = [(b"content-type", b"text/plain"), *dropped, (b"x-kept", b"12345")]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"de"})

    store = MemoryStore()
    middleware = IdempotencyMiddleware(app, store=store)
    keys = ["k1", "another-key"]
    for key in keys:
        await call(middleware, http_scope(headers=[(b"idempotency-key", key.encode())]))

    store_keys = [store_key(Fingerprinter().principal(""), key) for key in keys]
    kept = [await store.claim(key, b"", 60) for key in store_keys]
    assert all(claim.response is not None for claim in kept)
    assert store.nbytes == PRINCIPAL_OVERHEAD + sum(
        entry_nbytes(key, claim.response.nbytes)
        for key, claim in zip(store_keys, kept, strict=True)
        if claim.response
    )


async def test_cookies_reach_the_first_client_only(client: httpx.AsyncClient) -> None:
    first = await client.post("/cookie", headers=KEY)
    replay = await client.post("/cookie", headers=KEY)

    assert "session=secret" in first.headers["set-cookie"]
    assert "set-cookie" not in replay.headers
    assert replay.json() == first.json()


async def test_a_5xx_releases_the_key(client: httpx.AsyncClient, handlers: Handlers) -> None:
    first = await client.post("/fail", headers=KEY)
    retry = await client.post("/fail", headers=KEY)

    assert first.status_code == retry.status_code == 503
    assert handlers.calls["fail"] == 2
    assert not is_replay(retry)


async def test_a_5xx_can_be_stored_when_configured(
    make_client: Factory, handlers: Handlers
) -> None:
    client = make_client(release_on_server_error=False)
    await client.post("/fail", headers=KEY)
    replay = await client.post("/fail", headers=KEY)

    assert replay.status_code == 503
    assert is_replay(replay)
    assert handlers.calls["fail"] == 1


async def test_a_handler_exception_releases_the_key(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    assert (await client.post("/boom", headers=KEY)).status_code == 500
    assert (await client.post("/boom", headers=KEY)).status_code == 500
    assert handlers.calls["boom"] == 2


@pytest.mark.parametrize("partial", [False, True], ids=["before-start", "mid-body"])
async def test_an_exception_propagates_and_releases_the_key(partial: bool, store: Store) -> None:
    runs = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal runs
        runs += 1
        if partial:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"half", "more_body": True})
        raise RuntimeError("crash")

    middleware = IdempotencyMiddleware(app, store=store)
    scope = http_scope(headers=[(b"idempotency-key", b"k")])
    for _ in range(2):
        with pytest.raises(RuntimeError, match="crash"):
            await call(middleware, scope)
    assert runs == 2


async def test_an_app_that_sends_no_response_releases_the_key(store: Store) -> None:
    runs = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal runs
        runs += 1

    middleware = IdempotencyMiddleware(app, store=store)
    scope = http_scope(headers=[(b"idempotency-key", b"k")])
    await call(middleware, scope)
    await call(middleware, scope)
    assert runs == 2


async def test_a_cancelled_request_releases_the_key(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    first = await handlers.hold(client.post("/items", headers=KEY))
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    handlers.gate.set()
    retry = await client.post("/items", headers=KEY)

    assert retry.status_code == 201
    assert not is_replay(retry)
    assert handlers.calls["items"] == 2


async def test_a_client_that_leaves_before_its_body_arrives_runs_nothing() -> None:
    runs = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal runs
        runs += 1

    incoming = [
        {"type": "http.request", "body": b"a", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent = await call(
        IdempotencyMiddleware(app), http_scope(headers=[(b"idempotency-key", b"k")]), incoming
    )

    assert runs == 0
    assert sent == []


async def test_a_10_mib_response_passes_through_unchanged_and_is_not_stored(
    client: httpx.AsyncClient, handlers: Handlers, store: Store
) -> None:
    first = await client.post("/big", headers=KEY)
    again = await client.post("/big", headers=KEY)

    assert first.content == BIG_BODY
    assert again.content == BIG_BODY
    assert not is_replay(again)
    assert handlers.calls["big"] == 2
    key = store_key(Fingerprinter().principal(""), KEY["Idempotency-Key"])
    assert (await store.claim(key, b"", 60)).status is ClaimStatus.CLAIMED


async def test_a_10_mib_response_is_replayed_when_the_limit_allows(
    make_client: Factory, handlers: Handlers
) -> None:
    client = make_client(max_body_bytes=16 * 1024 * 1024)
    await client.post("/big", headers=KEY)
    replay = await client.post("/big", headers=KEY)

    assert replay.content == BIG_BODY
    assert is_replay(replay)
    assert handlers.calls["big"] == 1


async def test_a_stored_response_expires_after_the_ttl(
    make_client: Factory, handlers: Handlers, backend: Backend, travel: Travel
) -> None:
    client = make_client(store=backend.make_store(ttl_seconds=60))
    await client.post("/items", headers=KEY)
    await travel(59)
    assert is_replay(await client.post("/items", headers=KEY))
    await travel(2)
    fresh = await client.post("/items", headers=KEY)

    assert not is_replay(fresh)
    assert handlers.calls["items"] == 2


async def test_non_http_scopes_pass_straight_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    middleware = IdempotencyMiddleware(app)
    await middleware({"type": "lifespan"}, _never, _ignore)
    await middleware({"type": "websocket", "path": "/ws", "headers": []}, _never, _ignore)
    assert seen == ["lifespan", "websocket"]


async def test_problem_documents_are_valid_json_with_a_content_length(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/items", headers={"Idempotency-Key": ""})
    assert int(response.headers["content-length"]) == len(response.content)
    json.loads(response.content)


async def _never() -> Message:
    raise AssertionError("receive must not be called")


async def _ignore(message: Message) -> None:
    raise AssertionError("send must not be called")


class _FailingStore(MemoryStore):
    async def complete(self, key: str, token: int, response: StoredResponse) -> bool:
        raise ConnectionError("store went away")

    async def release(self, key: str, token: int) -> None:
        raise ConnectionError("store went away")


@pytest.mark.parametrize("path", ["/items", "/fail"], ids=["store", "release"])
async def test_a_failing_store_write_is_logged_without_credentials_and_loses_no_response(
    make_client: Factory, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    client = make_client(store=_FailingStore())
    with caplog.at_level(logging.WARNING, logger="sloguard.idempotency"):
        response = await client.post(path, headers={**KEY, "Authorization": "Bearer top-secret"})

    assert response.status_code in (201, 503)
    assert response.json()["n"] == 1
    assert Fingerprinter().log_id("order-42") in caplog.text  # a digest, never the key
    assert "order-42" not in caplog.text
    assert "top-secret" not in caplog.text


class _UnavailableStore(MemoryStore):
    """A store whose backend is down, as a networked store reports it."""

    def __init__(self, *, fail_open: bool, in_claim: bool = True) -> None:
        super().__init__()
        self.fail_open = fail_open
        self.in_claim = in_claim
        self.writes = 0

    async def claim(self, key: str, fingerprint: bytes, lease_seconds: float) -> Claim:
        if self.in_claim:
            raise StoreUnavailable("backend down", fail_open=self.fail_open)
        return await super().claim(key, fingerprint, lease_seconds)

    async def wait(self, key: str) -> None:
        raise StoreUnavailable("backend down", fail_open=self.fail_open)

    async def complete(self, key: str, token: int, response: StoredResponse) -> bool:
        self.writes += 1
        return await super().complete(key, token, response)

    async def release(self, key: str, token: int) -> None:
        self.writes += 1
        await super().release(key, token)


async def test_an_unavailable_store_fails_closed_with_a_503(
    make_client: Factory, handlers: Handlers
) -> None:
    client = make_client(store=_UnavailableStore(fail_open=False))
    response = await client.post("/items", headers=KEY)

    assert_problem(response, 503, "idempotency_store_unavailable")
    assert response.headers["retry-after"] == "1"
    assert handlers.calls["items"] == 0


async def test_an_unavailable_store_fails_open_without_storing(
    make_client: Factory, handlers: Handlers
) -> None:
    store = _UnavailableStore(fail_open=True)
    client = make_client(store=store)
    responses = [await client.post("/items", content=b"body", headers=KEY) for _ in range(2)]

    assert [r.status_code for r in responses] == [201, 201]
    assert all(r.headers["idempotency-stored"] == "false" for r in responses)
    assert handlers.seen_bodies == [b"body", b"body"]
    assert not any(is_replay(r) for r in responses)
    assert store.writes == 0  # neither complete nor release: there is no claim to end


async def test_a_store_failing_while_a_duplicate_waits_fails_closed(
    make_client: Factory, handlers: Handlers
) -> None:
    store = _UnavailableStore(fail_open=False, in_claim=False)
    client = make_client(store=store, wait_seconds=30)
    first = await handlers.hold(client.post("/items", headers=KEY))
    duplicate = await client.post("/items", headers=KEY)
    handlers.gate.set()
    await first

    assert_problem(duplicate, 503, "idempotency_store_unavailable")
    assert handlers.calls["items"] == 1


async def test_failing_open_leases_nothing_and_marks_the_response_unstored() -> None:
    # A request the gate lets through without a store runs once, says it was not
    # stored, and a refusal (SLOGuard's admission) gives up nothing: no claim was made.
    store = _UnavailableStore(fail_open=True)
    gate = IdempotencyGate(store=store)
    incoming = [{"type": "http.request", "body": b"payload", "more_body": False}]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Classifier(clock=lambda: 0.0).classify(scope, receive)
        lease = await gate.begin(request)
        assert isinstance(lease, Lease)
        await lease.release()
        exchange = Exchange(send, lease)
        body = (await request.receive())["body"]
        await exchange.send({"type": "http.response.start", "status": 200, "headers": []})
        await exchange.send({"type": "http.response.body", "body": b"ran:" + body})
        await lease.finish(exchange)

    sent = await call(app, http_scope(headers=[(b"idempotency-key", b"k")]), incoming)

    assert body_of(sent) == b"ran:payload"
    assert (b"idempotency-stored", b"false") in headers_of(sent)
    assert store.writes == 0


def test_servers_see_an_asgi_3_app() -> None:
    # uvicorn (and other servers) tell ASGI 3 from ASGI 2 by whether the app's
    # __call__ is a coroutine function; the entry point must stay one.
    config = uvicorn.Config(IdempotencyMiddleware(_never_called))
    config.load()

    assert config.interface == "asgi3"


async def _never_called(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the app must not be called")
