"""The /slo API over HTTP: live status, history, breaches, reports, compliance, the token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sloguard import SLOManager
from sloguard._clock import ManualClock
from sloguard.reporting.api import slo_api
from sloguard.reporting.records import Alert, Breach, MinuteAggregate
from sloguard.reporting.repository import HistoryRepository
from sloguard.reporting.sqlite import SQLiteHistory
from sloguard.routing import WorkerRegistry, create_controller_app
from tests.reporting.conftest import write_slo
from tests.servers import free_port, serving

CAP = "convert:pdf"
JAN10 = 1_736_467_200  # 2025-01-10T00:00:00Z
NOW = JAN10 + 86_400 + 3600.0  # 2025-01-11T01:00:00Z
CREDITS = "credits: [{below_pct: 99.9, credit_pct: 10}]\n"


@pytest.fixture
def manager(tmp_path: Path) -> SLOManager:
    write_slo(tmp_path / "slos", extra=CREDITS)
    write_slo(tmp_path / "slos", "classify", "email")
    return SLOManager(tmp_path / "slos", clock=ManualClock(1000.0))


@pytest.fixture
def store(tmp_path: Path) -> SQLiteHistory:
    repository = SQLiteHistory(tmp_path / "history.sqlite3")
    repository.migrate()
    rows = [
        MinuteAggregate(CAP, JAN10 + 60 * i, "r1", 10, i % 2, 1, 20.0, 90.0, 150.0, i >= 2)
        for i in range(10)
    ]
    repository.write_minutes(rows)
    repository.save_breach(
        Breach(
            "b-1",
            CAP,
            "resolved",
            JAN10 + 30,
            JAN10 + 150,
            ("availability 50.00% < target 99.00%",),
            {"availability": 0.5, "p95_ms": 90.0},
            severity="critical",
            credit_pct=10.0,
        )
    )
    repository.save_breach(Breach("b-2", CAP, "open", JAN10 + 600, None, ("x",), severity="minor"))
    repository.save_alert(Alert("a-1", CAP, "burn", "pager", "critical", "burning 50x", JAN10 + 60))
    return repository


def client_for(app: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers
    )


@pytest.fixture
async def client(manager: SLOManager, store: SQLiteHistory) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(slo_api(manager, store, token="", clock=lambda: NOW)) as client:
        yield client
    store.close()


def assert_problem(response: httpx.Response, status: int, **fields: Any) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    for name, value in fields.items():
        assert body[name] == value
    return body


async def test_live_status_of_every_capability_and_of_one(
    client: httpx.AsyncClient, manager: SLOManager
) -> None:
    for _ in range(9):
        manager.record(CAP, latency_s=0.02, ok=True)
    manager.record(CAP, latency_s=0.02, ok=False)

    everything = (await client.get("/slo")).json()
    assert [c["capability"] for c in everything["capabilities"]] == ["classify:email", CAP]
    one = (await client.get(f"/slo/{CAP}")).json()
    assert (one["requests"], one["errors"], one["availability"]) == (10, 1, 0.9)
    assert one["compliant"] is False
    assert one["violations"] == ["availability 90.00% < target 99.00%"]
    assert one["targets"] == {"p50_ms": 50, "p95_ms": 100, "p99_ms": 200, "availability": 0.99}
    budget = one["budget"]
    assert budget["consumed"] == pytest.approx(10.0)  # 10% errors against a 1% budget
    assert budget["burn_rates"]["5m"] == pytest.approx(10.0)
    assert one["shedding"] == {"active": False}


async def test_an_unknown_capability_is_a_404_naming_it(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/slo/convert:nothing"), 404, error="unknown_capability")
    assert body["capability"] == "convert:nothing"


async def test_a_path_that_is_no_capability_is_a_404_naming_the_path(
    client: httpx.AsyncClient,
) -> None:
    for name in ("no-colon", "ui", "ws", "histroy"):
        body = assert_problem(await client.get(f"/slo/{name}"), 404, error="not_found")
        assert f"/slo/{name} is no /slo endpoint" in body["detail"]


async def test_history_points(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/slo/history",
        params={
            "capability": CAP,
            "since": "2025-01-10T00:00:00Z",
            "until": JAN10 + 600,
            "step": "5m",
        },
    )
    body = response.json()
    assert (body["since"], body["until"], body["step"]) == (
        "2025-01-10T00:00:00Z",
        "2025-01-10T00:10:00Z",
        300,
    )
    assert [
        (p["t"], p["requests"], p["errors"], p["downtime_minutes"]) for p in body["points"]
    ] == [
        ("2025-01-10T00:00:00Z", 50, 2, 2),
        ("2025-01-10T00:05:00Z", 50, 3, 0),
    ]
    assert body["points"][0]["availability"] == pytest.approx(0.96)
    assert body["points"][0]["p95_ms"] == 90.0


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({}, "capability"),
        ({"capability": "nocolon"}, "capability"),
        ({"capability": CAP, "since": "yesterday"}, "since"),
        ({"capability": CAP, "until": "2025-13-01T00:00:00"}, "until"),
        ({"capability": CAP, "since": JAN10 + 60, "until": JAN10}, "since"),
        ({"capability": CAP, "step": "90"}, "step"),
        ({"capability": CAP, "step": "5x"}, "step"),
        ({"capability": CAP, "step": "0"}, "step"),
        ({"capability": CAP, "since": 0, "until": JAN10, "step": "1m"}, "step"),
        # Values past what the code can compute with: each was a 500.
        ({"capability": CAP, "step": "6" * 5000}, "step"),
        ({"capability": CAP, "step": "367d"}, "step"),
        ({"capability": CAP, "until": "9" * 400}, "until"),
        ({"capability": CAP, "since": "1e20"}, "since"),
        ({"capability": CAP, "until": "9999-12-31T23:59:59Z"}, "until"),
        ({"capability": CAP, "until": "9999-12-31T23:00:00-05:00"}, "until"),
        ({"capability": CAP, "since": "0001-01-01T00:00:00+05:00"}, "since"),
        ({"capability": CAP, "since": "1969-12-31T23:59:59Z"}, "since"),
    ],
)
async def test_bad_history_parameters_are_400s_naming_them(
    client: httpx.AsyncClient, params: dict[str, Any], parameter: str
) -> None:
    response = await client.get("/slo/history", params=params)
    body = assert_problem(response, 400, error="invalid_parameter", parameter=parameter)
    assert body["detail"].startswith(f"{parameter}: ")


async def test_history_of_an_unknown_capability_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/slo/history", params={"capability": "convert:nothing"})
    assert_problem(response, 404, capability="convert:nothing")


async def test_breaches_filtered_by_capability_and_status(client: httpx.AsyncClient) -> None:
    every = (await client.get("/slo/breaches")).json()["breaches"]
    assert [b["id"] for b in every] == ["b-1", "b-2"]
    assert every[0]["duration_s"] == 120.0
    assert every[0]["report"] == "/slo/breaches/b-1/report"
    opened = (await client.get("/slo/breaches", params={"status": "open"})).json()["breaches"]
    assert [b["id"] for b in opened] == ["b-2"]
    other = await client.get("/slo/breaches", params={"capability": "classify:email"})
    assert other.json() == {"breaches": []}
    bad = await client.get("/slo/breaches", params={"status": "closed"})
    assert_problem(bad, 400, parameter="status")


@pytest.mark.parametrize(
    ("params", "ids"),
    [
        ({"since": str(JAN10 + 31)}, ["b-2"]),
        ({"until": "2025-01-10T00:10:00Z"}, ["b-1"]),  # b-2 starts at 00:10: excluded
        ({"since": "2025-01-10T00:00:00Z", "until": str(JAN10 + 601)}, ["b-1", "b-2"]),
        ({"severity": "critical"}, ["b-1"]),
        ({"severity": "major,critical"}, ["b-1"]),
        ({"severity": "minor", "status": "open"}, ["b-2"]),
        ({"severity": "warning"}, []),
    ],
)
async def test_breaches_filtered_by_time_and_severity(
    client: httpx.AsyncClient, params: dict[str, str], ids: list[str]
) -> None:
    found = (await client.get("/slo/breaches", params=params)).json()["breaches"]
    assert [b["id"] for b in found] == ids


async def test_a_breach_shows_its_severity_and_credit(client: httpx.AsyncClient) -> None:
    first = (await client.get("/slo/breaches")).json()["breaches"][0]
    assert (first["severity"], first["credit_pct"], first["escalation"]) == ("critical", 10.0, None)
    report = (await client.get("/slo/breaches/b-1/report")).text
    assert "- **Severity:** critical" in report
    assert "- **Service credit:** 10%\n" in report


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"severity": "huge"}, "severity"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-13-01T00:00:00Z"}, "until"),
        ({"since": str(JAN10 + 10), "until": str(JAN10)}, "since"),
    ],
)
async def test_bad_breach_filters_are_400s(
    client: httpx.AsyncClient, params: dict[str, str], parameter: str
) -> None:
    response = await client.get("/slo/breaches", params=params)
    assert_problem(response, 400, error="invalid_parameter", parameter=parameter)


async def test_the_incident_report_is_markdown_with_timeline_and_impact(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/slo/breaches/b-1/report")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    report = response.text
    assert report.startswith("# Incident report: `convert:pdf`, breach `b-1`")
    assert "- **Duration:** 2m 0s" in report
    assert "- availability 50.00% < target 99.00%" in report
    # Minutes 0, 1 and 2 (00:00 to 00:03) overlap the breach: 30 requests, 1 error, 3 shed.
    assert "30 served during the breach, 1 of them failed; 3 refused" in report
    # The 30 days to its end hold 30 requests (minutes 0-2): 0.3 errors allowed, 1 made.
    assert "333.33% of the month's error budget (1 errors of 0.3 allowed" in report
    assert "2025-01-10T00:01:00Z: alert (critical, pager): burning 50x" in report
    assert "| 2025-01-10T00:01:00Z | 10 | 1 | 90.00% | 90 ms | 150 ms | 1 | 1 |" in report
    missing = await client.get("/slo/breaches/nope/report")
    assert_problem(missing, 404, error="unknown_breach", breach_id="nope")


async def test_compliance_defaults_to_the_last_30_days(client: httpx.AsyncClient) -> None:
    body = (await client.get("/slo/compliance", params={"capability": CAP})).json()
    assert (body["from_date"], body["to_date"]) == ("2024-12-13", "2025-01-11")
    [report] = body["reports"]
    assert len(report["records"]) == 30
    jan10 = next(r for r in report["records"] if r["date"] == "2025-01-10")
    assert jan10 == {
        "date": "2025-01-10",
        "compliance_percentage": 80.0,  # 8 of 10 minutes
        "target_percentage": 99.0,
        "uptime_minutes": 8,
        "downtime_minutes": 2,
        "sla_breaches": 2,
        "requests": 100,
        "errors": 5,
    }
    every = (await client.get("/slo/compliance")).json()["reports"]
    assert [r["capability"] for r in every] == ["classify:email", CAP]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"from_date": "2025-01-10", "to_date": "2025-01-09"}, "from_date"),
        ({"from_date": "2024-10-01", "to_date": "2025-01-10"}, "to_date"),  # 102 days
        ({"from_date": "2025-02-30"}, "from_date"),
        ({"to_date": "2025/01/10"}, "to_date"),
        ({"to_date": "20250110"}, "to_date"),
        ({"capability": "bad"}, "capability"),
        ({"from_date": "0001-01-01", "to_date": "0001-01-05"}, "to_date"),
        ({"to_date": "0001-01-05"}, "to_date"),
        ({"from_date": "9999-12-25", "to_date": "9999-12-31"}, "to_date"),
        ({"from_date": "1969-12-31", "to_date": "1970-01-05"}, "from_date"),
        ({"to_date": "9999-12-31T23:00:00-05:00"}, "to_date"),
    ],
)
async def test_bad_compliance_ranges_are_400s(
    client: httpx.AsyncClient, params: dict[str, str], parameter: str
) -> None:
    response = await client.get("/slo/compliance", params=params)
    assert_problem(response, 400, error="invalid_parameter", parameter=parameter)


async def test_ninety_days_back_is_allowed_as_the_seed_counts_it(
    client: httpx.AsyncClient,
) -> None:
    params = {"capability": CAP, "from_date": "2024-10-12", "to_date": "2025-01-10"}
    [report] = (await client.get("/slo/compliance", params=params)).json()["reports"]
    assert len(report["records"]) == 91  # today-90 to today
    params["from_date"] = "2024-10-11"
    refused = await client.get("/slo/compliance", params=params)
    assert_problem(refused, 400, error="invalid_parameter", parameter="to_date")


async def test_compliance_dates_may_be_iso_8601_date_times(client: httpx.AsyncClient) -> None:
    params = {
        "capability": CAP,
        "from_date": "2025-01-10T00:00:00Z",  # the seed's own example form
        "to_date": "2025-01-11T01:30:00+02:00",  # 2025-01-10T23:30Z: a UTC date of 01-10
    }
    body = (await client.get("/slo/compliance", params=params)).json()
    assert (body["from_date"], body["to_date"]) == ("2025-01-10", "2025-01-10")
    assert body["reports"][0]["records"][0]["uptime_minutes"] == 8
    bad = await client.get("/slo/compliance", params={"from_date": "2025-01-10Tnoon"})
    assert_problem(bad, 400, error="invalid_parameter", parameter="from_date")


async def test_monthly_compliance_with_credits(client: httpx.AsyncClient) -> None:
    params = {"capability": CAP, "from_month": "2024-12", "to_month": "2025-01"}
    body = (await client.get("/slo/compliance/monthly", params=params)).json()
    [report] = body["reports"]
    assert report["credits"] == [{"below_pct": 99.9, "credit_pct": 10.0}]
    assert [
        (m["month"], m["compliance_percentage"], m["credit_percentage"]) for m in report["months"]
    ] == [
        ("2024-12", None, None),
        ("2025-01", 80.0, 10.0),
    ]
    default = (await client.get("/slo/compliance/monthly")).json()
    assert (default["from_month"], default["to_month"]) == ("2024-11", "2025-01")


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"from_month": "2025-02", "to_month": "2025-01"}, "from_month"),
        ({"from_month": "2023-01", "to_month": "2025-01"}, "to_month"),
        ({"from_month": "2025-1"}, "from_month"),
        ({"to_month": "2025-13"}, "to_month"),
        ({"from_month": "0001-01", "to_month": "0001-02"}, "to_month"),
        ({"to_month": "0001-01"}, "to_month"),
        ({"from_month": "9999-11", "to_month": "9999-12"}, "to_month"),
    ],
)
async def test_bad_monthly_ranges_are_400s(
    client: httpx.AsyncClient, params: dict[str, str], parameter: str
) -> None:
    response = await client.get("/slo/compliance/monthly", params=params)
    assert_problem(response, 400, parameter=parameter)


async def test_the_first_days_and_months_of_1970_have_their_defaults_clamped(
    client: httpx.AsyncClient,
) -> None:
    daily = await client.get("/slo/compliance", params={"to_date": "1970-01-05"})
    assert daily.json()["from_date"] == "1970-01-01"
    monthly = await client.get("/slo/compliance/monthly", params={"to_month": "1970-01"})
    assert monthly.json()["from_month"] == "1970-01"
    latest = await client.get("/slo/compliance/monthly", params={"to_month": "8999-12"})
    assert latest.status_code == 200


@pytest.mark.parametrize(
    "body",
    [b"[" * 5_000 + b"]" * 5_000, b'{"a":' * 2_000 + b"1" + b"}" * 2_000],
    ids=["deep array", "deep object"],
)
async def test_a_deeply_nested_ack_body_is_a_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/slo/alerts/a-1/ack", content=body)
    assert_problem(response, 400, error="invalid_json")


async def test_a_huge_ack_body_is_a_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/slo/alerts/a-1/ack", content=b" " * 100_000)
    assert_problem(response, 413, error="payload_too_large")


async def test_with_its_postgresql_down_the_history_endpoints_answer_503(
    manager: SLOManager,
) -> None:
    from sloguard.reporting.postgres import PostgresHistory

    down = PostgresHistory(
        f"postgresql://postgres@127.0.0.1:{free_port()}/test", connect_timeout_s=1
    )
    paths = [
        f"/slo/history?capability={CAP}",
        "/slo/breaches",
        "/slo/breaches/b-1/report",
        "/slo/compliance",
        "/slo/compliance/monthly",
    ]
    async with client_for(slo_api(manager, down, token="")) as client:
        for path in paths:
            body = assert_problem(await client.get(path), 503, error="history_unavailable")
            assert "logged on the server" in body["detail"]
        assert (await client.get("/slo")).status_code == 200  # the live status needs no store
    down.close()


async def test_without_a_store_the_history_endpoints_answer_503(manager: SLOManager) -> None:
    async with client_for(slo_api(manager, None, token="")) as client:
        assert (await client.get("/slo")).status_code == 200
        for path in ("/slo/history?capability=convert:pdf", "/slo/breaches", "/slo/compliance"):
            assert_problem(await client.get(path), 503, error="no_history_store")


async def test_a_token_protects_every_slo_endpoint(
    manager: SLOManager, store: SQLiteHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLOGUARD_API_TOKEN", "from-env")
    app = slo_api(manager, store)  # token None: read from the environment
    paths = ["/slo", f"/slo/{CAP}", "/slo/breaches", "/slo/compliance", "/slo/breaches/b-1/report"]
    async with client_for(app) as anonymous, client_for(app, authorization="Bearer wrong") as wrong:
        for path in paths:
            for client in (anonymous, wrong):
                response = await client.get(path)
                assert_problem(response, 401, error="unauthorized")
                assert response.headers["www-authenticate"] == 'Bearer realm="sloguard"'
    async with client_for(app, authorization="Bearer from-env") as allowed:
        for path in paths:
            assert (await allowed.get(path)).status_code == 200
    store.close()


def test_the_controller_serves_slo_and_guards_workers_writes(
    manager: SLOManager, store: HistoryRepository
) -> None:
    app = create_controller_app(
        registry=WorkerRegistry(),
        manager=manager,
        history=store,
        api_token="s3cret",
        health_interval_s=None,
    )
    spec = {"id": "w1", "url": "http://127.0.0.1:9", "capabilities": [CAP]}
    auth = {"authorization": "Bearer s3cret"}
    with serving(app) as url:
        assert httpx.post(url + "/workers", json=spec).status_code == 401
        assert httpx.post(url + "/workers", json=spec, headers=auth).status_code == 201
        assert httpx.post(url + "/workers/w1/heartbeat").status_code == 401
        assert httpx.post(url + "/workers/w1/heartbeat", headers=auth).status_code == 200
        assert httpx.get(url + "/workers").status_code == 200  # reads stay open
        assert httpx.get(url + "/healthz").status_code == 200
        assert httpx.get(url + "/slo").status_code == 401
        assert httpx.get(url + "/slo/breaches", headers=auth).json()["breaches"][0]["id"] == "b-1"
        assert httpx.delete(url + "/workers/w1").status_code == 401
        assert httpx.delete(url + "/workers/w1", headers=auth).status_code == 204
    store.close()


def test_without_a_token_the_slo_api_stays_open_and_the_registry_does_not(
    manager: SLOManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLOGUARD_API_TOKEN", raising=False)
    monkeypatch.delenv("SLOGUARD_REGISTRY_TOKEN", raising=False)
    app = create_controller_app(registry=WorkerRegistry(), manager=manager, health_interval_s=None)
    spec = {"id": "w1", "url": "http://127.0.0.1:9", "capabilities": [CAP]}
    with serving(app) as url:
        assert httpx.post(url + "/workers", json=spec).status_code == 401
        assert httpx.get(url + "/slo").status_code == 200


async def test_status_shows_the_tier_and_every_target(tmp_path: Path) -> None:
    slos = tmp_path / "tiered"
    slos.mkdir()
    (slos / "pdf.yml").write_text(
        "capability: {verb: convert, name: pdf}\ntier: gold\nslo: {latency: {p95_ms: 120}}\n",
        encoding="utf-8",
    )
    manager = SLOManager(slos, clock=ManualClock(1000.0))
    async with client_for(slo_api(manager, token="", clock=lambda: NOW)) as client:
        body = (await client.get(f"/slo/{CAP}")).json()
    assert body["tier"] == "gold"
    assert body["targets"] == {
        "p50_ms": None,
        "p95_ms": 120,
        "p99_ms": 200,
        "availability": 0.999,
        "error_rate_pct": 0.1,
        "throughput_min_rps": 100,
    }
    assert (body["throughput_rps"], body["demand_rps"]) == (None, None)  # no requests yet
