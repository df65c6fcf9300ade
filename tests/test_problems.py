"""RFC 9457 problem details."""

from __future__ import annotations

import json

from starlette.types import Message

from sloguard.problems import problem_body, send_problem


def test_a_problem_document_carries_the_standard_members_and_extras() -> None:
    document = json.loads(problem_body(503, "slo_violation", "Shed", "Too slow.", violations=["a"]))
    assert document == {
        "type": "urn:sloguard:problem:slo_violation",
        "title": "Shed",
        "status": 503,
        "detail": "Too slow.",
        "error": "slo_violation",
        "violations": ["a"],
    }


async def test_send_problem_sends_a_complete_response() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await send_problem(send, 409, "conflict", "Conflict", "Busy.", headers=[(b"retry-after", b"1")])

    start, body = sent
    assert start["status"] == 409
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"retry-after"] == b"1"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"])["status"] == 409
    assert not body.get("more_body", False)
