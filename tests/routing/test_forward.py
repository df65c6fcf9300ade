"""Forwarding over real sockets: each failure class, streaming both ways, headers, deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from sloguard import SLOGuard
from sloguard.routing import WorkerRegistry, create_controller_app
from sloguard.slo.manager import SLOManager
from tests.routing.workers import RawWorker, RecordingWorker, read_request, reset, running
from tests.servers import serving

SLO_DIR = Path(__file__).resolve().parents[2] / "state" / "controller" / "slos"
PDF = "convert:document_to_pdf"
PDF_PATH = "/route/convert/document_to_pdf"
MIB = 1024 * 1024


def first_pick(n: int) -> int:
    return 0


@contextlib.contextmanager
def controller(registry: WorkerRegistry, **options: Any) -> Iterator[str]:
    options.setdefault("health_interval_s", None)
    # As `sloguard serve` runs it: the peer's address is the client's, not X-Forwarded-For's.
    app = create_controller_app(registry=registry, **options)
    with serving(app, proxy_headers=False) as url:
        yield url


def answers_garbage(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"this is not HTTP\r\n\r\n")


def resets_after_reading(conn: socket.socket) -> None:
    read_request(conn)
    reset(conn)


def never_answers(conn: socket.socket) -> None:
    read_request(conn)


# -- failure classes ------------------------------------------------------------------


def test_a_worker_that_resets_after_reading_is_retried_elsewhere_only_with_a_key() -> None:
    spare = RecordingWorker("spare")
    registry = WorkerRegistry(random_source=first_pick)
    with (
        RawWorker(resets_after_reading) as broken,
        running(spare) as spare_url,
        controller(registry) as url,
    ):
        registry.register("broken", broken.url, [PDF])
        registry.register("spare", spare_url, [PDF])
        unkeyed = httpx.post(url + PDF_PATH, content=b"{}")
        keyed = httpx.post(url + PDF_PATH, content=b"{}", headers={"Idempotency-Key": "k-1"})

    assert unkeyed.status_code == 502
    assert unkeyed.headers["content-type"] == "application/problem+json"
    assert unkeyed.json()["error"] == "worker_unreachable"
    assert "not retried" in unkeyed.json()["detail"]
    assert keyed.status_code == 200
    assert keyed.headers["x-worker-id"] == "spare"
    assert broken.connections == 2
    assert [r.headers.get("idempotency-key") for r in spare.received] == ["k-1"]


def test_a_worker_that_sends_malformed_http_is_a_502_problem_never_retried() -> None:
    spare = RecordingWorker("spare")
    registry = WorkerRegistry(random_source=first_pick)
    with (
        RawWorker(answers_garbage) as garbage,
        running(spare) as spare_url,
        controller(registry) as url,
    ):
        registry.register("garbage", garbage.url, [PDF])
        registry.register("spare", spare_url, [PDF])
        response = httpx.post(url + PDF_PATH, content=b"{}", headers={"Idempotency-Key": "k"})

    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["error"] == "worker_bad_response"
    assert problem["workers"] == ["garbage"]
    assert spare.received == []


def test_a_worker_that_never_answers_is_a_504_never_retried() -> None:
    spare = RecordingWorker("spare")
    registry = WorkerRegistry(random_source=first_pick)
    with (
        RawWorker(never_answers) as silent,
        running(spare) as spare_url,
        controller(registry, forward_timeout_s=0.3) as url,
    ):
        registry.register("silent", silent.url, [PDF])
        registry.register("spare", spare_url, [PDF])
        response = httpx.post(url + PDF_PATH, content=b"{}", headers={"Idempotency-Key": "k"})

    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["error"] == "worker_timeout"
    assert silent.connections == 1
    assert spare.received == []


def test_a_refused_connection_is_retried_even_for_a_streamed_body() -> None:
    spare = RecordingWorker("spare")
    registry = WorkerRegistry(random_source=first_pick)
    closed = socket.create_server(("127.0.0.1", 0))
    down = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()

    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"x" * 10_000

    with running(spare) as spare_url, controller(registry) as url:
        registry.register("down", down, [PDF])
        registry.register("spare", spare_url, [PDF])
        response = httpx.post(url + PDF_PATH, content=chunks())

    assert response.status_code == 200
    assert response.headers["x-worker-id"] == "spare"
    assert spare.received[0].body == b"x" * 80_000


# -- streaming ------------------------------------------------------------------------


class StreamingWorker:
    """Answers with chunks: ``first``, then waits for ``go``, then ``rest`` chunks;
    ``break_after`` drops the connection after that many chunks instead; ``drip_s``
    sends a chunk every so often, forever. Counts and digests request bodies."""

    def __init__(
        self,
        *,
        chunk: bytes = b"c" * 65536,
        rest: int = 3,
        length: bool = False,
        break_after: int | None = None,
        drip_s: float | None = None,
    ) -> None:
        self.chunk, self.rest, self.length = chunk, rest, length
        self.break_after, self.drip_s = break_after, drip_s
        self.go = threading.Event()
        self.bodies: list[tuple[int, str]] = []
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.calls += 1
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the body never completed: nothing to work on
            body = message.get("body", b"")
            digest.update(body)
            size += len(body)
            if not message.get("more_body", False):
                break
        self.bodies.append((size, digest.hexdigest()))
        headers = [(b"content-type", b"application/octet-stream")]
        if self.length:
            total = len(b"first") + len(self.chunk) * self.rest
            headers.append((b"content-length", str(total).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        if self.break_after == 0:
            raise RuntimeError("the worker breaks off mid-body (on purpose)")
        if self.drip_s is not None:
            while True:
                await asyncio.sleep(self.drip_s)
                await send({"type": "http.response.body", "body": b".", "more_body": True})
        await asyncio.to_thread(self.go.wait, 30)
        for index in range(self.rest):
            if self.break_after is not None and index >= self.break_after:
                raise RuntimeError("the worker breaks off mid-body (on purpose)")
            await send({"type": "http.response.body", "body": self.chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def test_the_first_chunk_reaches_the_client_before_the_worker_sends_the_last() -> None:
    worker = StreamingWorker(rest=3)
    registry = WorkerRegistry()
    with serving(worker) as worker_url, controller(registry) as url:
        registry.register("w", worker_url, [PDF])
        with httpx.stream("POST", url + PDF_PATH, content=b"{}", timeout=30) as response:
            chunks = response.iter_raw()
            first = next(chunks)
            was_waiting = not worker.go.is_set()
            worker.go.set()
            rest = b"".join(chunks)

    assert response.status_code == 200
    assert first == b"first"
    assert was_waiting  # the worker had not sent more when the client had the first chunk
    assert rest == worker.chunk * 3
    assert response.headers["transfer-encoding"] == "chunked"


def test_a_100_mib_body_streams_each_way() -> None:
    worker = StreamingWorker(chunk=b"r" * MIB, rest=100, length=True)
    worker.go.set()
    registry = WorkerRegistry()
    upload = hashlib.sha256()

    def body() -> Iterator[bytes]:
        block = bytes(range(256)) * 4096  # 1 MiB
        for _ in range(100):
            upload.update(block)
            yield block

    with (
        serving(worker) as worker_url,
        controller(registry, max_body_bytes=200 * MIB) as url,
        httpx.Client(timeout=60) as client,
    ):
        registry.register("w", worker_url, [PDF])
        with client.stream("POST", url + PDF_PATH, content=body()) as response:
            size, download = 0, hashlib.sha256()
            for chunk in response.iter_raw():
                size += len(chunk)
                download.update(chunk)

    expected = hashlib.sha256(b"first")
    for _ in range(100):
        expected.update(worker.chunk)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(5 + 100 * MIB)
    assert size == 5 + 100 * MIB
    assert download.hexdigest() == expected.hexdigest()
    assert worker.bodies == [(100 * MIB, upload.hexdigest())]


def test_a_body_over_the_limit_is_a_413_before_or_while_it_streams() -> None:
    worker = StreamingWorker()
    registry = WorkerRegistry()

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b"x" * 1000

    with serving(worker) as worker_url, controller(registry, max_body_bytes=2500) as url:
        registry.register("w", worker_url, [PDF])
        declared = httpx.post(url + PDF_PATH, content=b"x" * 4000)
        streamed = httpx.post(url + PDF_PATH, content=chunks())

    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"
    assert worker.bodies == []


def test_a_worker_that_breaks_off_mid_body_aborts_the_clients_response() -> None:
    registry = WorkerRegistry()
    for worker in (StreamingWorker(break_after=1), StreamingWorker(break_after=1, length=True)):
        worker.go.set()
        with serving(worker) as worker_url, controller(registry) as url:
            registry.register("w", worker_url, [PDF])
            with httpx.stream("POST", url + PDF_PATH, content=b"{}", timeout=30) as response:
                status = response.status_code
                with pytest.raises(httpx.RemoteProtocolError):
                    response.read()
            assert status == 200  # the worker's status had gone out; the body never completes


def test_an_aborted_response_is_never_stored_under_its_idempotency_key() -> None:
    worker = StreamingWorker(break_after=1)
    worker.go.set()
    registry = WorkerRegistry()
    guarded = SLOGuard(
        create_controller_app(registry=registry, health_interval_s=None),
        manager=SLOManager(SLO_DIR),
        metrics=False,
    )
    key = {"Idempotency-Key": "abort-1"}
    with serving(worker) as worker_url, serving(guarded) as url:
        registry.register("w", worker_url, [PDF])
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream("POST", url + PDF_PATH, content=b"{}", headers=key) as broken,
        ):
            broken.read()
        worker.break_after = None  # the worker is fixed; the client retries with its key
        retried = httpx.post(url + PDF_PATH, content=b"{}", headers=key, timeout=30)
        replayed = httpx.post(url + PDF_PATH, content=b"{}", headers=key, timeout=30)

    assert worker.calls == 2  # the key was released: the retry ran
    assert retried.status_code == 200
    assert retried.content == b"first" + worker.chunk * 3
    assert "idempotent-replayed" not in retried.headers
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.content == retried.content


def test_a_worker_dripping_its_body_cannot_hold_a_request_past_the_deadline() -> None:
    worker = StreamingWorker(drip_s=0.02)
    registry = WorkerRegistry()
    with serving(worker) as worker_url, controller(registry, forward_timeout_s=0.5) as url:
        registry.register("w", worker_url, [PDF])
        # The client would wait 30 s; the controller's deadline ends the response first.
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream("POST", url + PDF_PATH, content=b"{}", timeout=30) as response,
        ):
            response.read()


# -- headers --------------------------------------------------------------------------


class HeaderWorker:
    """Records the request's headers; answers with hop-by-hop and end-to-end ones."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.headers = list(scope["headers"])
        while (await receive()).get("more_body", False):
            pass
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/x-result"),
                    (b"retry-after", b"7"),
                    (b"content-length", b"9"),
                    (b"x-end", b"kept"),
                    (b"x-hop", b"dropped"),
                    (b"connection", b"x-hop"),
                    (b"keep-alive", b"timeout=5"),
                    (b"trailer", b"x-checksum"),
                    (b"via", b"1.1 upstream"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"slow down"})


def test_hop_by_hop_headers_are_dropped_and_end_to_end_ones_pass_both_ways() -> None:
    worker = HeaderWorker()
    registry = WorkerRegistry()
    with serving(worker) as worker_url, controller(registry) as url:
        registry.register("w", worker_url, [PDF])
        response = httpx.post(
            url + PDF_PATH,
            content=b"{}",
            headers={
                "Connection": "keep-alive, X-Private",
                "X-Private": "hop",
                "Keep-Alive": "timeout=9",
                "TE": "trailers",
                "Upgrade": "h2c",
                "Proxy-Connection": "keep-alive",
                "X-Forwarded-For": "10.1.2.3",
                "X-End-To-End": "yes",
                "Content-Type": "text/csv",
            },
        )

    sent = {name.decode(): value.decode() for name, value in worker.headers}
    for hop in ("x-private", "keep-alive", "te", "upgrade", "proxy-connection"):
        assert hop not in sent
    # The controller's own connection to the worker is HTTP/1.1 keep-alive, named or not.
    assert sent.get("connection", "keep-alive") == "keep-alive"
    assert sent["x-end-to-end"] == "yes"
    assert sent["content-type"] == "text/csv"
    assert sent["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert sent["via"] == "1.1 sloguard"
    assert sent["content-length"] == "2"

    assert response.status_code == 429
    assert response.content == b"slow down"
    assert response.headers["content-type"] == "application/x-result"
    assert response.headers["retry-after"] == "7"
    assert response.headers["x-end"] == "kept"
    assert response.headers["via"] == "1.1 upstream, 1.1 sloguard"
    assert response.headers["content-length"] == "9"
    for hop in ("x-hop", "keep-alive", "trailer"):
        assert hop not in response.headers


def test_a_registration_body_over_64_kib_is_a_413() -> None:
    registry = WorkerRegistry()
    with controller(registry, open_registry=True) as url:
        response = httpx.post(url + "/workers", content=b"{" + b" " * 70_000 + b"}")

    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert len(registry) == 0


def test_the_worker_gets_no_header_the_client_did_not_send_but_the_proxys_own() -> None:
    worker = HeaderWorker()
    registry = WorkerRegistry()
    with serving(worker) as worker_url, controller(registry) as url:
        registry.register("w", worker_url, [PDF])
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(
                b"POST /route/convert/document_to_pdf HTTP/1.1\r\n"
                b"Host: controller\r\nContent-Length: 2\r\n\r\n{}"
            )
            answer = conn.recv(65536)

    assert answer.startswith(b"HTTP/1.1 429 ")
    names = sorted(name.decode() for name, _ in worker.headers)
    assert names == ["content-length", "host", "via", "x-forwarded-for", "x-forwarded-proto"]


class EndlessWorker:
    """Streams a chunk every 20 ms until the controller hangs up; ``hung_up`` is set then."""

    def __init__(self) -> None:
        self.hung_up = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        gone = asyncio.ensure_future(receive())  # http.disconnect once the controller leaves
        while not gone.done():
            await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
            await asyncio.sleep(0.02)
        self.hung_up.set()


def test_a_client_that_leaves_mid_stream_ends_the_forward() -> None:
    worker = EndlessWorker()
    registry = WorkerRegistry()
    with serving(worker) as worker_url, controller(registry, forward_timeout_s=120) as url:
        registry.register("w", worker_url, [PDF])
        with httpx.stream("POST", url + PDF_PATH, content=b"{}", timeout=30) as response:
            first = next(response.iter_raw())
        # The client has closed its connection; the controller stops reading the worker.
        left = worker.hung_up.wait(30)

    assert first.startswith(b"tick")
    assert left


# -- the connection pool ----------------------------------------------------------------


class PortsWorker:
    """Answers ``ok`` (or, with ``broken``, starts a body and breaks off); records the
    controller's source port of each request, which tells its connections apart."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.broken = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.ports.append(scope["client"][1])
        while (await receive()).get("more_body", False):
            pass
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"100")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.broken:
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            raise RuntimeError("the worker breaks off mid-body (on purpose)")
        await send({"type": "http.response.body", "body": b"o" * 100})


def test_a_connection_is_reused_after_a_complete_answer_and_never_after_a_broken_one() -> None:
    worker = PortsWorker()
    registry = WorkerRegistry()
    # proxy_headers off: the worker's scope["client"] is its peer, the controller's socket.
    with (
        serving(worker, proxy_headers=False) as worker_url,
        controller(registry) as url,
        httpx.Client() as client,
    ):
        registry.register("w", worker_url, [PDF])
        answers = [client.post(url + PDF_PATH, content=b"{}") for _ in range(3)]
        worker.broken = True
        broken = client.post(url + PDF_PATH, content=b"{}")  # small: read whole, so a 502
        worker.broken = False
        after = client.post(url + PDF_PATH, content=b"{}")

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert broken.status_code == 502
    assert len(set(worker.ports[:4])) == 1  # one keep-alive connection for the first four
    assert after.status_code == 200
    assert worker.ports[4] != worker.ports[3]  # the broken one was closed, not pooled


def answers_then_closes(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok")
    conn.close()  # as a worker closing an idle keep-alive connection does


def test_a_pooled_connection_the_worker_closed_is_never_written_to() -> None:
    registry = WorkerRegistry()
    app = create_controller_app(registry=registry, health_interval_s=None)
    forwarder = app.state.controller.forwarder
    with (
        RawWorker(answers_then_closes) as worker,
        serving(app, proxy_headers=False) as url,
        httpx.Client() as client,
    ):
        registry.register("w", worker.url, [PDF])
        first = client.post(url + PDF_PATH, content=b"{}")
        for _ in range(1000):  # until the controller has seen the worker's FIN
            if not any(pool.idle for pool in forwarder._pools.values()):
                break
            threading.Event().wait(0.01)
        second = client.post(url + PDF_PATH, content=b"{}")  # unkeyed: one try only

    assert (first.status_code, first.text) == (200, "ok")
    assert (second.status_code, second.text) == (200, "ok")
    assert worker.connections == 2


def answers_until_it_closes(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nno length, ")
    conn.sendall(b"the end is the close")
    conn.close()


def interim_then_final(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\nx-final: yes\r\n\r\ndone"
    )


def bad_chunk_mid_body(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n")


def test_an_answer_without_a_length_ends_with_the_connection() -> None:
    registry = WorkerRegistry()
    with RawWorker(answers_until_it_closes) as worker, controller(registry) as url:
        registry.register("w", worker.url, [PDF])
        answers = [httpx.post(url + PDF_PATH, content=b"{}") for _ in range(2)]

    for answer in answers:
        assert answer.status_code == 200
        assert answer.text == "no length, the end is the close"
    assert worker.connections == 2


def test_an_interim_1xx_answer_is_skipped_for_the_final_one() -> None:
    registry = WorkerRegistry()
    with RawWorker(interim_then_final) as worker, controller(registry) as url:
        registry.register("w", worker.url, [PDF])
        answer = httpx.post(url + PDF_PATH, content=b"{}")

    assert (answer.status_code, answer.text) == (201, "done")
    assert answer.headers["x-final"] == "yes"
    assert "link" not in answer.headers


def test_malformed_chunking_mid_body_aborts_the_response() -> None:
    registry = WorkerRegistry()
    with RawWorker(bad_chunk_mid_body) as worker, controller(registry) as url:
        registry.register("w", worker.url, [PDF])
        with httpx.stream("POST", url + PDF_PATH, content=b"{}", timeout=30) as response:
            status = response.status_code
            with pytest.raises(httpx.RemoteProtocolError):
                response.read()

    assert status == 200  # the head had gone out; the body never completes


def test_at_the_per_host_limit_forwards_wait_for_a_connection() -> None:
    worker = RecordingWorker("w", mode="hold")
    ports = PortsWorker()
    registry = WorkerRegistry()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            ports.ports.append(scope["client"][1])
        await worker(scope, receive, send)

    with (
        serving(app, proxy_headers=False) as worker_url,
        controller(registry, limit_per_host=1) as url,
    ):
        registry.register("w", worker_url, [PDF])
        answers: list[httpx.Response] = []
        threads = [
            threading.Thread(target=lambda: answers.append(httpx.post(url + PDF_PATH, timeout=30)))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        assert worker.arrived.acquire(timeout=30)
        worker.release.set()
        for thread in threads:
            thread.join(30)

    assert [a.status_code for a in answers] == [200, 200]
    assert len(worker.received) == 2
    assert len(set(ports.ports)) == 1  # the second waited for the first's connection


class FloodWorker:
    """Answers with ``size`` bytes of chunked body as fast as its socket takes them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.block = bytes(range(256)) * 256  # 64 KiB

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(self.size // len(self.block)):
            await send({"type": "http.response.body", "body": self.block, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def test_a_consumer_that_is_behind_pauses_reading_from_the_worker() -> None:
    from sloguard.routing.forward import PAUSE_BYTES, Forwarder, Worker

    flood = FloodWorker(16 * MIB)
    forwarder = Forwarder()
    await forwarder.start()
    with serving(flood) as worker_url:
        worker = Worker("w", worker_url, frozenset({PDF}))
        upstream = await forwarder.send(worker, "/x", [], b"", 30)
        conn = upstream._conn
        for _ in range(1000):  # until reading pauses: the body is not being consumed
            if conn.reading_paused:
                break
            await asyncio.sleep(0.01)
        paused, buffered = conn.reading_paused, conn.buffered
        received, digest = 0, hashlib.sha256()
        async for chunk in upstream.chunks():
            received += len(chunk)
            digest.update(chunk)
        upstream.close()
    await forwarder.close()

    assert paused
    assert buffered <= PAUSE_BYTES + MIB  # what had arrived when it paused, not 16 MiB
    assert received == 16 * MIB
    assert digest.hexdigest() == hashlib.sha256(flood.block * 256).hexdigest()


async def test_a_forward_that_waits_for_a_connection_past_its_deadline_times_out() -> None:
    from sloguard.routing.forward import Failure, Forwarder, ForwardError, Worker

    held = RecordingWorker("w", mode="hold")
    forwarder = Forwarder(limit_per_host=1)
    await forwarder.start()
    with running(held) as worker_url:
        worker = Worker("w", worker_url, frozenset({PDF}))
        first = asyncio.ensure_future(forwarder.send(worker, "/x", [], b"", 30))
        await asyncio.to_thread(held.arrived.acquire, True, 30)
        with pytest.raises(ForwardError) as waited:
            await forwarder.send(worker, "/x", [], b"", 0.2)
        held.release.set()
        upstream = await first
        body = await upstream.read(worker)
    await forwarder.close()

    assert waited.value.failure is Failure.TIMEOUT
    assert "no free connection" in waited.value.detail
    assert upstream.status == 200
    assert body.startswith(b'{"worker"')
    assert len(held.received) == 1


def endless_headers(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nx-endless: ")
    for _ in range(100):
        conn.sendall(b"a" * 4096)


def head_over_the_limit_at_once(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nx-big: " + b"h" * 70_000 + b"\r\ncontent-length: 2\r\n\r\nok")


@pytest.mark.parametrize(
    "answer_head",
    [endless_headers, head_over_the_limit_at_once],
    ids=["headers that never end", "a head over the limit that arrives at once"],
)
def test_a_head_over_the_limit_is_a_502_problem(
    answer_head: Callable[[socket.socket], None],
) -> None:
    registry = WorkerRegistry()
    with RawWorker(answer_head) as worker, controller(registry) as url:
        registry.register("w", worker.url, [PDF])
        answer = httpx.post(url + PDF_PATH, content=b"{}")

    assert answer.status_code == 502
    assert answer.json()["error"] == "worker_bad_response"
    assert "headers are over" in answer.json()["detail"]


def answers_twice(conn: socket.socket) -> None:
    while read_request(conn):
        conn.sendall(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nretry-after: 5\r\n\r\nbusy"
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-second: yes\r\n\r\nok"
        )


def test_a_second_answer_to_one_request_never_replaces_the_first() -> None:
    registry = WorkerRegistry()
    with (
        RawWorker(answers_twice) as worker,
        controller(registry) as url,
        httpx.Client() as client,
    ):
        registry.register("w", worker.url, [PDF])
        answers = [client.post(url + PDF_PATH, content=b"{}") for _ in range(2)]

    for answer in answers:
        assert (answer.status_code, answer.text) == (503, "busy")
        assert answer.headers["retry-after"] == "5"
        assert "x-second" not in answer.headers
        assert answer.headers.get_list("content-length") == ["4"]
    assert worker.connections == 2  # the connection that answered twice was not pooled
