"""The /route controller: forwards capability requests to healthy workers.

``POST /route/{verb}/{name}`` (body = payload) and the seed form ``POST /route``
(JSON ``{"verb", "capability", "idempotency_key"?, "priority"?,
"request_payload"}``) go to a worker chosen by power of two choices;
``/workers`` registers, heartbeats and lists workers; ``/healthz`` is the
controller's own health. Every error is RFC 9457 problem+json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from sloguard.capability import is_capability
from sloguard.exceptions import ConfigurationError
from sloguard.observability.metrics import metrics_app
from sloguard.observability.tracing import client_span
from sloguard.problems import PROBLEM_CONTENT_TYPE, problem_body
from sloguard.reporting.api import api_token as resolve_token
from sloguard.reporting.api import require_token, slo_routes
from sloguard.reporting.mount import slo_site_routes
from sloguard.reporting.reporter import Reporter
from sloguard.reporting.repository import HistoryRepository
from sloguard.routing.demo import LatencyProfile, demo_worker_app
from sloguard.routing.forward import (
    RETURNED_HEADERS,
    Failure,
    ForwardError,
    forwarded_headers,
    send_to_worker,
)
from sloguard.routing.health import HealthChecker
from sloguard.routing.registry import Worker, WorkerRegistry
from sloguard.routing.workers_file import WorkerSpec, load_workers_file, validation_problems
from sloguard.slo.manager import SLOManager

logger = logging.getLogger("sloguard.routing")

MAX_BODY_BYTES = 10 * 1024 * 1024
_PROBLEM = PROBLEM_CONTENT_TYPE.decode()


class SeedRoute(BaseModel):
    """The seed's ``POST /route`` body."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    verb: str
    capability: str
    idempotency_key: str | None = None
    priority: str | None = None
    request_payload: Any = {}  # the seed's clients may leave it out; pydantic copies defaults


class _Problem(Exception):
    def __init__(self, status: int, error: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.title, self.detail = status, error, title, detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    def response(self) -> Response:
        body = problem_body(self.status, self.error, self.title, self.detail, **self.extra)
        return Response(body, self.status, headers=self.headers, media_type=_PROBLEM)


class Controller:
    """The controller's state and handlers; ``create_controller_app`` builds its app."""

    def __init__(
        self,
        registry: WorkerRegistry,
        *,
        manager: SLOManager | None = None,
        forward_timeout_s: float = 30.0,
        health: HealthChecker | None = None,
        health_interval_s: float | None = 2.0,
        retry_after_s: int = 1,
        transport: httpx.AsyncBaseTransport | None = None,
        mounts: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        tracing: bool = False,
        tracer_provider: Any = None,
    ) -> None:
        if forward_timeout_s <= 0:
            raise ConfigurationError(f"forward_timeout_s must be positive, got {forward_timeout_s}")
        if health_interval_s is not None and health_interval_s <= 0:
            raise ConfigurationError(f"health_interval_s must be positive, got {health_interval_s}")
        self.registry = registry
        self.manager = manager
        self.tracing = tracing
        self.tracer_provider = tracer_provider
        self.forward_timeout_s = forward_timeout_s
        self.health = health or HealthChecker(registry)
        self.health_interval_s = health_interval_s
        self.retry_after_s = retry_after_s
        self.max_body_bytes = max_body_bytes
        self._transport = transport
        self._mounts = dict(mounts or {})
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("the controller's HTTP client starts with the ASGI lifespan")
        return self._client

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """One pooled client for every forward and health check, and the check loop."""
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        self._client = httpx.AsyncClient(
            transport=self._transport, mounts=self._mounts, limits=limits
        )
        checks = None
        if self.health_interval_s is not None:
            checks = asyncio.create_task(self.health.run(self._client, self.health_interval_s))
        try:
            yield
        finally:
            if checks is not None:
                checks.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checks
            await self._client.aclose()
            self._client = None

    # -- /route -----------------------------------------------------------------

    async def route_path(self, request: Request) -> Response:
        verb, name = request.path_params["verb"], request.path_params["name"]
        try:
            body = await self._read_body(request)
            headers = forwarded_headers(
                request.headers.items(), request.headers.get("content-type")
            )
            return await self._dispatch(verb, name, body, headers, request.url.query)
        except _Problem as problem:
            return problem.response()

    async def route_seed(self, request: Request) -> Response:
        try:
            seed = _parse_seed(await self._read_body(request))
            headers = forwarded_headers(request.headers.items(), None)
            present = {name.lower() for name, _ in headers}
            if seed.idempotency_key and "idempotency-key" not in present:
                headers.append(("idempotency-key", seed.idempotency_key))
            if seed.priority and "x-priority" not in present:
                headers.append(("x-priority", seed.priority))
            headers.append(("content-type", "application/json"))
            payload = json.dumps(seed.request_payload, separators=(",", ":")).encode()
            return await self._dispatch(seed.verb, seed.capability, payload, headers, "")
        except _Problem as problem:
            return problem.response()

    async def _read_body(self, request: Request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _Problem(
                    413,
                    "payload_too_large",
                    "Payload too large",
                    f"the request body is over {self.max_body_bytes} bytes",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _dispatch(
        self, verb: str, name: str, body: bytes, headers: list[tuple[str, str]], query: str
    ) -> Response:
        capability = f"{verb}:{name}"
        if not is_capability(capability) or not self._known(capability):
            raise _Problem(
                404,
                "unknown_capability",
                "Unknown capability",
                f"no SLO file and no worker for capability {capability!r}",
                capability=capability,
            )
        path = f"/{verb}/{name}" + (f"?{query}" if query else "")
        keyed = any(n.lower() == "idempotency-key" for n, _ in headers)
        tried: list[str] = []
        while True:
            worker = self.registry.choose(capability, exclude=tried)
            if worker is None:
                raise self._no_worker(capability, tried)
            try:
                response = await self._forward(worker, path, body, headers)
            except ForwardError as exc:
                tried.append(worker.id)
                retry = exc.failure is Failure.NOT_SENT or (exc.failure is Failure.LOST and keyed)
                if exc.failure is Failure.TIMEOUT:
                    raise _Problem(
                        504,
                        "worker_timeout",
                        "Worker timed out",
                        f"worker {worker.id} did not answer {capability} in time: {exc.detail}",
                        capability=capability,
                        worker=worker.id,
                    ) from exc
                if not retry or len(tried) > 1:
                    raise _Problem(
                        502,
                        "worker_unreachable",
                        "Worker unreachable",
                        f"worker {worker.id} failed on {capability}: {exc.detail}"
                        + ("" if retry else " (not retried: the request has no idempotency key)"),
                        capability=capability,
                        workers=tried,
                    ) from exc
                logger.info("retrying %s on another worker: %s: %s", capability, worker.id, exc)
                continue
            out = {"x-worker-id": worker.id}
            for header in RETURNED_HEADERS:
                if header in response.headers:
                    out[header] = response.headers[header]
            return Response(response.content, response.status_code, headers=out)

    async def _forward(
        self, worker: Worker, path: str, body: bytes, headers: list[tuple[str, str]]
    ) -> httpx.Response:
        worker.outstanding += 1
        worker.served += 1
        try:
            if not self.tracing:
                return await send_to_worker(
                    self.client, worker, path, body, headers, self.forward_timeout_s
                )
            attributes = {"sloguard.worker": worker.id, "url.full": worker.url + path}
            with client_span(
                f"POST {path.partition('?')[0]}", headers, attributes, self.tracer_provider
            ) as traced_headers:
                return await send_to_worker(
                    self.client, worker, path, body, traced_headers, self.forward_timeout_s
                )
        except ForwardError as exc:
            if exc.failure is Failure.NOT_SENT:
                self.registry.unreachable(worker, exc.detail)
            else:
                worker.last_error = exc.detail
            raise
        finally:
            worker.outstanding -= 1

    def _known(self, capability: str) -> bool:
        if self.manager is not None and self.manager.get_slo(capability) is not None:
            return True
        return self.registry.serves(capability)

    def _no_worker(self, capability: str, tried: list[str]) -> _Problem:
        if tried:  # the only worker failed and none is left to retry on
            detail = f"worker {tried[0]} was unreachable and no other healthy worker serves it"
            problem = _Problem(502, "worker_unreachable", "Worker unreachable", detail)
            problem.extra = {"capability": capability, "workers": tried}
            return problem
        problem = _Problem(
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
        return JSONResponse({"workers": self.registry.snapshot()})

    async def register_worker(self, request: Request) -> Response:
        try:
            document = json.loads(await request.body())
        except ValueError as exc:
            return _bad_request("invalid_json", f"the body is not valid JSON: {exc}")
        try:
            spec = WorkerSpec.model_validate(document)
        except ValidationError as exc:
            detail = "; ".join(f"{f}: {m}" if f else m for f, m in validation_problems(exc))
            return _bad_request("invalid_worker", detail)
        known = self.registry.get(spec.id) is not None
        worker = self.registry.register(spec.id, spec.url, spec.capabilities)
        logger.info("worker %s registered at %s", worker.id, worker.url)
        entry = next(w for w in self.registry.snapshot() if w["id"] == worker.id)
        return JSONResponse(entry, status_code=200 if known else 201)

    async def heartbeat(self, request: Request) -> Response:
        worker = self.registry.heartbeat(request.path_params["worker_id"])
        if worker is None:
            return _not_a_worker(request.path_params["worker_id"])
        healthy = self.registry.is_healthy(worker)
        return JSONResponse({"id": worker.id, "healthy": healthy})

    async def remove_worker(self, request: Request) -> Response:
        if not self.registry.remove(request.path_params["worker_id"]):
            return _not_a_worker(request.path_params["worker_id"])
        return Response(status_code=204)

    async def healthz(self, request: Request) -> Response:
        healthy = sum(1 for w in self.registry if self.registry.is_healthy(w))
        return JSONResponse({"status": "ok", "workers": len(self.registry), "healthy": healthy})


def _parse_seed(body: bytes) -> SeedRoute:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise _Problem(
            400, "invalid_json", "Invalid JSON", f"the body is not valid JSON: {exc}"
        ) from exc
    if not isinstance(document, dict):
        raise _Problem(
            400,
            "invalid_route_request",
            "Invalid /route request",
            f"the body must be a JSON object, got {type(document).__name__}",
        )
    try:
        return SeedRoute.model_validate(document)
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise _Problem(
            400,
            "invalid_route_request",
            "Invalid /route request",
            "; ".join(f"{field}: {message}" for field, message in problems),
            fields=[field for field, _ in problems],
        ) from exc


def _bad_request(error: str, detail: str) -> Response:
    return _Problem(400, error, "Bad request", detail).response()


def _not_a_worker(worker_id: str) -> Response:
    return _Problem(
        404, "unknown_worker", "Unknown worker", f"no worker {worker_id!r}; register it first"
    ).response()


def demo_workers(
    manager: SLOManager | None, capabilities: list[str]
) -> list[tuple[str, str, str, httpx.AsyncBaseTransport]]:
    """One in-process demo worker per capability: ``(id, url, capability, transport)``.

    Served through ``httpx.ASGITransport``: no port to pick or collide on, and
    the controller's forward path (the httpx request, its headers, status, body
    and content type) is the same as for a worker across the network.
    """
    out: list[tuple[str, str, str, httpx.AsyncBaseTransport]] = []
    for capability in capabilities:
        worker_id = "demo-" + capability.replace(":", "-")
        slo = manager.get_slo(capability) if manager is not None else None
        app = demo_worker_app(
            [capability], worker_id=worker_id, profiles={capability: LatencyProfile.for_slo(slo)}
        )
        url = f"http://{worker_id.replace('_', '-').lower()}.in-process"
        out.append((worker_id, url, capability, httpx.ASGITransport(app=app)))
    return out


def create_controller_app(
    state_dir: str | os.PathLike[str] | None = None,
    *,
    registry: WorkerRegistry | None = None,
    manager: SLOManager | None = None,
    demo: bool | None = None,
    api_token: str | None = None,
    history: HistoryRepository | None = None,
    reporter: Reporter | None = None,
    **options: Any,
) -> Starlette:
    """The controller as a Starlette app; ``app.state.controller`` is its :class:`Controller`.

    ``state_dir`` (e.g. ``state/``): SLO files from ``controller/slos/`` (unless
    ``manager`` is given) and static workers from ``workers.yml``. ``demo``:
    start the built-in demo workers in-process; by default, when ``state_dir``
    is given and ``workers.yml`` lists no worker. ``options`` go to
    :class:`Controller` (``forward_timeout_s``, ``health_interval_s``,
    ``transport``...).

    With an SLO manager, the /slo read API is served too (its history, breach
    and compliance endpoints read ``history``; without one they answer 503).
    With a ``reporter`` (the one SLOGuard runs, see :class:`Reporter`), its
    routes are served instead: the same API on its store, shedding figures from
    its guard, and the ``/slo/ws`` event stream.
    ``api_token`` (default ``$SLOGUARD_API_TOKEN``) protects ``/slo*`` and the
    ``/workers`` writes: they answer 401 without ``Authorization: Bearer <token>``.
    ``/slo/ui`` is the live dashboard page (served without the token; it asks for it).
    """
    registry = registry if registry is not None else WorkerRegistry()
    mounts: dict[str, httpx.AsyncBaseTransport] = dict(options.pop("mounts", None) or {})
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
        for worker_id, url, capability, transport in demo_workers(manager, capabilities):
            registry.register(worker_id, url, [capability], static=True)
            mounts[url] = transport
    controller = Controller(registry, manager=manager, mounts=mounts, **options)
    token = resolve_token(api_token)
    if reporter is not None:
        if history is not None:
            raise ConfigurationError("pass history to the Reporter, not to the controller")
        slo = list(reporter.routes(token=token or ""))
    else:
        slo = [] if manager is None else slo_routes(manager, history, token=token or "")
    if slo:
        slo = slo_site_routes(slo)
    app = Starlette(
        routes=[
            Route("/route", controller.route_seed, methods=["POST"]),
            Route("/route/{verb}/{name}", controller.route_path, methods=["POST"]),
            Route("/workers", controller.list_workers, methods=["GET"]),
            Route("/workers", require_token(token, controller.register_worker), methods=["POST"]),
            Route(
                "/workers/{worker_id}/heartbeat",
                require_token(token, controller.heartbeat),
                methods=["POST"],
            ),
            Route(
                "/workers/{worker_id}",
                require_token(token, controller.remove_worker),
                methods=["DELETE"],
            ),
            Route("/healthz", controller.healthz, methods=["GET"]),
            Mount("/metrics", metrics_app()),
            *slo,
        ],
        lifespan=controller.lifespan,
    )
    app.state.controller = controller
    return app
