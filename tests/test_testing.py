"""sloguard.testing: the aids users test their own apps with."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sloguard import IdempotencyMiddleware
from sloguard.testing import ManualClock, RecordingStore, drive


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"body": (await request.body()).decode()}, status_code=201)


APP = Starlette(routes=[Route("/echo", echo, methods=["POST"])])


async def test_drive_sends_one_request_and_collects_the_response() -> None:
    response = await drive(APP, "POST", "/echo", body=[b"he", b"llo"])

    assert response.status == 201
    assert response.header("Content-Type") == "application/json"
    assert response.body == b'{"body":"hello"}'


async def test_a_recording_store_shows_a_keyed_request_ran_once() -> None:
    store = RecordingStore()
    app = IdempotencyMiddleware(APP, store=store)
    headers = {"Idempotency-Key": "k-1"}

    first = await drive(app, "POST", "/echo", headers=headers, body=b"x")
    second = await drive(app, "POST", "/echo", headers=headers, body=b"x")

    assert first.body == second.body
    assert second.header("Idempotent-Replayed") == "true"
    assert store.count("complete") == 1  # the second was a replay: nothing more stored
    assert [op for op, _ in store.operations] == ["claim", "complete", "claim"]


def test_the_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(10.0)
    clock.advance(2.5)
    assert clock() == 12.5


async def test_idempotency_middleware_takes_every_gate_option() -> None:
    # fingerprint_secret: one of IdempotencyGate's options, passed through unchanged.
    keys_stored = []
    for secret in (None, "deploy-1"):
        store = RecordingStore()
        app = IdempotencyMiddleware(APP, store=store, fingerprint_secret=secret)
        headers = {"Idempotency-Key": "k-1", "Authorization": "Bearer alice"}
        await drive(app, "POST", "/echo", headers=headers, body=b"x")
        keys_stored.append(store.operations[0][1])
    assert keys_stored[0] != keys_stored[1]
    assert all("alice" not in key and key.endswith("k-1") for key in keys_stored)
