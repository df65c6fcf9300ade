"""The HTTP interface as an OpenAPI 3.1 document, built in code: ``/openapi.json``.

:func:`openapi_document` describes the ``/slo`` API (status, history, breaches,
incident reports, acknowledgements, compliance, the dashboard page) and, with
``controller=True``, the rest of ``sloguard serve``'s controller: ``/route``,
``/workers``, ``/healthz`` and ``/metrics``. :func:`openapi_route` serves it.
The WebSocket ``/slo/ws`` is named in the description (OpenAPI has no WebSocket
operations).

Every error is an RFC 9457 problem (``application/problem+json``): the
document lists, per operation, the statuses it can answer with. The
``/slo`` endpoints take the API token when one is configured
(``$SLOGUARD_API_TOKEN``), hence their optional ``bearer`` security; the
``/workers`` writes take the registration token unless the registry is open.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sloguard.capability import CAPABILITY_PATTERN
from sloguard.reporting.compliance import MAX_DAILY_RANGE_DAYS, MAX_MONTHLY_RANGE_MONTHS

OPENAPI_VERSION = "3.1.0"
_PROBLEM = "application/problem+json"
_JSON = "application/json"
_DATE_RANGE = "from 1970 to 8999 (UTC)"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


def _object(required: list[str], **properties: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


def _counts(of: Schema) -> Schema:
    return {"type": "object", "additionalProperties": of}


def _shedding_schema() -> Schema:
    """A status's ``shedding``: both admission loops (docs/shedding.md, "Watching both loops")."""
    concurrency = _object(
        ["mode"],
        mode={"enum": ["adaptive", "fixed", "off"]},
        limit=_INTEGER,
        inflight=_INTEGER,
        queued=_INTEGER,
        refused=_counts(_counts(_INTEGER)),
    )
    concurrency["description"] = (
        "the concurrency limit (the inner loop); only mode before the first request, "
        "and when mode is off"
    )
    return _object(
        ["active"],
        active=_BOOLEAN,
        rejection_ratios=_counts(_NUMBER),
        shed=_counts(_INTEGER),
        concurrency=concurrency,
    )


_NUMBER, _INTEGER, _STRING, _BOOLEAN = (
    {"type": "number"},
    {"type": "integer"},
    {"type": "string"},
    {"type": "boolean"},
)
_CAPABILITY_SCHEMA: Schema = {"type": "string", "pattern": CAPABILITY_PATTERN}


def _schemas() -> dict[str, Schema]:
    point = _object(
        ["t", "start", "requests", "errors", "shed"],
        t={"type": "string", "format": "date-time"},
        start=_INTEGER,
        requests=_INTEGER,
        errors=_INTEGER,
        shed=_INTEGER,
        p50_ms=_nullable(_NUMBER),
        p95_ms=_nullable(_NUMBER),
        p99_ms=_nullable(_NUMBER),
        compliant_minutes=_INTEGER,
        downtime_minutes=_INTEGER,
        availability=_nullable(_NUMBER),
    )
    escalation = _object(
        ["alert_id", "capability", "policy", "state", "level"],
        alert_id=_STRING,
        capability=_CAPABILITY_SCHEMA,
        policy=_STRING,
        state=_STRING,
        level=_INTEGER,
        started_at={"type": "string", "format": "date-time"},
        acknowledged_at=_nullable({"type": "string", "format": "date-time"}),
        acknowledged_by=_nullable(_STRING),
        stopped_at=_nullable({"type": "string", "format": "date-time"}),
        stop_reason=_nullable(_STRING),
    )
    breach = _object(
        ["id", "capability", "state", "started_at", "violations", "report"],
        id=_STRING,
        capability=_CAPABILITY_SCHEMA,
        state={"enum": ["warning", "open", "resolved"]},
        severity=_nullable(_STRING),
        started_at={"type": "string", "format": "date-time"},
        ended_at=_nullable({"type": "string", "format": "date-time"}),
        duration_s=_nullable(_NUMBER),
        violations={"type": "array", "items": _STRING},
        worst={"type": "object", "additionalProperties": _NUMBER},
        credit_pct=_nullable(_NUMBER),
        escalation=_nullable(_ref("Escalation")),
        report={"type": "string", "description": "the path of its incident report"},
    )
    day = _object(
        ["date", "target_percentage", "uptime_minutes", "downtime_minutes"],
        date={"type": "string", "format": "date"},
        compliance_percentage=_nullable(_NUMBER),
        target_percentage=_NUMBER,
        uptime_minutes=_INTEGER,
        downtime_minutes=_INTEGER,
        sla_breaches=_INTEGER,
        requests=_INTEGER,
        errors=_INTEGER,
    )
    month = _object(
        ["month", "target_percentage", "uptime_minutes", "downtime_minutes"],
        month={"type": "string", "pattern": r"^\d{4}-\d{2}$"},
        compliance_percentage=_nullable(_NUMBER),
        target_percentage=_NUMBER,
        uptime_minutes=_INTEGER,
        downtime_minutes=_INTEGER,
        sla_breaches=_INTEGER,
        credit_percentage=_nullable(_NUMBER),
        breach_credit_percentage=_nullable(_NUMBER),
    )
    status = _object(
        ["capability", "compliant", "violations", "requests", "errors", "targets", "budget"],
        capability=_CAPABILITY_SCHEMA,
        tier=_nullable(_STRING),
        compliant=_BOOLEAN,
        violations={"type": "array", "items": _STRING},
        window_seconds=_NUMBER,
        requests=_INTEGER,
        errors=_INTEGER,
        availability=_nullable(_NUMBER),
        p50_ms=_nullable(_NUMBER),
        p95_ms=_nullable(_NUMBER),
        p99_ms=_nullable(_NUMBER),
        throughput_rps=_nullable(_NUMBER),
        demand_rps=_nullable(_NUMBER),
        targets={"type": "object"},
        budget={"type": "object"},
        shedding=_shedding_schema(),
        idempotency={"type": "object"},
    )
    return {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details; `type` is the URL of `error`'s documentation",
            "required": ["type", "title", "status", "detail", "error"],
            "properties": {
                "type": {"type": "string", "format": "uri"},
                "title": _STRING,
                "status": _INTEGER,
                "detail": _STRING,
                "error": _STRING,
                "parameter": {"type": "string", "description": "the query parameter at fault"},
            },
            "additionalProperties": True,
        },
        "CapabilityStatus": status,
        "Status": _object(
            ["at", "capabilities"],
            at={"type": "string", "format": "date-time"},
            capabilities={"type": "array", "items": _ref("CapabilityStatus")},
            idempotency={"type": "object"},
        ),
        "HistoryPoint": point,
        "History": _object(
            ["capability", "since", "until", "step", "points"],
            capability=_CAPABILITY_SCHEMA,
            since={"type": "string", "format": "date-time"},
            until={"type": "string", "format": "date-time"},
            step=_INTEGER,
            points={"type": "array", "items": _ref("HistoryPoint")},
        ),
        "Escalation": escalation,
        "Breach": breach,
        "Breaches": _object(["breaches"], breaches={"type": "array", "items": _ref("Breach")}),
        "Acknowledgement": {
            "type": "object",
            "properties": {"by": {"type": "string", "maxLength": 200}},
        },
        "DailyCompliance": day,
        "Compliance": _object(
            ["from_date", "to_date", "reports"],
            from_date={"type": "string", "format": "date"},
            to_date={"type": "string", "format": "date"},
            reports={
                "type": "array",
                "items": _object(
                    ["capability", "records"],
                    capability=_CAPABILITY_SCHEMA,
                    records={"type": "array", "items": _ref("DailyCompliance")},
                ),
            },
        ),
        "MonthlyCompliance": month,
        "Monthly": _object(
            ["from_month", "to_month", "reports"],
            from_month=_STRING,
            to_month=_STRING,
            reports={
                "type": "array",
                "items": _object(
                    ["capability", "months"],
                    capability=_CAPABILITY_SCHEMA,
                    credits={"type": "array", "items": {"type": "object"}},
                    months={"type": "array", "items": _ref("MonthlyCompliance")},
                ),
            },
        ),
    }


def _controller_schemas() -> dict[str, Schema]:
    worker_id: Schema = {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]+$", "maxLength": 200}
    return {
        "SeedRoute": {
            "type": "object",
            "required": ["verb", "capability"],
            "properties": {
                "verb": _STRING,
                "capability": _STRING,
                "idempotency_key": _STRING,
                "priority": {"type": "string", "enum": ["critical", "high", "normal", "low"]},
                "request_payload": {"description": "sent to the worker as the JSON body"},
            },
        },
        "Registration": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "url", "capabilities"],
            "properties": {
                "id": worker_id,
                "url": {
                    "type": "string",
                    "format": "uri",
                    "maxLength": 2048,
                    "description": "http(s), a host, a port from 1 to 65535, a path; no user "
                    "info, query or fragment",
                },
                "capabilities": {"type": "array", "minItems": 1, "items": _CAPABILITY_SCHEMA},
            },
        },
        "Worker": _object(
            ["id", "url", "capabilities", "healthy"],
            id=worker_id,
            url=_STRING,
            capabilities={"type": "array", "items": _CAPABILITY_SCHEMA},
            static=_BOOLEAN,
            healthy=_BOOLEAN,
            outstanding=_INTEGER,
            served=_INTEGER,
            last_error=_nullable(_STRING),
            heartbeat_age_s=_nullable(_NUMBER),
        ),
        "Workers": _object(["workers"], workers={"type": "array", "items": _ref("Worker")}),
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": _STRING,
                "workers": _INTEGER,
                "healthy": _INTEGER,
                "loops": {
                    "type": "object",
                    "description": "background loops (SLO watcher, monitor, recorder, "
                    "notifier, health checks) and their liveness",
                },
            },
        },
    }


def _answer(schema: str | None, description: str, media: str = _JSON) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {media: {"schema": _ref(schema)}}}


def _problems(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "a bad parameter or body, named in `parameter` or `detail`",
        401: "no or a wrong bearer token (when one is configured)",
        404: "no such capability, breach, alert, worker or path",
        403: "the worker's host is not on the allow-list (`worker_host_not_allowed`)",
        409: "the worker id is live at another URL (`worker_id_in_use`), the worker is "
        "static (`static_worker`), or the registry holds its limit (`registry_full`)",
        413: "the body is too large",
        502: "the worker failed or answered malformed HTTP",
        503: "no history store, the store failed or did not answer in time, no worker, or "
        "the shared worker registry (Redis) failed (Retry-After)",
        504: "the worker did not answer in time",
    }
    return {str(s): _answer("Problem", reasons[s], _PROBLEM) for s in statuses}


def _query(name: str, description: str, schema: Schema, *, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _path(name: str, schema: Schema, description: str = "") -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


_INSTANT: Schema = {
    "type": "string",
    "description": f"Unix seconds or an ISO 8601 date-time (no zone: UTC), {_DATE_RANGE}",
    "examples": ["1736467200", "2025-01-10T00:00:00Z"],
}


def _slo_paths(prefix: str) -> dict[str, Any]:
    secured: Schema = {"security": [{"bearer": []}, {}]}
    capability_param = _query(
        "capability", "a capability, `verb:name`", _CAPABILITY_SCHEMA, required=False
    )
    history_params = [
        {**capability_param, "required": True},
        _query("since", "start (default: an hour before `until`)", _INSTANT),
        _query("until", "end (default: now)", _INSTANT),
        _query(
            "step",
            "a whole number of minutes: `60`, `300s`, `5m`, `1h`, `1d` (at most `366d`); "
            "at most 10,000 points",
            {"type": "string", "pattern": r"^\d{1,12}[smhd]?$", "default": "60"},
        ),
    ]
    breach_params = [
        capability_param,
        _query("status", "breach state", {"enum": ["open", "resolved", "warning"]}),
        _query("severity", "comma-separated severities", _STRING),
        _query("since", "breaches that started at or after", _INSTANT),
        _query("until", "breaches that started before", _INSTANT),
    ]
    date: Schema = {
        "type": "string",
        "description": f"a date (YYYY-MM-DD) or an ISO 8601 date-time, {_DATE_RANGE}",
    }
    month: Schema = {"type": "string", "pattern": r"^\d{4}-\d{2}$", "description": _DATE_RANGE}
    status_path = prefix or "/"
    return {
        status_path: {
            "get": {
                "operationId": "slo_status",
                "summary": "Live status of every capability",
                "responses": {"200": _answer("Status", "every capability"), **_problems(401)},
                **secured,
            }
        },
        f"{prefix}/history": {
            "get": {
                "operationId": "slo_history",
                "summary": "Minute history of one capability, merged across replicas",
                "parameters": history_params,
                "responses": {
                    "200": _answer("History", "the points that have data"),
                    **_problems(400, 401, 404, 503),
                },
                **secured,
            }
        },
        f"{prefix}/breaches": {
            "get": {
                "operationId": "slo_breaches",
                "summary": "Breaches, oldest first",
                "parameters": breach_params,
                "responses": {
                    "200": _answer("Breaches", "the breaches"),
                    **_problems(400, 401, 404, 503),
                },
                **secured,
            }
        },
        f"{prefix}/breaches/{{breach_id}}/report": {
            "get": {
                "operationId": "slo_breach_report",
                "summary": "A breach's incident report (Markdown)",
                "parameters": [_path("breach_id", _STRING)],
                "responses": {
                    "200": {
                        "description": "the report",
                        "content": {"text/markdown": {"schema": _STRING}},
                    },
                    **_problems(401, 404, 503),
                },
                **secured,
            }
        },
        f"{prefix}/alerts/{{alert_id}}/ack": {
            "post": {
                "operationId": "slo_alert_ack",
                "summary": "Acknowledge an escalating alert",
                "parameters": [_path("alert_id", _STRING)],
                "requestBody": {
                    "required": False,
                    "content": {_JSON: {"schema": _ref("Acknowledgement")}},
                },
                "responses": {
                    "200": _answer("Escalation", "the escalation, acknowledged"),
                    **_problems(400, 401, 404, 413, 503),
                },
                **secured,
            }
        },
        f"{prefix}/compliance": {
            "get": {
                "operationId": "slo_compliance",
                "summary": f"Daily compliance records (at most {MAX_DAILY_RANGE_DAYS} days back)",
                "parameters": [
                    capability_param,
                    _query("from_date", "first day (default: 29 days before to_date)", date),
                    _query("to_date", "last day (default: today)", date),
                ],
                "responses": {
                    "200": _answer("Compliance", "one record per capability and day"),
                    **_problems(400, 401, 404, 503),
                },
                **secured,
            }
        },
        f"{prefix}/compliance/monthly": {
            "get": {
                "operationId": "slo_compliance_monthly",
                "summary": f"Monthly compliance and credits (at most {MAX_MONTHLY_RANGE_MONTHS} "
                "months)",
                "parameters": [
                    capability_param,
                    _query("from_month", "first month (default: two before to_month)", month),
                    _query("to_month", "last month (default: this one)", month),
                ],
                "responses": {
                    "200": _answer("Monthly", "one summary per capability and month"),
                    **_problems(400, 401, 404, 503),
                },
                **secured,
            }
        },
        f"{prefix}/ui": {
            "get": {
                "operationId": "slo_dashboard",
                "summary": "The live dashboard page (served without the token; it asks for it)",
                "responses": {
                    "200": {
                        "description": "the page",
                        "content": {"text/html": {"schema": _STRING}},
                    }
                },
            }
        },
        f"{prefix}/{{capability}}": {
            "get": {
                "operationId": "slo_capability",
                "summary": "Live status of one capability",
                "parameters": [_path("capability", _CAPABILITY_SCHEMA, "`verb:name`")],
                "responses": {
                    "200": _answer("CapabilityStatus", "its status"),
                    **_problems(401, 404),
                },
                **secured,
            }
        },
    }


def _controller_paths() -> dict[str, Any]:
    writes: Schema = {"security": [{"registry": []}, {}]}  # {}: an open registry
    forwarded = {
        "200": {"description": "the worker's answer, streamed back as it came"},
        **_problems(400, 404, 413, 502, 503, 504),
        "429": {"description": "refused by admission (when configured instead of 503)"},
    }
    return {
        "/route/{verb}/{name}": {
            "post": {
                "operationId": "route",
                "summary": "Forward the body to a healthy worker serving `verb:name`",
                "description": "Behind SLOGuard: `Idempotency-Key` and `X-Priority` apply; "
                "a shed request is a 503 `slo_violation` with `Retry-After`.",
                "parameters": [
                    _path("verb", {"type": "string"}),
                    _path("name", {"type": "string"}),
                ],
                "requestBody": {"required": False, "content": {"*/*": {"schema": {}}}},
                "responses": forwarded,
            }
        },
        "/route": {
            "post": {
                "operationId": "route_seed",
                "summary": "The seed form: the capability and payload in a JSON body",
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("SeedRoute")}},
                },
                "responses": forwarded,
            }
        },
        "/workers": {
            "get": {
                "operationId": "list_workers",
                "summary": "The workers and their health",
                "responses": {"200": _answer("Workers", "every worker")},
            },
            "post": {
                "operationId": "register_worker",
                "summary": "Register (or re-register) a worker",
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("Registration")}},
                },
                "responses": {
                    "200": _answer("Worker", "re-registered"),
                    "201": _answer("Worker", "registered"),
                    **_problems(400, 401, 403, 409, 413, 503),
                },
                **writes,
            },
        },
        "/workers/{worker_id}/heartbeat": {
            "post": {
                "operationId": "heartbeat",
                "summary": "A registered worker is alive",
                "parameters": [_path("worker_id", _STRING)],
                "responses": {
                    "200": {"description": "its health"},
                    **_problems(401, 404, 409, 503),
                },
                **writes,
            }
        },
        "/workers/{worker_id}": {
            "delete": {
                "operationId": "remove_worker",
                "summary": "Remove a registered worker",
                "parameters": [_path("worker_id", _STRING)],
                "responses": {
                    "204": {"description": "removed"},
                    **_problems(401, 404, 409, 503),
                },
                **writes,
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The controller's health: workers, and its background loops",
                "responses": {"200": _answer("Health", "how it is")},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "the exposition",
                        "content": {"text/plain": {"schema": _STRING}},
                    }
                },
            }
        },
    }


def openapi_document(
    *,
    controller: bool = False,
    prefix: str = "/slo",
    servers: list[str] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the /slo API (at ``prefix``; ``""`` when mounted), and
    with ``controller`` of the controller's routes too. ``servers``: base URLs."""
    schemas = _schemas()
    paths = _slo_paths(prefix)
    if controller:
        schemas.update(_controller_schemas())
        paths = {**_controller_paths(), **paths}
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "sloguard",
            "version": _version(),
            "description": (
                "SLO status, history, breaches and compliance"
                + (", and the /route controller" if controller else "")
                + f". Live events stream over the WebSocket `{prefix}/ws` (JSON messages). "
                "Errors are RFC 9457 problem details."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the API token ($SLOGUARD_API_TOKEN), when one is set",
                },
                "registry": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the registration token (serve's --registry-token, "
                    "$SLOGUARD_REGISTRY_TOKEN, or STATE/registry.token), unless the registry "
                    "is open (--open-registry)",
                },
            },
        },
    }
    if servers:
        document["servers"] = [{"url": url} for url in servers]
    return document


def _version() -> str:
    try:
        return installed_version("sloguard")
    except PackageNotFoundError:  # pragma: no cover - imported from a source tree
        return "0"


def openapi_route(path: str = "/openapi.json", **options: Any) -> Route:
    """A route serving :func:`openapi_document` (``options`` are its), its server set to
    the app's ``root_path`` when it is mounted under one. Served without the API token:
    it holds no data."""

    async def document(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return JSONResponse(openapi_document(servers=[root] if root else None, **options))

    return Route(path, document, methods=["GET"], name="openapi")
