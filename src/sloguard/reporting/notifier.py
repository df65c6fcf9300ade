"""Delivering alerts to their sinks, in the background, with retries.

:meth:`Notifier.notify` is synchronous and O(1): it checks the alert's id
against the ids already taken, and puts the alert on a bounded queue (full:
dropped, logged and counted). Worker tasks drain the queue; each alert first
passes the optional ``record`` gate (the shared history's ``save_alert``:
False means another process or an earlier run already sent it), then goes to
every sink of its channel at once (or of the escalation level it was queued
for). Delivery never depends on recording: a ``record`` that fails, or has not
answered within ``delivery.record_timeout_s``, lets the alert go out anyway
(better a second page than a lost one). A sink that fails unexpectedly is
logged (once until it works again) and counted; the other sinks and alerts go
on (:attr:`Notifier.liveness`).

A failed attempt (connection error, timeout, HTTP 5xx or 429, an SMTP
4xx reply) is retried after a full-jitter exponential backoff, or the
receiver's ``Retry-After``, each capped at ``max_delay_s``; after
``max_attempts`` the notifier gives up (logged, counted). Other 4xx answers
and SMTP 5xx replies are not retried: the request itself is wrong.

Email goes through the standard library's ``smtplib`` in a worker thread, one
connection per message (alerts are rare; a pooled connection would only have
to be kept alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import random as _random
import smtplib
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from sloguard._clock import Clock
from sloguard.client.backoff import Random, full_jitter, parse_retry_after
from sloguard.exceptions import ConfigurationError
from sloguard.liveness import Liveness
from sloguard.reporting.alerts import RecentIds
from sloguard.reporting.records import Alert
from sloguard.reporting.sinks import (
    AlertmanagerSinkSpec,
    AlertsConfig,
    EmailSinkSpec,
    LogSinkSpec,
    PagerDutySinkSpec,
    SinkSpec,
    SlackSinkSpec,
    WebhookSinkSpec,
    alertmanager_body,
    email_message,
    env_secret,
    pagerduty_body,
    slack_body,
    webhook_body,
)

logger = logging.getLogger("sloguard.alerts")

Record = Callable[[Alert], bool | Awaitable[bool]]
"""Store an alert; return False if its id was already stored (then it is not sent again)."""
Sleep = Callable[[float], Awaitable[None]]

_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


@dataclass(slots=True)
class NotifierStats:
    """Counts since the notifier started. Deliveries count once per alert and sink."""

    queued: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    """Deliveries given up: attempts exhausted, or refused with a 4xx other than 429."""
    dropped: int = 0
    """Alerts not queued (queue full, notifier closed) or left undelivered at close."""
    duplicates: int = 0
    """Alerts skipped because their id was already taken, here or by ``record``."""


@dataclass(frozen=True, slots=True)
class _Attempt:
    """How one delivery attempt went."""

    ok: bool
    reason: str = ""
    retry: bool = True
    wait: float | None = None
    """The receiver's ``Retry-After``, when it gave one."""


@dataclass(frozen=True, slots=True)
class _Target:
    """One sink, ready to send: its secrets resolved once, at construction."""

    name: str
    spec: SinkSpec
    url: str
    secret: str
    headers: Mapping[str, str]

    def body(self, alert: Alert) -> Any:
        spec = self.spec
        if isinstance(spec, PagerDutySinkSpec):
            return pagerduty_body(alert, self.secret, spec.source)
        if isinstance(spec, SlackSinkSpec):
            return slack_body(alert)
        if isinstance(spec, AlertmanagerSinkSpec):
            return alertmanager_body(alert)
        return webhook_body(alert)


class Notifier:
    """Sends alerts to the sinks of their channel; see the module docs.

    Use it from one event loop: ``notify`` from the loop's thread, and
    ``await notifier.aclose()`` (or ``async with``) at shutdown. ``sleep`` and
    ``random`` are injectable so that retry tests do not wait; ``client`` lets
    the caller share an ``httpx.AsyncClient`` (then the caller closes it).
    """

    def __init__(
        self,
        config: AlertsConfig | None = None,
        *,
        record: Record | None = None,
        client: httpx.AsyncClient | None = None,
        env: Mapping[str, str] | None = None,
        sleep: Sleep = asyncio.sleep,
        random: Random = _random.random,
        wall_clock: Clock = time.time,
    ) -> None:
        self.config = config if config is not None else AlertsConfig()
        self.stats = NotifierStats()
        self._record = record
        self._delivery = self.config.delivery
        # Made on the first HTTP delivery: most setups only log, and a client (its TLS
        # context) costs tens of milliseconds at every SLOGuard's start-up otherwise.
        self._client = client
        self._own_client = client is None
        self._sleep = sleep
        self._random = random
        self._wall_clock = wall_clock
        self._targets = self._resolve(os.environ if env is None else env)
        self._seen = RecentIds()
        self._queue: asyncio.Queue[tuple[Alert, tuple[str, ...] | None]] = asyncio.Queue(
            self._delivery.queue_size
        )
        self._workers: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._closed = False
        self.liveness = Liveness("alert_notifier", clock=wall_clock)
        """Running from the first alert to :meth:`aclose`; a pass is an alert handled."""

    def _resolve(self, env: Mapping[str, str]) -> dict[str, _Target]:
        targets = {}
        names = {
            *self.config.default,
            *(n for ns in self.config.channels.values() for n in ns),
            *self.config.escalation_sinks(),
        }
        for name in sorted(names):
            spec = self.config.sink(name)
            url = secret = ""
            headers: Mapping[str, str] = {}
            try:
                if isinstance(spec, WebhookSinkSpec | SlackSinkSpec):
                    url = spec.resolved_url(env)
                    headers = spec.headers if isinstance(spec, WebhookSinkSpec) else {}
                elif isinstance(spec, PagerDutySinkSpec):
                    url, secret = spec.url, spec.resolved_key(env)
                elif isinstance(spec, AlertmanagerSinkSpec):
                    url = spec.url.rstrip("/") + "/api/v2/alerts"
                elif isinstance(spec, EmailSinkSpec) and spec.password_env is not None:
                    secret = env_secret(env, spec.password_env)
            except ConfigurationError as exc:
                raise ConfigurationError(f"alert sink {name!r}: {exc}") from None
            targets[name] = _Target(name, spec, url, secret, headers)
        return targets

    # -- the caller's side --------------------------------------------------

    def notify(self, alert: Alert, *, sinks: tuple[str, ...] | None = None) -> bool:
        """Queue ``alert`` for delivery to its channel's sinks (or to ``sinks``: an
        escalation level's); never waits. False if skipped (duplicate) or dropped."""
        if self._closed:
            self.stats.dropped += 1
            logger.warning("alert %s dropped: the notifier is closed", alert.id)
            return False
        if not self._seen.add(alert.id):
            self.stats.duplicates += 1
            return False
        if not self._workers:
            self._start()
        try:
            self._queue.put_nowait((alert, sinks))
        except asyncio.QueueFull:
            self._seen.discard(alert.id)  # not sent: a later notify may try again
            self.stats.dropped += 1
            logger.error(
                "alert %s dropped: %d alerts already wait for delivery",
                alert.id,
                self._queue.qsize(),
            )
            return False
        self.stats.queued += 1
        return True

    async def join(self) -> None:
        """Wait until every queued alert has been delivered or given up."""
        await self._queue.join()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Stop taking alerts, give the queued ones ``timeout_s`` to finish, then stop."""
        if self._closed:
            return
        self._closed = True
        if self._workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)
            left = self._queue.qsize() + self._in_flight
            if left:
                self.stats.dropped += left
                logger.error("notifier closed with %d alerts undelivered", left)
            for worker in self._workers:
                worker.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self.liveness.stopped()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def __aenter__(self) -> Notifier:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the workers' side ----------------------------------------------------

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self.liveness.started()
        self._workers = [
            loop.create_task(self._work(), name=f"sloguard-notifier-{i}")
            for i in range(self._delivery.concurrency)
        ]

    async def _work(self) -> None:
        while True:
            alert, sinks = await self._queue.get()
            self._in_flight += 1
            try:
                await self._deliver(alert, sinks)
            except Exception as exc:
                self.liveness.failed(f"delivering alert {alert.id}", exc, logger)
            finally:
                self._in_flight -= 1
                self._queue.task_done()
                self.liveness.passed()

    async def _deliver(self, alert: Alert, sinks: tuple[str, ...] | None) -> None:
        if self._record is not None and not await self._first_time(alert):
            self.stats.duplicates += 1
            logger.info("alert %s was already sent (by this or another process)", alert.id)
            return
        names = self.config.sinks_for(alert.channel) if sinks is None else sinks
        await asyncio.gather(*(self._send_isolated(alert, name) for name in names))

    async def _first_time(self, alert: Alert) -> bool:
        assert self._record is not None
        try:
            result = self._record(alert)
            if inspect.isawaitable(result):
                async with asyncio.timeout(self._delivery.record_timeout_s):
                    result = await result
        except Exception as exc:
            # Better a second page than a lost one: deliver, this process dedupes anyway.
            if isinstance(exc, TimeoutError):
                exc = TimeoutError(f"no answer within {self._delivery.record_timeout_s:g} s")
            self.liveness.failed("recording alerts (they are sent anyway)", exc, logger)
            return True
        self.liveness.recovered("recording alerts (they are sent anyway)", logger)
        return bool(result)

    async def _send_isolated(self, alert: Alert, name: str) -> None:
        """:meth:`_send` to sink ``name``; a failure of this sink never stops the others."""
        item = f"sink {name}"
        try:
            await self._send(alert, self._targets[name])
        except Exception as exc:
            self.stats.failed += 1
            self.liveness.failed(item, exc, logger)
        else:
            self.liveness.recovered(item, logger)

    async def _send(self, alert: Alert, target: _Target) -> None:
        if isinstance(target.spec, LogSinkSpec):
            level = _LOG_LEVELS[alert.severity]
            status = "resolved" if alert.resolves is not None else alert.severity
            logger.log(
                level, "[%s] %s (%s, channel %s)", status, alert.summary, alert.id, alert.channel
            )
            self.stats.delivered += 1
            return
        delivery = self._delivery
        send = self._smtp if isinstance(target.spec, EmailSinkSpec) else self._post
        reason = ""
        for attempt in range(1, delivery.max_attempts + 1):
            outcome = await send(alert, target)
            if outcome.ok:
                self.stats.delivered += 1
                return
            reason = outcome.reason
            if not outcome.retry:
                self.stats.failed += 1
                logger.error(
                    "alert %s to sink %s refused (%s); not retried", alert.id, target.name, reason
                )
                return
            if attempt == delivery.max_attempts:
                break
            wait = outcome.wait
            if wait is None:
                wait = full_jitter(
                    attempt - 1, delivery.base_delay_s, delivery.max_delay_s, self._random
                )
            wait = min(wait, delivery.max_delay_s)
            self.stats.retried += 1
            logger.warning(
                "alert %s to sink %s: attempt %d failed (%s); retrying in %.2fs",
                alert.id,
                target.name,
                attempt,
                reason,
                wait,
            )
            await self._sleep(wait)
        self.stats.failed += 1
        logger.error(
            "alert %s to sink %s: gave up after %d attempts (%s)",
            alert.id,
            target.name,
            delivery.max_attempts,
            reason,
        )

    async def _post(self, alert: Alert, target: _Target) -> _Attempt:
        try:
            response = await self._http().post(
                target.url,
                json=target.body(alert),
                headers=target.headers,
                timeout=self._delivery.timeout_s,
            )
        except httpx.TransportError as exc:
            return _Attempt(False, type(exc).__name__)  # never str(exc): it may hold the URL
        if response.is_success:
            return _Attempt(True)
        status = response.status_code
        if status != 429 and status < 500:
            return _Attempt(False, f"HTTP {status}", retry=False)
        header = response.headers.get("retry-after")
        wait = None if header is None else parse_retry_after(header, self._wall_clock())
        return _Attempt(False, f"HTTP {status}", wait=wait)

    async def _smtp(self, alert: Alert, target: _Target) -> _Attempt:
        spec = target.spec
        assert isinstance(spec, EmailSinkSpec)
        message = email_message(alert, spec)
        timeout = self._delivery.timeout_s
        try:
            refused = await asyncio.to_thread(_send_mail, spec, target.secret, message, timeout)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            return _Attempt(False, f"SMTP recipients refused {codes}", retry=min(codes) < 500)
        except smtplib.SMTPResponseException as exc:
            reason = f"SMTP {exc.smtp_code}"
            return _Attempt(False, reason, retry=400 <= exc.smtp_code < 500)
        except (smtplib.SMTPNotSupportedError, ssl.SSLError) as exc:
            return _Attempt(False, f"{type(exc).__name__}: {exc}", retry=False)
        except (smtplib.SMTPException, OSError) as exc:
            return _Attempt(False, type(exc).__name__)
        if refused:
            logger.warning("alert %s to sink %s: refused by %s", alert.id, target.name, refused)
        return _Attempt(True)


def _send_mail(
    spec: EmailSinkSpec, password: str, message: Any, timeout: float
) -> dict[str, tuple[int, bytes]]:
    """Send one message (blocking: run it in a thread); the recipients refused, if any."""
    context = ssl.create_default_context()
    smtp: smtplib.SMTP = (
        smtplib.SMTP_SSL(spec.host, spec.port, timeout=timeout, context=context)
        if spec.ssl
        else smtplib.SMTP(spec.host, spec.port, timeout=timeout)
    )
    with smtp:
        if spec.starttls:
            smtp.starttls(context=context)
        if spec.username is not None:
            smtp.login(spec.username, password)
        return smtp.send_message(message)
