"""The controller's forwarding path fuzzed with misbehaving workers: real sockets, the
real controller app behind SLOGuard (idempotency on a MemoryStore), on one event loop.

The workers are :class:`~tests.routing.workers.ScriptedWorker`: hand-written HTTP/1.1
servers on free loopback ports that play a drawn script, one act per request they
receive (answer with a length, chunked or until they close; close or reset before or
while answering; malformed status lines, headers, chunk sizes; interim 1xx answers;
a head over the limit; stall past the forward's deadline; answer before reading the
body; leave the connection in a bad state after answering). The clients send keyed
and unkeyed ``POST /route/{verb}/{name}``, whole or streamed, one at a time or as
concurrent duplicates of a keyed request.

What must hold, for every script and every client (docs/controller.md, *Failure
classes*; docs/problems.md):

- the controller never answers 500: every answer is the worker's own (status and body
  as it sent them, ``X-Worker-Id`` naming it), an idempotency answer (replay, 409), a
  problem with a documented ``error`` whose class is the one the act calls for (502
  ``worker_unreachable`` for a request lost after sending, 502 ``worker_bad_response``
  for a malformed answer, 504 ``worker_timeout``), or a response aborted after it
  started, and only for an answer that broke off while it streamed;
- a request reaches at most one worker, and a second one only when it is keyed and
  the first lost it after sending (never after a malformed answer or a timeout); a
  keyed request lost with a spare worker left is retried there;
- the worker's answer to a key is stored once: no key has two storable answers from
  the workers, and a request with the key after one was stored is its replay,
  reaching no worker; every request with one key forwards the same key;
- whatever a worker did, the next request to it (behaving now) is answered;
- no connection or task outlives its request: after each request the forwarder's
  pools hold only idle connections, each one the worker still has open, and after
  the lifespan nothing is left running.

Bounded: ``forward_timeout_s`` is 0.3 s (the acts that stall wait for it, nothing
else sleeps), a few dozen examples, seeded (``derandomize``), all on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import ASGIApp, Message

from sloguard import MemoryStore, SLOGuard, SLOManager
from sloguard._clock import ManualClock
from sloguard.routing import WorkerRegistry, create_controller_app
from sloguard.routing.forward import SMALL_BODY_BYTES, Forwarder
from tests.reporting.test_openapi import FUZZ_SLO, Tally
from tests.routing.workers import Arrival, Peer, ScriptedWorker
from tests.test_request_fuzz import DOCUMENTED, SCALE

CAP = "convert:pdf"
PATH = "/route/convert/pdf"
PROBE = "/route/probe/f"
"""A capability only the scripted worker serves: the request after the script."""
TIMEOUT_S = 0.3
EXAMPLES = 200 * SCALE
STORABLE = frozenset(range(200, 500)) - {429}
"""Worker statuses SLOGuard stores under a key (5xx and 429 release it)."""
PROBLEM_CLASS = {
    "worker_unreachable": ("lost", 502),
    "worker_bad_response": ("malformed", 502),
    "worker_timeout": ("timeout", 504),
}

# -- what a worker does with one request --------------------------------------------


@dataclass(frozen=True)
class Act:
    """One request's fate at the worker; ``outcomes``: what the client may then get
    (``answer``: exactly ``status`` and ``body``; ``lost``, ``malformed``, ``timeout``:
    their problem; ``aborted``: a response broken off after it started)."""

    name: str
    outcomes: frozenset[str]
    run: Callable[[Peer, dict[str, str]], Awaitable[bool]] = field(compare=False, repr=False)
    status: int = 200
    body: bytes = b""

    async def act(self, peer: Peer, headers: dict[str, str]) -> bool:
        return await self.run(peer, headers)


def _head(status: int, *lines: str) -> bytes:
    return (f"HTTP/1.1 {status} X\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode()


def _chunked(body: bytes, pieces: int) -> bytes:
    step = max(1, -(-len(body) // pieces))
    parts = [body[i : i + step] for i in range(0, len(body), step)]
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def answer(status: int, size: int, framing: str, then: str = "keep") -> Act:
    """A whole answer: ``framing`` length, chunked or close (no length: it ends with the
    connection); ``then`` keep, garbage or second (more bytes in the same write), fin or
    rst (the connection closed without a word)."""
    body = bytes(range(256)) * (size // 256) + b"b" * (size % 256)
    extra = {"garbage": b"\x00garbage\r\n\r\n", "second": _head(200, "content-length: 1") + b"!"}
    if framing == "close":  # more bytes before the close are more body
        body += extra.get(then, b"")
    if framing == "length":
        wire = _head(status, "content-type: text/plain", f"content-length: {size}") + body
        wire += extra.get(then, b"")
    elif framing == "chunked":
        wire = _head(status, "transfer-encoding: chunked") + _chunked(body, 3)
        wire += extra.get(then, b"")
    else:
        wire = _head(status, "content-type: text/plain", "connection: close") + body

    async def run(peer: Peer, headers: dict[str, str]) -> bool:
        await peer.read_body(headers)
        await peer.send(wire)
        if then == "rst":
            peer.reset()
        return framing != "close" and then not in ("fin", "rst")

    # A reset may end a body that only the close ends: the client's response breaks off.
    outcomes = frozenset(
        {"answer", "aborted"} if framing == "close" and then == "rst" else {"answer"}
    )
    return Act(f"answer {framing} then {then} ({status}, {size} B)", outcomes, run, status, body)


def interim(code: int) -> Act:
    async def run(peer: Peer, headers: dict[str, str]) -> bool:
        await peer.read_body(headers)
        await peer.send(_head(code, "link: </a.css>"), _head(201, "content-length: 4") + b"done")
        return True

    return Act(f"interim {code}", frozenset({"answer"}), run, 201, b"done")


def early(then: str) -> Act:
    """Answers on the head alone, then reads the body (drain) or hangs up without it."""

    async def run(peer: Peer, headers: dict[str, str]) -> bool:
        await peer.send(_head(202, "content-length: 5") + b"early")
        if then == "drain":
            await peer.read_body(headers)
            return True
        if then == "rst":
            peer.reset()
        return False

    outcomes = {"answer"} if then == "drain" else {"answer", "lost"}
    return Act(f"early then {then}", frozenset(outcomes), run, 202, b"early")


def breaks(name: str, outcomes: set[str], *pieces: bytes, end: str = "fin") -> Act:
    """Reads the request, sends ``pieces``, then ends: fin, rst, or stall (until the
    controller hangs up)."""

    async def run(peer: Peer, headers: dict[str, str]) -> bool:
        await peer.read_body(headers)
        await peer.send(*pieces)
        if end == "rst":
            peer.reset()
        elif end == "stall":
            await peer.until_closed()
        return False

    return Act(f"{name} then {end}", frozenset(outcomes), run)


LARGE = SMALL_BODY_BYTES + 1000
"""A declared length over the one read whole before answering: the answer streams."""
MALFORMED = [
    b"this is not HTTP\r\n\r\n",
    b"HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-bad: a\x00b\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
]
HUGE = b"HTTP/1.1 200 OK\r\n" + b"x-big: " + b"h" * 70_000 + b"\r\ncontent-length: 2\r\n\r\nok"

ACTS: st.SearchStrategy[Act] = st.one_of(
    st.builds(
        answer,
        st.sampled_from([200, 201, 404, 422, 429, 500, 503]),
        st.sampled_from([0, 7, 3000, LARGE]),
        st.sampled_from(["length", "chunked", "close"]),
        st.sampled_from(["keep", "keep", "garbage", "second", "fin", "rst"]),
    ),
    st.sampled_from([100, 102, 103]).map(interim),
    st.sampled_from(["drain", "fin", "rst"]).map(early),
    st.sampled_from(
        [
            # lost after sending: nothing of an answer, or part of its head
            breaks("closes", {"lost"}),
            breaks("resets", {"lost"}, end="rst"),
            breaks("half a head", {"lost"}, b"HTTP/1.1 200 OK\r\ncontent-le"),
            breaks("half a head", {"lost"}, b"HTTP/1.1 200 OK\r\ncontent-le", end="rst"),
            breaks("only an interim", {"lost"}, _head(100)),
            # a small answer cut short: read whole before answering, so lost too
            breaks("small body cut", {"lost"}, _head(200, "content-length: 100") + b"x" * 10),
            breaks(
                "small body cut", {"lost"}, _head(200, "content-length: 100") + b"x" * 10, end="rst"
            ),
            # a streamed answer cut short: aborted after it started
            breaks("large body cut", {"aborted"}, _head(200, f"content-length: {LARGE}") + b"x"),
            breaks(
                "chunks cut",
                {"aborted"},
                _head(200, "transfer-encoding: chunked") + b"5\r\nhello\r\n",
            ),
            # malformed: never retried
            *(breaks(f"malformed {w[:24]!r}", {"malformed"}, w) for w in MALFORMED),
            breaks("huge head", {"malformed"}, HUGE),
            breaks(
                "huge head in pieces",
                {"malformed"},
                *(HUGE[i : i + 4096] for i in range(0, len(HUGE), 4096)),
            ),
            breaks(
                "bad chunk size",
                {"aborted", "malformed"},
                _head(200, "transfer-encoding: chunked") + b"5\r\nhello\r\nZZ\r\n",
            ),
            # past the deadline: 504 before the answer starts, aborted after
            breaks("silence", {"timeout"}, end="stall"),
            breaks("half a head", {"timeout"}, b"HTTP/1.1 200 OK\r\nx-a: b", end="stall"),
            breaks(
                "small body drip",
                {"timeout"},
                _head(200, "content-length: 100") + b"x",
                end="stall",
            ),
            breaks(
                "large body drip",
                {"aborted"},
                _head(200, f"content-length: {LARGE}") + b"x",
                end="stall",
            ),
            breaks("no-length drip", {"aborted"}, _head(200) + b"x", end="stall"),
        ]
    ),
)

# -- the clients ----------------------------------------------------------------------


@dataclass
class Sent:
    """One client request and what came back."""

    tag: str
    key: str | None
    body: bytes
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    answer: bytes = b""
    aborted: bool = False
    crash: str | None = None
    kind: str = ""


@dataclass(frozen=True)
class Step:
    """Requests sent at once: one, or duplicates of one keyed request."""

    key: str | None
    size: int
    pieces: int
    declared: bool
    copies: int


STEPS = st.builds(
    Step,
    st.sampled_from([None, None, "k0", "k1"]),
    st.sampled_from([0, 2, 1000, 70_000]),
    st.integers(1, 3),
    st.booleans(),
    st.sampled_from([1, 1, 2, 3]),
)


async def call(app: ASGIApp, path: str, sent: Sent, pieces: int, declared: bool) -> None:
    """One request driven as uvicorn drives it: the body in ``pieces`` messages, then
    ``receive`` waits until the response is over; an exception before the response
    started is uvicorn's 500, after it an aborted response."""
    headers = [(b"x-fuzz-id", sent.tag.encode()), (b"content-type", b"application/json")]
    if sent.key is not None:
        headers.append((b"idempotency-key", sent.key.encode()))
    if declared or pieces == 1:
        headers.append((b"content-length", str(len(sent.body)).encode()))
    step = max(1, -(-len(sent.body) // pieces))
    chunks = [sent.body[i : i + step] for i in range(0, len(sent.body), step)] or [b""]
    over = asyncio.Event()

    async def receive() -> Message:
        if chunks:
            body = chunks.pop(0)
            await asyncio.sleep(0)
            return {"type": "http.request", "body": body, "more_body": bool(chunks)}
        await over.wait()
        return {"type": "http.disconnect"}

    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }
    try:
        await app(scope, receive, send)
    except Exception as exc:
        if not messages:
            sent.crash = f"{type(exc).__name__}: {exc}"
        sent.aborted = True
    finally:
        over.set()
    starts = [m for m in messages if m["type"] == "http.response.start"]
    bodies = [m for m in messages if m["type"] == "http.response.body"]
    if starts:
        sent.status = starts[0]["status"]
        sent.headers = {k.decode(): v.decode() for k, v in starts[0]["headers"]}
        sent.answer = b"".join(m.get("body", b"") for m in bodies)
        if not sent.aborted and (not bodies or bodies[-1].get("more_body", False)):
            sent.crash = "the app returned before its response ended"


def classify(sent: Sent) -> str:
    """``answer``, ``replay``, ``in_flight``, ``aborted`` or a problem's class."""
    if sent.crash is not None:
        return f"crash: {sent.crash}"
    if sent.aborted:
        return "aborted"
    if sent.headers.get("idempotent-replayed") == "true":
        return "replay"
    if sent.headers.get("content-type") == "application/problem+json":
        problem = json.loads(sent.answer)
        error = problem["error"]
        assert error in DOCUMENTED, problem
        if error == "idempotency_request_in_flight":
            assert sent.status == 409
            return "in_flight"
        if error == "idempotency_key_reused":
            assert sent.status == 422
            return "reused"
        kind, status = PROBLEM_CLASS.get(error, (f"problem {error}", 0))
        assert sent.status == status, problem
        return kind
    return "answer"


# -- one example ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """The ASGI lifespan, as uvicorn runs it: startup before, shutdown after."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


async def settle(*workers: ScriptedWorker) -> None:
    """Until every worker is done with its requests and what they did has reached the
    controller (a close, a reset): the next request meets the connection as it is."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 5
    while any(w.busy for w in workers):
        assert loop.time() < give_up, "a worker is still acting on a request"
        await asyncio.sleep(0.001)
    for _ in range(10):
        await asyncio.sleep(0)


def check_pools(forwarder: Forwarder, workers: list[ScriptedWorker]) -> None:
    """Only idle connections are held, within the limit, each one its worker has open."""
    held = 0
    for pool in forwarder._pools.values():
        assert not pool.waiters
        assert pool.open == len(pool.idle) <= pool.limit, (pool.open, len(pool.idle))
        for conn in pool.idle:
            assert not conn.lost
            assert not conn.active
            assert conn.transport is not None
            assert not conn.transport.is_closing()
        held += pool.open
    assert held == sum(len(w.open) for w in workers), "a connection only one side holds"


@dataclass
class World:
    manager: SLOManager
    tally: Tally
    kinds: Counter[str]
    acts: Counter[str]


async def play(world: World, script: list[Act], spare: bool, steps: list[Step]) -> None:
    faulty = ScriptedWorker("faulty", script)
    others = [ScriptedWorker("spare")] if spare else []
    workers = [faulty, *others]
    log: list[Arrival] = []
    for worker in workers:
        worker.arrivals = log  # one log, in arrival order
    registry = WorkerRegistry(random_source=lambda n: 0)  # the faulty one first
    controller_app = create_controller_app(
        registry=registry,
        manager=world.manager,
        health_interval_s=None,
        forward_timeout_s=TIMEOUT_S,
    )
    clock = ManualClock(1_000.0)
    guard = SLOGuard(
        controller_app,
        manager=world.manager,
        store=MemoryStore(clock=clock),
        clock=clock,
        metrics=False,
        reload_every_s=None,
    )
    forwarder: Forwarder = controller_app.state.controller.forwarder
    registry.register("faulty", await faulty.start(), [CAP, "probe:f"], static=True)
    for worker in others:
        registry.register(worker.name, await worker.start(), [CAP], static=True)
    sent: list[Sent] = []
    stored: dict[str, Sent] = {}
    async with lifespan(guard):
        for index, step in enumerate(steps):
            # Duplicates share their key and body; unkeyed ones are separate requests.
            body = json.dumps({"pad": "p" * step.size}).encode()
            group = [
                Sent(f"r{index}.{copy}", step.key, body if step.key else body + b" " * copy)
                for copy in range(step.copies)
            ]
            before = dict(stored)
            await asyncio.gather(*(call(guard, PATH, s, step.pieces, step.declared) for s in group))
            await settle(*workers)
            check_pools(forwarder, workers)
            for one in group:
                one.kind = classify(one)
                world.kinds[one.kind] += 1
                judge(one, log, spare, before)
                if one.kind == "answer" and one.key and one.status in STORABLE:
                    stored.setdefault(one.key, one)
            sent.extend(group)
        faulty.script.clear()  # behaving from now on
        probe = Sent("probe", None, b"{}")
        await call(guard, PROBE, probe, 1, True)
        await settle(*workers)
        check_pools(forwarder, workers)
    for worker in workers:
        await worker.close()
    judge_keys(sent, log)
    assert (classify(probe), probe.status, probe.answer) == ("answer", 200, b"ok"), probe
    assert [a.worker for a in log if a.tag == "probe"] == ["faulty"]
    for arrival in log:
        world.acts[arrival.act.name.split(" (")[0] if arrival.act else "ok"] += 1
    world.tally.sent += len(sent) + 1
    for one in sent:
        world.tally.statuses[one.status] += 1
    # (SLOGuard's lease renewals end on their own, a third of a lease after the last.)
    left = [
        t
        for t in asyncio.all_tasks()
        if t is not asyncio.current_task() and "_Renewals" not in repr(t.get_coro())
    ]
    assert left == [], left


def judge(sent: Sent, log: list[Arrival], spare: bool, stored: dict[str, Sent]) -> None:
    """One request's answer against the acts it met at the workers."""
    where = [a for a in log if a.tag == sent.tag]
    kind = sent.kind
    assert not kind.startswith(("crash", "problem")), (kind, sent, where)
    if sent.status == 500:  # only ever the worker's own
        assert "x-worker-id" in sent.headers, sent
        assert [a.act.status for a in where[-1:]] == [500], sent
    if sent.key is not None and sent.key in stored:  # stored before this one was sent
        expected = "replay" if stored[sent.key].body == sent.body else "reused"
        assert kind == expected, (sent, where)
    if kind == "reused":  # the key went with another body first
        assert sent.key is not None, sent
        assert where == [], (sent, where)
        return
    if kind in ("replay", "in_flight"):
        assert sent.key is not None, sent
        assert where == [], (sent, where)
        if kind == "replay":
            first = stored.get(sent.key)
            if first is not None:
                assert (sent.status, sent.answer) == (first.status, first.answer)
        return
    assert 1 <= len(where) <= 2, (sent, where)
    acts = [a.act for a in where]
    outcomes = [act.outcomes if act else frozenset({"answer"}) for act in acts]
    if len(where) == 2:
        # Retried: only a keyed request lost after sending, and on another worker.
        assert sent.key is not None, (sent, where)
        assert "lost" in outcomes[0], (sent, where)
        assert where[0].worker != where[1].worker
    assert kind in outcomes[-1], (kind, sent, where)
    if kind == "lost" and len(where) == 1:
        spare_left = spare and where[0].worker == "faulty"
        assert not (sent.key is not None and spare_left), ("not retried", sent, where)
    if kind == "answer":
        act = acts[-1]
        status, body = (act.status, act.body) if act else (200, b"ok")
        assert (sent.status, sent.answer) == (status, body), (sent, where)
        assert sent.headers["x-worker-id"] == where[-1].worker


def judge_keys(sent: list[Sent], log: list[Arrival]) -> None:
    """A key's storable answer came from the workers once; its forwarded key never varied."""
    for key in {s.key for s in sent if s.key is not None}:
        with_key = [s for s in sent if s.key == key]
        effects = [s for s in with_key if s.kind == "answer" and s.status in STORABLE]
        assert len(effects) <= 1, effects
        tags = {s.tag for s in with_key}
        forwarded = {a.key for a in log if a.tag in tags}
        assert len(forwarded) <= 1, forwarded
        assert all(f is not None and f.endswith(key) for f in forwarded), forwarded
    unkeyed = {s.tag for s in sent if s.key is None}
    assert all(a.key is None for a in log if a.tag in unkeyed)


# -- the property -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> SLOManager:
    directory: Path = tmp_path_factory.mktemp("faults") / "slos"
    directory.mkdir()
    (directory / "convert_pdf.yml").write_text(FUZZ_SLO.format(verb="convert", name="pdf"))
    manager = SLOManager(directory, clock=ManualClock(1_000.0))
    assert manager.errors == []
    return manager


def test_no_worker_misbehaviour_breaks_the_controllers_promises(
    manager: SLOManager, record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World(manager, Tally(), Counter(), Counter())

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        script=st.lists(ACTS, min_size=1, max_size=4),
        spare=st.booleans(),
        steps=st.lists(STEPS, min_size=1, max_size=4),
    )
    def fuzz(script: list[Act], spare: bool, steps: list[Step]) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(20):
                await play(world, script, spare, steps)

        asyncio.run(bounded())

    try:
        fuzz()
    finally:
        record_property("fault_fuzz_requests", world.tally.sent)
        with capsys.disabled():
            print(f"\nforward fault fuzzer: {world.tally}")
            print(f"  outcomes: {dict(sorted(world.kinds.items()))}")
            print(f"  acts met: {dict(sorted(world.acts.items()))}")
