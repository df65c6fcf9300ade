"""SLOApp: the /slo API, its ``/ws`` event stream and the ``/ui`` dashboard, to mount.

With the guard added as a middleware (FastAPI or Starlette), one line serves them::

    app.add_middleware(SLOGuard, slo_dir="state/controller/slos")
    app.mount("/slo", SLOApp())

``app.add_middleware`` builds the guard only when the app first serves, so
:class:`SLOApp` finds it then: it walks the application's middleware stack
(``scope["app"].middleware_stack``, each layer's ``.app``) to the first
object with a :class:`Reporter` as ``reporter`` (an ``SLOGuard``), and serves
that reporter. Pass a reporter yourself (``SLOApp(guard.reporter)``) when the
guard wraps the app from outside (``app = SLOGuard(app)``).

Paths under the mount point: ``/`` (the status of every capability), ``/ui``,
``/history``, ``/breaches``, ``/compliance``..., ``/openapi.json`` (their OpenAPI
document) and ``/{verb}:{name}``. Fixed
paths are matched first; the capability route answers only a ``verb:name``.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Router
from starlette.types import Receive, Scope, Send

from sloguard.problems import PROBLEM_CONTENT_TYPE, problem_body
from sloguard.reporting.openapi import openapi_route
from sloguard.reporting.reporter import Reporter
from sloguard.reporting.ui import dashboard_routes

_MAX_LAYERS = 64


def slo_site_routes(api: Sequence[BaseRoute], prefix: str = "/slo") -> list[BaseRoute]:
    """``{prefix}/openapi.json`` (the /slo API's OpenAPI document), the dashboard's
    routes, then ``api`` (the /slo routes, capability route last)."""
    return [openapi_route(prefix + "/openapi.json", prefix=prefix), *dashboard_routes(prefix), *api]


def find_reporter(app: object) -> Reporter | None:
    """The reporter of the first guard in ``app``'s middleware stack, if any."""
    layer = getattr(app, "middleware_stack", None) or app
    seen: set[int] = set()
    for _ in range(_MAX_LAYERS):
        if layer is None or id(layer) in seen:
            return None
        seen.add(id(layer))
        reporter = getattr(layer, "reporter", None)
        if isinstance(reporter, Reporter):
            return reporter
        layer = getattr(layer, "app", None)
    return None


class SLOApp:
    """An ASGI app serving a :class:`Reporter`'s /slo API, ``/ws`` and ``/ui`` where it is mounted.

    ``reporter``: the one to serve; by default the one of the ``SLOGuard`` found
    in the enclosing app's middleware stack on the first request. ``token``:
    the API token (``None`` reads ``$SLOGUARD_API_TOKEN``; ``""`` means none).
    """

    def __init__(self, reporter: Reporter | None = None, *, token: str | None = None) -> None:
        self._reporter = reporter
        self._token = token
        self._router: Router | None = None
        if reporter is not None:
            self._router = self._build(reporter)

    @property
    def reporter(self) -> Reporter | None:
        """The reporter served (None until found, when none was given)."""
        return self._reporter

    @property
    def routes(self) -> list[BaseRoute]:
        """The routes served (for ``url_for`` through a ``Mount``); empty until found."""
        return [] if self._router is None else list(self._router.routes)

    def _build(self, reporter: Reporter) -> Router:
        api = reporter.routes(token=self._token, prefix="")
        return Router(routes=slo_site_routes(api, prefix=""))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = self._router
        if router is None and scope["type"] in ("http", "websocket"):
            reporter = find_reporter(scope.get("app"))
            if reporter is not None:
                self._reporter = reporter
                router = self._router = self._build(reporter)
        if router is None:
            await _no_guard(scope, receive, send)
            return
        await router(scope, receive, send)


async def _no_guard(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1011})
        return
    if scope["type"] != "http":
        return  # a lifespan does not reach a mounted app
    body = problem_body(
        503,
        "no_slo_guard",
        "No SLOGuard found",
        "SLOApp() found no SLOGuard in this app's middleware (app.add_middleware(SLOGuard, "
        "...)); when the guard wraps the app from outside, pass SLOApp(guard.reporter)",
    )
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", PROBLEM_CONTENT_TYPE),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
