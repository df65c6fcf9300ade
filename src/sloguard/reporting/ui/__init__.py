"""The live SLO dashboard: one page at ``/slo/ui``, served from package data.

The page is plain HTML, CSS and JavaScript (no build step, no chart library:
its latency chart is a few lines of SVG drawn by its own script). It reads the
``/slo`` API from the browser: live updates over the ``/slo/ws`` WebSocket
when the server has one, else by polling ``GET /slo`` every 2 seconds. The
page itself holds no data and is served without the API token; the browser
sends the token (from ``?token=`` or a form on the page) with every API call.
"""

from __future__ import annotations

import html
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sloguard.problems import PROBLEM_CONTENT_TYPE, problem_body

ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# The page loads its own files and talks to its own origin (fetch and WebSocket), nothing else.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _read(name: str) -> str:
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def dashboard_routes(api_prefix: str = "/slo") -> list[BaseRoute]:
    """``{api_prefix}/ui`` (the page) and ``{api_prefix}/ui/{asset}`` (its script and style).

    List them before the /slo API's routes: ``/slo/{capability}`` would take
    ``/slo/ui`` otherwise. The page finds the API at ``api_prefix`` under the
    app's ``root_path``, so the controller can be mounted under a prefix.
    """
    template = _read("index.html")
    assets = {name: _read(name).encode() for name in ASSETS}

    async def page(request: Request) -> Response:
        base = request.scope.get("root_path", "") + api_prefix
        # Mounted (no prefix), the status of every capability is the mount point's "/".
        status = base if api_prefix else base + "/"
        body = template.replace("{{api}}", html.escape(base, quote=True)).replace(
            "{{status}}", html.escape(status, quote=True)
        )
        return Response(body, media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def asset(request: Request) -> Response:
        name = request.path_params["asset"]
        if name not in assets:
            body = problem_body(
                404,
                "not_found",
                "Not found",
                f"the dashboard has no file {name!r} (it has {', '.join(sorted(assets))})",
            )
            return Response(body, 404, media_type=PROBLEM_CONTENT_TYPE.decode())
        return Response(assets[name], media_type=ASSETS[name], headers=_HEADERS)

    return [
        Route(api_prefix + "/ui", page, methods=["GET"], name="slo_ui"),
        Route(api_prefix + "/ui/{asset}", asset, methods=["GET"], name="slo_ui_asset"),
    ]
