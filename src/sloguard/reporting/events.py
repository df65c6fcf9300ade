"""Live events: subscribers (the ``/slo/ws`` WebSocket) and in-process callbacks.

:meth:`EventHub.publish` never waits. Each subscriber has a bounded buffer; a
subscriber that falls behind loses its oldest events (counted in
:attr:`Subscription.dropped`), never slowing the publisher or the other
subscribers. Callbacks registered with :meth:`EventHub.on_breach` and
:meth:`EventHub.on_alert` may be plain functions or coroutine functions; one
that raises is logged and the others still run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

from sloguard.exceptions import ConfigurationError
from sloguard.reporting.incident import iso
from sloguard.reporting.records import Alert, Breach, ReportEvent

logger = logging.getLogger("sloguard.reporting")

BreachCallback = Callable[[Breach], Awaitable[None] | None]
AlertCallback = Callable[[Alert], Awaitable[None] | None]
_B = TypeVar("_B", bound=BreachCallback)
_A = TypeVar("_A", bound=AlertCallback)

_BREACH_EVENTS = frozenset({"warning", "breach", "resolved"})


def alert_event(alert: Alert) -> ReportEvent:
    """The live event announcing ``alert``."""
    return ReportEvent("alert", alert.capability, alert.fired_at, {"alert": alert})


def event_json(event: ReportEvent) -> dict[str, Any]:
    """``event`` as JSON-ready data: records become objects (a breach with ``duration_s``),
    and every instant (``at``, ``*_at``) is ISO 8601 UTC, as the REST API writes it."""
    return {
        "type": event.type,
        "capability": event.capability,
        "at": iso(event.at),
        "data": {key: _jsonable(value) for key, value in event.data.items()},
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Breach):
        return {**_jsonable(dataclasses.asdict(value)), "duration_s": value.duration_s}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _instant(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _instant(key: str, value: Any) -> Any:
    """``value`` made JSON-ready; an instant (a number under a ``*_at`` key) as ISO 8601."""
    if key.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool):
        return iso(value)
    return _jsonable(value)


class Subscription:
    """One subscriber's buffer of events; iterate it with ``async for``, then ``close()``."""

    def __init__(self, hub: EventHub, buffer: int) -> None:
        self._hub = hub
        self._events: deque[ReportEvent] = deque(maxlen=buffer)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0
        """Events lost because this subscriber fell ``buffer`` events behind."""

    def _put(self, event: ReportEvent) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped += 1  # the deque pushes the oldest out
        self._events.append(event)
        self._ready.set()

    def get_nowait(self) -> ReportEvent | None:
        """The oldest buffered event, or None."""
        return self._events.popleft() if self._events else None

    async def get(self) -> ReportEvent:
        """Wait for the next event; raises ``StopAsyncIteration`` once closed and drained."""
        while not self._events:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._events.popleft()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ReportEvent:
        return await self.get()

    def close(self) -> None:
        """Unsubscribe; a waiting ``get`` returns what is buffered, then stops."""
        self._closed = True
        self._hub._unsubscribe(self)
        self._ready.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventHub:
    """Fans events out to subscribers and callbacks. Use it from one event loop's thread."""

    def __init__(self, *, buffer: int = 256) -> None:
        if buffer < 1:
            raise ConfigurationError(f"buffer must be at least 1, got {buffer!r}")
        self.buffer = buffer
        self._subscribers: list[Subscription] = []
        self._breach_callbacks: list[BreachCallback] = []
        self._alert_callbacks: list[AlertCallback] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def subscribe(self, buffer: int | None = None) -> Subscription:
        """A new subscriber, buffering up to ``buffer`` (default the hub's) unread events."""
        size = self.buffer if buffer is None else buffer
        if size < 1:
            raise ConfigurationError(f"buffer must be at least 1, got {size!r}")
        subscription = Subscription(self, size)
        self._subscribers.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def on_breach(self, fn: _B) -> _B:
        """Call ``fn(breach)`` at each change: warning, opened, resolved. Usable as a decorator."""
        self._breach_callbacks.append(fn)
        return fn

    def on_alert(self, fn: _A) -> _A:
        """Call ``fn(alert)`` for each alert fired; usable as a decorator."""
        self._alert_callbacks.append(fn)
        return fn

    def publish(self, event: ReportEvent) -> None:
        """Give ``event`` to every subscriber and the matching callbacks; never waits."""
        for subscription in self._subscribers:
            subscription._put(event)
        if event.type in _BREACH_EVENTS:
            breach = event.data.get("breach")
            if isinstance(breach, Breach):
                for breach_fn in self._breach_callbacks:
                    self._call(breach_fn, breach)
        elif event.type == "alert":
            alert = event.data.get("alert")
            if isinstance(alert, Alert):
                for alert_fn in self._alert_callbacks:
                    self._call(alert_fn, alert)

    def _call(self, fn: Callable[[Any], Awaitable[None] | None], arg: Any) -> None:
        try:
            result = fn(arg)
        except Exception:
            logger.exception("callback %s failed", _name(fn))
            return
        if inspect.isawaitable(result):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                if inspect.iscoroutine(result):
                    result.close()  # never awaited, and nothing can: say so once, quietly
                logger.error("callback %s is async but no event loop is running", _name(fn))
                return
            task = loop.create_task(_logged(fn, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """End every subscription and wait for the async callbacks still running."""
        for subscription in list(self._subscribers):
            subscription.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def _logged(fn: Callable[..., Any], awaitable: Awaitable[None]) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("callback %s failed", _name(fn))


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", repr(fn))
