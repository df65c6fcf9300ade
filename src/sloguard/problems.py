"""RFC 9457 problem details, the one shape every sloguard error response takes.

A problem's ``type`` is a URL that resolves to its documentation: the base (by
default the section anchors of docs/problems.md on the project's site) followed by
its ``error``. The base is process-wide: ``$SLOGUARD_PROBLEM_BASE``, read at
import, or :func:`set_problem_base`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import Send

from sloguard.exceptions import ConfigurationError
from sloguard.http import Reply

PROBLEM_CONTENT_TYPE = b"application/problem+json"
DOCS_SITE_URL = "https://sloguard.readthedocs.io/en/latest/"
"""Where the docs/ site is published (mkdocs.yml's ``site_url``; a test holds them equal)."""
DEFAULT_PROBLEM_BASE = DOCS_SITE_URL + "problems/#"
"""A problem's ``type`` is this followed by its ``error``: its section of docs/problems.md."""
PROBLEM_BASE_ENV = "SLOGUARD_PROBLEM_BASE"


def _checked_base(base: str, origin: str) -> str:
    # RFC 9457 §3.1.1: an absolute URI (a relative one would resolve against each API's URL).
    if not base or base != base.strip() or any(c.isspace() for c in base):
        raise ConfigurationError(f"{origin}: a problem type base must be a URI, got {base!r}")
    if not urlsplit(base).scheme:
        raise ConfigurationError(
            f"{origin}: a problem type base must be an absolute URI (https://..., urn:...), "
            f"got {base!r}"
        )
    return base


def _base_from_env() -> str:
    value = os.environ.get(PROBLEM_BASE_ENV)
    return DEFAULT_PROBLEM_BASE if not value else _checked_base(value, f"${PROBLEM_BASE_ENV}")


PROBLEM_TYPE_PREFIX = _base_from_env()
"""The base in effect (see :func:`set_problem_base`)."""


def set_problem_base(base: str | None) -> None:
    """Make every problem's ``type`` ``base + error`` from now on, for the whole process
    (e.g. ``"https://docs.example.com/errors#"`` for an operator's own pages, or
    ``"urn:sloguard:problem:"``); None goes back to ``$SLOGUARD_PROBLEM_BASE`` or the
    default. Raises :class:`ConfigurationError` for a base that is not an absolute URI."""
    global PROBLEM_TYPE_PREFIX
    PROBLEM_TYPE_PREFIX = _base_from_env() if base is None else _checked_base(base, "problem base")


def problem_type(error: str) -> str:
    """The ``type`` of the problem whose ``error`` is ``error``: a URL of its documentation."""
    return PROBLEM_TYPE_PREFIX + error


def problem_body(status: int, error: str, title: str, detail: str, **extra: Any) -> bytes:
    """Encode a problem document; its ``type`` is :func:`problem_type` of ``error``."""
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


class Problem(Exception):
    """An error answer: raised where the error is found, answered as problem+json once
    (by the ``/slo`` API and the controller alike). ``headers`` (e.g. ``Retry-After``)
    may be added before it is answered."""

    def __init__(self, status: int, error: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.title, self.detail = status, error, title, detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    def response(self) -> Response:
        """The answer, as a Starlette response (for a Starlette endpoint to return)."""
        body = problem_body(self.status, self.error, self.title, self.detail, **self.extra)
        return Response(
            body, self.status, headers=self.headers, media_type=PROBLEM_CONTENT_TYPE.decode()
        )

    async def send(self, send: Send) -> None:
        """The answer, sent through an ASGI ``send``."""
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send_problem(
            send, self.status, self.error, self.title, self.detail, headers=headers, **self.extra
        )
