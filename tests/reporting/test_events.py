"""EventHub: subscribers that never block the publisher, and failsafe callbacks."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from sloguard.exceptions import ConfigurationError
from sloguard.reporting import (
    Alert,
    Breach,
    EventHub,
    ReportEvent,
    Subscription,
    alert_event,
    event_json,
)
from sloguard.reporting.incident import iso
from tests.reporting.statuses import NOW

BREACH = Breach(
    id="convert:document_to_pdf@1764000000",
    capability="convert:document_to_pdf",
    state="resolved",
    started_at=NOW,
    ended_at=NOW + 90,
    violations=("p95 latency 150ms > target 100ms",),
    worst={"p95_ms": 150.0},
)
ALERT = Alert(
    id="a1",
    capability="convert:document_to_pdf",
    kind="burn",
    channel="burn_rate",
    severity="critical",
    summary="burning",
    fired_at=NOW,
)


def event(n: int) -> ReportEvent:
    return ReportEvent("shedding", "convert:document_to_pdf", NOW + n, {"n": n})


async def test_every_subscriber_gets_every_event_in_order() -> None:
    hub = EventHub()
    first, second = hub.subscribe(), hub.subscribe()
    for n in range(3):
        hub.publish(event(n))
    assert [(await first.get()).data["n"] for _ in range(3)] == [0, 1, 2]
    assert [(await second.get()).data["n"] for _ in range(3)] == [0, 1, 2]
    assert first.get_nowait() is None


async def test_a_waiting_subscriber_wakes_on_publish() -> None:
    hub = EventHub()
    with hub.subscribe() as subscription:
        waiting = asyncio.create_task(subscription.get())
        await asyncio.sleep(0)
        assert not waiting.done()
        hub.publish(event(7))
        assert (await waiting).data["n"] == 7
    assert hub.subscribers == 0


async def test_a_slow_subscriber_loses_its_oldest_events() -> None:
    hub = EventHub(buffer=2)
    slow, fast = hub.subscribe(), hub.subscribe(buffer=10)
    for n in range(5):
        hub.publish(event(n))  # returns at once whatever the subscribers do
    assert [(await slow.get()).data["n"] for _ in range(2)] == [3, 4]
    assert slow.dropped == 3
    assert fast.dropped == 0


async def test_closing_ends_the_iteration_after_the_buffered_events() -> None:
    hub = EventHub()
    subscription = hub.subscribe()
    hub.publish(event(1))
    hub.publish(event(2))
    subscription.close()
    hub.publish(event(3))  # after close: not delivered
    assert [e.data["n"] async for e in subscription] == [1, 2]


async def test_aclose_wakes_every_subscriber() -> None:
    hub = EventHub()
    subscription = hub.subscribe()
    reader = asyncio.create_task(_collect(subscription))
    await asyncio.sleep(0)
    await hub.aclose()
    assert await reader == []


async def _collect(subscription: Subscription) -> list[ReportEvent]:
    return [e async for e in subscription]


async def test_callbacks_get_breaches_and_alerts_and_a_failing_one_does_not_stop_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = EventHub()
    seen: list[object] = []

    @hub.on_breach
    def broken(breach: Breach) -> None:
        raise RuntimeError("callback bug")

    @hub.on_breach
    async def broken_async(breach: Breach) -> None:
        raise RuntimeError("async callback bug")

    hub.on_breach(seen.append)

    @hub.on_alert
    async def keep(alert: Alert) -> None:
        await asyncio.sleep(0)
        seen.append(alert)

    hub.publish(ReportEvent("resolved", BREACH.capability, NOW, {"breach": BREACH}))
    hub.publish(alert_event(ALERT))
    hub.publish(event(1))  # no breach, no alert: no callback
    await hub.aclose()  # waits for the async callbacks
    assert seen == [BREACH, ALERT]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        "callback test_callbacks_get_breaches_and_alerts_and_a_failing_one_does_not_stop_others"
        ".<locals>.broken failed",
        "callback test_callbacks_get_breaches_and_alerts_and_a_failing_one_does_not_stop_others"
        ".<locals>.broken_async failed",
    ]


def test_an_async_callback_without_a_loop_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    hub = EventHub()
    called: list[Breach] = []

    async def later(breach: Breach) -> None:
        called.append(breach)

    hub.on_breach(later)
    hub.on_breach(called.append)
    hub.publish(ReportEvent("breach", BREACH.capability, NOW, {"breach": BREACH}))
    assert called == [BREACH]  # the sync one ran
    assert "is async but no event loop is running" in caplog.text


def test_events_as_json() -> None:
    breach = event_json(ReportEvent("resolved", BREACH.capability, NOW, {"breach": BREACH}))
    assert breach == {
        "type": "resolved",
        "capability": "convert:document_to_pdf",
        "at": iso(NOW),  # ISO 8601, as the REST API writes every instant
        "data": {
            "breach": {
                "id": "convert:document_to_pdf@1764000000",
                "capability": "convert:document_to_pdf",
                "state": "resolved",
                "started_at": iso(NOW),
                "ended_at": iso(NOW + 90),
                "violations": ["p95 latency 150ms > target 100ms"],
                "worst": {"p95_ms": 150.0},
                "severity": None,
                "credit_pct": None,
                "duration_s": 90.0,
            }
        },
    }
    alert = event_json(alert_event(ALERT))
    assert alert["type"] == "alert"
    assert alert["data"]["alert"]["id"] == "a1"
    assert alert["at"] == alert["data"]["alert"]["fired_at"] == iso(ALERT.fired_at)
    assert json.loads(json.dumps(alert)) == alert  # plain JSON all the way down


def test_buffers_must_hold_something() -> None:
    with pytest.raises(ConfigurationError, match="buffer"):
        EventHub(buffer=0)
    with pytest.raises(ConfigurationError, match="buffer"):
        EventHub().subscribe(buffer=0)
