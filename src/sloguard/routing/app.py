"""The /route controller: forwards capability requests to healthy workers.

``POST /route/{verb}/{name}`` (body = payload) and the seed form ``POST /route``
(JSON ``{"verb", "capability", "idempotency_key"?, "priority"?,
"request_payload"}``) go to a worker chosen by power of two choices;
``/workers`` registers, heartbeats and lists workers (writes need the
registration token unless the registry is open); ``/healthz`` is the
controller's own health. Every error is RFC 9457 problem+json.

The two ``/route`` endpoints are plain ASGI (no Request or Response object on
the hot path): the body streams to the worker, the worker's answer streams
back (:mod:`sloguard.routing.forward`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from sloguard.capability import is_capability
from sloguard.exceptions import (
    ConfigurationError,
    InvalidIdempotencyKey,
    RegistrationRefused,
    RegistryUnavailable,
    StaticWorker,
)
from sloguard.idempotency.gate import SCOPE_KEY
from sloguard.idempotency.keys import Fingerprinter, forwarded_key, parse_idempotency_key
from sloguard.liveness import Liveness, liveness_report, stop_task
from sloguard.observability.metrics import metrics_app
from sloguard.observability.tracing import client_span
from sloguard.problems import Problem
from sloguard.reporting.api import api_token as resolve_token
from sloguard.reporting.api import require_token, slo_routes
from sloguard.reporting.mount import slo_site_routes
from sloguard.reporting.openapi import openapi_route
from sloguard.reporting.reporter import Reporter
from sloguard.reporting.repository import HistoryRepository
from sloguard.routing.body import DEFAULT_KEEP_BYTES, BodyTooLarge, ClientGone, RequestBody
from sloguard.routing.demo import LatencyProfile, demo_worker_app
from sloguard.routing.forward import (
    DEFAULT_LIMIT_PER_HOST,
    Failure,
    Forwarder,
    ForwardError,
    ResponseAborted,
    Upstream,
    request_headers,
    worker_tls_context,
)
from sloguard.routing.health import HealthChecker
from sloguard.routing.local import LocalWorker
from sloguard.routing.registration import TOKEN_ENV as REGISTRY_TOKEN_ENV
from sloguard.routing.registration import TOKEN_FILE, WorkerHosts
from sloguard.routing.registry import Registry, Worker, WorkerRegistry
from sloguard.routing.workers_file import WorkerSpec, load_workers_file, validation_problems
from sloguard.slo.manager import SLOManager

logger = logging.getLogger("sloguard.routing")

MAX_BODY_BYTES = 10 * 1024 * 1024
"""Default bound on a /route request body (413 above it)."""
MAX_REGISTRATION_BYTES = 64 * 1024
"""Bound on a ``POST /workers`` body (413 above it)."""
_REGISTRY_TOKEN_DETAIL = (
    "registry writes need an 'Authorization: Bearer <token>' header with the registration "
    f"token: sloguard serve's --registry-token or ${REGISTRY_TOKEN_ENV}, or the one it wrote "
    f"to STATE/{TOKEN_FILE} (sloguard worker reads that file)"
)
_REFUSAL_TITLES = {
    "worker_id_in_use": "Worker id in use",
    "static_worker": "Static worker",
    "registry_full": "Worker registry full",
}
_KEY_HEADER = b"idempotency-key"


class SeedRoute(BaseModel):
    """The seed's ``POST /route`` body."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    verb: str
    capability: str
    idempotency_key: str | None = None
    priority: str | None = None
    request_payload: Any = {}  # the seed's clients may leave it out; pydantic copies defaults

    @field_validator("idempotency_key", "priority")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        # Both travel on as headers: printable ASCII only (a control character or a
        # non-Latin-1 character cannot be a header value).
        if value is not None and not (
            0 < len(value) <= 255 and value.isascii() and value.isprintable()
        ):
            raise ValueError("must be 1 to 255 printable ASCII characters")
        return value


class _Endpoint:
    """A plain ASGI endpoint for Starlette's router (which wraps functions as
    request/response handlers)."""

    __slots__ = ("_handle",)

    def __init__(self, handle: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._handle = handle

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return self._handle(scope, receive, send)


class ControllerApp(Starlette):
    """The controller's Starlette app, with ``POST /route/{verb}/{name}`` and ``POST /route``
    taken before Starlette's middleware and router (the hot path: a tenth of a forward's
    time there)."""

    def __init__(self, controller: Controller, **options: Any) -> None:
        super().__init__(**options)
        self.controller = controller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if path.startswith("/route/"):
                _, _, verb, name, *rest = (*path.split("/"), "")
                if verb and name and rest == [""]:
                    scope["app"] = self
                    scope["path_params"] = {"verb": verb, "name": name}
                    await self.controller.route_path(scope, receive, send)
                    return
            elif path == "/route":
                scope["app"] = self
                await self.controller.route_seed(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _too_large(limit: int | None) -> Problem:
    return Problem(
        413, "payload_too_large", "Payload too large", f"the request body is over {limit} bytes"
    )


class Controller:
    """The controller's state and handlers; ``create_controller_app`` builds its app.

    ``forward_timeout_s``: the deadline of one forward, from the first attempt
    to the last byte of the worker's answer (504 before the answer starts; the
    response aborted after). ``max_body_bytes``: the largest request body
    (413). ``retry_buffer_bytes``: how much of a streamed request body is kept
    so that it can be sent again to another worker (a body that arrives whole,
    as small ones do, is always kept). ``limit_per_host``: connections to one
    worker at once. ``local_workers``: workers served in this process from the
    lifespan on (the demo ones). ``worker_hosts``: the hosts workers registering
    over HTTP may be on (403 for others; static workers are not checked).
    ``worker_ca``: a PEM file of the CAs that ``https://`` workers' certificates are
    verified against, forwards and health checks alike (default: the system's trust
    store); :class:`ConfigurationError` if it cannot be read.

    The ``Idempotency-Key`` a worker gets is scoped by the caller's principal
    (:func:`~sloguard.idempotency.keys.forwarded_key`): the digest SLOGuard's gate
    made when it leased the key, or else one of the ``Authorization`` header keyed
    with ``fingerprint_secret``.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        manager: SLOManager | None = None,
        forward_timeout_s: float = 30.0,
        health: HealthChecker | None = None,
        health_interval_s: float | None = 2.0,
        retry_after_s: int = 1,
        max_body_bytes: int | None = MAX_BODY_BYTES,
        retry_buffer_bytes: int = DEFAULT_KEEP_BYTES,
        limit_per_host: int = DEFAULT_LIMIT_PER_HOST,
        local_workers: Sequence[LocalWorker] = (),
        worker_hosts: WorkerHosts | None = None,
        worker_ca: str | os.PathLike[str] | None = None,
        tracing: bool = False,
        tracer_provider: Any = None,
        fingerprint_secret: bytes | str | None = None,
    ) -> None:
        if forward_timeout_s <= 0:
            raise ConfigurationError(f"forward_timeout_s must be positive, got {forward_timeout_s}")
        if health_interval_s is not None and health_interval_s <= 0:
            raise ConfigurationError(f"health_interval_s must be positive, got {health_interval_s}")
        if max_body_bytes is not None and max_body_bytes < 0:
            raise ConfigurationError(f"max_body_bytes must not be negative, got {max_body_bytes}")
        if retry_buffer_bytes < 0:
            raise ConfigurationError(
                f"retry_buffer_bytes must not be negative, got {retry_buffer_bytes}"
            )
        if limit_per_host < 1:
            raise ConfigurationError(f"limit_per_host must be at least 1, got {limit_per_host}")
        self.registry = registry
        self.manager = manager
        self.reporter: Reporter | None = None
        """Whose background loops /healthz reports (the one SLOGuard runs)."""
        self.tracing = tracing
        self.tracer_provider = tracer_provider
        self.forward_timeout_s = forward_timeout_s
        self.health = health or HealthChecker(registry)
        self.health_interval_s = health_interval_s
        self.retry_after_s = retry_after_s
        self.max_body_bytes = max_body_bytes
        self.retry_buffer_bytes = retry_buffer_bytes
        self.local_workers = tuple(local_workers)
        self.worker_hosts = worker_hosts
        self.registry_token: str | None = None
        """What registry writes need as ``Authorization: Bearer``; None: the registry is open."""
        tls = worker_tls_context(worker_ca) if worker_ca is not None else None
        self.forwarder = Forwarder(limit_per_host=limit_per_host, tls=tls)
        self.fingerprints = Fingerprinter(fingerprint_secret)
        """Scopes forwarded keys when no idempotency gate leased them (see the class)."""

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """The forwarder's pool, the local workers, the registry and the health checks."""
        async with contextlib.AsyncExitStack() as stack:
            await self.forwarder.start()
            stack.push_async_callback(self.forwarder.close)
            for local in self.local_workers:
                url = await local.start()
                stack.push_async_callback(local.close)
                self.registry.register(local.id, url, local.capabilities, static=True)
            await self.registry.start()
            stack.push_async_callback(self.registry.close)
            if self.health_interval_s is not None:
                checks = await stack.enter_async_context(self.health_client())
                task = asyncio.create_task(self.health.run(checks, self.health_interval_s))
                stack.push_async_callback(stop_task, task)
            yield

    def health_client(self) -> httpx.AsyncClient:
        """The client the health checks use: it trusts what the forwarder trusts
        (httpx's own default would be certifi's bundle, not the system's store)."""
        return httpx.AsyncClient(verify=self.forwarder.tls_context())

    # -- /route -----------------------------------------------------------------

    async def route_path(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        verb, name = params["verb"], params["name"]
        keyed = False
        for header, value in scope["headers"]:
            if header == b"content-length":
                limit = self.max_body_bytes
                if limit is not None and value.isdigit() and int(value) > limit:
                    await _too_large(limit).send(send)
                    return
            elif header == _KEY_HEADER:
                keyed = True
        body = RequestBody(
            receive, max_bytes=self.max_body_bytes, keep_bytes=self.retry_buffer_bytes
        )
        try:
            await body.start()
            headers = request_headers(
                scope["headers"], scope.get("client"), scope["scheme"], keep_length=True
            )
            if keyed:
                self._scope_key(scope, headers)
            query: bytes = scope["query_string"]
            path = f"/{verb}/{name}?{query.decode('latin-1')}" if query else f"/{verb}/{name}"
            await self._dispatch(receive, send, f"{verb}:{name}", path, body, headers, keyed)
        except Problem as problem:
            await problem.send(send)
        except BodyTooLarge:
            await _too_large(self.max_body_bytes).send(send)
        except ClientGone:
            return  # nobody to answer

    async def route_seed(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = RequestBody(receive, max_bytes=self.max_body_bytes, keep_bytes=0)
        try:
            seed = _parse_seed(await body.read_all())
            headers = request_headers(
                scope["headers"], scope.get("client"), scope["scheme"], keep_length=False
            )
            present = {name.lower() for name, _ in headers}
            if seed.idempotency_key and "idempotency-key" not in present:
                headers.append(("idempotency-key", seed.idempotency_key))
            if seed.priority and "x-priority" not in present:
                headers.append(("x-priority", seed.priority))
            headers = [(n, v) for n, v in headers if n.lower() != "content-type"]
            headers.append(("content-type", "application/json"))
            payload = json.dumps(seed.request_payload, separators=(",", ":")).encode()
            keyed = any(n.lower() == "idempotency-key" for n, _ in headers)
            if keyed:
                self._scope_key(scope, headers)
            capability = f"{seed.verb}:{seed.capability}"
            path = f"/{seed.verb}/{seed.capability}"
            whole = RequestBody.whole(payload)
            await self._dispatch(receive, send, capability, path, whole, headers, keyed)
        except Problem as problem:
            await problem.send(send)
        except BodyTooLarge:
            await _too_large(self.max_body_bytes).send(send)
        except ClientGone:
            return

    def _scope_key(self, scope: Scope, headers: list[tuple[str, str]]) -> None:
        """Replace the ``Idempotency-Key`` in ``headers`` with the one the worker gets:
        scoped by the caller's principal, so that the worker's own idempotency layer,
        which sees every client as the controller, never replays one client's response
        to another. A key the gate did not lease and that does not parse (or comes
        twice) goes on as it came: the worker refuses it as the gate would."""
        held = scope.get(SCOPE_KEY)
        if held is not None:
            key, principal = held["key"], held["principal"]
        else:
            values = [v for n, v in headers if n.lower() == "idempotency-key"]
            if len(values) != 1:
                return
            try:
                key = parse_idempotency_key(values[0].encode("latin-1"))
            except InvalidIdempotencyKey:
                return
            # As the gate's principal (request.py): every Authorization value, joined.
            authorization = b"\n".join(v for n, v in scope["headers"] if n == b"authorization")
            principal = self.fingerprints.principal(authorization)
        scoped = forwarded_key(principal, key)
        if scoped is not None:
            headers[:] = [(n, scoped if n.lower() == "idempotency-key" else v) for n, v in headers]

    async def _dispatch(
        self,
        receive: Receive,
        send: Send,
        capability: str,
        path: str,
        body: RequestBody,
        headers: list[tuple[str, str]],
        keyed: bool,
    ) -> None:
        if not is_capability(capability) or not (
            self._known(capability) or await self._known_after_refresh(capability)
        ):
            raise Problem(
                404,
                "unknown_capability",
                "Unknown capability",
                f"no SLO file and no worker for capability {capability!r}",
                capability=capability,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.forward_timeout_s
        tried: list[str] = []
        failed: ForwardError | None = None
        while True:
            worker = self.registry.choose(capability, exclude=tried)
            if worker is None and not tried:
                await self.registry.refresh()  # a shared registry may know of one by now
                worker = self.registry.choose(capability)
            if worker is None:
                raise self._no_worker(capability, tried, failed)
            worker.outstanding += 1
            worker.served += 1
            try:
                remaining = deadline - loop.time()
                upstream = await self._send(worker, path, headers, body, remaining)
                await self._relay(receive, send, worker, upstream, body.complete)
                return
            except ForwardError as exc:
                if body.error is not None:
                    raise body.error from exc
                tried.append(worker.id)
                failed = exc
                self._failed(worker, exc)
                retry = exc.failure is Failure.NOT_SENT or (exc.failure is Failure.LOST and keyed)
                if not retry or len(tried) > 1 or not body.retryable:
                    raise self._failure_problem(capability, exc, tried, retry) from exc
                logger.info("retrying %s on another worker: %s: %s", capability, worker.id, exc)
            finally:
                worker.outstanding -= 1

    async def _send(
        self,
        worker: Worker,
        path: str,
        headers: list[tuple[str, str]],
        body: RequestBody,
        timeout_s: float,
    ) -> Upstream:
        if timeout_s <= 0:
            raise ForwardError(Failure.TIMEOUT, worker, "the forward's deadline passed")
        if not self.tracing:
            return await self.forwarder.send(worker, path, headers, body.payload(), timeout_s)
        attributes = {"sloguard.worker": worker.id, "url.full": worker.url + path}
        with client_span(
            f"POST {path.partition('?')[0]}", headers, attributes, self.tracer_provider
        ) as traced:
            return await self.forwarder.send(worker, path, traced, body.payload(), timeout_s)

    async def _relay(
        self, receive: Receive, send: Send, worker: Worker, upstream: Upstream, listen: bool
    ) -> None:
        """Send the worker's answer on, chunk by chunk; raise :class:`ResponseAborted`
        (after the response started) when it breaks off."""
        start = {
            "type": "http.response.start",
            "status": upstream.status,
            "headers": upstream.headers,
        }
        try:
            if upstream.small:  # read before answering: a failure here is still a 502
                data = await upstream.read(worker)
                await send(start)
                await send({"type": "http.response.body", "body": data})
                return
            # A client that leaves stops the stream (uvicorn's send then does nothing).
            gone = asyncio.ensure_future(receive()) if listen else None
            try:
                await send(start)
                async for chunk in upstream.chunks():
                    if gone is not None and gone.done():
                        raise ResponseAborted("the client disconnected")
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                if gone is not None:
                    gone.cancel()
        except ResponseAborted as exc:
            worker.last_error = f"response aborted: {exc}"
            logger.warning("response from worker %s aborted: %s", worker.id, exc)
            raise
        finally:
            upstream.close()

    def _failed(self, worker: Worker, exc: ForwardError) -> None:
        if exc.failure is Failure.NOT_SENT:
            self.registry.unreachable(worker, exc.detail)
        else:
            worker.last_error = exc.detail

    def _failure_problem(
        self, capability: str, exc: ForwardError, tried: list[str], retry: bool
    ) -> Problem:
        worker = exc.worker
        if exc.failure is Failure.TIMEOUT:
            return Problem(
                504,
                "worker_timeout",
                "Worker timed out",
                f"worker {worker.id} did not answer {capability} in time: {exc.detail}",
                capability=capability,
                worker=worker.id,
            )
        if exc.failure is Failure.MALFORMED:
            return Problem(
                502,
                "worker_bad_response",
                "Worker sent a malformed response",
                f"worker {worker.id} answered {capability} with malformed HTTP: {exc.detail}",
                capability=capability,
                workers=tried,
            )
        if not retry:
            why = " (not retried: the request has no idempotency key)"
        elif len(tried) == 1:
            why = " (not retried: its body was too large to keep for a retry)"
        else:
            why = ""
        return Problem(
            502,
            "worker_unreachable",
            "Worker unreachable",
            f"worker {worker.id} failed on {capability}: {exc.detail}{why}",
            capability=capability,
            workers=tried,
        )

    def _known(self, capability: str) -> bool:
        if self.manager is not None and self.manager.get_slo(capability) is not None:
            return True
        return self.registry.serves(capability)

    async def _known_after_refresh(self, capability: str) -> bool:
        await self.registry.refresh()  # a shared registry may have learned of a worker
        return self.registry.serves(capability)

    def _no_worker(
        self, capability: str, tried: list[str], failed: ForwardError | None = None
    ) -> Problem:
        if tried:  # the only worker failed and none is left to retry on
            why = f" ({failed.detail})" if failed is not None else ""
            detail = f"worker {tried[0]} was unreachable{why} and no other healthy worker serves it"
            problem = Problem(502, "worker_unreachable", "Worker unreachable", detail)
            problem.extra = {"capability": capability, "workers": tried}
            return problem
        problem = Problem(
            503,
            "no_worker_available",
            "No worker available",
            f"no healthy worker serves {capability}; retry after {self.retry_after_s} s",
            capability=capability,
        )
        problem.headers["retry-after"] = str(self.retry_after_s)
        return problem

    # -- /workers, /healthz -----------------------------------------------------

    async def list_workers(self, request: Request) -> Response:
        await self.registry.refresh()
        return JSONResponse({"workers": self.registry.snapshot()})

    async def register_worker(self, request: Request) -> Response:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_REGISTRATION_BYTES:
                return _too_large(MAX_REGISTRATION_BYTES).response()
            chunks.append(chunk)
        try:
            document = json.loads(b"".join(chunks))
        except (ValueError, RecursionError) as exc:
            return _bad_request("invalid_json", f"the body is not valid JSON: {exc}")
        try:
            spec = WorkerSpec.model_validate(document)
        except ValidationError as exc:
            detail = "; ".join(f"{f}: {m}" if f else m for f, m in validation_problems(exc))
            return _bad_request("invalid_worker", detail)
        hosts = self.worker_hosts
        if hosts is not None and not hosts.allows(spec.url):
            return Problem(
                403,
                "worker_host_not_allowed",
                "Worker host not allowed",
                f"url: {spec.url} is not on a host workers may register from ({hosts})",
                worker=spec.id,
            ).response()
        try:
            known = await self.registry.join(spec.id, spec.url, spec.capabilities)
        except (RegistrationRefused, RegistryUnavailable) as exc:
            return _registry_problem(exc, spec.id)
        logger.info("worker %s registered at %s", spec.id, spec.url)
        # A shared registry's sync may drop it from the local view meanwhile: answer anyway.
        entry = next((w for w in self.registry.snapshot() if w["id"] == spec.id), spec.model_dump())
        return JSONResponse(entry, status_code=200 if known else 201)

    async def heartbeat(self, request: Request) -> Response:
        worker_id = request.path_params["worker_id"]
        try:
            worker = await self.registry.beat(worker_id)
        except (StaticWorker, RegistryUnavailable) as exc:
            return _registry_problem(exc, worker_id)
        if worker is None:
            return _not_a_worker(worker_id)
        healthy = self.registry.is_healthy(worker)
        return JSONResponse({"id": worker.id, "healthy": healthy})

    async def remove_worker(self, request: Request) -> Response:
        worker_id = request.path_params["worker_id"]
        try:
            removed = await self.registry.leave(worker_id)
        except (StaticWorker, RegistryUnavailable) as exc:
            return _registry_problem(exc, worker_id)
        if not removed:
            return _not_a_worker(worker_id)
        logger.info("worker %s left", worker_id)
        return Response(status_code=204)

    def loops(self) -> list[Liveness]:
        """The liveness of the controller's own background loops: the health checks, and
        the registry's (reading a shared one)."""
        return [self.health.liveness, *self.registry.loops()]

    async def healthz(self, request: Request) -> Response:
        healthy = sum(1 for w in self.registry if self.registry.is_healthy(w))
        body: dict[str, Any] = {"status": "ok", "workers": len(self.registry), "healthy": healthy}
        if self.reporter is not None:  # and the reporter's loops: watcher, monitor, ...
            body.update(self.reporter.health(*self.loops()))
        else:
            body.update(liveness_report(self.loops()))
        return JSONResponse(body)


def _parse_seed(body: bytes) -> SeedRoute:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Problem(
            400, "invalid_json", "Invalid JSON", f"the body is not valid JSON: {exc}"
        ) from exc
    if not isinstance(document, dict):
        raise Problem(
            400,
            "invalid_route_request",
            "Invalid /route request",
            f"the body must be a JSON object, got {type(document).__name__}",
        )
    try:
        return SeedRoute.model_validate(document)
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise Problem(
            400,
            "invalid_route_request",
            "Invalid /route request",
            "; ".join(f"{field}: {message}" for field, message in problems),
            fields=[field for field, _ in problems],
        ) from exc


def _bad_request(error: str, detail: str) -> Response:
    return Problem(400, error, "Bad request", detail).response()


def _registry_problem(exc: RegistrationRefused | RegistryUnavailable, worker_id: str) -> Response:
    if isinstance(exc, RegistryUnavailable):
        problem = Problem(
            503, "registry_unavailable", "Worker registry unavailable", str(exc), worker=worker_id
        )
        problem.headers["retry-after"] = "1"
        return problem.response()
    title = _REFUSAL_TITLES.get(exc.error, "Registration refused")
    return Problem(409, exc.error, title, str(exc), worker=worker_id).response()


def _not_a_worker(worker_id: str) -> Response:
    return Problem(
        404, "unknown_worker", "Unknown worker", f"no worker {worker_id!r}; register it first"
    ).response()


def demo_workers(manager: SLOManager | None, capabilities: list[str]) -> list[LocalWorker]:
    """One demo worker per capability, served in the controller's process on a loopback
    port of its own (from the lifespan on): the forward path is the one every worker gets."""
    out: list[LocalWorker] = []
    for capability in capabilities:
        worker_id = "demo-" + capability.replace(":", "-")
        slo = manager.get_slo(capability) if manager is not None else None
        app = demo_worker_app(
            [capability], worker_id=worker_id, profiles={capability: LatencyProfile.for_slo(slo)}
        )
        out.append(LocalWorker(worker_id, (capability,), app))
    return out


def create_controller_app(
    state_dir: str | os.PathLike[str] | None = None,
    *,
    registry: Registry | None = None,
    manager: SLOManager | None = None,
    demo: bool | None = None,
    api_token: str | None = None,
    registry_token: str | None = None,
    open_registry: bool = False,
    worker_hosts: WorkerHosts | str | Sequence[str] | None = None,
    history: HistoryRepository | None = None,
    reporter: Reporter | None = None,
    **options: Any,
) -> Starlette:
    """The controller as a Starlette app; ``app.state.controller`` is its :class:`Controller`.

    ``state_dir`` (e.g. ``state/``): SLO files from ``controller/slos/`` (unless
    ``manager`` is given) and static workers from ``workers.yml``. ``demo``:
    serve the built-in demo workers in-process; by default, when ``state_dir``
    is given and ``workers.yml`` lists no worker. ``registry``: a
    :class:`WorkerRegistry` (the default) or a ``RedisRegistry`` shared with
    other controllers. ``options`` go to :class:`Controller`
    (``forward_timeout_s``, ``health_interval_s``, ``max_body_bytes``,
    ``local_workers``...).

    With an SLO manager, the /slo read API is served too (its history, breach
    and compliance endpoints read ``history``; without one they answer 503).
    With a ``reporter`` (the one SLOGuard runs, see :class:`Reporter`), its
    routes are served instead: the same API on its store, shedding figures from
    its guard, and the ``/slo/ws`` event stream.
    ``api_token`` (default ``$SLOGUARD_API_TOKEN``) protects ``/slo*``: it answers
    401 without ``Authorization: Bearer <token>``. ``/slo/ui`` is the live dashboard
    page (served without the token; it asks for it).

    The ``/workers`` writes (register, heartbeat, leave) always need a token, unless
    ``open_registry``: ``registry_token``, else ``$SLOGUARD_REGISTRY_TOKEN``, else the
    API token, else a random one made now (``app.state.controller.registry_token``).
    ``worker_hosts`` (a :class:`WorkerHosts`, or ``"10.0.0.0/8,example.internal"``):
    the hosts workers registering over HTTP may be on.
    """
    registry = registry if registry is not None else WorkerRegistry()
    local: list[LocalWorker] = list(options.pop("local_workers", None) or ())
    if state_dir is not None:
        state = Path(state_dir)
        if not state.is_dir():
            raise ConfigurationError(f"state directory not found: {state}")
        if manager is None and (state / "controller" / "slos").is_dir():
            manager = SLOManager(state / "controller" / "slos")
        specs = load_workers_file(state / "workers.yml")
        for spec in specs:
            registry.register(spec.id, spec.url, spec.capabilities, static=True)
        if demo is None:
            demo = not specs
    if demo:
        capabilities = list(manager.capabilities) if manager is not None else []
        local.extend(demo_workers(manager, capabilities))
    hosts = worker_hosts
    if hosts is not None and not isinstance(hosts, WorkerHosts):
        hosts = WorkerHosts.parse(hosts)
    controller = Controller(
        registry, manager=manager, local_workers=local, worker_hosts=hosts, **options
    )
    controller.reporter = reporter
    token = resolve_token(api_token)
    if open_registry and registry_token:
        raise ConfigurationError("a registry token and an open registry: choose one")
    if not open_registry:
        controller.registry_token = (
            registry_token
            or os.environ.get(REGISTRY_TOKEN_ENV)
            or token
            or secrets.token_urlsafe(32)
        )
    writes = functools.partial(
        require_token, controller.registry_token, detail=_REGISTRY_TOKEN_DETAIL
    )
    if reporter is not None:
        if history is not None:
            raise ConfigurationError("pass history to the Reporter, not to the controller")
        slo = list(reporter.routes(token=token or ""))
    else:
        slo = [] if manager is None else slo_routes(manager, history, token=token or "")
    if slo:
        slo = slo_site_routes(slo)
    app = ControllerApp(
        controller,
        routes=[
            Route("/route/{verb}/{name}", _Endpoint(controller.route_path), methods=["POST"]),
            Route("/route", _Endpoint(controller.route_seed), methods=["POST"]),
            Route("/workers", controller.list_workers, methods=["GET"]),
            Route("/workers", writes(controller.register_worker), methods=["POST"]),
            Route("/workers/{worker_id}/heartbeat", writes(controller.heartbeat), methods=["POST"]),
            Route("/workers/{worker_id}", writes(controller.remove_worker), methods=["DELETE"]),
            Route("/healthz", controller.healthz, methods=["GET"]),
            openapi_route(controller=True),
            Mount("/metrics", metrics_app()),
            *slo,
        ],
        lifespan=controller.lifespan,
    )
    app.state.controller = controller
    return app
