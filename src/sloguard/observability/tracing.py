"""OpenTelemetry traces for SLOGuard (opt-in: ``SLOGuard(app, tracing=True)``).

The request span comes from ``opentelemetry-instrumentation-asgi`` (one span a
request; its per-message ``receive``/``send`` spans are left out), on the
global tracer provider unless one is passed. SLOGuard adds its decisions as
attributes: ``sloguard.capability``, ``sloguard.priority``,
``sloguard.idempotency`` (``hit``, ``miss``, ``conflict``, ``mismatch``) and
``sloguard.shed``. Needs ``pip install 'sloguard[otel]'``.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp

from sloguard.exceptions import ConfigurationError

try:
    from opentelemetry import trace
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
except ImportError:  # pragma: no cover - exercised only without the extra
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
