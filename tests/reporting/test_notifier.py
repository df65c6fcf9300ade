"""Notifier: retries with backoff and Retry-After, giving up, dedupe, the record gate, the queue."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from sloguard.reporting import Alert, AlertsConfig, Notifier
from tests.reporting.receivers import Receiver
from tests.reporting.statuses import NOW
from tests.servers import free_port, serving

ALERT = Alert(
    id="convert:document_to_pdf:budget:0.9:pagerduty:2025-11",
    capability="convert:document_to_pdf",
    kind="budget",
    channel="team",
    severity="warning",
    summary="convert:document_to_pdf: 95% of the error budget spent (alert at 90%)",
    fired_at=NOW,
)


class Sleeps:
    """An injected ``sleep`` that returns at once and keeps the delays asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with serving(app) as url:
        yield app, url


def webhook(url: str, **delivery: Any) -> AlertsConfig:
    return AlertsConfig.model_validate(
        {
            "sinks": {"hook": {"type": "webhook", "url": f"{url}/hook"}},
            "channels": {"team": ["hook"]},
            "delivery": {"base_delay_s": 1.0, "max_delay_s": 30.0, **delivery},
        }
    )


def notifier_for(cfg: AlertsConfig, sleeps: Sleeps, **options: Any) -> Notifier:
    return Notifier(cfg, sleep=sleeps, random=lambda: 0.5, env={}, **options)


async def test_a_500_then_a_429_are_retried_then_it_succeeds(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, url = receiver
    app.script = [(500, {}), (429, {"Retry-After": "7"})]
    sleeps = Sleeps()
    async with notifier_for(webhook(url), sleeps) as notifier:
        notifier.notify(ALERT)
        await notifier.join()
    assert len(app.received) == 3
    assert app.bodies()[0] == app.bodies()[2]  # the same body each time
    # Full jitter: 0.5 * 1 s * 2**0 after the 500; the 429's Retry-After after it.
    assert sleeps.delays == [0.5, 7.0]
    stats = notifier.stats
    assert (stats.delivered, stats.retried, stats.failed) == (1, 2, 0)
    assert "attempt 1 failed (HTTP 500); retrying in 0.50s" in caplog.text


async def test_backoff_grows_and_retry_after_is_capped(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    app.script = [(503, {}), (503, {}), (503, {}), (503, {"Retry-After": "3600"})]
    sleeps = Sleeps()
    async with notifier_for(webhook(url, max_delay_s=10.0), sleeps) as notifier:
        notifier.notify(ALERT)
        await notifier.join()
    assert sleeps.delays == [0.5, 1.0, 2.0, 10.0]
    assert notifier.stats.delivered == 1


async def test_it_gives_up_after_max_attempts(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, url = receiver
    app.default = 502
    sleeps = Sleeps()
    async with notifier_for(webhook(url, max_attempts=3), sleeps) as notifier:
        notifier.notify(ALERT)
        await notifier.join()
    assert len(app.received) == 3
    assert len(sleeps.delays) == 2
    assert (notifier.stats.delivered, notifier.stats.failed) == (0, 1)
    assert f"alert {ALERT.id} to sink hook: gave up after 3 attempts (HTTP 502)" in caplog.text


async def test_a_4xx_is_not_retried(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    app.default = 400
    sleeps = Sleeps()
    async with notifier_for(webhook(url), sleeps) as notifier:
        notifier.notify(ALERT)
        await notifier.join()
    assert len(app.received) == 1
    assert sleeps.delays == []
    assert notifier.stats.failed == 1


async def test_connection_errors_are_retried_and_no_secret_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/services/T000/B000/s3cr3t"  # nothing listens
    cfg = AlertsConfig.model_validate(
        {
            "sinks": {"slack": {"type": "slack", "url_env": "SLACK_URL"}},
            "channels": {"team": ["slack"]},
            "delivery": {"max_attempts": 2},
        }
    )
    sleeps = Sleeps()
    with caplog.at_level(logging.DEBUG):
        async with Notifier(cfg, sleep=sleeps, env={"SLACK_URL": nobody}) as notifier:
            notifier.notify(ALERT)
            await notifier.join()
    assert (notifier.stats.failed, len(sleeps.delays)) == (1, 1)
    assert "ConnectError" in caplog.text
    assert "s3cr3t" not in caplog.text


async def test_the_same_alert_id_is_delivered_once(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    async with notifier_for(webhook(url), Sleeps()) as notifier:
        assert notifier.notify(ALERT)
        assert not notifier.notify(ALERT)
        assert not notifier.notify(dataclasses.replace(ALERT, fired_at=NOW + 60))
        await notifier.join()
        assert not notifier.notify(ALERT)
    assert len(app.received) == 1
    assert notifier.stats.duplicates == 3


async def test_the_record_gate_skips_what_was_already_sent(receiver: tuple[Receiver, str]) -> None:
    """``record`` is the shared store's ``save_alert``: False means sent elsewhere already."""
    app, url = receiver
    stored: set[str] = {"sent-by-another-replica"}

    async def save_alert(alert: Alert) -> bool:
        if alert.id in stored:
            return False
        stored.add(alert.id)
        return True

    async with notifier_for(webhook(url), Sleeps(), record=save_alert) as notifier:
        notifier.notify(dataclasses.replace(ALERT, id="sent-by-another-replica"))
        notifier.notify(ALERT)
        await notifier.join()
    assert [body["id"] for body in app.bodies()] == [ALERT.id]
    assert notifier.stats.duplicates == 1
    assert ALERT.id in stored


async def test_a_failing_record_gate_still_sends(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, url = receiver

    def broken(alert: Alert) -> bool:
        raise ConnectionError("database down")

    async with notifier_for(webhook(url), Sleeps(), record=broken) as notifier:
        notifier.notify(ALERT)
        await notifier.join()
    assert len(app.received) == 1
    assert "recording alerts (they are sent anyway) failed" in caplog.text


async def test_a_full_queue_drops_without_waiting(caplog: pytest.LogCaptureFixture) -> None:
    cfg = AlertsConfig.model_validate({"delivery": {"queue_size": 2, "concurrency": 1}})
    async with Notifier(cfg) as notifier:
        # No await between the calls: the worker has not taken anything yet.
        results = [notifier.notify(dataclasses.replace(ALERT, id=f"a{i}")) for i in range(4)]
        assert results == [True, True, False, False]
        assert notifier.stats.dropped == 2
        await notifier.join()
        assert notifier.notify(dataclasses.replace(ALERT, id="a3"))  # dropped ids may come back
        await notifier.join()
    assert notifier.stats.delivered == 3
    assert "alert a2 dropped: 2 alerts already wait for delivery" in caplog.text


async def test_close_gives_up_on_what_cannot_finish(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    app.default = 503
    waiting, never = asyncio.Event(), asyncio.Event()

    async def stuck(seconds: float) -> None:
        waiting.set()
        await never.wait()

    notifier = Notifier(webhook(url), sleep=stuck, env={})
    notifier.notify(ALERT)
    await waiting.wait()  # the first attempt failed; the retry waits forever
    assert len(app.received) == 1
    await notifier.aclose(timeout_s=0)
    assert notifier.stats.dropped == 1
    assert not notifier.notify(dataclasses.replace(ALERT, id="late"))
    assert notifier.stats.dropped == 2
    await notifier.aclose()  # twice is harmless


async def test_a_record_gate_that_hangs_delays_an_alert_at_most_its_timeout(
    receiver: tuple[Receiver, str],
) -> None:
    """Delivery never depends on recording: a history store that hangs (here, one whose
    save waits on an event that never comes) lets every alert out after the timeout."""
    app, url = receiver
    never = asyncio.Event()

    async def hung(alert: Alert) -> bool:
        await never.wait()
        return True

    config = webhook(url, record_timeout_s=0.05)
    async with notifier_for(config, Sleeps(), record=hung) as notifier:
        for i in range(5):
            notifier.notify(dataclasses.replace(ALERT, id=f"a{i}"))
        await asyncio.wait_for(notifier.join(), timeout=10)
    assert sorted(body["id"] for body in app.bodies()) == [f"a{i}" for i in range(5)]
    assert notifier.stats.delivered == 5
    assert notifier.liveness.failures == 5
    assert notifier.liveness.last_error == (
        "recording alerts (they are sent anyway): TimeoutError: no answer within 0.05 s"
    )


async def test_a_sink_that_fails_unexpectedly_never_stops_the_others(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, url = receiver
    config = AlertsConfig.model_validate(
        {
            "sinks": {"hook": {"type": "webhook", "url": f"{url}/hook"}},
            "channels": {"team": ["hook", "log"]},
        }
    )
    # Details a JSON body cannot carry: the webhook sink raises while building its request.
    bad = dataclasses.replace(ALERT, id="bad", details={"at": object()})
    async with notifier_for(config, Sleeps()) as notifier:
        assert notifier.liveness.state() == "idle"
        notifier.notify(bad)
        notifier.notify(dataclasses.replace(bad, id="bad-2"))
        notifier.notify(ALERT)
        await notifier.join()
        assert notifier.liveness.state() == "running"
    assert notifier.liveness.state() == "stopped"
    assert [body["id"] for body in app.bodies()] == [ALERT.id]
    stats = notifier.stats
    assert (stats.delivered, stats.failed) == (4, 2)  # the log sink had all three
    assert notifier.liveness.failures == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert len(errors) == 1  # the sink's failure, logged once with its traceback
    assert "sink hook failed" in errors[0].getMessage()
