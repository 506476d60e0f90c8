"""One warning when jobtrail is switched on but nothing would record its spans.

``RQInstrumentor().instrument()`` or ``instrument_app(app)`` without an SDK tracer provider runs
silently through the API's no-op tracer: the trail then shows only the other half. This says so, once
per process, and names the two ways to fix it.
"""

from __future__ import annotations

import logging
import threading

from opentelemetry import trace

_log = logging.getLogger("jobtrail")
_warned = threading.Event()


def warn_if_no_sdk_provider(component: str) -> None:
    """Log ONE warning per process when the global tracer provider is the API's no-op or proxy provider."""
    if _warned.is_set():
        return
    provider = trace.get_tracer_provider()
    if not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return
    _warned.set()
    _log.warning(
        "%s is instrumented but no OpenTelemetry SDK tracer provider is set, so its spans go nowhere: "
        "call opentelemetry.trace.set_tracer_provider(TracerProvider(...)) with an exporter before instrumenting, "
        "pass tracer_provider=..., or run the process under opentelemetry-instrument",
        component,
    )
