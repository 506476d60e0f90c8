"""Same-origin span intake: the page posts OTLP/JSON here and Flask forwards it to the collector.

The browser never talks to the collector, so the collector needs no public port and no CORS.
Only the body and ``Content-Type: application/json`` are forwarded: never cookies, never
``Authorization``, never anything else the page sent.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from email.message import Message
from urllib.parse import urlsplit

from jobtrail.conventions import (
    REASON_COLLECTOR_UNREACHABLE,
    REASON_INVALID_OTLP_JSON,
    REASON_ORIGIN_NOT_ALLOWED,
    REASON_PAYLOAD_TOO_LARGE,
    REASON_UNSUPPORTED_MEDIA_TYPE,
)
from jobtrail.flask.refusals import refuse
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
)

import flask

INTAKE_PATH = "/v1/traces"
JSON_CONTENT_TYPE = "application/json"
DEFAULT_OTLP_HTTP_ENDPOINT = "http://localhost:4318"
_GRPC = "grpc"
_MAX_UPSTREAM_BODY = 64 * 1024
_PREFLIGHT_MAX_AGE_S = "600"
# The collector is a neighbour: go straight to it, whatever proxy the environment names.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def configured_traces_endpoint(environ: Mapping[str, str] = os.environ) -> str:
    """The OTLP/HTTP traces URL the SDK's own exporter would use: the same variables, the same default.

    A gRPC-only configuration has no HTTP URL to offer, so it is an error rather than a guess.
    """
    protocol = environ.get(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) or environ.get(OTEL_EXPORTER_OTLP_PROTOCOL)
    if protocol == _GRPC:
        raise ValueError(
            f"the OTLP protocol is {_GRPC} ({OTEL_EXPORTER_OTLP_TRACES_PROTOCOL} or {OTEL_EXPORTER_OTLP_PROTOCOL}): "
            "pass span_intake_blueprint(forward_to=...) the collector's OTLP/HTTP traces URL"
        )
    traces = environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    if traces:
        return traces
    return environ.get(OTEL_EXPORTER_OTLP_ENDPOINT, DEFAULT_OTLP_HTTP_ENDPOINT).rstrip("/") + INTAKE_PATH


def span_intake_blueprint(
    forward_to: str | None = None,
    allowed_origins: Iterable[str] = (),
    max_bytes: int = 512 * 1024,
    timeout_s: float = 5.0,
) -> flask.Blueprint:
    """``POST /v1/traces``: OTLP/JSON from pages of this origin (or ``allowed_origins``) to ``forward_to``.

    ``forward_to`` is the OTLP/HTTP traces URL (``http://127.0.0.1:4318/v1/traces``; a bare
    ``http://host:port`` gets ``/v1/traces``); by default the one the ``OTEL_EXPORTER_OTLP_*``
    variables configure (:func:`configured_traces_endpoint`). Refusals: 403 foreign ``Origin``,
    415 anything but ``application/json``, 413 over ``max_bytes``, 400 not a JSON object, 502
    collector unreachable. The collector's own status and body are relayed otherwise, with its
    ``Retry-After`` when it sent one (a 429/503 asking the page to come back later).
    """
    if forward_to is None:
        forward_to = configured_traces_endpoint()
    parts = urlsplit(forward_to)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"forward_to must be an http(s) URL, got {forward_to!r}")
    upstream = forward_to if parts.path not in ("", "/") else forward_to.rstrip("/") + INTAKE_PATH
    extra_origins = frozenset(_origin_of(origin) for origin in allowed_origins)
    blueprint = flask.Blueprint("jobtrail_span_intake", __name__)

    def foreign_origin() -> str | None:
        """The request's Origin when it is neither this site nor allowed; None when acceptable or absent."""
        origin = flask.request.headers.get("Origin")
        if origin is None:
            return None
        origin = origin.lower()
        if origin == _origin_of(flask.request.host_url) or origin in extra_origins:
            return None
        return origin

    def with_cors(response: flask.Response) -> flask.Response:
        origin = flask.request.headers.get("Origin")
        if origin is not None and origin.lower() in extra_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers.add("Vary", "Origin")
        return response

    @blueprint.route(INTAKE_PATH, methods=["OPTIONS"])
    def preflight() -> flask.Response:
        if foreign_origin() is not None:
            return refuse(REASON_ORIGIN_NOT_ALLOWED, 403)
        response = flask.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "POST"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Max-Age"] = _PREFLIGHT_MAX_AGE_S
        return with_cors(response)

    @blueprint.route(INTAKE_PATH, methods=["POST"])
    def intake() -> flask.Response:
        if foreign_origin() is not None:
            return refuse(REASON_ORIGIN_NOT_ALLOWED, 403)
        if flask.request.mimetype != JSON_CONTENT_TYPE:
            return with_cors(refuse(REASON_UNSUPPORTED_MEDIA_TYPE, 415, detail="send OTLP/JSON as application/json"))
        declared = flask.request.content_length
        if declared is not None and declared > max_bytes:
            return with_cors(refuse(REASON_PAYLOAD_TOO_LARGE, 413, detail=f"at most {max_bytes} bytes"))
        body = flask.request.stream.read(max_bytes + 1)
        if len(body) > max_bytes:
            return with_cors(refuse(REASON_PAYLOAD_TOO_LARGE, 413, detail=f"at most {max_bytes} bytes"))
        try:
            is_object = isinstance(json.loads(body), dict)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
            is_object = False
        if not is_object:
            detail = "expected an OTLP/JSON ExportTraceServiceRequest"
            return with_cors(refuse(REASON_INVALID_OTLP_JSON, 400, detail=detail))
        return with_cors(_forward(upstream, body, timeout_s))

    return blueprint


def _forward(upstream: str, body: bytes, timeout_s: float) -> flask.Response:
    """POST the body with only a content type; relay the collector's answer or refuse with 502."""
    forwarded = urllib.request.Request(upstream, data=body, method="POST", headers={"Content-Type": JSON_CONTENT_TYPE})
    try:
        with _DIRECT.open(forwarded, timeout=timeout_s) as answer:
            return _relay(answer.status, answer.headers, answer.read(_MAX_UPSTREAM_BODY))
    except urllib.error.HTTPError as answer:
        return _relay(answer.code, answer.headers, answer.read(_MAX_UPSTREAM_BODY))
    except (urllib.error.URLError, OSError):
        return refuse(REASON_COLLECTOR_UNREACHABLE, 502)


def _relay(status: int, headers: Message, body: bytes) -> flask.Response:
    """The collector's answer as the page's answer: status, body, content type, and its Retry-After (the OTLP
    exporter in the page waits that long before it retries a 429/503)."""
    response = flask.Response(body, status=status, content_type=headers.get("Content-Type") or JSON_CONTENT_TYPE)
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response
