"""Step 1: the classifier reads a request's capability, priority and key in one pass."""

from __future__ import annotations

import json

from sloguard.capability import RouteTable
from sloguard.request import Classifier
from tests.asgi import http_scope


def classifier(**options: object) -> Classifier:
    options.setdefault("capability_header", "X-Capability")
    return Classifier(clock=lambda: 5.0, **options)  # type: ignore[arg-type]


async def _no_body() -> dict[str, object]:
    raise AssertionError("classify reads no body")


def test_the_path_names_the_capability_and_the_headers_the_rest() -> None:
    scope = http_scope(
        path="/route/convert/pdf",
        headers=[
            (b"x-priority", b" HIGH "),
            (b"idempotency-key", b"k-1"),
            (b"authorization", b"Bearer t"),
        ],
    )
    request = classifier().classify(scope, _no_body)

    assert request.capability == "convert:pdf"
    assert request.priority == "high"
    assert request.key == b"k-1"
    assert not request.key_repeated
    assert request.authorization == b"Bearer t"
    assert request.start == 5.0


def test_a_repeated_key_header_is_noted() -> None:
    scope = http_scope(headers=[(b"idempotency-key", b"a"), (b"idempotency-key", b"b")])
    assert classifier().classify(scope, _no_body).key_repeated


def test_a_repeated_authorization_is_every_value_joined() -> None:
    both = [(b"authorization", b"a"), (b"authorization", b"b"), (b"idempotency-key", b"k")]
    assert classifier().classify(http_scope(headers=both), _no_body).authorization == b"a\nb"
    alone = Classifier(clock=lambda: 5.0, capabilities=False)
    keyed = alone.classify_keyed(http_scope(headers=both), _no_body, required=False)
    assert keyed is not None
    assert keyed.authorization == b"a\nb"
    empty_first = [(b"authorization", b""), (b"authorization", b"a")]
    assert classifier().classify(http_scope(headers=empty_first), _no_body).authorization == b"\na"


def test_idempotency_alone_reads_the_key_and_credential_or_nothing() -> None:
    alone = Classifier(clock=lambda: 5.0, capabilities=False)
    headers = [(b"x-priority", b"high"), (b"authorization", b"Bearer t")]
    headers.append((b"idempotency-key", b"k"))
    request = alone.classify_keyed(http_scope(headers=headers), _no_body, required=False)
    assert request is not None
    assert (request.key, request.key_repeated, request.authorization) == (b"k", False, b"Bearer t")
    assert (request.capability, request.priority) == (None, "normal")

    keyless = http_scope(headers=[(b"authorization", b"Bearer t")])
    assert alone.classify_keyed(keyless, _no_body, required=False) is None
    required = alone.classify_keyed(keyless, _no_body, required=True)
    assert required is not None
    assert required.key is None

    twice = http_scope(headers=[(b"idempotency-key", b"a"), (b"idempotency-key", b"b")])
    repeated = alone.classify_keyed(twice, _no_body, required=False)
    assert repeated is not None
    assert repeated.key_repeated


def test_the_route_table_wins_over_the_header_and_no_capability_is_none() -> None:
    table = RouteTable({"/docs/{id}": "convert:pdf"})
    header = [(b"x-capability", b"classify:email")]
    assert (
        classifier(route_table=table)
        .classify(http_scope(path="/docs/1", headers=header), _no_body)
        .capability
        == "convert:pdf"
    )
    assert (
        classifier().classify(http_scope(path="/x", headers=header), _no_body).capability
        == "classify:email"
    )
    assert classifier().classify(http_scope(path="/x"), _no_body).capability is None
    assert classifier().classify(http_scope(path="/x"), _no_body).priority == "normal"


def test_with_no_capability_header_configured_the_header_names_nothing() -> None:
    scope = http_scope(path="/x", headers=[(b"x-capability", b"classify:email")])
    assert classifier(capability_header=None).classify(scope, _no_body).capability is None


def test_a_capability_header_counts_only_from_a_trusted_client() -> None:
    scope = http_scope(path="/x", headers=[(b"x-capability", b"classify:email")])
    trusted = classifier(trusted_clients=["127.0.0.1"]).classify(scope, _no_body)
    untrusted = classifier(trusted_clients=["10.1.1.1"]).classify(scope, _no_body)
    assert (trusted.capability, untrusted.capability) == ("classify:email", None)


def test_the_headers_say_whether_a_body_follows() -> None:
    def has_body(*headers: tuple[bytes, bytes]) -> bool:
        return classifier().classify(http_scope(headers=list(headers)), _no_body).has_body

    assert has_body((b"content-length", b"12"))
    assert has_body((b"transfer-encoding", b"chunked"))
    assert not has_body((b"content-length", b"0"))
    assert not has_body()


async def test_a_seed_form_body_names_capability_priority_and_key_and_is_handed_on() -> None:
    body = json.dumps(
        {"verb": "classify", "capability": "email", "priority": "low", "idempotency_key": "s-1"}
    ).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    parts = classifier()
    request = parts.classify(http_scope(path="/route"), receive)
    assert parts.is_seed_form(request)
    await parts.read_seed_form(request, read_key=True)

    assert (request.capability, request.priority, request.key) == ("classify:email", "low", b"s-1")
    assert (b"idempotency-key", b"s-1") in request.scope["headers"]
    assert (await request.receive())["body"] == body  # the app still reads the whole body


async def test_a_priority_header_wins_over_the_seed_body() -> None:
    body = b'{"verb": "classify", "capability": "email", "priority": "low"}'
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    parts = classifier()
    request = parts.classify(http_scope(path="/route", headers=[(b"x-priority", b"high")]), receive)
    await parts.read_seed_form(request, read_key=False)
    assert request.priority == "high"
    assert request.key is None


def _messages(*chunks: bytes, end: str = "complete") -> tuple[list[int], object]:
    """A ``receive`` offering ``chunks`` in turn (then a disconnect when ``end`` says so);
    the list counts the messages read."""
    read: list[int] = []
    queue: list[dict[str, object]] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1 or end != "complete"}
        for i, c in enumerate(chunks)
    ]
    if end == "disconnect":
        queue.append({"type": "http.disconnect"})

    async def receive() -> dict[str, object]:
        read.append(1)
        return queue.pop(0)

    return read, receive


async def test_a_seed_body_over_the_limit_is_answered_413_and_read_no_further() -> None:
    seed = b'{"verb": "classify", "capability": "email", "idempotency_key": "k", "p": "'
    read, receive = _messages(seed, *[b"x" * 100] * 50, b'"}')
    parts = classifier(seed_body_bytes=1000)
    request = parts.classify(http_scope(path="/route"), receive)  # type: ignore[arg-type]
    refused = await parts.read_seed_form(request, read_key=True)

    assert refused is not None
    assert refused.status == 413
    assert json.loads(refused.body)["error"] == "payload_too_large"
    assert len(read) == 11  # the message that crossed 1,000 bytes was the last one read
    assert (request.capability, request.key) == (None, None)


async def test_a_seed_body_whose_length_is_over_the_limit_is_not_read_at_all() -> None:
    read, receive = _messages(b"{}")
    parts = classifier(seed_body_bytes=1000)
    scope = http_scope(path="/route", headers=[(b"content-length", b"1001")])
    refused = await parts.read_seed_form(parts.classify(scope, receive), read_key=True)  # type: ignore[arg-type]
    assert refused is not None
    assert refused.status == 413
    assert read == []


async def test_a_seed_body_length_of_thousands_of_digits_is_judged_not_converted() -> None:
    # Python refuses to make an int of over 4,300 digits: a ValueError, not a 413.
    for length, over in ((b"9" * 5000, True), (b"0" * 5000 + b"2", False)):
        read, receive = _messages(b"{}")
        parts = classifier(seed_body_bytes=1000)
        scope = http_scope(path="/route", headers=[(b"content-length", length)])
        refused = await parts.read_seed_form(parts.classify(scope, receive), read_key=True)  # type: ignore[arg-type]
        assert (refused is not None and refused.status == 413) is over
        assert len(read) == (0 if over else 1)


async def test_a_seed_body_at_the_limit_is_read_whole() -> None:
    body = json.dumps({"verb": "classify", "capability": "email", "idempotency_key": "k"})
    padded = body[:-1] + ', "p": "' + "x" * (2000 - len(body) - 9) + '"}'
    assert len(padded) == 2000
    _, receive = _messages(padded[:999].encode(), padded[999:].encode())
    parts = classifier(seed_body_bytes=2000)
    request = parts.classify(http_scope(path="/route"), receive)  # type: ignore[arg-type]
    assert await parts.read_seed_form(request, read_key=True) is None
    assert (request.capability, request.key) == ("classify:email", b"k")


async def test_a_client_that_leaves_mid_seed_body_names_nothing() -> None:
    _, receive = _messages(b'{"verb": "classify", "capability": "email"}', end="disconnect")
    parts = classifier()
    request = parts.classify(http_scope(path="/route"), receive)  # type: ignore[arg-type]
    assert await parts.read_seed_form(request, read_key=True) is None
    assert request.capability is None
    await request.receive()
    assert (await request.receive())["type"] == "http.disconnect"  # the app sees it go
