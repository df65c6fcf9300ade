"""Escalation: L1 -> L2 -> L3 on a fake clock, stopped by an ack or a resolution,
surviving a restart, one notification per level across replicas sharing PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sloguard.exceptions import AlertsFileError
from sloguard.reporting import Alert, AlertsConfig, Notifier
from sloguard.reporting.api import slo_api
from sloguard.reporting.escalation import EscalationStore, Escalator, MemoryEscalations
from sloguard.reporting.postgres import PostgresHistory
from sloguard.reporting.repository import open_repository
from sloguard.reporting.sinks import load_alerts_file
from sloguard.slo import SLOManager
from tests.postgres_server import unique_schema
from tests.reporting.conftest import write_slo
from tests.reporting.receivers import Receiver
from tests.reporting.statuses import NOW
from tests.servers import serving

MIN = 60.0
ALERT = Alert(
    id="convert:pdf@1764000000",
    capability="convert:pdf",
    kind="breach",
    channel="breach",
    severity="warning",
    summary="convert:pdf: SLO breach: p95 latency 150ms > target 100ms",
    fired_at=NOW,
)
RESOLUTION = Alert(
    id=f"{ALERT.id}:resolved",
    capability="convert:pdf",
    kind="breach",
    channel="breach",
    severity="warning",
    summary="convert:pdf: SLO breach resolved after 900s",
    fired_at=NOW + 15 * MIN,
    resolves=ALERT.id,
)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with serving(app) as url:
        yield app, url


def config(url: str) -> AlertsConfig:
    """The seed's policy: L1 at 5 min, L2 at 15, L3 at 30; each level its own sink."""
    return AlertsConfig.model_validate(
        {
            "sinks": {f"l{n}": {"type": "webhook", "url": f"{url}/l{n}"} for n in (1, 2, 3)},
            "escalation": {
                "policies": {
                    "standard": {
                        "levels": [
                            {"after_minutes": 5, "sinks": ["l1"]},
                            {"after_minutes": 15, "sinks": ["l2"]},
                            {"after_minutes": 30, "sinks": ["l3"]},
                        ]
                    }
                },
                "channels": {"breach": "standard"},
                "tiers": {"platinum": "standard"},
            },
        }
    )


def sent(app: Receiver) -> list[tuple[str, str]]:
    """(path, alert id) of every notification received, in order."""
    return [(r.path, r.body["id"]) for r in app.received]


async def walk(escalator: Escalator, notifier: Notifier, *minutes: float) -> list[str]:
    """Tick at each of ``minutes`` after NOW; the level alerts this escalator queued."""
    out = []
    for minute in minutes:
        out += [a.id for a in await escalator.tick(NOW + minute * MIN)]
    await notifier.join()
    return out


async def test_an_unacknowledged_alert_walks_l1_l2_l3_then_stops(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    app, url = receiver
    store = open_repository(tmp_path / "history.sqlite3")
    assert isinstance(store, EscalationStore)
    async with Notifier(config(url), env={}) as notifier:
        escalator = Escalator(config(url).escalation, store, notifier)
        await escalator.observe(ALERT)
        assert await walk(escalator, notifier, 0, 4.9) == []
        assert await walk(escalator, notifier, 5) == [f"{ALERT.id}:L1"]
        assert await walk(escalator, notifier, 10, 14.9) == []
        assert await walk(escalator, notifier, 15) == [f"{ALERT.id}:L2"]
        assert await walk(escalator, notifier, 30, 45, 120) == [f"{ALERT.id}:L3"]
    assert sent(app) == [
        ("/l1", f"{ALERT.id}:L1"),
        ("/l2", f"{ALERT.id}:L2"),
        ("/l3", f"{ALERT.id}:L3"),
    ]
    last = app.received[-1].body
    assert last["severity"] == "critical"
    assert last["summary"].startswith(f"[L3, unacknowledged for 30 min] {ALERT.summary}")
    assert last["details"]["ack"] == f"/slo/alerts/{ALERT.id}/ack"
    [escalation] = store.escalations()
    assert (escalation.level, escalation.state, escalation.stop_reason) == (
        3,
        "stopped",
        "exhausted",
    )
    store.close()


@pytest.mark.parametrize("stop", ["ack", "resolution"])
async def test_an_ack_or_the_resolution_stops_it(receiver: tuple[Receiver, str], stop: str) -> None:
    app, url = receiver
    store = MemoryEscalations()
    async with Notifier(config(url), env={}) as notifier:
        escalator = Escalator(config(url).escalation, store, notifier, clock=lambda: NOW + 7 * MIN)
        await escalator.observe(ALERT)
        assert await walk(escalator, notifier, 5) == [f"{ALERT.id}:L1"]
        if stop == "ack":
            acked = await escalator.ack(ALERT.id, "alice")
            assert acked is not None
            assert (acked.state, acked.acked_by, acked.acked_at) == (
                "acknowledged",
                "alice",
                NOW + 7 * MIN,
            )
        else:
            await escalator.observe(RESOLUTION)
        assert await walk(escalator, notifier, 15, 30, 60) == []
    assert sent(app) == [("/l1", f"{ALERT.id}:L1")]
    [escalation] = store.escalations()
    assert escalation.level == 1
    assert escalation.stop_reason == (None if stop == "ack" else "resolved")


async def test_a_restart_neither_loses_nor_repeats_a_level(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    app, url = receiver
    path = tmp_path / "history.sqlite3"
    first = open_repository(path)
    assert isinstance(first, EscalationStore)
    async with Notifier(config(url), env={}, record=first.save_alert) as notifier:
        escalator = Escalator(config(url).escalation, first, notifier)
        await escalator.observe(ALERT)
        assert await walk(escalator, notifier, 5) == [f"{ALERT.id}:L1"]
    first.close()
    # A new process on the same store; down from minute 6 to minute 31: L2 and L3 are due.
    second = open_repository(path)
    assert isinstance(second, EscalationStore)
    async with Notifier(config(url), env={}, record=second.save_alert) as notifier:
        escalator = Escalator(config(url).escalation, second, notifier)
        await escalator.observe(ALERT)  # the restarted monitor fires the same alert again
        assert await walk(escalator, notifier, 31, 40) == [f"{ALERT.id}:L2", f"{ALERT.id}:L3"]
    second.close()
    assert [alert_id for _, alert_id in sent(app)] == [f"{ALERT.id}:L{n}" for n in (1, 2, 3)]


async def test_two_replicas_sharing_postgresql_notify_each_level_once(
    receiver: tuple[Receiver, str], database_url: str
) -> None:
    app, url = receiver
    schema = unique_schema()
    stores = [open_repository(database_url, schema=schema) for _ in range(2)]
    notifiers = [Notifier(config(url), env={}, record=s.save_alert) for s in stores]
    replicas = []
    for store, notifier in zip(stores, notifiers, strict=True):
        assert isinstance(store, EscalationStore)
        replicas.append(Escalator(config(url).escalation, store, notifier))
    try:
        # Both replicas' monitors fire the alert; both tick at every step, at once.
        await asyncio.gather(*(r.observe(ALERT) for r in replicas))
        queued: list[str] = []
        for minute in (5, 5.1, 15, 16, 30, 31, 60):
            ticks = await asyncio.gather(*(r.tick(NOW + minute * MIN) for r in replicas))
            queued += [a.id for level_alerts in ticks for a in level_alerts]
        await asyncio.gather(*(n.join() for n in notifiers))
    finally:
        for notifier in notifiers:
            await notifier.aclose()
        assert isinstance(stores[0], PostgresHistory)
        stores[0].drop_schema()
        for store in stores:
            store.close()
    levels = [f"{ALERT.id}:L{n}" for n in (1, 2, 3)]
    assert sorted(queued) == levels  # each level claimed by exactly one replica
    assert sorted(alert_id for _, alert_id in sent(app)) == levels


def test_a_policy_attaches_per_channel_first_then_per_tier() -> None:
    tiers = {"convert:pdf": "platinum", "convert:doc": "bronze"}
    escalator = Escalator(
        config("http://x").escalation,
        MemoryEscalations(),
        Notifier(),
        tier_of=tiers.get,
    )
    budget = Alert("b", "convert:pdf", "budget", "slack", "warning", "spent", NOW)
    assert escalator.policy_for(ALERT) == "standard"  # channel breach
    assert escalator.policy_for(budget) == "standard"  # tier platinum
    assert (
        escalator.policy_for(Alert("c", "convert:doc", "budget", "slack", "warning", "s", NOW))
        is None
    )
    warning = Alert("w", "convert:pdf", "warning", "warning", "info", "near", NOW)
    assert escalator.policy_for(warning) is None  # a tier's policy is not for near misses
    assert escalator.policy_for(RESOLUTION) is None


@pytest.mark.parametrize(
    ("escalation", "field", "message"),
    [
        (
            "{policies: {p: {levels: [{after_minutes: 5, sinks: [nowhere]}]}}}",
            "escalation.policies.p.levels[0].sinks",
            "unknown sink 'nowhere'",
        ),
        (
            "{policies: {p: {levels: [{after_minutes: 5, sinks: [log]}]}}, channels: {b: q}}",
            "escalation.channels.b",
            "unknown policy 'q'",
        ),
        (
            "{tiers: {gold: q}}",
            "escalation.tiers.gold",
            "unknown policy 'q'",
        ),
        (
            "{policies: {p: {levels: [{after_minutes: 15, sinks: [log]}, "
            "{after_minutes: 5, sinks: [log]}]}}}",
            "escalation.policies.p",
            "levels[1].after_minutes=5 must be after levels[0]'s 15",
        ),
        (
            "{policies: {p: {levels: [{after_minutes: -1, sinks: [log]}]}}}",
            "escalation.policies.p.levels[0].after_minutes",
            "greater than or equal to 0",
        ),
        ("{policies: {p: {levels: []}}}", "escalation.policies.p.levels", "at least 1"),
        ("{policy: {}}", "escalation.policy", "Extra inputs"),
    ],
)
def test_a_bad_escalation_section_names_the_file_and_field(
    tmp_path: Path, escalation: str, field: str, message: str
) -> None:
    path = tmp_path / "alerts.yml"
    path.write_text(f"escalation: {escalation}\n", encoding="utf-8")
    with pytest.raises(AlertsFileError) as caught:
        load_alerts_file(path, env={})
    assert any(f == field and message in m for f, m in caught.value.problems), caught.value.problems
    assert str(caught.value).startswith(f"{path}: {field}")


async def test_ack_over_http(tmp_path: Path) -> None:
    write_slo(tmp_path / "slos")
    manager = SLOManager(tmp_path / "slos")
    store = MemoryEscalations()
    escalator = Escalator(
        config("http://x").escalation, store, Notifier(), clock=lambda: NOW + 6 * MIN
    )
    await escalator.observe(ALERT)
    app = slo_api(manager, token="s3cret", escalator=escalator)
    auth = {"authorization": "Bearer s3cret"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        path = f"/slo/alerts/{ALERT.id}/ack"
        assert (await client.post(path)).status_code == 401
        bad: list[tuple[Any, str]] = [
            (b"{oops", "invalid_json"),
            (b'{"by": 3}', "invalid_ack"),
            (b"[1]", "invalid_ack"),
        ]
        for body, error in bad:
            response = await client.post(path, content=body, headers=auth)
            assert response.status_code == 400
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["error"] == error
        unknown = await client.post("/slo/alerts/nope/ack", headers=auth)
        assert unknown.status_code == 404
        assert unknown.json()["error"] == "unknown_alert"
        assert unknown.json()["alert_id"] == "nope"
        acked = await client.post(path, json={"by": "alice"}, headers=auth)
        assert acked.status_code == 200
        assert acked.json()["state"] == "acknowledged"
        assert acked.json()["acknowledged_by"] == "alice"
        again = await client.post(path, json={"by": "bob"}, headers=auth)
        assert again.json()["acknowledged_by"] == "alice"  # the first acknowledgement stands
    assert [e.state for e in store.escalations()] == ["acknowledged"]
