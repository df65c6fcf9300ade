"""RFC 9457 problem details, the one shape every sloguard error response takes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.types import Send

from sloguard.http import Reply

PROBLEM_CONTENT_TYPE = b"application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:sloguard:problem:"


def problem_body(status: int, error: str, title: str, detail: str, **extra: Any) -> bytes:
    """Encode a problem document; ``error`` is also the last segment of its ``type``."""
    document: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + error,
        "title": title,
        "status": status,
        "detail": detail,
        "error": error,
        **extra,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def problem_reply(
    status: int,
    error: str,
    title: str,
    detail: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> Reply:
    """A complete ``application/problem+json`` response, ready to send."""
    body = problem_body(status, error, title, detail, **extra)
    return Reply(
        status,
        [
            (b"content-type", PROBLEM_CONTENT_TYPE),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        body,
    )


async def send_problem(
    send: Send,
    status: int,
    error: str,
    title: str,
    detail: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> None:
    """Send a complete ``application/problem+json`` response through ``send``."""
    body = problem_body(status, error, title, detail, **extra)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_CONTENT_TYPE),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
