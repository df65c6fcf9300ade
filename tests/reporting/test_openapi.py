"""The OpenAPI document, and the /slo API and the controller fuzzed from it: no input is
ever a 5xx.

The fuzzer draws, for each operation the document lists, values for each of its
parameters: values the schema allows, and hostile ones (5,000 digits, years 1
and 9999, NUL, 1e20, nan, arbitrary text); for the controller, also headers
(keys, priorities, credentials) and bodies (seed forms, registrations with
hostile URLs). Bounded (``max_examples``), seeded (``derandomize``): the same
requests on every run, in CI too. Each prints the requests it sent and the 5xx
it got.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Route

from sloguard import SLOGuard, SLOManager
from sloguard._clock import ManualClock
from sloguard.reporting import Alert, AlertsConfig, Breach, MinuteAggregate, Reporter, SLOApp
from sloguard.reporting.api import slo_api
from sloguard.reporting.mount import slo_site_routes
from sloguard.reporting.openapi import openapi_document
from sloguard.reporting.sqlite import SQLiteHistory
from sloguard.routing import WorkerRegistry, create_controller_app
from sloguard.routing.redis_registry import RedisRegistry
from tests.redis_server import RedisKeys
from tests.reporting.conftest import write_slo
from tests.routing.workers import RecordingWorker, running
from tests.servers import serving

CAP = "convert:pdf"
JAN10 = 1_736_467_200  # 2025-01-10T00:00:00Z
FUZZ_EXAMPLES = 1_000
KNOWN = {"capability": (CAP, "classify:email"), "breach_id": ("b-1",), "alert_id": ("a-1",)}


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


@pytest.mark.parametrize("controller", [False, True])
def test_the_document_is_openapi_3_1_and_every_reference_resolves(controller: bool) -> None:
    document = openapi_document(controller=controller)
    assert document["openapi"] == "3.1.0"
    json.dumps(document)  # plain JSON
    schemas = document["components"]["schemas"]
    for ref in refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    for path, item in document["paths"].items():
        assert path.startswith("/")
        for operation in item.values():
            assert operation["responses"], path
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert names == set(re.findall(r"\{(\w+)\}", path)), path
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def route_paths(routes: list[Any]) -> set[str]:
    return {route.path for route in routes if isinstance(route, Route)}


def test_the_document_describes_every_slo_route_and_every_controller_route(
    tmp_path: Path,
) -> None:
    write_slo(tmp_path / "slos")
    manager = SLOManager(tmp_path / "slos")
    reporter = Reporter(manager)
    served = route_paths(slo_site_routes(reporter.routes()))
    served.discard("/slo/ui/{asset}")  # the dashboard's script and style
    served.discard("/slo/openapi.json")  # the document itself
    slo = openapi_document()["paths"].keys()
    assert served == {"/slo", *slo}
    app = create_controller_app(registry=WorkerRegistry(), manager=manager)
    controller = route_paths(app.routes) | {"/metrics"}  # /metrics is a Mount
    controller -= {"/slo/ui/{asset}", "/slo/openapi.json", "/openapi.json"}  # the documents
    assert controller == set(openapi_document(controller=True)["paths"])


async def test_it_is_served_beside_the_api_mounted_or_not(tmp_path: Path) -> None:
    write_slo(tmp_path / "slos")
    manager = SLOManager(tmp_path / "slos")
    mounted = Starlette(routes=[])
    mounted.mount("/reports", SLOApp(Reporter(manager)))
    apps = [
        (slo_api(manager, token=""), "/openapi.json", None, "/slo/history"),
        (mounted, "/reports/openapi.json", "/reports", "/history"),
    ]
    for app, path, server, history in apps:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get(path)
        assert response.status_code == 200, path
        document = response.json()
        assert history in document["paths"]
        assert document.get("servers") == (None if server is None else [{"url": server}])


# -- the fuzzer -------------------------------------------------------------------

HOSTILE = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789", min_size=13, max_size=6_000),  # past int() and float
    st.from_regex(r"\A\d{1,12}(\.\d{1,9})?\Z"),
    st.from_regex(r"\A\d{1,13}[smhdx]?\Z"),
    st.sampled_from(
        [
            "1e20",
            "nan",
            "inf",
            "-1",
            "0",
            "0001-01-01",
            "0001-01",
            "9999-12-31",
            "9999-12",
            "9999-12-31T23:59:59Z",
            "9999-12-31T23:00:00-05:00",
            "0001-01-01T00:00:00+05:00",
            "1969-12-31T23:59:59Z",
            "2025-02-30",
            "2025-13",
            "8999-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "\x00",
            "a:b",
            "convert:pdf",
            "🙂:🙂",
        ]
    ),
    st.dates().map(str),
    st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
    st.integers(min_value=-(2**64), max_value=2**64).map(str),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=10,
)
BODIES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda by: json.dumps({"by": by}).encode(), st.text(max_size=300) | JSON_VALUES),
    st.sampled_from([10, 999, 1_000, 5_000]).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from([b" " * 20_000, b'{"by": "' + b"x" * 20_000 + b'"}']),
    st.builds(lambda value: json.dumps(value).encode(), JSON_VALUES),
)


def valid_values(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    if "enum" in schema:
        return st.sampled_from([str(v) for v in schema["enum"]])
    if "pattern" in schema:
        return st.from_regex(schema["pattern"])
    return st.text(max_size=20)


def value_for(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    return st.one_of(valid_values(schema), HOSTILE)


@st.composite
def requests(draw: st.DrawFn, document: dict[str, Any]) -> tuple[str, str, dict[str, str], bytes]:
    """``(method, url, query, body)`` for one operation of ``document``."""
    operations = [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    method, path, operation = draw(st.sampled_from(operations))
    query: dict[str, str] = {}
    for parameter in operation.get("parameters", []):
        schema = parameter["schema"]
        # Known names half the time, so that requests get past the lookups to the rest.
        known = KNOWN.get(parameter["name"], ())
        values = (
            st.one_of(st.sampled_from(known), value_for(schema)) if known else value_for(schema)
        )
        if parameter["in"] == "path":
            path = path.replace("{" + parameter["name"] + "}", quote(draw(values), safe="") or "x")
        elif parameter.get("required") or draw(st.booleans()):
            query[parameter["name"]] = draw(values)
    body = draw(BODIES) if "requestBody" in operation else b""
    return method, path, query, body


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Starlette]:
    """The /slo API (and its dashboard and document) of a reporter with history in
    SQLite: minute rows, breaches (one escalating), alerts."""
    directory = tmp_path_factory.mktemp("fuzz")
    write_slo(directory / "slos", extra="credits: [{below_pct: 99.9, credit_pct: 10}]\n")
    write_slo(directory / "slos", "classify", "email")
    history = SQLiteHistory(directory / "history.sqlite3")
    history.migrate()
    history.write_minutes(
        [
            MinuteAggregate(CAP, JAN10 + 60 * i, "r1", 10, i % 2, 1, 20.0, 90.0, 150.0, i >= 2)
            for i in range(30)
        ]
    )
    history.save_breach(
        Breach("b-1", CAP, "resolved", JAN10 + 30, JAN10 + 150, ("x",), severity="critical")
    )
    history.save_alert(Alert("a-1", CAP, "breach", "breach", "warning", "x", JAN10 + 60))
    escalating = AlertsConfig.model_validate(
        {
            "escalation": {
                "policies": {"p": {"levels": [{"after_minutes": 5, "sinks": ["log"]}]}},
                "channels": {"breach": "p"},
            }
        }
    )
    manager = SLOManager(directory / "slos", clock=ManualClock(1_000.0))
    reporter = Reporter(manager, history=history, alerts=escalating, wall_clock=lambda: JAN10)
    asyncio.run(reporter.escalator.observe(history.alerts(CAP)[0]))
    yield Starlette(routes=slo_site_routes(reporter.routes(token="")))
    history.close()


class Tally:
    """What the fuzzer sent, and the server errors it got."""

    def __init__(self) -> None:
        self.sent = 0
        self.statuses: Counter[int] = Counter()
        self.server_errors: list[tuple[int, str, str]] = []

    def __str__(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return f"{self.sent} requests ({statuses}), {len(self.server_errors)} 5xx"


async def send(app: Starlette, request: tuple[str, str, dict[str, str], bytes]) -> int:
    method, path, query, body = request
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.request(method, path, params=query, content=body)
    # Starlette's own 404 answers a path no route matches (a %2F makes one): not ours.
    if response.status_code >= 400 and response.text != "Not Found":
        assert response.headers["content-type"] == "application/problem+json", response.text
    return response.status_code


def test_no_request_to_the_slo_api_is_a_server_error(
    fuzzed_app: Starlette, record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    tally = Tally()

    @settings(
        max_examples=FUZZ_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(request=requests(openapi_document()))
    def fuzz(request: tuple[str, str, dict[str, str], bytes]) -> None:
        status = asyncio.run(send(fuzzed_app, request))
        tally.sent += 1
        tally.statuses[status] += 1
        if status >= 500:
            method, path, query, _ = request
            tally.server_errors.append((status, method, f"{path}?{query}"))
        assert status < 500, request

    try:
        fuzz()
    finally:
        record_property("fuzz_requests", tally.sent)
        record_property("fuzz_server_errors", len(tally.server_errors))
        with capsys.disabled():
            print(f"\n/slo fuzzer: {tally}")
    assert tally.sent >= FUZZ_EXAMPLES
    assert tally.server_errors == []


# -- the controller fuzzer ----------------------------------------------------------
#
# The controller's own routes (/route/{verb}/{name}, the seed form POST /route,
# /workers*, /healthz) behind SLOGuard, as `sloguard serve` runs them, over real
# HTTP to a real worker. The world is set up so that no 5xx is ever right: the
# worker answers at once, the SLOs cannot be missed, the only worker serving
# them is static (never moved or removed over HTTP), registrations live an hour
# and may only point at that worker (the allow-list and the URLs drawn see to
# it). Any 5xx is then a bug.

REGISTRY_TOKEN = "fuzz-registry-token"
FUZZ_SLO = """\
capability: {{verb: {verb}, name: {name}}}
slo:
  latency: {{p50_ms: 60000, p95_ms: 60000, p99_ms: 60000}}
  availability: {{target: 0.5}}
shedding: {{concurrency: {{mode: "off"}}}}
"""
ROUTED = ("convert:pdf", "classify:email")
CONTROLLER_KNOWN = {
    "verb": ("convert", "classify", "a"),
    "name": ("pdf", "email", "b"),
    "worker_id": ("w1", "f1", "f2", "#index"),
}
HEADER_VALUES = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9_-]{1,24}\Z"),
    st.from_regex(r"\A[!-~\x80-\xff](?:[ -~\x80-\xff]{0,300}[!-~\x80-\xff])?\Z"),
    st.sampled_from(["low", "HIGH", "critical", '"sf-string"', "a" * 256, "\xe9t\xe9"]),
)
ROUTE_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "idempotency-key": HEADER_VALUES,
        "x-priority": HEADER_VALUES,
        "x-capability": HEADER_VALUES,
        "content-type": st.sampled_from(["application/json", "text/plain", "a/b; c=d", "\xff"]),
    },
)
AUTHORIZATION = st.sampled_from(
    [f"Bearer {REGISTRY_TOKEN}"] * 8 + [None, "Bearer wrong", f"Basic {REGISTRY_TOKEN}", "Bearer"]
)
BAD_URLS = [
    "http://127.0.0.1:0",
    "http://127.0.0.1:99999",
    "http://127.0.0.1:65536",
    "http://127.0.0.1:-1",
    "http://127.0.0.1:",
    "http://user:pw@127.0.0.1:1",
    "http://127.0.0.1:1/?to=elsewhere",
    "http://127.0.0.1:1#f",
    "ftp://127.0.0.1:1",
    "javascript:alert(1)",
    "http://",
    "http://[::1",
    "http://a b",
    "http://\xe9",
    "http://2130706433:1",
    "http://127.0.0.1:1/" + "a" * 3_000,
]
OFF_THE_LIST = [
    "http://169.254.169.254",  # a cloud metadata service
    "http://10.0.0.1:80",
    "http://localhost:1",
    "http://[::1]:1",
    "https://internal.example:8443/admin",
]


def registrations(worker_url: str) -> st.SearchStrategy[bytes]:
    """POST /workers bodies: well-formed ones whose URL varies (the one worker's, hosts off
    the allow-list, bad URLs), and hostile ones in every field."""
    # Another path of the one worker (it answers any): moving a live id there is refused.
    moved = st.sampled_from([worker_url + "/v2", worker_url.replace("http", "HTTP") + "/v2/"])
    allowed = st.sampled_from([worker_url, worker_url + "/", worker_url.replace("http", "HTTP")])
    urls = st.one_of(allowed, moved, st.sampled_from(OFF_THE_LIST), st.sampled_from(BAD_URLS))
    # f9 is live at the worker's URL from the start, and never deleted (no path names it).
    known_ids = st.sampled_from(["f9", "w1", "f1"]) | st.from_regex(r"\A[a-z]{1,2}\Z")
    known_caps = st.lists(st.sampled_from([*ROUTED, "a:b", "x:y"]), min_size=1, max_size=2)
    well_formed = st.fixed_dictionaries({"id": known_ids, "url": urls, "capabilities": known_caps})
    hostile = st.fixed_dictionaries(
        {
            "id": known_ids | st.text(max_size=20) | st.sampled_from(["#index", "a" * 201, ""]),
            "url": urls | st.text(max_size=40) | JSON_VALUES,
            "capabilities": known_caps | st.lists(st.text(max_size=12), max_size=3) | JSON_VALUES,
        },
        optional={"weight": JSON_VALUES},
    )
    encode = lambda document: json.dumps(document).encode()  # noqa: E731
    return st.one_of(well_formed.map(encode), well_formed.map(encode), hostile.map(encode), BODIES)


SEEDS = st.fixed_dictionaries(
    {},
    optional={
        "verb": st.one_of(st.sampled_from(CONTROLLER_KNOWN["verb"]), st.text(max_size=10)),
        "capability": st.one_of(st.sampled_from(CONTROLLER_KNOWN["name"]), JSON_VALUES),
        "idempotency_key": st.one_of(HEADER_VALUES, JSON_VALUES),
        "priority": st.one_of(st.sampled_from(["low", "high", "x"]), JSON_VALUES),
        "request_payload": JSON_VALUES,
    },
).map(lambda d: json.dumps(d).encode())

Request = tuple[str, str, dict[str, str], list[tuple[bytes, bytes]], bytes]
OPERATION_WEIGHTS = {
    "POST /route/{verb}/{name}": 3,
    "POST /route": 3,
    "POST /workers": 5,
    "POST /workers/{worker_id}/heartbeat": 2,
    "DELETE /workers/{worker_id}": 2,
}


@st.composite
def controller_requests(draw: st.DrawFn, worker_url: str) -> Request:
    """``(method, path, query, headers, body)`` for one of the controller's own operations."""
    document = openapi_document(controller=True)
    operations = [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        if not path.startswith("/slo")  # fuzzed above
        for method, operation in item.items()
        for _ in range(OPERATION_WEIGHTS.get(f"{method.upper()} {path}", 1))
    ]
    method, path, operation = draw(st.sampled_from(operations))
    for parameter in operation.get("parameters", []):
        known = CONTROLLER_KNOWN.get(parameter["name"], ())
        value = draw(st.one_of(st.sampled_from(known), HOSTILE) if known else HOSTILE)
        path = path.replace("{" + parameter["name"] + "}", quote(value, safe="") or "x")
    headers: dict[str, str] = {}
    body = b""
    if path.startswith("/route"):
        headers = draw(ROUTE_HEADERS)
        body = draw(st.one_of(SEEDS, BODIES) if path == "/route" else BODIES)
    elif path.startswith("/workers") and method != "GET":
        authorization = draw(AUTHORIZATION)
        if authorization is not None:
            headers["authorization"] = authorization
        if method == "POST" and path == "/workers":
            body = draw(registrations(worker_url))
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    query = draw(st.dictionaries(st.sampled_from(["delay_ms", "x"]), HOSTILE, max_size=1))
    return method, path, query, raw, body


@pytest.fixture(params=["memory", "redis"])
def fuzzed_controller(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """``(controller URL, worker URL)``: the controller behind SLOGuard, on uvicorn, with
    its registry in memory or in Redis."""
    directory = tmp_path_factory.mktemp("fuzz-controller") / "slos"
    directory.mkdir()
    for capability in ROUTED:
        verb, name = capability.split(":")
        (directory / f"{verb}_{name}.yml").write_text(FUZZ_SLO.format(verb=verb, name=name))
    manager = SLOManager(directory)
    assert manager.errors == []
    worker = RecordingWorker("w1")
    registry = WorkerRegistry(heartbeat_ttl_s=3_600, max_workers=5)
    keys = None
    if request.param == "redis":
        keys = RedisKeys(request.getfixturevalue("redis_url"))
        registry = RedisRegistry(keys.url, prefix=keys.prefix, heartbeat_ttl_s=3_600, max_workers=5)
    app = create_controller_app(
        registry=registry,
        manager=manager,
        registry_token=REGISTRY_TOKEN,
        worker_hosts="127.0.0.1",
        health_interval_s=0.5,
    )
    guard = SLOGuard(app, manager=manager, metrics=False, reload_every_s=None)
    with running(worker) as worker_url, serving(guard) as url:
        registry.register("w1", worker_url, ROUTED, static=True)
        auth = {"authorization": f"Bearer {REGISTRY_TOKEN}"}
        for worker_id in ("f1", "f9"):
            spec = {"id": worker_id, "url": worker_url, "capabilities": list(ROUTED)}
            assert httpx.post(url + "/workers", json=spec, headers=auth).status_code == 201
        yield url, worker_url
    if keys is not None:
        asyncio.run(keys.close())


def test_no_request_to_the_controller_is_a_server_error(
    fuzzed_controller: tuple[str, str],
    request: pytest.FixtureRequest,
    record_property: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, worker_url = fuzzed_controller
    registry = request.node.callspec.params["fuzzed_controller"]
    tally = Tally()
    errors: Counter[str] = Counter()

    with httpx.Client(base_url=url, timeout=30) as client:

        @settings(
            max_examples=FUZZ_EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(drawn=controller_requests(worker_url))
        def fuzz(drawn: Request) -> None:
            method, path, query, headers, body = drawn
            response = client.request(method, path, params=query, headers=headers, content=body)
            status = response.status_code
            tally.sent += 1
            tally.statuses[status] += 1
            if status >= 400 and response.text != "Not Found":
                assert response.headers["content-type"] == "application/problem+json", drawn
                errors[response.json()["error"]] += 1
            if status >= 500:
                tally.server_errors.append((status, method, f"{path}?{query}"))
            assert status < 500, (drawn, response.text)

        try:
            fuzz()
        finally:
            record_property("fuzz_controller_requests", tally.sent)
            record_property("fuzz_controller_server_errors", len(tally.server_errors))
            with capsys.disabled():
                print(f"\ncontroller fuzzer ({registry} registry): {tally}")
                print(f"  problems: {dict(sorted(errors.items()))}")
        health = client.get("/healthz").json()
        health_workers = client.get("/workers").json()["workers"]
        routed = client.post("/route/convert/pdf", content=b"{}")

    assert tally.sent >= FUZZ_EXAMPLES
    assert tally.server_errors == []
    # Refused over and over, the registry and the loops are still whole.
    assert health["status"] == "ok"
    assert health["loops"]["health_checks"]["state"] == "running"
    assert routed.status_code == 200
    static = [w for w in health_workers if w["id"] == "w1"]
    assert [(w["url"], w["static"]) for w in static] == [(worker_url, True)]
    # The draws get past the credential to the registry's checks (the rarer refusals,
    # printed above, have tests of their own).
    assert [r for r in ("unauthorized", "invalid_worker", "static_worker") if not errors[r]] == []
