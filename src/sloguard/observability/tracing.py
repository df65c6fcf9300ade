"""OpenTelemetry traces for SLOGuard (opt-in: ``SLOGuard(app, tracing=True)``).

The request span comes from ``opentelemetry-instrumentation-asgi`` (one span a
request; its per-message ``receive``/``send`` spans are left out), on the
global tracer provider unless one is passed. SLOGuard adds its decisions as
attributes: ``sloguard.capability``, ``sloguard.priority``,
``sloguard.idempotency`` (``hit``, ``miss``, ``conflict``, ``mismatch``) and
``sloguard.shed``. The controller's forward to a worker is a CLIENT child span
(:func:`client_span`) whose ``traceparent`` the worker receives. Needs
``pip install 'sloguard[otel]'``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from starlette.types import ASGIApp

from sloguard.exceptions import ConfigurationError

try:
    from opentelemetry import propagate, trace
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
except ImportError:  # pragma: no cover - exercised only without the extra
    propagate = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]
    OpenTelemetryMiddleware = None  # type: ignore[assignment,misc]


def traced(app: ASGIApp, tracer_provider: Any = None) -> ASGIApp:
    """``app`` inside a span per request."""
    if OpenTelemetryMiddleware is None:
        raise ConfigurationError("tracing=True needs OpenTelemetry: pip install 'sloguard[otel]'")
    wrapped: ASGIApp = OpenTelemetryMiddleware(
        app, tracer_provider=tracer_provider, exclude_spans=["receive", "send"]
    )
    return wrapped


def annotate(key: str, value: str | bool) -> None:
    """Set an attribute on the current request's span, if one is recording."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(key, value)


@contextlib.contextmanager
def client_span(
    name: str,
    headers: list[tuple[str, str]],
    attributes: dict[str, str],
    tracer_provider: Any = None,
) -> Iterator[list[tuple[str, str]]]:
    """A CLIENT span around an outgoing call, child of the current span; yields
    ``headers`` with ``traceparent``/``tracestate`` replaced by the span's own, so
    the callee continues the trace under it."""
    if trace is None:
        raise ConfigurationError("tracing needs OpenTelemetry: pip install 'sloguard[otel]'")
    tracer = trace.get_tracer("sloguard", tracer_provider=tracer_provider)
    with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        injected = {key.lower() for key in carrier}
        yield [(k, v) for k, v in headers if k.lower() not in injected] + list(carrier.items())
