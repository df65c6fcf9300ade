"""The /slo read API: live status, history, breaches, incident reports, compliance.

``slo_routes(manager, repository)`` gives Starlette routes to add to any app
(the controller mounts them); ``slo_api(...)`` wraps them in an app of their
own. Every error is RFC 9457 problem+json: an unknown capability, breach or
escalating alert is a 404 naming it, a bad query parameter or body a 400
naming it, a missing or wrong bearer token (when one is configured) a 401.
``POST /slo/alerts/{id}/ack`` acknowledges an escalating alert (body optional:
``{"by": "alice"}``).

The live endpoints read the in-process :class:`SLOManager`; the others read
the history repository in a worker thread, each read within ``store_timeout_s``.
They answer 503 ``no_history_store`` when there is none, and 503
``history_unavailable`` when it fails or does not answer in time. Dates and
instants are accepted from 1970 to 8999 (UTC): anything else is a 400 naming
the parameter, never an overflow.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar, overload

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sloguard._clock import Clock
from sloguard.capability import is_capability
from sloguard.exceptions import HistoryUnavailable
from sloguard.observability.metrics import MetricsSink
from sloguard.problems import Problem
from sloguard.reporting.compliance import (
    MAX_DAILY_RANGE_DAYS,
    MAX_MONTHLY_RANGE_MONTHS,
    daily_compliance,
    monthly_compliance,
)
from sloguard.reporting.escalation import Escalator
from sloguard.reporting.idempotency import IdempotencyCounts
from sloguard.reporting.incident import incident_report, iso
from sloguard.reporting.openapi import openapi_route
from sloguard.reporting.records import BREACH_SEVERITIES, Breach, Escalation
from sloguard.reporting.repository import HistoryRepository
from sloguard.reporting.shedding import shedding_json
from sloguard.reporting.slicing import in_slices
from sloguard.reporting.storecalls import StoreCalls
from sloguard.shedding.admission import Admission
from sloguard.slo.manager import SLOManager, SLOStatus
from sloguard.slo.schema import SLOFile

logger = logging.getLogger("sloguard.reporting")

TOKEN_ENV = "SLOGUARD_API_TOKEN"
MAX_HISTORY_POINTS = 10_000
DEFAULT_HISTORY_S = 3_600
MAX_STEP_S = 366 * 86_400
"""The largest ``step`` of ``/slo/history``: a (leap) year."""
EARLIEST_DATE = dt.date(1970, 1, 1)
LATEST_DATE = dt.date(8999, 12, 31)
"""Dates, months and instants the API accepts lie between these (UTC): history has no
minute before 1970, and every date computed from one in range stays in range."""
EARLIEST_INSTANT = 0.0
END_INSTANT = dt.datetime(9000, 1, 1, tzinfo=dt.UTC).timestamp()
"""Instants are before this one (the end of :data:`LATEST_DATE`)."""
DEFAULT_READ_TIMEOUT_S = 10.0
"""How long a request waits for one history store read before its 503."""
MAX_ACK_BYTES = 16 * 1024
_STEP = re.compile(r"^(\d{1,12})([smhd]?)$")
_YEARS = f"from {EARLIEST_DATE.year} to {LATEST_DATE.year} (UTC)"
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400}
_BREACH_STATES = ("open", "resolved", "warning")

Endpoint = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


def bad_parameter(name: str, detail: str) -> Problem:
    """A 400 naming the query parameter at fault."""
    return Problem(
        400, "invalid_parameter", "Invalid query parameter", f"{name}: {detail}", parameter=name
    )


def api_token(token: str | None = None) -> str | None:
    """``token`` if given, else ``$SLOGUARD_API_TOKEN``; None (no protection) when neither is."""
    if token is None:
        token = os.environ.get(TOKEN_ENV)
    return token or None


def require_token(token: str | None, endpoint: Endpoint, *, detail: str | None = None) -> Endpoint:
    """``endpoint`` answering 401 unless the request has ``Authorization: Bearer <token>``
    (``detail``: what the 401 says about where the token comes from)."""
    if token is None:
        return endpoint
    expected = token.encode()
    detail = detail or (
        "this endpoint needs an 'Authorization: Bearer <token>' header with the "
        f"API token (${TOKEN_ENV} or api_token)"
    )

    async def guarded(request: Request) -> Response:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # The scheme is case-insensitive (RFC 9110 section 11.1); the token is compared
        # in constant time.
        matches = hmac.compare_digest(given.encode("latin-1", "replace"), expected)
        if not (matches and scheme.lower() == "bearer"):
            problem = Problem(401, "unauthorized", "Unauthorized", detail)
            problem.headers["www-authenticate"] = 'Bearer realm="sloguard"'
            return problem.response()
        return await endpoint(request)

    return guarded


class SLOApi:
    """The handlers; :func:`slo_routes` binds them to paths."""

    def __init__(
        self,
        manager: SLOManager,
        repository: HistoryRepository | None = None,
        *,
        admission: Admission | Callable[[], Admission | None] | None = None,
        metrics: Callable[[], MetricsSink | None] | None = None,
        escalator: Escalator | None = None,
        clock: Clock = time.time,
        idempotency: IdempotencyCounts | None = None,
        store_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        self.manager = manager
        self.repository = repository
        # Threads of their own, so that a store that hangs costs the API a few threads,
        # not the event loop's shared pool.
        self._read = StoreCalls("sloguard-history-api", timeout_s=store_timeout_s, threads=4)
        self.idempotency = idempotency
        self.escalator = escalator
        # Or functions giving them, looked up per request: they may come after the routes.
        self._admission: Callable[[], Admission | None] = (
            admission if callable(admission) else lambda: admission
        )
        self._metrics: Callable[[], MetricsSink | None] = metrics or (lambda: None)
        self.clock = clock

    @property
    def admission(self) -> Admission | None:
        """The admission whose refusals are reported, if any."""
        return self._admission()

    # -- helpers -----------------------------------------------------------------

    def _slo(self, capability: str) -> SLOFile:
        slo = self.manager.get_slo(capability) if is_capability(capability) else None
        if slo is None:
            raise Problem(
                404,
                "unknown_capability",
                "Unknown capability",
                f"no SLO file for capability {capability!r}",
                capability=capability,
            )
        return slo

    def _store(self) -> HistoryRepository:
        if self.repository is None:
            raise Problem(
                503,
                "no_history_store",
                "No history store",
                "this server keeps no SLO history (no repository configured)",
            )
        return self.repository

    async def _call(self, fn: Callable[..., T], /, *args: Any) -> T:
        """``fn(*args)`` off the event loop, bounded; a failure of the store is a 503."""
        try:
            return await self._read(fn, *args)
        except HistoryUnavailable as exc:
            raise _history_unavailable(f"{exc}; retry later") from exc
        except Exception as exc:
            logger.exception("reading the SLO history failed")
            raise _history_unavailable(
                f"reading the SLO history failed ({type(exc).__name__}; logged on the "
                "server); retry later"
            ) from exc

    def _capability_param(self, request: Request, *, required: bool) -> SLOFile | None:
        value = request.query_params.get("capability")
        if not value:
            if required:
                raise bad_parameter("capability", "required (verb:name)")
            return None
        if not is_capability(value):
            raise bad_parameter("capability", f"{value!r} is not verb:name")
        return self._slo(value)

    def _status_json(self, status: SLOStatus) -> dict[str, Any]:
        slo = self._slo(status.capability)
        budget = status.budget
        targets: dict[str, Any] = {
            **slo.slo.latency.model_dump(),
            "availability": slo.slo.availability.target,
        }
        if slo.slo.error_rate is not None:
            targets["error_rate_pct"] = slo.slo.error_rate.max_pct
        if slo.slo.throughput is not None:
            targets["throughput_min_rps"] = slo.slo.throughput.min_rps
        out: dict[str, Any] = {
            "capability": status.capability,
            "tier": slo.tier,
            "compliant": status.compliant,
            "violations": list(status.violations),
            "window_seconds": status.window_seconds,
            "requests": status.requests,
            "errors": status.errors,
            "availability": status.availability,
            "p50_ms": status.p50_ms,
            "p95_ms": status.p95_ms,
            "p99_ms": status.p99_ms,
            "throughput_rps": status.throughput_rps,
            "demand_rps": status.demand_rps,
            "targets": targets,
            "budget": {
                "budget": budget.budget,
                "consumed": budget.consumed,
                "remaining": budget.remaining,
                "requests": budget.requests,
                "errors": budget.errors,
                "burn_rates": {
                    "5m": budget.burn_rate_5m,
                    "1h": budget.burn_rate_1h,
                    "6h": budget.burn_rate_6h,
                },
                "alerts_crossed": [a.model_dump() for a in budget.alerts_crossed],
            },
            "shedding": shedding_json(slo, status.shedding, self.admission),
        }
        idempotency = None if self.idempotency is None else self.idempotency.json(status.capability)
        if idempotency is not None:
            out["idempotency"] = idempotency
        return out

    # -- live --------------------------------------------------------------------

    async def all_status(self, request: Request) -> Response:
        # In slices, as the monitor reads them: 10,000 statuses would stall the loop.
        statuses = [
            self._status_json(status)
            async for capability in in_slices(self.manager.capabilities)
            if (status := self.manager.status(capability)) is not None
        ]
        body: dict[str, Any] = {"at": iso(self.clock()), "capabilities": statuses}
        metrics = self._metrics()
        counts = None if metrics is None else metrics.idempotency_counts()
        if counts is not None:
            hits, misses = counts["hit"], counts["miss"]
            body["idempotency"] = {
                "hits": hits,
                "misses": misses,
                "hit_rate": hits / (hits + misses) if hits + misses else None,
            }
        return JSONResponse(body)

    async def one_status(self, request: Request) -> Response:
        capability = request.path_params["capability"]
        if not is_capability(capability):
            # /slo/ui, /slo/ws over HTTP, a typo of /slo/history: a path, not a capability.
            raise Problem(
                404,
                "not_found",
                "Not found",
                f"{request.url.path} is no /slo endpoint, and {capability!r} is not a "
                "capability (verb:name)",
            )
        self._slo(capability)
        status = self.manager.status(capability)
        assert status is not None  # _slo() found the file
        return JSONResponse({"at": iso(self.clock()), **self._status_json(status)})

    # -- history -----------------------------------------------------------------

    async def history(self, request: Request) -> Response:
        slo = self._capability_param(request, required=True)
        assert slo is not None
        params = request.query_params
        now = self.clock()
        until = _instant(params, "until", default=now)
        since = _instant(params, "since", default=until - DEFAULT_HISTORY_S)
        if since >= until:
            raise bad_parameter("since", f"must be before until ({iso(since)} >= {iso(until)})")
        step = _step(params.get("step"))
        first, end = int(max(since, 0.0) // step) * step, int(-(-until // step)) * step
        if (end - first) // step > MAX_HISTORY_POINTS:
            raise bad_parameter(
                "step",
                f"{step} s over this range gives more than {MAX_HISTORY_POINTS} points; "
                "use a larger step or a shorter range",
            )
        store = self._store()
        points = await self._call(store.history, slo.key, first, end, step)
        return JSONResponse(
            {
                "capability": slo.key,
                "since": iso(first),
                "until": iso(end),
                "step": step,
                "points": [
                    {"t": iso(p.start), **asdict(p), "availability": p.availability} for p in points
                ],
            }
        )

    # -- breaches ----------------------------------------------------------------

    async def breaches(self, request: Request) -> Response:
        slo = self._capability_param(request, required=False)
        params = request.query_params
        state = params.get("status") or None
        if state is not None and state not in _BREACH_STATES:
            raise bad_parameter("status", f"{state!r} is not one of {', '.join(_BREACH_STATES)}")
        since = _instant(params, "since", default=None)
        until = _instant(params, "until", default=None)
        if since is not None and until is not None and since >= until:
            raise bad_parameter("since", f"must be before until ({iso(since)} >= {iso(until)})")
        severities = _severities(params.get("severity"))
        store = self._store()
        found = await self._call(
            store.breaches,
            None if slo is None else slo.key,
            state,  # checked against _BREACH_STATES above
            since,
            until,
            severities,
        )
        escalations: dict[str, Escalation] = {}
        if self.escalator is not None and found:
            ids = [b.id for b in found]
            rows = await self._call(self.escalator.store.escalations, ids)
            escalations = {e.alert_id: e for e in rows}
        return JSONResponse(
            {"breaches": [_breach_json(b, request, escalations.get(b.id)) for b in found]}
        )

    async def ack(self, request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        by = await _ack_by(request)
        escalation = None
        if self.escalator is not None:
            try:
                escalation = await self.escalator.ack(alert_id, by)
            except HistoryUnavailable as exc:
                raise _history_unavailable(f"{exc}; retry later") from exc
        if escalation is None:
            raise Problem(
                404,
                "unknown_alert",
                "Unknown alert",
                f"no escalating alert with id {alert_id!r} (only alerts with an escalation "
                "policy in alerts.yml can be acknowledged)",
                alert_id=alert_id,
            )
        return JSONResponse(escalation_json(escalation))

    async def breach_report(self, request: Request) -> Response:
        breach_id = request.path_params["breach_id"]
        store = self._store()
        breach = await self._call(store.breach, breach_id)
        if breach is None:
            raise Problem(
                404,
                "unknown_breach",
                "Unknown breach",
                f"no breach with id {breach_id!r}",
                breach_id=breach_id,
            )
        slo = self.manager.get_slo(breach.capability)
        text = await self._call(incident_report, store, breach, slo, self.clock())
        return Response(text, media_type="text/markdown; charset=utf-8")

    # -- compliance --------------------------------------------------------------

    async def compliance(self, request: Request) -> Response:
        slos = self._slos(request)
        today = _today(self.clock())
        params = request.query_params
        to_date = _date(params, "to_date", default=today)
        from_date = _date(
            params, "from_date", default=max(EARLIEST_DATE, to_date - dt.timedelta(days=29))
        )
        if from_date > to_date:
            raise bad_parameter("from_date", f"{from_date} is after to_date {to_date}")
        # Counted as the seed counts it: today-90 to today is allowed (91 daily records).
        days = (to_date - from_date).days
        if days > MAX_DAILY_RANGE_DAYS:
            raise bad_parameter(
                "to_date",
                f"from_date is {days} days before to_date; at most {MAX_DAILY_RANGE_DAYS} "
                "are allowed",
            )
        store = self._store()
        reports = []
        for slo in slos:
            records = await self._call(daily_compliance, store, slo, from_date, to_date)
            reports.append({"capability": slo.key, "records": [r.to_json() for r in records]})
        return JSONResponse(
            {"from_date": from_date.isoformat(), "to_date": to_date.isoformat(), "reports": reports}
        )

    async def monthly(self, request: Request) -> Response:
        slos = self._slos(request)
        today = _today(self.clock())
        params = request.query_params
        to_month = _month(params, "to_month", default=today.replace(day=1))
        default_from = max(EARLIEST_DATE, _add_months(to_month, -2))
        from_month = _month(params, "from_month", default=default_from)
        if from_month > to_month:
            raise bad_parameter("from_month", f"{from_month:%Y-%m} is after to_month")
        months = (to_month.year - from_month.year) * 12 + to_month.month - from_month.month + 1
        if months > MAX_MONTHLY_RANGE_MONTHS:
            raise bad_parameter(
                "to_month",
                f"the range is {months} months; at most {MAX_MONTHLY_RANGE_MONTHS} are allowed",
            )
        store = self._store()
        reports = []
        for slo in slos:
            summary = await self._call(monthly_compliance, store, slo, from_month, to_month)
            reports.append(
                {
                    "capability": slo.key,
                    "credits": [c.model_dump() for c in slo.credits],
                    "months": [m.to_json() for m in summary],
                }
            )
        return JSONResponse(
            {
                "from_month": f"{from_month:%Y-%m}",
                "to_month": f"{to_month:%Y-%m}",
                "reports": reports,
            }
        )

    def _slos(self, request: Request) -> list[SLOFile]:
        slo = self._capability_param(request, required=False)
        if slo is not None:
            return [slo]
        return [s for s in map(self.manager.get_slo, self.manager.capabilities) if s is not None]


def _breach_json(
    breach: Breach, request: Request, escalation: Escalation | None = None
) -> dict[str, Any]:
    return {
        "id": breach.id,
        "capability": breach.capability,
        "state": breach.state,
        "severity": breach.severity,
        "started_at": iso(breach.started_at),
        "ended_at": None if breach.ended_at is None else iso(breach.ended_at),
        "duration_s": breach.duration_s,
        "violations": list(breach.violations),
        "worst": breach.worst,
        "credit_pct": breach.credit_pct,
        "escalation": None if escalation is None else escalation_json(escalation),
        "report": str(request.url_for("slo_breach_report", breach_id=breach.id).path),
    }


def escalation_json(escalation: Escalation) -> dict[str, Any]:
    """An escalation as the API shows it (times in ISO 8601)."""
    return {
        "alert_id": escalation.alert_id,
        "capability": escalation.capability,
        "policy": escalation.policy,
        "state": escalation.state,
        "level": escalation.level,
        "started_at": iso(escalation.started_at),
        "acknowledged_at": None if escalation.acked_at is None else iso(escalation.acked_at),
        "acknowledged_by": escalation.acked_by,
        "stopped_at": None if escalation.stopped_at is None else iso(escalation.stopped_at),
        "stop_reason": escalation.stop_reason,
    }


def _history_unavailable(detail: str) -> Problem:
    problem = Problem(503, "history_unavailable", "History store unavailable", detail)
    problem.headers["retry-after"] = "5"
    return problem


def _today(now: float) -> dt.date:
    """The UTC date of ``now``, kept within the dates the API accepts."""
    try:
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    except (OverflowError, OSError, ValueError):
        return LATEST_DATE if now > 0 else EARLIEST_DATE
    return min(max(today, EARLIEST_DATE), LATEST_DATE)


async def _ack_by(request: Request) -> str | None:
    """Who acknowledges: the optional JSON body's ``by`` (at most 200 characters)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_ACK_BYTES:
            raise Problem(
                413, "payload_too_large", "Payload too large", f"at most {MAX_ACK_BYTES} bytes"
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise Problem(400, "invalid_json", "Invalid JSON", "the body is not valid JSON") from None
    by = document.get("by") if isinstance(document, dict) else None
    if not isinstance(document, dict) or (by is not None and not isinstance(by, str)):
        raise Problem(
            400,
            "invalid_ack",
            "Invalid acknowledgement",
            'the body must be a JSON object like {"by": "alice"} (by: a string)',
        )
    if by is not None and len(by) > 200:
        raise Problem(400, "invalid_ack", "Invalid acknowledgement", "by: at most 200 characters")
    return by


def _severities(value: str | None) -> list[str] | None:
    """``severity=major,critical``: breaches of any of these severities."""
    if not value:
        return None
    wanted = [part.strip() for part in value.split(",")]
    unknown = [w for w in wanted if w not in BREACH_SEVERITIES]
    if unknown:
        raise bad_parameter(
            "severity", f"{unknown[0]!r} is not one of {', '.join(BREACH_SEVERITIES)}"
        )
    return wanted


@overload
def _instant(params: Any, name: str, *, default: float) -> float: ...


@overload
def _instant(params: Any, name: str, *, default: None) -> float | None: ...


def _instant(params: Any, name: str, *, default: float | None) -> float | None:
    """Unix seconds, or ISO 8601 (``2025-01-31T12:00:00Z``; no zone means UTC), from
    1970 to 8999."""
    value = params.get(name)
    if not value:
        return default
    try:
        seconds = float(value) if re.fullmatch(r"\d+(\.\d+)?", value) else _parse_iso(value)
    except (ValueError, OverflowError):
        raise bad_parameter(
            name, f"{_shown(value)} is neither Unix seconds nor an ISO 8601 date-time"
        ) from None
    if not EARLIEST_INSTANT <= seconds < END_INSTANT:  # an overflow to inf fails too
        raise bad_parameter(name, f"{_shown(value)} is not {_YEARS}")
    return seconds


def _parse_iso(value: str) -> float:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _shown(value: str) -> str:
    """``value`` quoted for an error message, cut short if long."""
    return repr(value) if len(value) <= 40 else repr(value[:40]) + f"... ({len(value)} characters)"


def _step(value: str | None) -> int:
    """``60``, ``300s``, ``5m``, ``1h``, ``1d``: a positive multiple of 60 seconds, at
    most :data:`MAX_STEP_S`."""
    if not value:
        return 60
    match = _STEP.match(value.strip())
    seconds = int(match[1]) * _UNITS[match[2]] if match else 0
    if seconds < 60 or seconds % 60:
        raise bad_parameter(
            "step", f"{_shown(value)} is not a whole number of minutes (e.g. 60, 5m, 1h, 1d)"
        )
    if seconds > MAX_STEP_S:
        raise bad_parameter("step", f"{_shown(value)} is more than {MAX_STEP_S // 86_400}d")
    return seconds


def _date(params: Any, name: str, *, default: dt.date) -> dt.date:
    """A date (``2025-10-08``), or the UTC date of an ISO 8601 date-time
    (``2025-10-08T00:00:00Z``, the seed's form; no zone means UTC)."""
    value = params.get(name)
    if not value:
        return default
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = dt.date.fromisoformat(value)
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}T.+", value):
            day = dt.datetime.fromtimestamp(_parse_iso(value), dt.UTC).date()
        else:
            raise ValueError(value)
    except (ValueError, OverflowError, OSError):
        raise bad_parameter(
            name, f"{_shown(value)} is neither a date (YYYY-MM-DD) nor an ISO 8601 date-time"
        ) from None
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        raise bad_parameter(name, f"{_shown(value)} is not {_YEARS}")
    return day


def _month(params: Any, name: str, *, default: dt.date) -> dt.date:
    value = params.get(name)
    if not value:
        return default
    try:
        if not re.fullmatch(r"\d{4}-\d{2}", value):
            raise ValueError(value)
        month = dt.date.fromisoformat(value + "-01")
    except ValueError:
        raise bad_parameter(name, f"{_shown(value)} is not a month (YYYY-MM)") from None
    if not EARLIEST_DATE <= month <= LATEST_DATE:
        raise bad_parameter(name, f"{_shown(value)} is not {_YEARS}")
    return month


def _add_months(month: dt.date, count: int) -> dt.date:
    index = month.year * 12 + month.month - 1 + count
    return dt.date(index // 12, index % 12 + 1, 1)


def slo_routes(
    manager: SLOManager,
    repository: HistoryRepository | None = None,
    *,
    admission: Admission | Callable[[], Admission | None] | None = None,
    metrics: Callable[[], MetricsSink | None] | None = None,
    token: str | None = None,
    clock: Clock = time.time,
    prefix: str = "/slo",
    idempotency: IdempotencyCounts | None = None,
    escalator: Escalator | None = None,
    store_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
) -> list[BaseRoute]:
    """The /slo routes, each behind the bearer ``token`` when one is given.

    ``token=None`` reads ``$SLOGUARD_API_TOKEN``; an empty token means no protection.
    ``clock`` is the wall clock (Unix seconds) that default dates are computed from.
    The capability route comes last and answers only ``verb:name`` (anything else is a
    404 naming the path), so no fixed path can fall into it.
    ``escalator``: whose escalations ``POST /slo/alerts/{id}/ack`` acknowledges.
    ``store_timeout_s``: how long a request waits for one history read (then 503).
    """
    api = SLOApi(
        manager,
        repository,
        admission=admission,
        metrics=metrics,
        clock=clock,
        idempotency=idempotency,
        escalator=escalator,
        store_timeout_s=store_timeout_s,
    )
    token = api_token(token)

    def route(path: str, handler: Endpoint, name: str, method: str = "GET") -> Route:
        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except Problem as problem:
                return problem.response()

        # Mounted (prefix ""), the status of every capability is the mount point's "/".
        full = prefix + path or "/"
        return Route(full, require_token(token, answer), methods=[method], name=name)

    return [
        route("", api.all_status, "slo_status"),
        route("/history", api.history, "slo_history"),
        route("/breaches", api.breaches, "slo_breaches"),
        route("/breaches/{breach_id}/report", api.breach_report, "slo_breach_report"),
        route("/alerts/{alert_id}/ack", api.ack, "slo_alert_ack", method="POST"),
        route("/compliance", api.compliance, "slo_compliance"),
        route("/compliance/monthly", api.monthly, "slo_compliance_monthly"),
        route("/{capability}", api.one_status, "slo_capability"),
    ]


def slo_api(
    manager: SLOManager,
    repository: HistoryRepository | None = None,
    *,
    admission: Admission | None = None,
    token: str | None = None,
    clock: Clock = time.time,
    escalator: Escalator | None = None,
) -> Starlette:
    """A Starlette app serving only the /slo routes (at ``/slo...``), and their OpenAPI
    document at ``/openapi.json``."""
    routes = slo_routes(
        manager, repository, admission=admission, token=token, clock=clock, escalator=escalator
    )
    return Starlette(routes=[openapi_route(), *routes])
