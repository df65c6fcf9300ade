"""The email sink against a real SMTP server on loopback (aiosmtpd): the message, the
login, and failures retried (4xx, a refused connection) or not (5xx) like other sinks."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from sloguard.exceptions import AlertsFileError
from sloguard.reporting import Alert, AlertsConfig, Notifier
from sloguard.reporting.sinks import load_alerts_file
from tests.reporting.statuses import NOW
from tests.servers import free_port

ALERT = Alert(
    id="convert:pdf@1764000000",
    capability="convert:pdf",
    kind="breach",
    channel="oncall",
    severity="warning",
    summary="convert:pdf: SLO breach: p95 latency 150ms > target 100ms",
    fired_at=NOW,
    details={"violations": ["p95 latency 150ms > target 100ms"]},
)


@dataclass
class Mailbox:
    """An aiosmtpd handler: keeps each message, answers DATA with the next scripted reply."""

    script: list[str] = field(default_factory=list)
    messages: list[tuple[Envelope, EmailMessage]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.script:
            return self.script.pop(0)
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope, parsed))
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login = (data.login.decode(), data.password.decode())
        self.logins.append(login)
        # handled=False: aiosmtpd answers the failure (535) itself.
        return AuthResult(success=login == ("slo", "hunter2"), handled=False)


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        auth_require_tls=False,  # loopback only; STARTTLS is the client's default elsewhere
    )
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def mail_config(port: int, **sink: Any) -> AlertsConfig:
    return AlertsConfig.model_validate(
        {
            "sinks": {
                "mail": {
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": port,
                    "from": "sloguard@example.com",
                    "to": ["oncall@example.com", "lead@example.com"],
                    "starttls": False,
                    **sink,
                }
            },
            "channels": {"oncall": ["mail"]},
            "delivery": {"max_attempts": 3, "base_delay_s": 1.0, "timeout_s": 5},
        }
    )


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def test_an_alert_is_mailed_with_login(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    config = mail_config(port, username="slo", password_env="SMTP_PASSWORD")
    async with Notifier(config, env={"SMTP_PASSWORD": "hunter2"}) as notifier:
        assert notifier.notify(ALERT)
        await notifier.join()
    assert notifier.stats.delivered == 1
    assert mailbox.logins == [("slo", "hunter2")]
    [(envelope, message)] = mailbox.messages
    assert envelope.mail_from == "sloguard@example.com"
    assert envelope.rcpt_tos == ["oncall@example.com", "lead@example.com"]
    assert message["Subject"] == f"[sloguard] [warning] {ALERT.summary}"
    assert message["From"] == "sloguard@example.com"
    assert message["To"] == "oncall@example.com, lead@example.com"
    assert message["X-Sloguard-Alert-Id"] == ALERT.id
    assert message["Date"].datetime.timestamp() == NOW
    body = message.get_content().replace("\r\n", "\n")
    assert body.startswith(ALERT.summary + "\n")
    assert f"alert:      {ALERT.id}\n" in body
    assert "status:     firing\n" in body
    assert '"p95 latency 150ms > target 100ms"' in body


async def test_a_resolution_says_so(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    resolved = Alert(
        id=f"{ALERT.id}:resolved",
        capability="convert:pdf",
        kind="breach",
        channel="oncall",
        severity="warning",
        summary="convert:pdf: SLO breach resolved after 90s",
        fired_at=NOW + 90,
        resolves=ALERT.id,
    )
    async with Notifier(mail_config(port), env={}) as notifier:
        notifier.notify(resolved)
        await notifier.join()
    [(_, message)] = mailbox.messages
    assert message["Subject"] == "[sloguard] [resolved] convert:pdf: SLO breach resolved after 90s"
    assert f"resolves:   {ALERT.id}\r\n" in message.get_content()


async def test_a_temporary_failure_is_retried_then_delivered(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    mailbox.script = ["451 4.3.0 try again later"]
    sleeps = Sleeps()
    async with Notifier(mail_config(port), env={}, sleep=sleeps, random=lambda: 0.5) as notifier:
        notifier.notify(ALERT)
        await notifier.join()
    assert (notifier.stats.retried, notifier.stats.delivered, notifier.stats.failed) == (1, 1, 0)
    assert sleeps.delays == [0.5]  # full jitter: 0.5 of the first 1 s window
    assert len(mailbox.messages) == 1


async def test_a_permanent_failure_is_not_retried(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    mailbox.script = ["554 5.7.1 rejected"]
    sleeps = Sleeps()
    async with Notifier(mail_config(port), env={}, sleep=sleeps) as notifier:
        notifier.notify(ALERT)
        await notifier.join()
    assert (notifier.stats.retried, notifier.stats.delivered, notifier.stats.failed) == (0, 0, 1)
    assert mailbox.messages == []


async def test_a_wrong_password_is_not_retried(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    config = mail_config(port, username="slo", password_env="SMTP_PASSWORD")
    async with Notifier(config, env={"SMTP_PASSWORD": "wrong"}, sleep=Sleeps()) as notifier:
        notifier.notify(ALERT)
        await notifier.join()
    assert (notifier.stats.retried, notifier.stats.failed) == (0, 1)
    assert mailbox.messages == []


async def test_no_server_is_retried_until_it_gives_up() -> None:
    sleeps = Sleeps()
    async with Notifier(mail_config(free_port()), env={}, sleep=sleeps) as notifier:
        notifier.notify(ALERT)
        await notifier.join()
    assert (notifier.stats.retried, notifier.stats.failed) == (2, 1)  # 3 attempts
    assert len(sleeps.delays) == 2


async def test_starttls_against_a_server_without_it_fails_clearly(
    smtp: tuple[Mailbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, port = smtp
    async with Notifier(mail_config(port, starttls=True), env={}, sleep=Sleeps()) as notifier:
        notifier.notify(ALERT)
        await notifier.join()
    assert (notifier.stats.retried, notifier.stats.failed) == (0, 1)
    assert "SMTPNotSupportedError" in caplog.text


@pytest.mark.parametrize(
    ("sink", "field", "message"),
    [
        ("{type: email, host: h, from: a@b, to: []}", "sinks.m.to", "at least 1"),
        ("{type: email, host: h, from: nobody, to: [a@b]}", "sinks.m.from", "pattern"),
        ("{type: email, host: h, from: a@b, to: [a@b], ssl: true}", "sinks.m", "not both"),
        ("{type: email, host: h, from: a@b, to: [a@b], username: u}", "sinks.m", "together"),
        (
            "{type: email, host: h, from: a@b, to: [a@b], username: u, password_env: NOPE}",
            "sinks.m.password_env",
            "NOPE is not set",
        ),
        ("{type: email, host: h, from: a@b, to: [a@b], port: 0}", "sinks.m.port", "greater"),
    ],
)
def test_a_bad_email_sink_names_the_file_and_field(
    tmp_path: Any, sink: str, field: str, message: str
) -> None:
    path = tmp_path / "alerts.yml"
    path.write_text(f"sinks: {{m: {sink}}}\n", encoding="utf-8")
    with pytest.raises(AlertsFileError) as caught:
        load_alerts_file(path, env={})
    assert any(f == field and message in m for f, m in caught.value.problems), caught.value.problems
