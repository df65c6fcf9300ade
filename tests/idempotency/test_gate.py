"""Step 2 alone: the idempotency gate answers, replays or leases, and settles its leases."""

from __future__ import annotations

import pytest

from sloguard import ConfigurationError, MemoryStore
from sloguard.http import Exchange, Reply
from sloguard.idempotency import IdempotencyGate, Lease
from sloguard.request import Classifier, GuardedRequest
from sloguard.testing import RecordingStore
from tests.asgi import http_scope


def keyed(key: bytes | None = b"k-1", body: bytes = b"{}") -> GuardedRequest:
    headers = [] if key is None else [(b"idempotency-key", key)]
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return Classifier(clock=lambda: 0.0).classify(http_scope(headers=headers), receive)


async def respond(
    lease: Lease, status: int = 201, body: bytes = b"done"
) -> list[dict[str, object]]:
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    exchange = Exchange(send, lease)
    await exchange.send({"type": "http.response.start", "status": status, "headers": []})
    await exchange.send({"type": "http.response.body", "body": body})
    await lease.finish(exchange)
    return sent


async def test_a_miss_leases_the_key_and_its_response_is_replayed() -> None:
    gate = IdempotencyGate()
    lease = await gate.begin(keyed())
    assert isinstance(lease, Lease)
    await respond(lease)

    replay = await gate.begin(keyed())
    assert isinstance(replay, Reply)
    assert (replay.status, replay.body) == (201, b"done")
    assert (b"idempotent-replayed", b"true") in replay.headers


async def test_a_second_request_while_the_first_runs_gets_a_409_then_a_422_for_another_body() -> (
    None
):
    gate = IdempotencyGate()
    first = await gate.begin(keyed())
    assert isinstance(first, Lease)

    conflict = await gate.begin(keyed())
    assert isinstance(conflict, Reply)
    assert conflict.status == 409
    reused = await gate.begin(keyed(body=b'{"other": 1}'))
    assert isinstance(reused, Reply)
    assert reused.status == 422


@pytest.mark.parametrize(
    ("key", "status"),
    [(b"", 400), (b'"unterminated', 400), (None, 400)],
    ids=["empty", "bad-sf-string", "missing-but-required"],
)
async def test_bad_or_missing_keys_are_answered_without_touching_the_store(
    key: bytes | None, status: int
) -> None:
    store = RecordingStore()
    gate = IdempotencyGate(store=store, require_key=True)
    answer = await gate.begin(keyed(key))
    assert isinstance(answer, Reply)
    assert answer.status == status
    assert store.operations == []


async def test_a_server_error_releases_the_key_so_a_retry_runs() -> None:
    store = RecordingStore()
    gate = IdempotencyGate(store=store)
    lease = await gate.begin(keyed())
    assert isinstance(lease, Lease)
    await respond(lease, status=500)

    assert store.count("release") == 1
    assert isinstance(await gate.begin(keyed()), Lease)


async def test_a_lease_given_up_unused_releases_once() -> None:
    store = RecordingStore()
    gate = IdempotencyGate(store=store)
    lease = await gate.begin(keyed())
    assert isinstance(lease, Lease)
    await lease.release()
    await lease.release()
    await lease.finish(Exchange(_unused_send, lease))

    assert store.count("release") == 1


async def _unused_send(message: dict[str, object]) -> None:
    raise AssertionError("nothing is sent")


async def test_a_store_needing_no_waiting_is_called_without_a_coroutine() -> None:
    # MemoryStore's plain-call path stores the response before the last chunk leaves.
    store = MemoryStore()
    gate = IdempotencyGate(store=store)
    lease = await gate.begin(keyed())
    assert isinstance(lease, Lease)
    await respond(lease)
    assert len(store) == 1


@pytest.mark.parametrize(
    "options",
    [{"methods": "POST"}, {"key_header": ""}, {"key_header": "  "}, {"lease_seconds": 0}],
    ids=["methods-as-a-string", "empty-key-header", "blank-key-header", "no-lease"],
)
def test_options_that_cannot_work_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        IdempotencyGate(**options)  # type: ignore[arg-type]
