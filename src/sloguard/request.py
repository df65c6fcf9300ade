"""Step 1 of the request path: classify a request in one pass over its headers.

:class:`Classifier` turns an HTTP scope into a :class:`GuardedRequest`, the small
per-request object every later stage reads: the capability it is for, its
priority, its idempotency key as sent, its ``Authorization`` and the time it
arrived. The capability, first match wins (DESIGN.md): the operator's route
table, the path ``/route/{verb}/{name}``, the ``X-Capability`` header, then the
body of a seed-form ``POST /route``.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import Message, Receive, Scope

from sloguard._clock import Clock
from sloguard.capability import SEED_ROUTE_PATH, RouteTable, capability_from_path, read_seed_body
from sloguard.http import IDEMPOTENCY_KEY, PRIORITY, BufferedReceive, Reply
from sloguard.problems import problem_reply
from sloguard.shedding.priority import DEFAULT_PRIORITY, parse_priority
from sloguard.slo.schema import Priority

DEFAULT_SEED_BODY_BYTES = 10 * 1024 * 1024
"""The largest seed-form body read (413 above it): the gate's ``max_request_bytes``
when SLOGuard has one. A larger one is never let through uninspected, or its key and
capability would skip idempotency and shedding."""


class GuardedRequest:
    """What sloguard knows of one HTTP request; stages read it, and the ones that read
    the body ahead of the app replace ``receive`` with a buffered one."""

    __slots__ = (
        "authorization",
        "capability",
        "has_body",
        "key",
        "key_repeated",
        "priority",
        "receive",
        "received",
        "scope",
        "start",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        start: float,
        capability: str | None = None,
        priority: Priority = DEFAULT_PRIORITY,
        key: bytes | None = None,
        key_repeated: bool = False,
        authorization: bytes = b"",
        has_body: bool = False,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.start = start
        """When the request arrived (its headers)."""
        self.received = start
        """When its body had arrived: the service's time runs from here, so that a slow
        upload is not the service being slow."""
        self.has_body = has_body
        """Whether the headers announce a body (``Content-Length`` > 0 or chunked)."""
        self.capability = capability
        """``verb:name``, or None when the request names none."""
        self.priority = priority
        self.key = key
        """The idempotency key header's raw value, None when absent."""
        self.key_repeated = key_repeated
        """Whether the key header came more than once (a 400)."""
        self.authorization = authorization
        """The ``Authorization`` header's value, ``b""`` when absent; a repeated header's
        values joined by a newline (which no one value holds): a principal of its own,
        whichever value the app reads."""


class Classifier:
    """Reads what every stage needs of a request in one pass over its headers.

    ``capability_header`` names the capability only when trusted: with
    ``trusted_clients`` None, from any client; otherwise only from those client
    addresses (the proxies that set it). Untrusted, any client could charge its
    requests to any capability and make it shed.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        route_table: RouteTable | None = None,
        key_header: str | None = IDEMPOTENCY_KEY,
        priority_header: str = PRIORITY,
        capability_header: str | None = None,
        trusted_clients: Collection[str] | None = None,
        capabilities: bool = True,
        seed_body_bytes: int = DEFAULT_SEED_BODY_BYTES,
    ) -> None:
        self.clock = clock
        self.seed_body_bytes = seed_body_bytes
        """The largest seed-form body :meth:`read_seed_form` reads (413 above it)."""
        self.capabilities = capabilities
        """Whether requests name capabilities and priorities at all (False: idempotency alone)."""
        self.route_table = route_table if route_table is not None and len(route_table) else None
        # An empty name matches no header: nothing is read for a feature that is off.
        self.key_header = "" if key_header is None else key_header
        self._key = self.key_header.lower().encode("latin-1")
        self._priority = priority_header.lower().encode("latin-1")
        self._capability = (capability_header or "").lower().encode("latin-1")
        self._trusted = None if trusted_clients is None else frozenset(trusted_clients)
        # The names classify() reads (an empty one is a feature that is off).
        read = {self._key, self._priority, self._capability, b"authorization"}
        self._read = frozenset(read | {b"content-length", b"transfer-encoding"}) - {b""}

    def classify(self, scope: Scope, receive: Receive) -> GuardedRequest:
        """The request's capability, priority, key and credentials, from its path and headers."""
        path: str = scope["path"]
        capability = None if self.route_table is None else self.route_table.match(path)
        if capability is None and self.capabilities:
            capability = capability_from_path(path)
        raw_priority: bytes | None = None
        key: bytes | None = None
        repeated = False
        authorization: bytes | None = None
        has_body = False
        claimed: bytes | None = None
        key_name, priority_name, capability_name = self._key, self._priority, self._capability
        read = self._read
        for name, value in scope["headers"]:
            if name not in read:  # most headers: one set lookup, not six comparisons
                continue
            if name == key_name:
                repeated = key is not None
                key = value
            elif name == b"content-length":
                has_body = value != b"0"
            elif name == b"authorization":
                authorization = value if authorization is None else authorization + b"\n" + value
            elif name == priority_name:
                raw_priority = value
            elif name == b"transfer-encoding":
                has_body = True
            elif name == capability_name:
                claimed = value
        if claimed is not None and capability is None and self._trusts(scope):
            capability = claimed.decode("latin-1").strip() or None
        return GuardedRequest(
            scope,
            receive,
            self.clock(),
            capability,
            DEFAULT_PRIORITY if raw_priority is None else parse_priority(raw_priority),
            key,
            repeated,
            b"" if authorization is None else authorization,
            has_body,
        )

    def classify_keyed(
        self, scope: Scope, receive: Receive, *, required: bool
    ) -> GuardedRequest | None:
        """For idempotency alone (``capabilities=False``): the request's key and
        credentials, or None when it has no key and ``required`` is False (then
        nothing of it matters). Two names looked for per header, not :meth:`classify`'s six."""
        key: bytes | None = None
        repeated = False
        authorization: bytes | None = None
        key_name = self._key
        for name, value in scope["headers"]:
            if name == key_name:
                repeated = key is not None
                key = value
            elif name == b"authorization":
                authorization = value if authorization is None else authorization + b"\n" + value
        if key is None and not required:
            return None
        credential = b"" if authorization is None else authorization
        return GuardedRequest(
            scope, receive, self.clock(), None, DEFAULT_PRIORITY, key, repeated, credential
        )

    def _trusts(self, scope: Scope) -> bool:
        if self._trusted is None:
            return True
        client = scope.get("client")
        return client is not None and client[0] in self._trusted

    def app_receive(self, request: GuardedRequest) -> Receive:
        """The ``receive`` to hand the app: it notes when the body has arrived
        (``request.received``). A body a stage read ahead has arrived already."""
        receive = request.receive
        if isinstance(receive, BufferedReceive):
            request.received = self.clock()
            return receive
        if not request.has_body:
            return receive
        return _BodyTimer(request, receive, self.clock)

    @staticmethod
    def is_seed_form(request: GuardedRequest) -> bool:
        """Whether the request's body may name its capability (``POST /route``)."""
        scope = request.scope
        return (
            request.capability is None
            and scope["path"] == SEED_ROUTE_PATH
            and scope["method"] == "POST"
        )

    async def read_seed_form(self, request: GuardedRequest, *, read_key: bool) -> Reply | None:
        """Read a seed-form ``POST /route`` body for its capability, priority and key;
        the headers, when they name a priority or key, win over the body. A key from
        the body is added to the scope's headers, so that the app sees it too.

        A body over ``seed_body_bytes`` is answered (the 413 returned), read no
        further than the message that crossed the limit, and none of it kept.
        """
        limit = self.seed_body_bytes
        scope = request.scope
        for name, value in scope["headers"]:
            if name == b"content-length" and _declares_over(value, limit):
                return _seed_too_large(limit)
        messages: list[Message] = []
        size = 0
        while True:
            message = await request.receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    return _seed_too_large(limit)
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        buffered = BufferedReceive(messages, request.receive)
        request.receive = buffered
        if message["type"] != "http.request":
            return None  # the client left mid-body: the app sees it go
        seed = read_seed_body(buffered.body)
        request.capability = seed.capability
        if seed.priority is not None and not _has_header(scope, self._priority):
            request.priority = parse_priority(seed.priority)
        seed_key = seed.idempotency_key
        # A key that is not printable ASCII is no key (the controller answers it 400):
        # encoded lossily, distinct keys would collapse into one.
        if (
            seed_key is not None
            and seed_key.isascii()
            and seed_key.isprintable()
            and (read_key and request.key is None)
        ):
            key = seed_key.encode("ascii")
            request.key = key
            request.scope = {**scope, "headers": [*scope["headers"], (self._key, key)]}
        return None


def _declares_over(content_length: bytes, limit: int) -> bool:
    """Whether a ``Content-Length`` value declares a body of more than ``limit`` bytes."""
    if not content_length.isdigit():
        return False
    digits = content_length.lstrip(b"0")
    # By its length first: Python makes no int of over 4,300 digits (a ValueError).
    return len(digits) > len(str(limit)) or int(digits or b"0") > limit


def _seed_too_large(limit: int) -> Reply:
    return problem_reply(
        413,
        "payload_too_large",
        "Payload too large",
        f"a seed-form POST /route body may be at most {limit} bytes (it is read whole "
        "for its capability and idempotency key)",
    )


class _BodyTimer:
    """A ``receive`` that notes when the last message of the request body arrives."""

    __slots__ = ("_clock", "_receive", "_request")

    def __init__(self, request: GuardedRequest, receive: Receive, clock: Clock) -> None:
        self._request = request
        self._receive = receive
        self._clock = clock

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            self._request.received = self._clock()
        return message


def _has_header(scope: Scope, name: bytes) -> bool:
    return any(header == name for header, _ in scope["headers"])
