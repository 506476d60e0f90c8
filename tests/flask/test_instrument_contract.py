"""instrument_app against contrib's instrumentor contract: one server span however often or however else the app
is instrumented (``opentelemetry-instrument``, FlaskInstrumentor by hand), ``traceresponse`` from contrib's
TraceResponsePropagator, and one warning per process when nothing would record the spans."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import flask
import pytest
from jobtrail.conventions import ATTR_REQUEST_ID, REQUEST_ID_HEADER
from jobtrail.flask import instrument_app, uninstrument_app
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.propagators import TraceResponsePropagator, set_global_response_propagator
from opentelemetry.trace import SpanKind

GIVEN_ID = "req_0123456789abcdef"


def server_spans(span_exporter):
    return [span for span in span_exporter.get_finished_spans() if span.kind == SpanKind.SERVER]


def ping_app() -> flask.Flask:
    app = flask.Flask(__name__)
    app.get("/ping")(lambda: "pong")
    return app


@pytest.fixture
def auto_instrumented() -> Iterator[None]:
    """What ``opentelemetry-instrument`` does for Flask: ``FlaskInstrumentor().instrument()`` before the app exists."""
    FlaskInstrumentor().instrument()
    try:
        yield
    finally:
        FlaskInstrumentor().uninstrument()


def test_under_opentelemetry_instrument_instrument_app_adds_ids_but_no_second_span(auto_instrumented, span_exporter):
    app = instrument_app(ping_app())
    response = app.test_client().get("/ping", headers={REQUEST_ID_HEADER: GIVEN_ID})

    (span,) = server_spans(span_exporter)
    assert span.attributes[ATTR_REQUEST_ID] == GIVEN_ID
    assert response.headers[REQUEST_ID_HEADER] == GIVEN_ID
    assert response.headers.getlist("traceresponse") == [
        f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"
    ]


def test_an_app_the_user_instrumented_by_hand_keeps_one_span(span_exporter):
    app = ping_app()
    FlaskInstrumentor.instrument_app(app)
    instrument_app(app)
    instrument_app(app)
    try:
        app.test_client().get("/ping")
        assert len(server_spans(span_exporter)) == 1
    finally:
        uninstrument_app(app)


def test_with_a_global_response_propagator_the_header_is_injected_once(span_exporter):
    """Contrib's Flask instrumentation injects with the global response propagator; jobtrail then adds no copy."""
    set_global_response_propagator(TraceResponsePropagator())
    try:
        app = instrument_app(ping_app())
        response = app.test_client().get("/ping")
    finally:
        set_global_response_propagator(None)
        uninstrument_app(app)
    (span,) = server_spans(span_exporter)
    expected = f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"
    assert response.headers.getlist("traceresponse") == [expected]
    assert response.headers.getlist("Server-Timing") == [f'traceparent;desc="{expected}"']


WARNING_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    import flask
    from jobtrail.flask import instrument_app
    logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    if sys.argv[1] == "sdk":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        trace.set_tracer_provider(TracerProvider())
    if sys.argv[1] == "given":
        from opentelemetry.sdk.trace import TracerProvider
        instrument_app(flask.Flask("given"), tracer_provider=TracerProvider())
    else:
        instrument_app(flask.Flask("one"))
        instrument_app(flask.Flask("two"))
    """
)


@pytest.mark.parametrize(("setup", "warnings"), [("none", 1), ("sdk", 0), ("given", 0)])
def test_one_warning_per_process_without_an_sdk_provider(setup: str, warnings: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WARNING_SCRIPT, setup], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("WARNING jobtrail")]
    assert len(lines) == warnings, result.stderr
    if warnings:
        assert "flask is instrumented but no OpenTelemetry SDK tracer provider is set" in lines[0]
        assert "opentelemetry-instrument" in lines[0]
