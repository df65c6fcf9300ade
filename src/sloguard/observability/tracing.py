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
import sys
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


def default_tracer_provider() -> Any:
    """The global tracer provider, or, when none has been set up (as
    ``opentelemetry-instrument`` would), a new SDK provider printing each span to
    stderr as JSON when it ends, installed as the global one. (Printing as spans
    end, not in batches, loses none at a signal; it is for looking, not for
    production, where a configured provider exports in batches.)"""
    if trace is None:
        raise ConfigurationError("tracing needs OpenTelemetry: pip install 'sloguard[otel]'")
    provider = trace.get_tracer_provider()
    if not isinstance(provider, trace.ProxyTracerProvider):
        return provider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    sdk_provider = TracerProvider()
    sdk_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    trace.set_tracer_provider(sdk_provider)
    return sdk_provider


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
