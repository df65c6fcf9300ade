"""Where alerts go: channels mapped to sinks, and each sink's request.

An alert names a *channel* (``slack``, ``pagerduty``: the SLO file's words, or
``burn_rate`` and ``breach`` for the engine's own alerts). The operator maps
channels to *sinks* in a small YAML file (``state/controller/alerts.yml``)::

    sinks:
      team-slack: {type: slack, url_env: SLACK_WEBHOOK_URL}
      oncall: {type: pagerduty, routing_key_env: PAGERDUTY_ROUTING_KEY}
      am: {type: alertmanager, url: http://alertmanager:9093}
      audit: {type: webhook, url: https://example.com/hooks/slo, headers: {X-Token: abc}}
      mail: {type: email, host: smtp.example.com, port: 587, from: slo@example.com,
             to: [oncall@example.com], username: slo, password_env: SMTP_PASSWORD}
    channels:
      slack: [team-slack]
      pagerduty: [oncall, am]
      burn_rate: [oncall]
      warning: [team-slack]
    default: [log]          # channels not listed above
    delivery: {max_attempts: 5, base_delay_s: 0.5, max_delay_s: 30}
    escalation:
      policies:
        standard:           # notified while nobody acknowledges (seed: L1 5, L2 15, L3 30 min)
          levels:
            - {after_minutes: 5, sinks: [team-slack]}
            - {after_minutes: 15, sinks: [oncall]}
            - {after_minutes: 30, sinks: [mail]}
      channels: {breach: standard}      # alerts of these channels escalate
      tiers: {platinum: standard}       # and every alert of these tiers' capabilities

The ``log`` sink always exists (it writes to the ``sloguard.alerts`` logger).
Secrets (webhook URLs, routing keys) may be given inline or as the name of an
environment variable (``*_env``); they are kept as ``SecretStr`` and never
logged. Errors name the file and the field (``alerts.yml: sinks.oncall.url:
...``).

The payload builders are pure functions of the alert: what each receiver gets
is tested byte for byte against real HTTP receivers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from sloguard.exceptions import AlertsFileError, ConfigurationError
from sloguard.reporting.records import Alert
from sloguard.slo.yamlfile import YAMLDocumentError, parse_yaml

DEFAULT_PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
LOG_SINK = "log"

SinkName = Annotated[str, Field(strict=True, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")]
EnvName = Annotated[str, Field(strict=True, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
PositiveSeconds = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]


def _http_url(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")  # the URL itself stays unsaid
    return value


HttpUrl = Annotated[SecretStr, AfterValidator(_http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Secret(_Model):
    """A sink whose URL may be a secret: ``url`` inline or ``url_env``, exactly one."""

    url: HttpUrl | None = None
    url_env: EnvName | None = None

    @model_validator(mode="after")
    def _one_url(self) -> _Secret:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url and url_env")
        return self

    def resolved_url(self, env: Mapping[str, str]) -> str:
        if self.url is not None:
            return self.url.get_secret_value()
        assert self.url_env is not None
        return env_secret(env, self.url_env)


class LogSinkSpec(_Model):
    """Write the alert to the ``sloguard.alerts`` logger (the default sink)."""

    type: Literal["log"]


class WebhookSinkSpec(_Secret):
    """POST the alert as JSON (:func:`webhook_body`) to ``url``, with extra ``headers``."""

    type: Literal["webhook"]
    headers: dict[str, str] = {}


class SlackSinkSpec(_Secret):
    """A Slack incoming webhook: ``{"text": ...}``."""

    type: Literal["slack"]


class PagerDutySinkSpec(_Model):
    """PagerDuty Events API v2: trigger, and resolve when the alert is a resolution."""

    type: Literal["pagerduty"]
    routing_key: SecretStr | None = None
    routing_key_env: EnvName | None = None
    url: Annotated[str, Field(pattern=r"^https?://")] = DEFAULT_PAGERDUTY_URL
    source: Annotated[str, Field(min_length=1)] = "sloguard"

    @model_validator(mode="after")
    def _one_key(self) -> PagerDutySinkSpec:
        if (self.routing_key is None) == (self.routing_key_env is None):
            raise ValueError("give exactly one of routing_key and routing_key_env")
        return self

    def resolved_key(self, env: Mapping[str, str]) -> str:
        if self.routing_key is not None:
            return self.routing_key.get_secret_value()
        assert self.routing_key_env is not None
        return env_secret(env, self.routing_key_env)


class AlertmanagerSinkSpec(_Model):
    """Prometheus Alertmanager: POST a list of alerts to ``{url}/api/v2/alerts``."""

    type: Literal["alertmanager"]
    url: Annotated[str, Field(pattern=r"^https?://")]


EmailAddress = Annotated[str, Field(strict=True, pattern=r"^[^@\s<>]+@[^@\s<>]+$")]


class EmailSinkSpec(_Model):
    """Email through an SMTP server (the standard library's ``smtplib``, in a thread).

    ``starttls`` (default on) upgrades the connection before logging in; ``ssl`` uses
    implicit TLS (port 465) instead. The password comes from ``password_env``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type: Literal["email"]
    host: Annotated[str, Field(strict=True, min_length=1)]
    port: Annotated[int, Field(strict=True, ge=1, le=65535)] = 587
    sender: EmailAddress = Field(alias="from")
    to: Annotated[tuple[EmailAddress, ...], Field(min_length=1)]
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password_env: EnvName | None = None
    subject_prefix: str = "[sloguard]"

    @model_validator(mode="after")
    def _consistent(self) -> EmailSinkSpec:
        if self.ssl and self.starttls:
            raise ValueError("give ssl (implicit TLS) or starttls, not both")
        if (self.username is None) != (self.password_env is None):
            raise ValueError("give username and password_env together, or neither")
        return self


SinkSpec = Annotated[
    LogSinkSpec
    | WebhookSinkSpec
    | SlackSinkSpec
    | PagerDutySinkSpec
    | AlertmanagerSinkSpec
    | EmailSinkSpec,
    Field(discriminator="type"),
]
SINK_TYPES = ("log", "webhook", "slack", "pagerduty", "alertmanager", "email")


class DeliverySpec(_Model):
    """How hard the notifier tries, and how much it holds."""

    max_attempts: Annotated[int, Field(strict=True, ge=1, le=100)] = 5
    """Attempts per alert and sink, the first included; then it gives up (logged, counted)."""
    base_delay_s: PositiveSeconds = 0.5
    """Backoff before retry ``n`` (from 0) is uniform in [0, min(max_delay_s, base * 2**n))."""
    max_delay_s: PositiveSeconds = 30.0
    """Cap on one wait, a receiver's ``Retry-After`` included."""
    timeout_s: PositiveSeconds = 5.0
    """Per HTTP attempt."""
    record_timeout_s: PositiveSeconds = 2.0
    """How long an alert waits for the history store to record it (the check that no
    other replica sent it) before it is sent anyway."""
    queue_size: Annotated[int, Field(strict=True, ge=1)] = 1000
    """Alerts waiting for delivery; one more is dropped (logged, counted)."""
    concurrency: Annotated[int, Field(strict=True, ge=1, le=64)] = 4
    """Alerts delivered at once."""


class EscalationLevel(_Model):
    """Notify ``sinks`` once the alert has gone ``after_minutes`` unacknowledged."""

    after_minutes: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
    sinks: Annotated[tuple[SinkName, ...], Field(min_length=1)]


class EscalationPolicy(_Model):
    """Levels, in order of ``after_minutes`` (L1 first)."""

    levels: Annotated[tuple[EscalationLevel, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _increasing(self) -> EscalationPolicy:
        for index in range(1, len(self.levels)):
            before, level = self.levels[index - 1], self.levels[index]
            if level.after_minutes <= before.after_minutes:
                raise ValueError(
                    f"levels[{index}].after_minutes={level.after_minutes:g} must be after "
                    f"levels[{index - 1}]'s {before.after_minutes:g}"
                )
        return self


class EscalationSpec(_Model):
    """Named policies, attached per channel (first) or per SLA tier of the capability."""

    policies: dict[SinkName, EscalationPolicy] = {}
    channels: dict[Annotated[str, Field(min_length=1)], SinkName] = {}
    tiers: dict[SinkName, SinkName] = {}


class AlertsConfig(_Model):
    """Sinks by name, the sinks of each channel, delivery settings and escalation."""

    sinks: dict[SinkName, SinkSpec] = {}
    channels: dict[Annotated[str, Field(min_length=1)], tuple[SinkName, ...]] = {}
    default: tuple[SinkName, ...] = (LOG_SINK,)
    """The sinks of a channel that ``channels`` does not list."""
    delivery: DeliverySpec = DeliverySpec()
    escalation: EscalationSpec = EscalationSpec()

    @model_validator(mode="after")
    def _known_sinks(self) -> AlertsConfig:
        known = {LOG_SINK, *self.sinks}
        for name in self.default:
            if name not in known:
                raise ValueError(f"default: unknown sink {name!r} (sinks: {sorted(known)})")
        for channel, names in self.channels.items():
            for name in names:
                if name not in known:
                    raise ValueError(
                        f"channels.{channel}: unknown sink {name!r} (sinks: {sorted(known)})"
                    )
        escalation = self.escalation
        for policy_name, policy in escalation.policies.items():
            for index, level in enumerate(policy.levels):
                for name in level.sinks:
                    if name not in known:
                        raise ValueError(
                            f"escalation.policies.{policy_name}.levels[{index}].sinks: "
                            f"unknown sink {name!r} (sinks: {sorted(known)})"
                        )
        policies = sorted(escalation.policies)
        for section, attached in (("channels", escalation.channels), ("tiers", escalation.tiers)):
            for key, policy_name in attached.items():
                if policy_name not in escalation.policies:
                    raise ValueError(
                        f"escalation.{section}.{key}: unknown policy {policy_name!r} "
                        f"(policies: {policies})"
                    )
        return self

    def escalation_sinks(self) -> set[str]:
        """Every sink an escalation level names."""
        return {
            name
            for policy in self.escalation.policies.values()
            for level in policy.levels
            for name in level.sinks
        }

    def sink(self, name: str) -> SinkSpec:
        """The sink called ``name``; ``log`` exists even when not listed."""
        spec = self.sinks.get(name)
        if spec is None and name == LOG_SINK:
            return LogSinkSpec(type="log")
        if spec is None:
            raise KeyError(name)
        return spec

    def sinks_for(self, channel: str) -> tuple[str, ...]:
        """The sink names alerts on ``channel`` go to."""
        return self.channels.get(channel, self.default)


def load_alerts_file(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> AlertsConfig:
    """Read and validate an alerts file; a missing file is the default (everything to log).

    Raises :class:`AlertsFileError` naming the file and every bad field (as the SLO
    loader does: not only the first), also when a ``*_env`` names a variable that
    ``env`` (default ``os.environ``) lacks.
    """
    path = Path(path)
    if not path.exists():
        return AlertsConfig()
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise AlertsFileError(path, (("", f"cannot read file: {exc}"),)) from exc
    except YAMLDocumentError as exc:
        raise AlertsFileError(path, exc.problems) from exc
    if data is None:
        return AlertsConfig()
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise AlertsFileError(path, (("", f"expected a mapping, got {kind}"),))
    env = os.environ if env is None else env
    # The references and secrets are checked on the raw data too: pydantic skips the
    # cross-field check when a field is bad, and would hide them behind it.
    problems = _reference_problems(data, env)
    try:
        config = AlertsConfig.model_validate(data)
    except ValidationError as exc:
        problems += [p for p in _problems(exc) if p not in problems]
    if problems:
        raise AlertsFileError(path, tuple(problems))
    return config


def _reference_problems(data: Mapping[str, Any], env: Mapping[str, str]) -> list[tuple[str, str]]:
    """Every unknown sink a channel or ``default`` names, and every unset ``*_env``."""
    sinks = data.get("sinks")
    sinks = sinks if isinstance(sinks, dict) else {}
    known = sorted({LOG_SINK, *map(str, sinks)})
    problems: list[tuple[str, str]] = []
    for name, spec in sinks.items():
        for field in ("url_env", "routing_key_env", "password_env"):
            variable = spec.get(field) if isinstance(spec, dict) else None
            if isinstance(variable, str) and variable and not env.get(variable):
                problems.append(
                    (f"sinks.{name}.{field}", f"environment variable {variable} is not set")
                )
    channels = data.get("channels")
    named = (
        [(f"channels.{c}", names) for c, names in channels.items()]
        if isinstance(channels, dict)
        else []
    )
    named.append(("default", data.get("default", [])))
    for field, names in named:
        for name in names if isinstance(names, list) else []:
            if isinstance(name, str) and name not in known:
                problems.append((field, f"unknown sink {name!r} (sinks: {known})"))
    return problems


def _problems(exc: ValidationError) -> tuple[tuple[str, str], ...]:
    out = []
    for error in exc.errors():
        loc = list(error["loc"])
        # A discriminated union puts the tag in the path (sinks.x.slack.url); drop it.
        if len(loc) >= 3 and loc[0] == "sinks" and loc[2] in SINK_TYPES:
            del loc[2]
        path = ""
        for part in loc:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = error["msg"].removeprefix("Value error, ")
        prefixes = ("channels.", "default", "escalation.")
        if ": " in message and message.split(": ", 1)[0].startswith(prefixes):
            path, message = message.split(": ", 1)  # our cross-field checks name their field
        out.append((path, message))
    return tuple(out)


def env_secret(env: Mapping[str, str], variable: str) -> str:
    """The value of ``variable`` in ``env``; ConfigurationError when unset or empty."""
    value = env.get(variable)
    if not value:
        raise ConfigurationError(f"environment variable {variable} is not set")
    return value


# -- payloads -----------------------------------------------------------------


def iso(at: float) -> str:
    """RFC 3339 in UTC with milliseconds: ``2026-11-25T02:58:44.000Z``."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def webhook_body(alert: Alert) -> dict[str, Any]:
    """The generic webhook's JSON: every field of the alert, plus ``status`` and ISO time."""
    return {
        "id": alert.id,
        "status": "resolved" if alert.resolves is not None else "firing",
        "capability": alert.capability,
        "kind": alert.kind,
        "channel": alert.channel,
        "severity": alert.severity,
        "summary": alert.summary,
        "fired_at": alert.fired_at,
        "fired_at_iso": iso(alert.fired_at),
        "resolves": alert.resolves,
        "details": alert.details,
    }


_SLACK_ICONS = {
    "info": ":white_check_mark:",
    "warning": ":warning:",
    "critical": ":rotating_light:",
}


def slack_body(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``{"text": ...}`` (mrkdwn)."""
    resolved = alert.resolves is not None
    icon = _SLACK_ICONS["info" if resolved else alert.severity]
    label = "resolved" if resolved else alert.severity
    return {"text": f"{icon} *[{label}]* {alert.summary}\n`{alert.id}` · channel `{alert.channel}`"}


def pagerduty_body(alert: Alert, routing_key: str, source: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event: ``trigger``, or ``resolve`` for a resolution."""
    if alert.resolves is not None:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": alert.resolves}
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.id,
        "payload": {
            "summary": alert.summary[:1024],  # the API's limit
            "source": source,
            "severity": alert.severity,  # info, warning, critical are PagerDuty severities too
            "timestamp": iso(alert.fired_at),
            "component": alert.capability,
            "group": alert.kind,
            "class": alert.channel,
            "custom_details": alert.details,
        },
    }


def alertmanager_body(alert: Alert) -> list[dict[str, Any]]:
    """Alertmanager's ``POST /api/v2/alerts`` body: one alert; a resolution sets ``endsAt``.

    Alertmanager identifies an alert by its labels, so a resolution carries the
    labels of the alert it resolves (``alert_id`` is that alert's id, and the
    engine gives a resolution the severity and channel of what it resolves).
    """
    started = alert.details.get("started_at")
    starts_at = started if isinstance(started, int | float) else alert.fired_at
    item: dict[str, Any] = {
        "labels": {
            "alertname": f"sloguard_{alert.kind}",
            "capability": alert.capability,
            "severity": alert.severity,
            "channel": alert.channel,
            "alert_id": alert.resolves if alert.resolves is not None else alert.id,
        },
        "annotations": {"summary": alert.summary},
        "startsAt": iso(min(starts_at, alert.fired_at)),
    }
    if alert.resolves is not None:
        item["endsAt"] = iso(alert.fired_at)
    return [item]


def email_message(alert: Alert, spec: EmailSinkSpec) -> EmailMessage:
    """The alert as a plain-text email: subject ``[sloguard] [critical] summary``, the
    fields one per line, then the details as JSON; ``Message-ID`` from the alert id."""
    resolved = alert.resolves is not None
    label = "resolved" if resolved else alert.severity
    message = EmailMessage()
    message["Subject"] = " ".join(f"{spec.subject_prefix} [{label}] {alert.summary}".split())[:250]
    message["From"] = spec.sender
    message["To"] = ", ".join(spec.to)
    message["Date"] = formatdate(alert.fired_at, usegmt=True)
    message["Message-ID"] = make_msgid(idstring=hashlib.sha256(alert.id.encode()).hexdigest()[:16])
    message["X-Sloguard-Alert-Id"] = alert.id
    lines = [
        alert.summary,
        "",
        f"alert:      {alert.id}",
        f"status:     {'resolved' if resolved else 'firing'}",
        f"capability: {alert.capability}",
        f"kind:       {alert.kind}",
        f"severity:   {alert.severity}",
        f"channel:    {alert.channel}",
        f"fired at:   {iso(alert.fired_at)}",
    ]
    if resolved:
        lines.append(f"resolves:   {alert.resolves}")
    lines += ["", "details:", json.dumps(alert.details, indent=2, sort_keys=True, default=str)]
    message.set_content("\n".join(lines) + "\n")
    return message
