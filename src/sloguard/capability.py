"""Which capability (``verb:name``) a request is for.

First match wins (DESIGN.md): the operator's route table, the path
``/route/{verb}/{name}``, the ``X-Capability`` header, then the body of a
seed-form ``POST /route`` (JSON ``{"verb", "capability", "priority"?,
"idempotency_key"?, "request_payload"?}``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.routing import compile_path

from sloguard.exceptions import ConfigurationError

ROUTE_PREFIX = "/route/"
SEED_ROUTE_PATH = "/route"

_CAPABILITY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*:[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def is_capability(value: str) -> bool:
    """Whether ``value`` has the shape of a capability key, ``verb:name``."""
    return _CAPABILITY.match(value) is not None


class RouteTable:
    """Path patterns mapped to capabilities, tried in order.

    Patterns use Starlette's path syntax: ``/documents/{id}/pdf``,
    ``/files/{rest:path}``. Only the path is matched, not the method. Answers are
    remembered for the first ``MEMO_SIZE`` distinct paths, so a table of many
    patterns costs one dictionary lookup per request on a service's usual paths
    (and a client sending endless distinct paths cannot grow the memory).
    """

    MEMO_SIZE = 4096

    def __init__(self, routes: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = list(routes.items()) if isinstance(routes, Mapping) else list(routes)
        self._routes: list[tuple[re.Pattern[str], str]] = []
        for pattern, capability in pairs:
            if not pattern.startswith("/"):
                raise ConfigurationError(f"route table: pattern {pattern!r} must start with '/'")
            if not is_capability(capability):
                raise ConfigurationError(
                    f"route table: {pattern!r} maps to {capability!r}, which is not verb:name"
                )
            regex, _, _ = compile_path(pattern)
            self._routes.append((regex, capability))
        self._memo: dict[str, str | None] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def match(self, path: str) -> str | None:
        """The capability of the first pattern matching ``path``, or None."""
        try:
            return self._memo[path]
        except KeyError:
            pass
        found = next((cap for regex, cap in self._routes if regex.match(path) is not None), None)
        if len(self._memo) < self.MEMO_SIZE:
            self._memo[path] = found
        return found


def capability_from_path(path: str) -> str | None:
    """``verb:name`` for ``/route/{verb}/{name}``, else None."""
    if not path.startswith(ROUTE_PREFIX):
        return None
    verb, slash, name = path[len(ROUTE_PREFIX) :].partition("/")
    if not slash or not verb or not name or "/" in name:
        return None
    capability = f"{verb}:{name}"
    return capability if is_capability(capability) else None


@dataclass(frozen=True, slots=True)
class SeedRequest:
    """What a seed-form ``/route`` body says about its request (fields it lacks are None)."""

    capability: str | None
    priority: str | None
    idempotency_key: str | None


_NOTHING = SeedRequest(None, None, None)


def read_seed_body(body: bytes) -> SeedRequest:
    """The capability, priority and idempotency key a seed-form body names.

    Lenient: a body that is not a JSON object (or nests deeper than the parser
    goes), or fields of the wrong type, name nothing (the controller answers those
    with a 400 of its own).
    """
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError):
        return _NOTHING
    if not isinstance(document, dict):
        return _NOTHING
    verb, name = document.get("verb"), document.get("capability")
    capability = None
    if isinstance(verb, str) and isinstance(name, str) and is_capability(f"{verb}:{name}"):
        capability = f"{verb}:{name}"
    priority = document.get("priority")
    key = document.get("idempotency_key")
    return SeedRequest(
        capability,
        priority if isinstance(priority, str) else None,
        key if isinstance(key, str) and key else None,
    )
