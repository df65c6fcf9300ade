"""Forwarding to ``https://`` workers: real uvicorn workers serving TLS with certificates
made now by a CA of the test's own (``tests/tls.py``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from sloguard.exceptions import ConfigurationError
from sloguard.routing import WorkerRegistry, create_controller_app
from sloguard.routing.forward import Failure, Forwarder, ForwardError, Worker, worker_tls_context
from tests.routing.test_forward import PDF, PDF_PATH, StreamingWorker, controller, first_pick
from tests.routing.test_server import controller as serve
from tests.routing.test_server import refusal
from tests.routing.workers import RecordingWorker, running
from tests.servers import serving
from tests.tls import CertificateAuthority, Leaf


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def leaf(ca: CertificateAuthority) -> Leaf:
    """A certificate for 127.0.0.1 and localhost."""
    return ca.leaf("worker")


@pytest.fixture(scope="module")
def elsewhere(ca: CertificateAuthority) -> Leaf:
    """A certificate from the same CA for another host name only."""
    return ca.leaf("elsewhere", "DNS:elsewhere.example")


@pytest.fixture(autouse=True)
def system_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system's trust store, which knows nothing of the test's CA."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


def connections(app: ASGIApp, seen: list[tuple[str, tuple[str, int]]]) -> ASGIApp:
    """``app``, recording each request's scheme and peer (the controller's socket: one
    peer per connection, with ``proxy_headers=False``)."""

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.append((scope["scheme"], tuple(scope["client"])))
        await app(scope, receive, send)

    return recorded


def test_posts_and_streamed_answers_pass_over_tls_on_one_kept_alive_connection(
    ca: CertificateAuthority, leaf: Leaf
) -> None:
    worker = StreamingWorker(chunk=b"s" * 65536, rest=3)
    seen: list[tuple[str, tuple[str, int]]] = []
    registry = WorkerRegistry()
    upload = b"u" * 300_000

    def streamed_body() -> Iterator[bytes]:
        for start in range(0, len(upload), 100_000):
            yield upload[start : start + 100_000]

    with (
        serving(connections(worker, seen), proxy_headers=False, **leaf.uvicorn) as worker_url,
        controller(registry, worker_ca=ca.cert) as url,
        httpx.Client(timeout=30) as client,
    ):
        registry.register("w", worker_url, [PDF])
        with client.stream("POST", url + PDF_PATH, content=streamed_body()) as response:
            chunks = response.iter_raw()
            first = next(chunks)
            was_waiting = not worker.go.is_set()
            worker.go.set()
            streamed = first + b"".join(chunks)
        answers = [client.post(url + PDF_PATH, content=upload) for _ in range(2)]

    assert worker_url.startswith("https://")
    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert (first, was_waiting) == (b"first", True)  # streamed, not buffered, over TLS
    assert streamed == b"first" + worker.chunk * 3
    assert [(a.status_code, a.content) for a in answers] == [(200, streamed)] * 2
    assert worker.bodies == [(len(upload), hashlib.sha256(upload).hexdigest())] * 3
    assert [scheme for scheme, _ in seen] == ["https"] * 3
    assert len({peer for _, peer in seen}) == 1  # one TLS connection carried all three


@pytest.mark.parametrize(
    ("served", "trusted", "said"),
    [
        pytest.param("leaf", False, "unable to get local issuer certificate", id="an untrusted CA"),
        pytest.param("elsewhere", True, "mismatch", id="another host's certificate"),
        pytest.param(None, True, "TLS handshake failed: WRONG_VERSION_NUMBER", id="plain HTTP"),
    ],
)
async def test_a_failed_tls_handshake_is_never_sent(
    ca: CertificateAuthority,
    request: pytest.FixtureRequest,
    served: str | None,
    trusted: bool,
    said: str,
) -> None:
    worker = RecordingWorker("w")
    tls = request.getfixturevalue(served).uvicorn if served else {}
    forwarder = Forwarder(tls=worker_tls_context(ca.cert) if trusted else None)
    await forwarder.start()
    with running(worker, **tls) as worker_url:
        target = Worker("w", worker_url.replace("http://", "https://"), frozenset({PDF}))
        with pytest.raises(ForwardError) as failed:
            await forwarder.send(target, "/convert/document_to_pdf", [], b"{}", 10)
    await forwarder.close()

    assert failed.value.failure is Failure.NOT_SENT  # safe to send to another worker
    assert said in failed.value.detail
    if served is not None:
        assert failed.value.detail.startswith("TLS verification failed: ")
    assert worker.received == []


@pytest.mark.parametrize(
    ("served", "worker_ca", "said"),
    [
        pytest.param("leaf", False, "unable to get local issuer certificate", id="untrusted CA"),
        pytest.param("elsewhere", True, "IP address mismatch", id="another host's certificate"),
    ],
)
def test_a_worker_whose_certificate_fails_verification_is_a_502_naming_it(
    ca: CertificateAuthority,
    request: pytest.FixtureRequest,
    served: str,
    worker_ca: bool,
    said: str,
) -> None:
    worker, spare = RecordingWorker("tls"), RecordingWorker("spare")
    registry = WorkerRegistry(random_source=first_pick)
    options = {"worker_ca": ca.cert} if worker_ca else {}
    with (
        running(worker, **request.getfixturevalue(served).uvicorn) as worker_url,
        running(spare) as spare_url,
        controller(registry, **options) as url,
    ):
        registry.register("tls", worker_url, [PDF])
        alone = httpx.post(url + PDF_PATH, content=b"{}", timeout=30)
        listed = httpx.get(url + "/workers").json()["workers"]
        registry.register("tls", worker_url, [PDF])  # healthy again, and a spare beside it
        registry.register("spare", spare_url, [PDF])
        unkeyed = httpx.post(url + PDF_PATH, content=b"{}", timeout=30)
        after = {w["id"]: w for w in httpx.get(url + "/workers").json()["workers"]}

    assert alone.status_code == 502
    assert alone.headers["content-type"] == "application/problem+json"
    problem = alone.json()
    assert problem["error"] == "worker_unreachable"
    assert problem["workers"] == ["tls"]
    assert "TLS verification failed: " in problem["detail"]
    assert said in problem["detail"]
    assert "TLS verification failed" in listed[0]["last_error"]
    # Never sent: tried on another worker even without an idempotency key.
    assert unkeyed.status_code == 200
    assert unkeyed.headers["x-worker-id"] == "spare"
    assert "TLS verification failed" in after["tls"]["last_error"]  # it was tried first
    assert worker.received == []


def test_the_system_trust_store_is_honoured_through_ssl_cert_file(
    ca: CertificateAuthority, leaf: Leaf, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenSSL's default verify paths read $SSL_CERT_FILE when the context is made:
    # the forwarder makes it on its first https:// worker, after this.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
    worker = RecordingWorker("w")
    registry = WorkerRegistry()
    with running(worker, **leaf.uvicorn) as worker_url, controller(registry) as url:
        registry.register("w", worker_url, [PDF])
        answer = httpx.post(url + PDF_PATH, content=b"{}", timeout=30)

    assert answer.status_code == 200
    assert answer.json() == {"worker": "w", "bytes": 2}


async def test_health_checks_trust_what_forwards_trust(
    ca: CertificateAuthority, leaf: Leaf
) -> None:
    registry = WorkerRegistry()
    controller_ = create_controller_app(
        registry=registry, worker_ca=ca.cert, health_interval_s=None
    ).state.controller
    with running(RecordingWorker("w"), **leaf.uvicorn) as worker_url:
        worker = registry.register("w", worker_url, [PDF])
        async with httpx.AsyncClient() as certifi_only:  # httpx's default trust
            await controller_.health.check_once(certifi_only)
            await controller_.health.check_once(certifi_only)
        rejected = (registry.is_healthy(worker), worker.last_error)
        async with controller_.health_client() as client:
            await controller_.health.check_once(client)

    assert rejected[0] is False
    assert "CERTIFICATE_VERIFY_FAILED" in rejected[1]
    assert registry.is_healthy(worker)


def test_a_worker_ca_that_cannot_be_used_is_refused_naming_the_file(tmp_path: Path) -> None:
    missing, empty = tmp_path / "missing.pem", tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")

    for path, reason in ((missing, "cannot read it"), (empty, "no PEM certificate in it")):
        with pytest.raises(ConfigurationError) as refused:
            create_controller_app(registry=WorkerRegistry(), worker_ca=path)
        assert str(refused.value).startswith(f"worker CA file {path}: {reason}")

    status, lines = refusal("--worker-ca", str(missing))
    assert status == 2
    assert lines == [
        f"sloguard serve: worker CA file {missing}: cannot read it: No such file or directory"
    ]


def test_serve_worker_ca_verifies_a_static_https_worker(
    ca: CertificateAuthority, leaf: Leaf, tmp_path: Path
) -> None:
    worker = RecordingWorker("w")
    with running(worker, **leaf.uvicorn) as worker_url:
        (tmp_path / "workers.yml").write_text(
            f"workers:\n  - id: w\n    url: {worker_url}\n    capabilities: [{PDF}]\n"
        )
        with serve("--state", str(tmp_path), "--worker-ca", str(ca.cert)) as url:
            answer = httpx.post(url + PDF_PATH, content=b"{}", timeout=30)

    assert answer.status_code == 200
    assert answer.headers["x-worker-id"] == "w"
    assert [r.body for r in worker.received] == [b"{}"]
