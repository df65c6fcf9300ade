"""The in-process request path fuzzed: hostile requests through SLOGuard and
IdempotencyMiddleware, against apps that answer, stream, fail, stay silent or
hang until the test lets them go.

What must hold for any request:

- sloguard answers only with problem+json (the documented members and an ``error``
  docs/problems.md has a section for), never a 500, and no exception escapes it
  but the app's own;
- the app reads the body exactly as the client sent it (up to a disconnect),
  whoever read it ahead;
- for one principal, key and request, the app completes a storable response at
  most once, never runs twice at once, and every replay is that response, byte
  for byte (status, stored headers, body).

Each example runs on a fresh store and guard, on its own event loop; nothing
sleeps: the clock is a ManualClock and a slow app waits for an event.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sloguard import IdempotencyMiddleware, MemoryStore, RedisStore, SLOGuard
from sloguard._clock import ManualClock
from sloguard.exceptions import InvalidIdempotencyKey
from sloguard.idempotency.gate import SCOPE_KEY, UNSTORED_HEADERS
from sloguard.idempotency.keys import parse_idempotency_key
from sloguard.idempotency.store import Store
from sloguard.problems import PROBLEM_CONTENT_TYPE, problem_type
from tests.asgi import body_of, http_scope
from tests.redis_server import REDIS_URL, check_redis

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED = frozenset(
    re.findall(r"^### (\w+)$", (ROOT / "docs/problems.md").read_text("utf-8"), re.M)
)
SLO = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p50_ms: 50, p95_ms: 100, p99_ms: 200}
  availability: {target: 0.99}
enforcement: {reject_on_violation: true}
shedding:
  concurrency: {mode: fixed, initial: 1, min: 1, max: 1, queue: {size: 1}}
"""
CAPABILITY = "convert:pdf"
"""The one capability with an SLO file."""
MAX_REQUEST_BYTES = 64
MAX_BODY_BYTES = 48
REPLAYED = (b"idempotent-replayed", b"x-idempotent-replay")
SCALE = int(os.environ.get("SLOGUARD_FUZZ_SCALE", "1"))
"""Examples per property are multiplied by this: a longer hunt, run by hand."""
FUZZ = settings(
    max_examples=250 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
"""The stacks every property must hold for (SLOGuard, IdempotencyMiddleware on each store)."""
FUZZ_LESS = settings(FUZZ, max_examples=100 * SCALE)
"""Stacks that differ from those in one option (a principal function, a store that is down)."""


# -- the app ----------------------------------------------------------------------


class AppFailure(Exception):
    """What the app raises: the only exception allowed out of the middleware."""


BEHAVIOURS = (
    "ok",
    "stream",
    "empty",
    "big",
    "cookie",
    "ignore_body",
    "s429",
    "s500",
    "s503",
    "raise_before",
    "raise_after",
    "raise_mid",
    "silent",
)
STORABLE = frozenset({"ok", "stream", "empty", "cookie", "ignore_body"})
"""Behaviours whose response the gate stores (the others are released, or too large)."""
ERRORS = frozenset({"s429", "s500", "s503"})
"""Behaviours stored too by a gate that keeps errors (``release_on_server_error=False``)."""


@dataclass
class App:
    """The protected app: counts each request it runs by what the client sent, and
    can hold every request at an event the test opens."""

    behaviour: str = "ok"
    hold: asyncio.Event | None = None
    runs: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    running: int = 0
    leased: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Runs now holding each principal's key (until their response is complete)."""
    most_leased: int = 0
    """The most runs that held one key at once."""
    leased_runs: dict[int, Leased] = field(default_factory=dict)
    """The runs (numbered from 1, as their ``x-app`` header says) under an idempotency lease."""
    bodies: dict[int, tuple[bytes, bool]] = field(default_factory=dict)
    """Each run's body as the app read it, and whether it saw the client go."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        # A run holds its key until its response is complete: the key is settled as the
        # last message leaves (stored, or released so that a retry runs at once).
        lease = scope.get(SCOPE_KEY)
        key = None if lease is None else (lease["principal"], lease["key"])

        async def send_and_let_go(message: Message) -> None:
            nonlocal key
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self._let_go(key)
                key = None
            await send(message)

        self.running += 1
        if key is not None:
            self.leased[key] += 1
            self.most_leased = max(self.most_leased, self.leased[key])
        try:
            await self._serve(scope, receive, send_and_let_go)
        finally:
            self.running -= 1
            self._let_go(key)

    def _let_go(self, key: tuple[str, str] | None) -> None:
        if key is not None:
            self.leased[key] -= 1

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        behaviour = self.behaviour
        body, gone = b"", False
        read = behaviour != "ignore_body"
        if read:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    break
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        self.runs[identity(scope, body)] += 1
        n = sum(self.runs.values())
        if read:
            self.bodies[n] = (body, gone)
        if SCOPE_KEY in scope:
            leased = scope[SCOPE_KEY]
            self.leased_runs[n] = Leased(
                leased["principal"], leased["key"], body if read else None, scope["headers"]
            )
        if self.hold is not None:
            await self.hold.wait()
        if behaviour == "raise_before":
            raise AppFailure(n)
        if behaviour == "silent":
            return
        status = {"s429": 429, "s500": 500, "s503": 503, "empty": 204}.get(behaviour, 201)
        headers = [(b"content-type", b"application/json"), (b"x-app", str(n).encode())]
        if behaviour == "cookie":  # none of these is stored
            headers.append((b"Set-Cookie", b"session=secret"))
            headers.append((b"connection", b"close"))
            headers.append((b"X-Idempotent-Replay", b"false"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if behaviour == "raise_after":
            raise AppFailure(n)
        if behaviour == "empty":
            await send({"type": "http.response.body", "body": b""})
            return
        payload = json.dumps({"n": n}).encode()
        if behaviour == "big":
            payload += b" " * MAX_BODY_BYTES
        if behaviour in ("stream", "raise_mid"):
            for part in (b"[", payload, b","):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            if behaviour == "raise_mid":
                raise AppFailure(n)
            await send({"type": "http.response.body", "body": b"0]"})
            return
        await send({"type": "http.response.body", "body": payload})


@dataclass(frozen=True)
class Leased:
    """A run under an idempotency lease: the principal and key it held, the body it read
    (None: it read none) and the headers the client sent."""

    principal: str
    key: str
    body: bytes | None
    headers: list[tuple[bytes, bytes]]


def values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for k, v in headers if k == name]


def identity(scope: Scope, body: bytes) -> tuple[Any, ...]:
    """What makes two requests "the same" to the app: every header it could
    authenticate by or key on, the operation and the body."""
    headers = scope["headers"]
    return (
        tuple(v for k, v in headers if k in (b"authorization", b"cookie", b"idempotency-key")),
        scope["method"],
        scope["path"],
        scope["query_string"],
        body,
    )


# -- hostile requests ---------------------------------------------------------------

KEYS = st.one_of(
    st.sampled_from([b"k1", b"k2", b'"k1"', b" k1 ", b"K1"]),
    st.sampled_from([b"", b'"', b'""', b'"k1', b'"a\\"b"', b'"a\\nb"', b"a b", b"a\tb"]),
    st.sampled_from([b"x" * 255, b"x" * 256, b'"' + b"x" * 255 + b'"', b"\\" * 2000]),
    st.binary(max_size=20),
    st.text(st.characters(codec="ascii"), max_size=12).map(str.encode),
)
AUTHORIZATIONS = st.one_of(
    st.sampled_from([b"Bearer alice", b"Bearer bob", b"", b" Bearer alice", b"Basic \xff\xfe"]),
    st.binary(max_size=12),
)
PRIORITIES = st.one_of(
    st.sampled_from([b"low", b"LOW", b" high ", b"critical", b"normal", b"", b"urgent"]),
    st.binary(max_size=8),
)
CONTENT_LENGTHS = st.one_of(
    st.integers(0, 200).map(lambda n: str(n).encode()),
    st.sampled_from([b"-1", b" 5", b"5 ", b"abc", b"1e3", b"0x10", b"\xd9\xa3", b"", b"00"]),
    st.sampled_from([b"9" * 5000, b"0" * 5000, b"1" + b"0" * 30]),
)
HEADERS = st.one_of(
    st.tuples(st.just(b"idempotency-key"), KEYS),
    st.tuples(st.just(b"authorization"), AUTHORIZATIONS),
    st.tuples(st.just(b"cookie"), st.sampled_from([b"session=a", b"session=b", b""])),
    st.tuples(st.just(b"x-priority"), PRIORITIES),
    st.tuples(st.just(b"content-length"), CONTENT_LENGTHS),
    st.tuples(st.just(b"transfer-encoding"), st.sampled_from([b"chunked", b"gzip, chunked", b"x"])),
    st.tuples(st.just(b"x-capability"), st.sampled_from([b"convert:pdf", b"a:b", b"", b" "])),
    st.tuples(
        st.sampled_from([b"", b"idempotency-key ", b"Idempotency-Key", b"\xff", b"x"]),
        st.binary(max_size=10),
    ),
    st.tuples(st.just(b"x-long"), st.just(b"v" * 20_000)),
)
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=10),
    st.sampled_from(["convert", "pdf", "k1", " k1", '"k1"', "x" * 300, "LOW", "\ud800", "é"]),
    st.lists(st.integers(), max_size=2),
)
SEED_BODIES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "verb": JSON_VALUES,
            "capability": JSON_VALUES,
            "idempotency_key": JSON_VALUES,
            "priority": JSON_VALUES,
            "request_payload": JSON_VALUES,
        },
    ).map(lambda d: json.dumps(d).encode()),
    st.sampled_from([b"", b"{", b"[]", b"null", b'{"verb": 1e999}', b"[" * 5000, b"\xff\xfe"]),
    st.binary(max_size=80),
)
BODIES = st.one_of(st.binary(max_size=30), st.binary(min_size=60, max_size=120), SEED_BODIES)
PATHS = st.one_of(
    st.sampled_from(
        ["/items", "/route", "/route/", "/route/convert/pdf", "/route/convert/other", "/route/a"]
    ),
    st.text(max_size=12).map(lambda s: "/" + s),
)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    cuts: tuple[int, ...]
    """Where the body is split over ``http.request`` messages."""
    gone_after: int | None
    """The client leaves (``http.disconnect``) after this many messages, or never."""

    def messages(self) -> list[Message]:
        bounds = [0, *sorted({min(c, len(self.body)) for c in self.cuts}), len(self.body)]
        chunks = [self.body[a:b] for a, b in pairwise(bounds)]
        messages: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
            for i, chunk in enumerate(chunks)
        ]
        if self.gone_after is not None and self.gone_after < len(messages):
            messages = messages[: self.gone_after]
            messages.append({"type": "http.disconnect"})
        return messages

    @property
    def sent_body(self) -> bytes:
        """The body the client sent before it left (all of it when it stayed)."""
        return b"".join(m.get("body", b"") for m in self.messages())

    @property
    def left(self) -> bool:
        return any(m["type"] == "http.disconnect" for m in self.messages())


@st.composite
def requests(draw: st.DrawFn, *, keyed: bool = False) -> Request:
    method = draw(st.sampled_from(["POST", "POST", "PATCH", "PUT", "GET", "DELETE", "post"]))
    path = draw(PATHS)
    headers = draw(st.lists(HEADERS, max_size=6))
    if keyed:
        method = draw(st.sampled_from(["POST", "PATCH"]))
        headers.append((b"idempotency-key", draw(st.sampled_from([b"k1", b'"k1"', b"k-2"]))))
    body = draw(BODIES)
    cuts = draw(st.lists(st.integers(0, len(body)), max_size=5))
    gone_after = None if keyed else draw(st.none() | st.integers(0, 6))
    return Request(
        method,
        path,
        draw(st.sampled_from([b"", b"a=1", b"a=1&a=2", b"%ff"])),
        tuple(draw(st.permutations(headers))),
        body,
        tuple(cuts),
        gone_after,
    )


# -- driving it -------------------------------------------------------------------


@dataclass
class Answer:
    """What the client got: status (0: nothing), headers, body, and what escaped."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    escaped: BaseException | None

    @property
    def replayed(self) -> bool:
        return (REPLAYED[0], b"true") in self.headers

    @property
    def from_app(self) -> bool:
        return self.run is not None

    @property
    def run(self) -> int | None:
        """Which run of the app sent this (its ``x-app`` header), None: not the app."""
        return next((int(v) for k, v in self.headers if k == b"x-app"), None)


async def run(app: ASGIApp, request: Request, chunking: tuple[int, ...] | None = None) -> Answer:
    if chunking is not None:
        request = replace(request, cuts=chunking)
    incoming = request.messages()
    scope = http_scope(request.method, request.path, request.headers, request.query)
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    escaped: BaseException | None = None
    try:
        await app(scope, receive, send)
    except Exception as exc:
        escaped = exc
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    return Answer(
        0 if start is None else start["status"],
        [] if start is None else list(start.get("headers", [])),
        body_of(sent),
        escaped,
    )


def check_answer(answer: Answer, app: App, request: Request) -> None:
    """What any single answer must be, whoever gave it."""
    event(f"answered by: {kind_of(answer)}")
    if answer.escaped is not None:
        assert isinstance(answer.escaped, AppFailure), repr(answer.escaped)
        assert app.behaviour.startswith("raise"), app.behaviour
    if answer.from_app or answer.replayed:
        return
    if answer.status == 0:  # nothing sent: only when the app sent nothing or the client left
        assert app.behaviour in ("silent", "raise_before") or request.left
        return
    # sloguard's own answer
    assert answer.status != 500
    assert not 200 <= answer.status < 300, answer
    assert (b"content-type", PROBLEM_CONTENT_TYPE) in answer.headers, answer
    problem = json.loads(answer.body)
    assert problem["status"] == answer.status
    assert problem["error"] in DOCUMENTED, problem
    assert problem["type"] == problem_type(problem["error"])
    assert isinstance(problem["title"], str)
    assert isinstance(problem["detail"], str)
    assert (b"content-length", str(len(answer.body)).encode()) in answer.headers


def check_bounded(guarded: ASGIApp) -> None:
    """The guard keeps nothing by a name a client chose: only capabilities with an SLO
    file (any /route/{verb}/{name} names one, and clients make up as many as they like)."""
    if isinstance(guarded, SLOGuard):
        counts = guarded.reporter.idempotency
        assert {*counts._hits, *counts._misses} <= {None, CAPABILITY}


def kind_of(answer: Answer) -> str:
    """For --hypothesis-show-statistics: who answered, and how."""
    if answer.replayed:
        return "replay"
    if answer.from_app:
        return f"app {answer.status}"
    if answer.status == 0:
        return "nothing" if answer.escaped is None else "app raised"
    return f"sloguard {answer.status} {json.loads(answer.body)['error']}"


def check_body(app: App, answer: Answer, request: Request) -> None:
    """The run that answered read the body as the client sent it."""
    if answer.run is not None and not answer.replayed and answer.run in app.bodies:
        assert app.bodies[answer.run] == (request.sent_body, request.left)


# -- the stacks under test --------------------------------------------------------


@pytest.fixture(scope="module")
def slo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz-slos")
    (directory / "pdf.yml").write_text(SLO, encoding="utf-8")
    return directory


Build = Callable[..., Any]
"""Builds (as an async context manager) the middleware under test around an app."""


@dataclass(frozen=True)
class Stack:
    build: Build
    fuzz: settings
    storable: frozenset[str] = STORABLE
    """The app's behaviours whose responses this stack stores."""
    credential: bytes = b"authorization"
    """The header naming the client: its values (all of them) make the principal."""


def guard_stack(slo_dir: Path, guard: dict[str, Any] | None = None, **gate: Any) -> Build:
    @asynccontextmanager
    async def build(app: App, **extra: Any) -> AsyncIterator[ASGIApp]:
        clock = ManualClock()
        gate_options = {"max_request_bytes": MAX_REQUEST_BYTES, "max_body_bytes": MAX_BODY_BYTES}
        gate_options.update(gate, **extra)
        # ``guard`` options win (``idempotency=False`` with no store).
        options = {"store": MemoryStore(clock=clock), "idempotency": gate_options, **(guard or {})}
        yield SLOGuard(
            app,
            slo_dir=slo_dir,
            route_table={"/items": CAPABILITY},
            clock=clock,
            metrics=False,
            reload_every_s=None,
            random_source=lambda: 0.5,
            **options,
        )

    return build


def middleware_stack(make_store: Callable[[], Any], **gate: Any) -> Build:
    @asynccontextmanager
    async def build(app: App, **extra: Any) -> AsyncIterator[ASGIApp]:
        store, close = make_store()
        try:
            yield IdempotencyMiddleware(
                app,
                store=store,
                max_request_bytes=MAX_REQUEST_BYTES,
                max_body_bytes=MAX_BODY_BYTES,
                **{**gate, **extra},
            )
        finally:
            await close()

    return build


def memory_store() -> tuple[Store, Callable[[], Any]]:
    async def close() -> None:
        pass

    return MemoryStore(clock=ManualClock()), close


@pytest.fixture(scope="module")
def redis_store(request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    url = check_redis(REDIS_URL)
    prefix = f"sloguard-fuzz:{uuid.uuid4().hex}:"

    def make() -> tuple[Store, Callable[[], Any]]:
        store = RedisStore(url, prefix=f"{prefix}{uuid.uuid4().hex}:", timeout_seconds=5.0)
        return store, store.aclose

    yield make
    admin = redis.Redis.from_url(url)
    try:
        for name in admin.scan_iter(match=prefix + "*", count=1000):
            admin.delete(name)
    finally:
        admin.close()


def cookie_principal(scope: Scope) -> str:
    """A principal= of an app whose users sign in by cookie; it fails for some clients."""
    cookies = values(scope["headers"], b"cookie")
    if not cookies:
        raise LookupError("no session")
    if cookies[-1] == b"session=b":
        return cast(str, cookies[-1])  # a bug of the app's: not a str
    return repr(cookies)


def unreachable_store(on_error: str) -> Callable[[], Any]:
    def make() -> tuple[Store, Callable[[], Any]]:
        store = RedisStore("redis://127.0.0.1:1/0", on_error=on_error, timeout_seconds=1.0)  # type: ignore[arg-type]
        return store, store.aclose

    return make


STACKS: dict[str, Callable[[Path], Stack]] = {
    "guard": lambda slo_dir: Stack(guard_stack(slo_dir), FUZZ),
    "guard-required": lambda slo_dir: Stack(
        guard_stack(slo_dir, require_key=True, methods=["POST", "PUT"], paths=["/it"]), FUZZ_LESS
    ),
    "guard-traced": lambda slo_dir: Stack(
        guard_stack(slo_dir, {"tracing": True, "tracer_provider": TracerProvider()}), FUZZ_LESS
    ),
    "guard-no-idempotency": lambda slo_dir: Stack(
        guard_stack(slo_dir, {"idempotency": False, "store": None}), FUZZ_LESS, frozenset()
    ),
    "middleware-memory": lambda _: Stack(middleware_stack(memory_store), FUZZ),
    "middleware-principal": lambda _: Stack(
        middleware_stack(memory_store, principal=cookie_principal),
        FUZZ_LESS,
        credential=b"cookie",
    ),
    "middleware-keeps-errors": lambda _: Stack(
        middleware_stack(memory_store, release_on_server_error=False, released_statuses=()),
        FUZZ_LESS,
        STORABLE | ERRORS,
    ),
    "middleware-down": lambda _: Stack(
        middleware_stack(unreachable_store("fail_closed")), FUZZ_LESS
    ),
    "middleware-down-open": lambda _: Stack(
        middleware_stack(unreachable_store("fail_open")), FUZZ_LESS
    ),
}


@pytest.fixture(scope="module", params=[*STACKS, "middleware-redis"])
def stack(request: pytest.FixtureRequest, slo_dir: Path) -> Stack:
    if request.param == "middleware-redis":
        return Stack(middleware_stack(request.getfixturevalue("redis_store")), FUZZ)
    return STACKS[request.param](slo_dir)


# -- the properties ---------------------------------------------------------------


def test_any_request_gets_the_app_or_a_documented_problem(stack: Stack) -> None:
    @stack.fuzz
    @given(request=requests(), behaviour=st.sampled_from(BEHAVIOURS))
    def fuzz(request: Request, behaviour: str) -> None:
        asyncio.run(main(request, behaviour))

    async def main(request: Request, behaviour: str) -> None:
        app = App(behaviour)
        async with stack.build(app) as guarded:
            answer = await run(guarded, request)
        check_answer(answer, app, request)
        check_bounded(guarded)
        check_body(app, answer, request)
        if app.bodies:
            assert list(app.bodies.values()) == [(request.sent_body, request.left)]
        if not app.runs:
            assert not answer.from_app
            assert answer.escaped is None

    fuzz()


VARIANTS = ("same", "same", "same", "other_body", "other_key", "other_principal", "first_principal")
"""How a wave's request relates to the first: the same one (its body split its own
way), the same key with another body, another key, or the same from another client
(its credentials after the first's, or before them: an app reads either)."""


@dataclass(frozen=True)
class Duplicates:
    request: Request
    waves: tuple[tuple[tuple[str, tuple[int, ...]], ...], ...]
    """Waves of requests sent one after another, the requests of a wave at once: each a
    variant of ``request`` and its own split of the body."""
    wait: bool

    def variant(self, name: str, cuts: tuple[int, ...]) -> Request:
        request = self.request
        if name == "other_body":
            request = replace(request, body=request.body + b"!")
        elif name == "other_key":
            headers = tuple(
                (k, b"k-other" if k == b"idempotency-key" else v) for k, v in request.headers
            )
            request = replace(request, headers=headers)
        elif name == "other_principal":
            others = (b"authorization", b"Bearer zed-the-fuzzer"), (b"cookie", b"session=zed")
            request = replace(request, headers=(*request.headers, *others))
        elif name == "first_principal":
            others = (b"authorization", b"Bearer zed-the-fuzzer"), (b"cookie", b"session=zed")
            request = replace(request, headers=(*others, *request.headers))
        return replace(request, cuts=cuts)


@st.composite
def duplicates(draw: st.DrawFn) -> Duplicates:
    request = draw(requests(keyed=True))
    member = st.tuples(
        st.sampled_from(VARIANTS),
        st.lists(st.integers(0, len(request.body) + 1), max_size=4).map(tuple),
    )
    waves = draw(
        st.lists(st.lists(member, min_size=1, max_size=4).map(tuple), min_size=1, max_size=4)
    )
    return Duplicates(request, tuple(waves), draw(st.booleans()))


def key_of(request: Request) -> str | None:
    values = [v for k, v in request.headers if k == b"idempotency-key"]
    try:
        return parse_idempotency_key(values[-1]) if len(values) == 1 else None
    except InvalidIdempotencyKey:
        return None


def test_duplicates_run_at_most_once_and_replay_byte_for_byte(stack: Stack) -> None:
    @stack.fuzz
    @given(case=duplicates(), behaviour=st.sampled_from(BEHAVIOURS))
    def fuzz(case: Duplicates, behaviour: str) -> None:
        asyncio.run(main(case, behaviour))

    async def main(case: Duplicates, behaviour: str) -> None:
        app = App(behaviour)
        answers: list[tuple[Request, Answer]] = []
        async with stack.build(app, wait_seconds=5.0 if case.wait else 0.0) as guarded:
            for wave in case.waves:
                app.hold = asyncio.Event()
                sent = [case.variant(name, cuts) for name, cuts in wave]
                tasks = [asyncio.ensure_future(run(guarded, request)) for request in sent]
                # Let the wave in until one of it is in the app (or all are answered),
                # then let the app finish.
                for turn in range(10_000):
                    if app.running or all(t.done() for t in tasks):
                        break
                    await asyncio.sleep(0 if turn < 100 else 0.001)
                app.hold.set()
                answers += zip(
                    sent, await asyncio.wait_for(asyncio.gather(*tasks), 10), strict=True
                )

        check_bounded(guarded)
        for request, answer in answers:
            check_answer(answer, app, request)
            check_body(app, answer, request)
        assert app.most_leased <= 1, "two runs of one key at once"
        # Waves are in order; a wave's answers are not (one may wait for another's).
        ran = {a.run: a for _, a in answers if a.run in app.leased_runs and not a.replayed}
        storable = behaviour in stack.storable
        if storable:
            keys = Counter((app.leased_runs[n].principal, app.leased_runs[n].key) for n in ran)
            assert max(keys.values(), default=0) <= 1, "a key ran to a stored response twice"
        for request, answer in answers:
            if not answer.replayed:
                continue
            assert storable, "a replay of a response never stored"
            assert answer.run in ran, "a replay of nothing"
            leased = app.leased_runs[answer.run]
            assert leased.key == key_of(request)
            assert leased.body in (None, request.body)
            credential = stack.credential
            assert values(leased.headers, credential) == values(request.headers, credential), (
                "a replay to another client"
            )
            stored = ran[answer.run]
            assert answer.status == stored.status
            assert answer.body == stored.body
            unstored = UNSTORED_HEADERS | set(REPLAYED)
            kept = [h for h in stored.headers if h[0].lower() not in unstored]
            assert answer.headers == [*kept, *((name, b"true") for name in REPLAYED)]

    fuzz()
