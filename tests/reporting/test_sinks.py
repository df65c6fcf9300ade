"""Sinks: the alerts file, and what each receiver gets, against real HTTP receivers."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sloguard.exceptions import AlertsFileError, ConfigurationError
from sloguard.reporting import Alert, AlertsConfig, Notifier, load_alerts_file
from tests.reporting.receivers import Receiver
from tests.reporting.statuses import NOW
from tests.servers import serving

STATE_ALERTS = Path(__file__).resolve().parents[2] / "state" / "controller" / "alerts.yml"

BUDGET = Alert(
    id="convert:document_to_pdf:budget:0.5:slack:2025-11",
    capability="convert:document_to_pdf",
    kind="budget",
    channel="team",
    severity="warning",
    summary="convert:document_to_pdf: 60% of the error budget spent (alert at 50%)",
    fired_at=NOW,
    details={"threshold": 0.5, "consumed": 0.6},
)
BREACH = Alert(
    id="convert:document_to_pdf@1763999940",
    capability="convert:document_to_pdf",
    kind="breach",
    channel="team",
    severity="warning",
    summary="convert:document_to_pdf: SLO breach: p95 latency 150ms > target 100ms",
    fired_at=NOW,
    details={"started_at": NOW - 60, "violations": ["p95 latency 150ms > target 100ms"]},
)
RESOLVED = Alert(
    id="convert:document_to_pdf@1763999940:resolved",
    capability="convert:document_to_pdf",
    kind="breach",
    channel="team",
    severity="warning",
    summary="convert:document_to_pdf: SLO breach resolved after 120s",
    fired_at=NOW + 120,
    details={"started_at": NOW - 60},
    resolves="convert:document_to_pdf@1763999940",
)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with serving(app) as url:
        yield app, url


def config(sink: dict[str, Any]) -> AlertsConfig:
    """``sink`` as the only sink of the ``team`` channel."""
    return AlertsConfig.model_validate({"sinks": {"it": sink}, "channels": {"team": ["it"]}})


async def deliver(cfg: AlertsConfig, *alerts: Alert, env: dict[str, str] | None = None) -> Notifier:
    async with Notifier(cfg, env=env or {}) as notifier:
        for alert in alerts:
            assert notifier.notify(alert)
        await notifier.join()
    return notifier


# -- each sink, end to end ---------------------------------------------------


async def test_webhook_posts_the_alert_as_json(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    sink = {"type": "webhook", "url": f"{url}/hooks/slo", "headers": {"X-Token": "t0k"}}
    notifier = await deliver(config(sink), BUDGET)
    [got] = app.received
    assert (got.method, got.path, got.headers["x-token"]) == ("POST", "/hooks/slo", "t0k")
    assert got.headers["content-type"] == "application/json"
    assert got.body == {
        "id": "convert:document_to_pdf:budget:0.5:slack:2025-11",
        "status": "firing",
        "capability": "convert:document_to_pdf",
        "kind": "budget",
        "channel": "team",
        "severity": "warning",
        "summary": "convert:document_to_pdf: 60% of the error budget spent (alert at 50%)",
        "fired_at": NOW,
        "fired_at_iso": "2025-11-24T16:00:00.000Z",
        "resolves": None,
        "details": {"threshold": 0.5, "consumed": 0.6},
    }
    assert (notifier.stats.delivered, notifier.stats.failed) == (1, 0)


async def test_slack_gets_an_incoming_webhook_message(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    await deliver(
        config({"type": "slack", "url_env": "SLACK_URL"}),
        BREACH,
        RESOLVED,
        env={"SLACK_URL": f"{url}/services/T0/B0/secret"},
    )
    assert {r.path for r in app.received} == {"/services/T0/B0/secret"}
    assert sorted(app.bodies(), key=str) == [
        {
            "text": ":warning: *[warning]* convert:document_to_pdf: SLO breach: p95 latency "
            "150ms > target 100ms\n`convert:document_to_pdf@1763999940` · channel `team`"
        },
        {
            "text": ":white_check_mark: *[resolved]* convert:document_to_pdf: SLO breach "
            "resolved after 120s\n`convert:document_to_pdf@1763999940:resolved` · channel `team`"
        },
    ]


async def test_pagerduty_triggers_then_resolves_by_dedup_key(
    receiver: tuple[Receiver, str],
) -> None:
    app, url = receiver
    sink = {"type": "pagerduty", "routing_key_env": "PD_KEY", "url": f"{url}/v2/enqueue"}
    async with Notifier(config(sink), env={"PD_KEY": "R0UT1NG"}) as notifier:
        notifier.notify(BREACH)
        await notifier.join()
        notifier.notify(RESOLVED)
        await notifier.join()
    assert [r.path for r in app.received] == ["/v2/enqueue", "/v2/enqueue"]
    trigger, resolve = app.bodies()
    assert trigger == {
        "routing_key": "R0UT1NG",
        "event_action": "trigger",
        "dedup_key": "convert:document_to_pdf@1763999940",
        "payload": {
            "summary": "convert:document_to_pdf: SLO breach: p95 latency 150ms > target 100ms",
            "source": "sloguard",
            "severity": "warning",
            "timestamp": "2025-11-24T16:00:00.000Z",
            "component": "convert:document_to_pdf",
            "group": "breach",
            "class": "team",
            "custom_details": {
                "started_at": NOW - 60,
                "violations": ["p95 latency 150ms > target 100ms"],
            },
        },
    }
    assert resolve == {
        "routing_key": "R0UT1NG",
        "event_action": "resolve",
        "dedup_key": "convert:document_to_pdf@1763999940",
    }


async def test_alertmanager_gets_the_v2_alerts_list(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    async with Notifier(config({"type": "alertmanager", "url": f"{url}/"})) as notifier:
        notifier.notify(BUDGET)
        notifier.notify(BREACH)
        await notifier.join()
        notifier.notify(RESOLVED)
        await notifier.join()
    assert {r.path for r in app.received} == {"/api/v2/alerts"}
    bodies = app.bodies()
    assert bodies[-1] == [
        {
            "labels": {
                "alertname": "sloguard_breach",
                "capability": "convert:document_to_pdf",
                "severity": "warning",
                "channel": "team",
                "alert_id": "convert:document_to_pdf@1763999940",
            },
            "annotations": {"summary": "convert:document_to_pdf: SLO breach resolved after 120s"},
            "startsAt": "2025-11-24T15:59:00.000Z",
            "endsAt": "2025-11-24T16:02:00.000Z",
        }
    ]
    firing = sorted(bodies[:2], key=str)
    assert firing == [
        [
            {
                "labels": {
                    "alertname": "sloguard_breach",
                    "capability": "convert:document_to_pdf",
                    "severity": "warning",
                    "channel": "team",
                    "alert_id": "convert:document_to_pdf@1763999940",
                },
                "annotations": {"summary": BREACH.summary},
                "startsAt": "2025-11-24T15:59:00.000Z",  # when the breach started
            }
        ],
        [
            {
                "labels": {
                    "alertname": "sloguard_budget",
                    "capability": "convert:document_to_pdf",
                    "severity": "warning",
                    "channel": "team",
                    "alert_id": "convert:document_to_pdf:budget:0.5:slack:2025-11",
                },
                "annotations": {"summary": BUDGET.summary},
                "startsAt": "2025-11-24T16:00:00.000Z",
            }
        ],
    ]


async def test_unmapped_channels_go_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sloguard.alerts"):
        notifier = await deliver(AlertsConfig(), BUDGET, RESOLVED)
    assert notifier.stats.delivered == 2
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"[warning] {BUDGET.summary} ({BUDGET.id}, channel team)"),
        (logging.WARNING, f"[resolved] {RESOLVED.summary} ({RESOLVED.id}, channel team)"),
    ]


async def test_a_channel_can_go_to_several_sinks(receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    cfg = AlertsConfig.model_validate(
        {
            "sinks": {
                "a": {"type": "webhook", "url": f"{url}/a"},
                "b": {"type": "alertmanager", "url": url},
            },
            "channels": {"team": ["a", "b", "log"]},
            "default": ["a"],
        }
    )
    unlisted = dataclasses.replace(BUDGET, id="other", channel="unlisted")
    notifier = await deliver(cfg, BUDGET, unlisted)
    assert sorted(r.path for r in app.received) == ["/a", "/a", "/api/v2/alerts"]
    assert notifier.stats.delivered == 4  # a, b and the log; then the default, a


# -- the alerts file ------------------------------------------------------------


def test_the_shipped_alerts_file_loads() -> None:
    cfg = load_alerts_file(STATE_ALERTS, env={})
    assert cfg.sinks_for("nobody-listed-this") == ("log",)
    assert set(cfg.channels) >= {"slack", "pagerduty", "burn_rate", "breach"}


def test_a_missing_or_empty_file_sends_everything_to_the_log(tmp_path: Path) -> None:
    assert load_alerts_file(tmp_path / "absent.yml") == AlertsConfig()
    (tmp_path / "empty.yml").write_text("", encoding="utf-8")
    assert load_alerts_file(tmp_path / "empty.yml").sinks_for("slack") == ("log",)


def test_a_full_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yml"
    path.write_text(
        "sinks:\n"
        "  team-slack: {type: slack, url_env: SLACK_URL}\n"
        "  oncall: {type: pagerduty, routing_key: abc, source: pdf-service}\n"
        "  am: {type: alertmanager, url: 'http://am:9093'}\n"
        "channels:\n"
        "  slack: [team-slack]\n"
        "  pagerduty: [oncall, am]\n"
        "default: [log, am]\n"
        "delivery: {max_attempts: 3, base_delay_s: 0.1}\n",
        encoding="utf-8",
    )
    cfg = load_alerts_file(path, env={"SLACK_URL": "https://hooks.slack.com/services/x"})
    assert cfg.sinks_for("pagerduty") == ("oncall", "am")
    assert cfg.sinks_for("burn_rate") == ("log", "am")
    assert cfg.delivery.max_attempts == 3
    assert "abc" not in repr(cfg)  # secrets stay out of reprs and logs


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("sinks: {x: {type: slack}}", "sinks.x", "exactly one of url and url_env"),
        ("sinks: {x: {type: slack, url: 'ftp://h'}}", "sinks.x.url", "http:// or https://"),
        ("sinks: {x: {type: sms, url: 'http://h'}}", "sinks.x", "does not match any"),
        ("sinks: {x: {type: pagerduty}}", "sinks.x", "routing_key"),
        ("sinks: {x: {type: webhook, url: 'http://h', retries: 3}}", "sinks.x.retries", "Extra"),
        ("channels: {slack: [nowhere]}", "channels.slack", "unknown sink 'nowhere'"),
        ("default: [nowhere]", "default", "unknown sink 'nowhere'"),
        ("delivery: {max_attempts: 0}", "delivery.max_attempts", "greater than or equal to 1"),
        ("delivery: {base_delay_s: '1'}", "delivery.base_delay_s", "valid number"),
        ("sinks: {x: {type: slack, url_env: NOPE}}", "sinks.x.url_env", "NOPE is not set"),
    ],
)
def test_bad_files_name_the_file_and_the_field(
    tmp_path: Path, text: str, field: str, message: str
) -> None:
    path = tmp_path / "alerts.yml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(AlertsFileError) as caught:
        load_alerts_file(path, env={})
    assert any(f == field and message in m for f, m in caught.value.problems), caught.value.problems
    assert str(caught.value).startswith(f"{path}: {field}")


@pytest.mark.parametrize(
    ("text", "message"),
    [("sinks: [a, b", "invalid YAML"), ("- a\n- b", "expected a mapping, got list")],
)
def test_unreadable_files_are_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "alerts.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AlertsFileError, match=message):
        load_alerts_file(path)


def test_a_secret_missing_from_the_environment_is_caught_at_construction() -> None:
    cfg = config({"type": "pagerduty", "routing_key_env": "PD_KEY"})
    with pytest.raises(ConfigurationError, match="alert sink 'it': environment variable PD_KEY"):
        Notifier(cfg, env={})


def test_every_error_of_the_file_is_reported_not_only_the_first(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yml"
    path.write_text(
        "sinks:\n"
        "  a: {type: slack, url: 'ftp://h'}\n"
        "  b: {type: pagerduty, routing_key_env: PD_KEY}\n"
        "channels: {slack: [nowhere], pagerduty: [a, elsewhere]}\n"
        "delivery: {max_attempts: 0}\n",
        encoding="utf-8",
    )
    with pytest.raises(AlertsFileError) as caught:
        load_alerts_file(path, env={})
    fields = sorted(field for field, _ in caught.value.problems)
    assert fields == [
        "channels.pagerduty",
        "channels.slack",
        "delivery.max_attempts",
        "sinks.a.url",
        "sinks.b.routing_key_env",
    ]
    assert len(str(caught.value).splitlines()) >= 5  # one line per problem


def test_a_key_given_twice_is_an_error_naming_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yml"
    path.write_text("default: [log]\ndefault: [log]\n", encoding="utf-8")
    with pytest.raises(
        AlertsFileError, match=r"default: duplicate key \(line 2, first on line 1\)"
    ):
        load_alerts_file(path)
