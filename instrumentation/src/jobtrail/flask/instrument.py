"""``instrument_app``: the official Flask instrumentation plus what one-trace-per-action needs from it."""

from __future__ import annotations

from jobtrail.conventions import ATTR_REQUEST_ID, JOB_STATE_HEADER, REQUEST_ID_BAGGAGE_KEY, REQUEST_ID_HEADER
from jobtrail.flask.request_ids import current_request_id
from jobtrail.provider import warn_if_no_sdk_provider
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.propagators import TraceResponsePropagator, get_global_response_propagator
from opentelemetry.trace import TracerProvider

import flask

_EXTENSION_KEY = "jobtrail"
_BAGGAGE_TOKEN_KEY = "jobtrail.baggage_token"

# W3C Trace Context Level 2 response header and the Server-Timing entry browsers expose to the page.
TRACE_RESPONSE_HEADER = "traceresponse"
SERVER_TIMING_HEADER = "Server-Timing"
EXPOSE_HEADERS_HEADER = "Access-Control-Expose-Headers"
# Headers a cross-origin page may read only when they are listed in Access-Control-Expose-Headers.
_EXPOSED = (REQUEST_ID_HEADER, TRACE_RESPONSE_HEADER, SERVER_TIMING_HEADER, JOB_STATE_HEADER)
_TRACE_RESPONSE = TraceResponsePropagator()


def instrument_app(
    app: flask.Flask,
    tracer_provider: TracerProvider | None = None,
    excluded_urls: str | None = None,
) -> flask.Flask:
    """Trace ``app`` with opentelemetry-instrumentation-flask and add request ids and trace headers.

    Per request: the request id (a well-formed ``X-Request-ID`` or a fresh one) goes on the server
    span as ``jobtrail.request.id``, into baggage for the request (the RQ instrumentation carries
    baggage into ``job.meta``; ``jobtrail.logs`` puts it on every log record) and back in the
    ``X-Request-ID`` response header. ``traceresponse`` and ``Server-Timing: traceparent;desc=...``
    hand the trace id to the page. Instrumenting the same app twice is harmless, and so is an app that
    ``opentelemetry-instrument`` already traces (the Flask instrumentation then keeps its one server span).
    Without ``tracer_provider`` and without an SDK provider set globally, logs one warning per process.
    """
    if app.extensions.get(_EXTENSION_KEY):
        return app
    if tracer_provider is None:
        warn_if_no_sdk_provider("flask")
    FlaskInstrumentor.instrument_app(app, tracer_provider=tracer_provider, excluded_urls=excluded_urls)
    # Registered after the instrumentation's own hooks: the server span is active when these run,
    # and Flask tears down in reverse order, so the baggage is detached before the span ends.
    app.before_request(_bind_request_id)
    app.after_request(_add_response_headers)
    app.teardown_request(_unbind_request_id)
    app.extensions[_EXTENSION_KEY] = True
    return app


def uninstrument_app(app: flask.Flask) -> flask.Flask:
    """Undo :func:`instrument_app`: no server spans, request ids or trace headers from here on."""
    if not app.extensions.pop(_EXTENSION_KEY, False):
        return app
    app.before_request_funcs[None].remove(_bind_request_id)
    app.after_request_funcs[None].remove(_add_response_headers)
    app.teardown_request_funcs[None].remove(_unbind_request_id)
    FlaskInstrumentor.uninstrument_app(app)
    return app


def _bind_request_id() -> None:
    request_id = current_request_id()
    trace.get_current_span().set_attribute(ATTR_REQUEST_ID, request_id)
    token = context.attach(baggage.set_baggage(REQUEST_ID_BAGGAGE_KEY, request_id))
    flask.request.environ[_BAGGAGE_TOKEN_KEY] = token


def _unbind_request_id(_exc: BaseException | None) -> None:
    token = flask.request.environ.pop(_BAGGAGE_TOKEN_KEY, None)
    if token is not None:
        context.detach(token)


def _add_response_headers(response: flask.Response) -> flask.Response:
    response.headers[REQUEST_ID_HEADER] = current_request_id()
    # contrib's propagator formats the header; into a scratch carrier, so it also feeds Server-Timing and,
    # when a global response propagator is set, the Flask instrumentation's own injection stays the only one.
    carrier: dict[str, str] = {}
    _TRACE_RESPONSE.inject(carrier)
    traceparent = carrier.get(TRACE_RESPONSE_HEADER)
    if traceparent:
        if get_global_response_propagator() is None:
            response.headers[TRACE_RESPONSE_HEADER] = traceparent
        response.headers.add(SERVER_TIMING_HEADER, f'traceparent;desc="{traceparent}"')
    if "Origin" in flask.request.headers:
        listed = [name.strip() for name in response.headers.get(EXPOSE_HEADERS_HEADER, "").split(",") if name.strip()]
        missing = [name for name in _EXPOSED if name.lower() not in {entry.lower() for entry in listed}]
        response.headers[EXPOSE_HEADERS_HEADER] = ", ".join(listed + missing)
    return response
