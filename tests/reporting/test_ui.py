"""The /slo/ui dashboard: how it is served, and what a real headless Chromium shows.

The browser tests run the controller (with SLOGuard and its demo workers) under
uvicorn on a loopback port and load the page in Chromium; see tests/browser.py
for when they skip.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from sloguard import SLOGuard, SLOManager
from sloguard.observability.metrics import Metrics
from sloguard.reporting.records import Breach, Escalation
from sloguard.reporting.reporter import Reporter
from sloguard.reporting.sinks import AlertsConfig
from sloguard.reporting.sqlite import SQLiteHistory
from sloguard.reporting.ui import CONTENT_SECURITY_POLICY, dashboard_routes
from sloguard.routing import create_controller_app
from tests.browser import screenshot, start_chromium, wait_until
from tests.servers import serving

STATE = Path(__file__).resolve().parents[2] / "state"
CAPABILITIES = ("classify:email", "convert:document_to_pdf", "example:capability")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module; each test loads its own page (its own origin)."""
    driver = start_chromium()
    yield driver
    driver.quit()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A copy of the shipped state/: three SLO files, no workers (so demo workers)."""
    return Path(shutil.copytree(STATE, tmp_path / "state"))


def controller(state_dir: Path, **options: Any) -> SLOGuard:
    """What ``sloguard serve`` runs (a shared Reporter: /slo/ws and the shedding figures);
    every request re-reads the live status (no 0.5 s wait)."""
    manager = SLOManager(state_dir / "controller" / "slos")
    reporter = Reporter(
        manager,
        history=options.pop("history", None),
        alerts=options.pop("alerts", None),
        monitor_every_s=0.05,
    )
    app = create_controller_app(
        state_dir, manager=manager, reporter=reporter, health_interval_s=None, **options
    )
    return SLOGuard(
        app,
        manager=manager,
        reporter=reporter,
        evaluate_every_s=1e-9,
        reload_every_s=None,
        metrics=Metrics(CollectorRegistry()),
        random_source=lambda: 0.0,  # a shed priority is refused every time, not 95% of it
    )


def card(driver: Any, capability: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'article.card[data-capability="{capability}"]')


def field(driver: Any, capability: str, name: str) -> str:
    from selenium.webdriver.common.by import By

    text: str = (
        card(driver, capability).find_element(By.CSS_SELECTOR, f'[data-field="{name}"]').text
    )
    return text


def refused(driver: Any, capability: str) -> dict[str, str]:
    """The card's refusals, by reason (``window``: the SLO-window policy's)."""
    reasons = ("concurrency_limit", "queue_full", "deadline", "queue_timeout", "window")
    return {reason: field(driver, capability, f"refused-{reason}") for reason in reasons}


def cards_shown(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [
        e.get_attribute("data-capability")
        for e in driver.find_elements(By.CSS_SELECTOR, "article.card")
    ]


def connection(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, "connection").get_attribute("data-state"))


# -- served over HTTP (no browser) ------------------------------------------------------


async def test_the_page_and_its_files_are_served_with_a_strict_policy(state_dir: Path) -> None:
    app = create_controller_app(state_dir, api_token="")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        page = await c.get("/slo/ui")
        script = await c.get("/slo/ui/dashboard.js")
        style = await c.get("/slo/ui/dashboard.css")
        missing = await c.get("/slo/ui/chart.min.js")
        status = await c.get("/slo/classify:email")

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert '<meta name="sloguard-api" content="/slo">' in page.text
    assert 'src="/slo/ui/dashboard.js"' in page.text
    assert "http://" not in page.text  # nothing off-site
    assert "https://" not in page.text
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "new WebSocket(" in script.text
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert "dashboard.js" in missing.json()["detail"]
    assert status.json()["capability"] == "classify:email"  # /slo/{capability} still answers


async def test_the_page_needs_no_token_but_its_data_does(state_dir: Path) -> None:
    app = create_controller_app(state_dir, api_token="s3cret")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        page = await c.get("/slo/ui")
        data = await c.get("/slo")

    assert page.status_code == 200
    assert data.status_code == 401


async def test_under_a_prefix_the_page_finds_the_api_under_it(state_dir: Path) -> None:
    app = Starlette(routes=[Mount("/ops", app=create_controller_app(state_dir, api_token=""))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        page = await c.get("/ops/slo/ui")

    assert '<meta name="sloguard-api" content="/ops/slo">' in page.text
    assert 'href="/ops/slo/ui/dashboard.css"' in page.text


# -- in Chromium ------------------------------------------------------------------------


async def overload(url: str, capability_path: str, count: int) -> int:
    """``count`` slow low-priority requests at once, then one more: its status."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        slow = f"{capability_path}?delay_ms=150"
        low = {"x-priority": "low"}
        await asyncio.gather(*(client.post(slow, headers=low) for _ in range(count)))
        return (await client.post(capability_path, headers=low)).status_code


def test_the_page_shows_every_capability_and_shedding_after_an_overload(
    browser: Any, state_dir: Path, tmp_path: Path
) -> None:
    history = SQLiteHistory(tmp_path / "history.sqlite3")
    history.migrate()
    history.save_breach(
        Breach("b-1", "convert:document_to_pdf", "open", time.time() - 60, None, ("x",))
    )
    # The SLO-window loop alone, so that slow requests at low load shed low priority.
    email = state_dir / "controller" / "slos" / "classify_email.yml"
    email.write_text(
        email.read_text(encoding="utf-8").replace(
            "shed_priorities: [low, normal]}",
            'shed_priorities: [low, normal], concurrency: {mode: "off"}}',
        ),
        encoding="utf-8",
    )
    try:
        with serving(controller(state_dir, api_token="", history=history)) as url:
            browser.get(url + "/slo/ui")
            wait_until(browser, lambda d: sorted(cards_shown(d)) == list(CAPABILITIES), "3 cards")
            wait_until(browser, lambda d: connection(d) == "live", "the WebSocket connected")
            wait_until(
                browser, lambda d: field(d, "classify:email", "state") == "NO TRAFFIC", "no traffic"
            )
            assert field(browser, "classify:email", "p95-target") == "60 ms"
            assert field(browser, "classify:email", "availability-target") == "99.50%"
            assert field(browser, "classify:email", "p95") == "—"
            assert field(browser, "classify:email", "idempotency") == "—"  # no keyed request yet
            assert field(browser, "classify:email", "breaches") == "none"
            assert field(browser, "convert:document_to_pdf", "breaches").startswith("1 (since ")

            assert asyncio.run(overload(url, "/route/classify/email", 25)) == 503

            shedding = wait_until(
                browser,
                lambda d: card(d, "classify:email").get_attribute("data-state") == "shedding",
                "classify:email shedding",
            )
            assert shedding
            assert field(browser, "classify:email", "state") == "SHEDDING"
            assert field(browser, "classify:email", "shedding").startswith("active: ")
            assert "low 95%" in field(browser, "classify:email", "shedding")  # the guard's ratios
            assert "p95 latency" in field(browser, "classify:email", "violations")
            # The window policy alone: no limit, every refusal its own.
            assert field(browser, "classify:email", "limit") == "off (no limit)"
            email = httpx.get(url + "/slo/classify:email").json()["shedding"]
            assert email["concurrency"] == {"mode": "off"}
            assert email["shed"]["low"] > 0
            wait_until(
                browser,
                lambda d: refused(d, "classify:email")["window"] == str(email["shed"]["low"]),
                "the window's refusals",
            )
            assert refused(browser, "classify:email")["concurrency_limit"] == "—"
            assert float(field(browser, "classify:email", "p95").removesuffix(" ms")) > 60
            assert (
                card(browser, "convert:document_to_pdf").get_attribute("data-state") == "no traffic"
            )
            shot = screenshot(browser, tmp_path / "dashboard.png")
            assert shot.read_bytes().startswith(b"\x89PNG")
    finally:
        history.close()


def hold(url: str, path: str, priority: str, count: int, delay_ms: int) -> threading.Thread:
    """``count`` requests sent at once from a thread of their own, each taking
    ``delay_ms`` in the demo worker; join the thread to wait for their answers."""

    async def send() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            headers = {"x-priority": priority}
            slow = f"{path}?delay_ms={delay_ms}"
            await asyncio.gather(*(client.post(slow, headers=headers) for _ in range(count)))

    thread = threading.Thread(target=asyncio.run, args=(send(),), daemon=True)
    thread.start()
    return thread


def admission_shown(driver: Any, capability: str) -> dict[str, Any]:
    return {
        "limit": field(driver, capability, "limit"),
        "inflight": field(driver, capability, "inflight"),
        "queued": field(driver, capability, "queued"),
        "refused": refused(driver, capability),
    }


def admission_of(status: dict[str, Any]) -> dict[str, Any]:
    """What the card should show of ``status``, a ``GET /slo/{capability}`` answer."""
    shedding = status["shedding"]
    concurrency = shedding["concurrency"]
    by_reason = {
        reason: sum(concurrency["refused"].get(reason, {}).values())
        for reason in ("concurrency_limit", "queue_full", "deadline", "queue_timeout")
    }
    window = sum(shedding["shed"].values()) - sum(by_reason.values())
    return {
        "limit": f"{concurrency['limit']} ({concurrency['mode']})",
        "inflight": str(concurrency["inflight"]),
        "queued": str(concurrency["queued"]),
        "refused": {reason: str(n) for reason, n in {**by_reason, "window": window}.items()},
    }


def test_the_card_shows_the_concurrency_limit_as_slo_reports_it(
    browser: Any, state_dir: Path, tmp_path: Path
) -> None:
    """classify:email enforces, with the shipped adaptive limit (10 to start): ten slow
    requests fill it for 10 s, and the card shows what GET /slo does meanwhile."""
    from selenium.webdriver.common.by import By

    path = "/route/classify/email"
    with serving(controller(state_dir, api_token="")) as url, httpx.Client(base_url=url) as client:
        browser.get(url + "/slo/ui")
        wait_until(browser, lambda d: connection(d) == "live", "the WebSocket connected")
        wait_until(
            browser, lambda d: field(d, "classify:email", "limit") == "— (adaptive)", "no request"
        )
        # Dry runs have no limit, plainly.
        assert field(browser, "convert:document_to_pdf", "limit") == "off (no limit)"
        assert field(browser, "convert:document_to_pdf", "inflight") == "—"

        def concurrency() -> dict[str, Any]:
            found: dict[str, Any] = client.get("/slo/classify:email").json()["shedding"]
            return found["concurrency"]

        held = hold(url, path, "high", 10, delay_ms=10_000)  # the limit, for 10 s
        wait_until(browser, lambda d: concurrency().get("inflight") == 10, "10 in flight")
        late = hold(url, path, "high", 2, delay_ms=10)  # wait, and cannot meet the p99
        late.join(timeout=30)
        low = {"x-priority": "low"}
        assert [client.post(path, headers=low).status_code for _ in range(5)] == [503] * 5
        # The limiter starting to refuse comes over /slo/ws, under Events, at once.
        wait_until(
            browser,
            lambda d: any(
                "classify:email limit 10; refusing (" in e.text
                for e in d.find_elements(By.CSS_SELECTOR, '#events li[data-type="concurrency"]')
            ),
            "the limiter's event",
        )
        # Read afresh (rather than at the page's next 5 s refresh: the 10 s would be over).
        browser.refresh()

        def agrees(driver: Any) -> bool:
            status = client.get("/slo/classify:email").json()
            shown = admission_shown(driver, "classify:email")
            return shown["inflight"] == "10" and shown == admission_of(status)

        wait_until(browser, agrees, "the card agreeing with GET /slo")
        assert field(browser, "classify:email", "state") == "OK"  # no answer yet, but traffic
        assert concurrency()["refused"] == {
            "concurrency_limit": {"low": 5},  # low is refused at the limit, at once
            "deadline": {"high": 2},
        }
        assert admission_shown(browser, "classify:email") == {
            "limit": "10 (adaptive)",
            "inflight": "10",
            "queued": "0",
            "refused": {
                "concurrency_limit": "5",
                "queue_full": "0",
                "deadline": "2",
                "queue_timeout": "0",
                "window": "0",
            },
        }
        assert layout_problems(browser) == []
        screenshot(browser, tmp_path / "dashboard-limit.png")
        held.join(timeout=30)


def test_the_page_shows_the_tier_and_acknowledges_an_escalating_breach(
    browser: Any, state_dir: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    pdf = state_dir / "controller" / "slos" / "convert_document_to_pdf.yml"
    pdf.write_text("tier: gold\n" + pdf.read_text(encoding="utf-8"), encoding="utf-8")
    history = SQLiteHistory(tmp_path / "history.sqlite3")
    history.migrate()
    started = time.time() - 600
    history.save_breach(Breach("b-1", "convert:document_to_pdf", "open", started, None, ("x",)))
    history.start_escalation(
        Escalation("b-1", "convert:document_to_pdf", "standard", "breach", started, level=1)
    )
    try:
        policy = {"levels": [{"after_minutes": 60, "sinks": ["log"]}]}
        alerts = AlertsConfig.model_validate({"escalation": {"policies": {"standard": policy}}})
        app = controller(state_dir, api_token="s3cret", history=history, alerts=alerts)
        with serving(app) as url:
            browser.get(url + "/slo/ui?token=s3cret")
            wait_until(browser, lambda d: len(cards_shown(d)) == 3, "3 cards")
            pdf_card = card(browser, "convert:document_to_pdf")
            wait_until(browser, lambda d: field(d, "convert:document_to_pdf", "tier"), "the tier")
            assert field(browser, "convert:document_to_pdf", "tier") == "tier gold"
            assert field(browser, "classify:email", "tier") == ""
            button = wait_until(
                browser,
                lambda d: (
                    (b := pdf_card.find_element(By.CSS_SELECTOR, "button.ack")).is_displayed() and b
                ),
                "the acknowledge button",
            )
            assert (
                not card(browser, "classify:email")
                .find_element(By.CSS_SELECTOR, "button.ack")
                .is_displayed()
            )
            button.click()
            wait_until(browser, lambda d: not button.is_displayed(), "the button gone")
            [escalation] = history.escalations()
            assert escalation.state == "acknowledged"
    finally:
        history.close()


def test_the_page_asks_for_the_token_and_takes_it_from_the_address(
    browser: Any, state_dir: Path
) -> None:
    from selenium.webdriver.common.by import By

    with serving(controller(state_dir, api_token="s3cret")) as url:
        browser.get(url + "/slo/ui")
        form = wait_until(
            browser,
            lambda d: (
                d.find_element(By.ID, "token-form").is_displayed()
                and d.find_element(By.ID, "token-form")
            ),
            "the token form",
        )
        assert connection(browser) == "unauthorized"
        form.find_element(By.ID, "token-input").send_keys("wrong")
        form.find_element(By.CSS_SELECTOR, "button").click()
        wait_until(
            browser,
            lambda d: "refused" in d.find_element(By.ID, "token-error").text,
            "the token refused",
        )
        form.find_element(By.ID, "token-input").clear()
        form.find_element(By.ID, "token-input").send_keys("s3cret")
        form.find_element(By.CSS_SELECTOR, "button").click()
        wait_until(browser, lambda d: len(cards_shown(d)) == 3, "3 cards")

    with serving(controller(state_dir, api_token="s3cret")) as url:  # a new origin: no token kept
        browser.get(url + "/slo/ui?token=s3cret")
        wait_until(browser, lambda d: len(cards_shown(d)) == 3, "3 cards")
        assert "token" not in browser.current_url  # taken out of the address bar
        assert not browser.find_element(By.ID, "token-form").is_displayed()


STATUS = {
    "at": "2025-01-10T12:00:00Z",
    "capabilities": [
        {
            "capability": "convert:pdf",
            "compliant": False,
            "violations": ["p95 latency 250ms > target 100ms"],
            "window_seconds": 60,
            "requests": 120,
            "errors": 0,
            "availability": 1.0,
            "p50_ms": 40.0,
            "p95_ms": 250.0,
            "p99_ms": 400.0,
            "targets": {"p50_ms": 50, "p95_ms": 100, "p99_ms": 200, "availability": 0.99},
            "budget": {
                "budget": 0.01,
                "consumed": 0.25,
                "remaining": 0.75,
                "burn_rates": {"5m": 2.5, "1h": 0.5, "6h": 0.1},
            },
            "shedding": {
                "active": True,
                "rejection_ratios": {"low": 0.95, "normal": 0.5},
                # Every refusal, by priority: the limiter's below, and the window's.
                "shed": {"low": 1246, "normal": 96, "high": 7, "critical": 1},
                "concurrency": {
                    "mode": "adaptive",
                    "limit": 12,
                    "inflight": 12,
                    "queued": 3,
                    "refused": {
                        "concurrency_limit": {"low": 1234},
                        "queue_full": {"normal": 56},
                        "deadline": {"high": 7, "normal": 20},
                        "queue_timeout": {"critical": 1},
                    },
                },
            },
            "idempotency": {"hit_rate": 0.25, "hits": 5, "misses": 15},
        }
    ],
}


def test_with_a_websocket_the_page_is_live_and_shows_the_fields_it_will_get(
    browser: Any, tmp_path: Path
) -> None:
    """A server with what the /slo API is growing into: /slo/ws and per-capability
    idempotency. The page streams its events, and polls again when the socket closes."""
    close_socket = threading.Event()

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(STATUS)

    async def events(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(
            {
                "type": "breach",
                "capability": "convert:pdf",
                "at": "2025-01-10T12:00:00Z",
                "data": {"violations": ["p95 latency 250ms > target 100ms"]},
            }
        )
        await anyio.to_thread.run_sync(close_socket.wait)
        await websocket.close()

    app = Starlette(
        routes=[
            *dashboard_routes(),
            Route("/slo", status),
            WebSocketRoute("/slo/ws", events),
        ]
    )
    from selenium.webdriver.common.by import By

    with serving(app) as url:
        browser.get(url + "/slo/ui")
        wait_until(browser, lambda d: connection(d) == "live", "the WebSocket connected")
        event = wait_until(
            browser,
            lambda d: d.find_element(By.CSS_SELECTOR, '#events li[data-type="breach"]'),
            "the event",
        )
        assert "convert:pdf" in event.text
        assert "p95 latency 250ms" in event.text
        assert field(browser, "convert:pdf", "idempotency") == "25.0% (5 hits, 15 misses)"
        # The window policy's refusals on the shedding row; the limit's by reason below it.
        assert field(browser, "convert:pdf", "shedding") == (
            "active: normal 50% (20 shed), low 95% (12 shed)"
        )
        assert field(browser, "convert:pdf", "limit") == "12 (adaptive)"
        assert (
            field(browser, "convert:pdf", "inflight"),
            field(browser, "convert:pdf", "queued"),
        ) == (
            "12",
            "3",
        )
        assert refused(browser, "convert:pdf") == {
            "concurrency_limit": "1234",
            "queue_full": "56",
            "deadline": "27",
            "queue_timeout": "1",
            "window": "32",
        }
        assert field(browser, "convert:pdf", "budget") == "75.0%"
        assert field(browser, "convert:pdf", "burn-5m") == "2.5\N{MULTIPLICATION SIGN}"
        assert field(browser, "convert:pdf", "p95") == "250 ms"
        assert field(browser, "convert:pdf", "breaches") == "—"  # no /slo/breaches here
        screenshot(browser, tmp_path / "dashboard-live.png")

        close_socket.set()
        wait_until(browser, lambda d: connection(d) == "polling", "polling after the close")


# -- the layout, the 30 days, Events at open, one capability's page ---------------------


def status_of(capability: str, **changes: Any) -> dict[str, Any]:
    [one] = STATUS["capabilities"]
    return {**one, "capability": capability, **changes}


def thirty_days(capability: str) -> dict[str, Any]:
    """Daily records as /slo/compliance gives them: a bad day, a day without traffic."""
    records = []
    for day in range(30):
        value = None if day == 3 else (99.2 if day == 20 else 99.95)
        records.append(
            {
                "date": f"2025-01-{day + 1:02d}",
                "compliance_percentage": value,
                "target_percentage": 99.9,
                "uptime_minutes": 1439,
                "downtime_minutes": 1,
                "sla_breaches": 0,
                "requests": 1000,
                "errors": 0,
            }
        )
    return {"capability": capability, "records": records}


OPEN_BREACH = {
    "id": "convert:pdf@1736500000",
    "capability": "convert:pdf",
    "state": "open",
    "started_at": "2025-01-10T09:06:40Z",
    "ended_at": None,
    "duration_s": None,
    "violations": ["p95 latency 250ms > target 100ms"],
    "worst": {"p95_ms": 250.0},
    "report": "/slo/breaches/convert:pdf@1736500000/report",
}
LONG_NAMES = ("convert:pdf", "classify:email_attachments", "summarize:quarterly_report")


def seeded_server(first_status: threading.Event) -> Starlette:
    """/slo (waiting for ``first_status`` before its first answer), breaches, 30 days and a
    report: what the page reads from a server that keeps history."""

    async def status(request: Request) -> JSONResponse:
        await anyio.to_thread.run_sync(first_status.wait)
        capabilities = [
            status_of(LONG_NAMES[0]),
            status_of(LONG_NAMES[1], shedding={"active": False}, idempotency=None),
            status_of(LONG_NAMES[2], compliant=True, violations=[]),
        ]
        idempotency = {"hits": 7, "misses": 93, "hit_rate": 0.07}
        return JSONResponse({**STATUS, "capabilities": capabilities, "idempotency": idempotency})

    async def breaches(request: Request) -> JSONResponse:
        wanted = request.query_params.get("capability")
        return JSONResponse({"breaches": [OPEN_BREACH] if wanted in (None, "convert:pdf") else []})

    async def compliance(request: Request) -> JSONResponse:
        return JSONResponse({"reports": [thirty_days(c) for c in LONG_NAMES]})

    async def report(request: Request) -> Response:
        return Response("# Incident report: convert:pdf\n", media_type="text/markdown")

    return Starlette(
        routes=[
            *dashboard_routes(),
            Route("/slo", status),
            Route("/slo/breaches", breaches),
            Route("/slo/compliance", compliance),
            Route("/slo/breaches/{breach_id}/report", report),
        ]
    )


def layout_problems(driver: Any) -> list[str]:
    """What a person would see wrong: an empty column, a value cut or wrapped."""
    return list(
        driver.execute_script(
            """
            const problems = [];
            const grid = document.getElementById("cards").getBoundingClientRect();
            const cards = [...document.querySelectorAll("article.card")];
            const right = Math.max(...cards.map((c) => c.getBoundingClientRect().right));
            if (grid.right - right > 2) problems.push("empty right of the cards: " + grid.right);
            const values = document.querySelectorAll(
              "article.card dd, table.latency td, table.refused th, table.refused td"
            );
            for (const node of values) {
              const text = node.textContent;
              if (node.scrollWidth > node.clientWidth + 1) problems.push("cut: " + text);
              if (node.querySelector("table")) continue; // a table's rows are lines of their own
              const line = parseFloat(getComputedStyle(node).lineHeight);
              const height = node.getBoundingClientRect().height;
              if (height > line * 1.6) problems.push("wrapped: " + text);
            }
            return problems;
            """
        )
    )


@pytest.mark.parametrize("width", [1280, 1400, 1920])
def test_the_page_loads_then_fills_the_width_without_cutting_a_value(
    browser: Any, tmp_path: Path, width: int
) -> None:
    from selenium.webdriver.common.by import By

    first_status = threading.Event()
    browser.set_window_size(width, 1000)
    with serving(seeded_server(first_status)) as url:
        browser.get(url + "/slo/ui")
        loading = wait_until(
            browser, lambda d: d.find_element(By.ID, "loading").is_displayed(), "loading"
        )
        assert loading
        assert "Loading" in browser.find_element(By.ID, "loading").text
        assert cards_shown(browser) == []
        first_status.set()
        wait_until(browser, lambda d: len(cards_shown(d)) == 3, "3 cards")
        wait_until(
            browser,
            lambda d: field(d, LONG_NAMES[2], "compliance").endswith("over 29 days"),
            "the 30 days",
        )
        assert not browser.find_elements(By.ID, "loading")
        tops = {card(browser, c).rect["y"] for c in LONG_NAMES}
        assert len(tops) == 1  # one row of three at 1280 px and wider
        assert layout_problems(browser) == []
        chart = card(browser, LONG_NAMES[0]).find_element(By.CSS_SELECTOR, "svg.compliance")
        assert chart.get_attribute("data-days") == "29"  # the day without traffic is a gap
        assert chart.find_elements(By.CSS_SELECTOR, "path.area")
        assert chart.find_elements(By.CSS_SELECTOR, "line.target")
        # The process's hit rate once, in the header; a card shows only its own.
        assert browser.find_element(By.ID, "idempotency-all").text == (
            "idempotency hit rate, all capabilities: 7.0% (7 hits, 93 misses)"
        )
        assert field(browser, LONG_NAMES[0], "idempotency") == "25.0% (5 hits, 15 misses)"
        assert field(browser, LONG_NAMES[1], "idempotency") == "—"
        # The breach open before the page opened is under Events.
        event = browser.find_element(By.CSS_SELECTOR, '#events li[data-type="breach"]')
        assert "convert:pdf" in event.text
        assert "already open: p95 latency 250ms > target 100ms" in event.text
        shot = screenshot(browser, tmp_path / f"dashboard-{width}.png")
        assert shot.read_bytes().startswith(b"\x89PNG")
    browser.set_window_size(1280, 900)


def test_each_capability_has_a_page_with_its_breaches_and_reports(
    browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    first_status = threading.Event()
    first_status.set()
    with serving(seeded_server(first_status)) as url:
        browser.get(url + "/slo/ui")
        wait_until(browser, lambda d: len(cards_shown(d)) == 3, "3 cards")
        card(browser, "convert:pdf").find_element(By.CSS_SELECTOR, "h2 a").click()
        row = wait_until(
            browser,
            lambda d: d.find_element(By.CSS_SELECTOR, "#detail-breaches tr[data-breach]"),
            "the breach",
        )
        assert browser.current_url.endswith("#/capability/convert%3Apdf")
        assert [c for c in LONG_NAMES if card(browser, c).is_displayed()] == ["convert:pdf"]
        assert "p95 latency 250ms" in row.text
        assert "open" in row.text
        detail = browser.find_element(By.ID, "detail-compliance")
        assert detail.find_element(By.CSS_SELECTOR, "svg.compliance").get_attribute("data-days")
        row.find_element(By.CSS_SELECTOR, "button").click()
        report = wait_until(
            browser,
            lambda d: (
                "Incident report" in d.find_element(By.ID, "detail-report").text
                and d.find_element(By.ID, "detail-report")
            ),
            "the incident report",
        )
        assert report.is_displayed()
        screenshot(browser, tmp_path / "dashboard-capability.png")
        browser.find_element(By.CSS_SELECTOR, "#crumbs a").click()
        wait_until(
            browser, lambda d: all(card(d, c).is_displayed() for c in LONG_NAMES), "all cards"
        )
        assert not browser.find_element(By.ID, "detail").is_displayed()
