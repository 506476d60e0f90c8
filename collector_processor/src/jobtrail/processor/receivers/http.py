"""OTLP/HTTP receiver: ``POST /v1/traces`` (protobuf or JSON, optionally gzip), plus ``/healthz`` and ``/metrics``.

The transport is waitress, a production WSGI server: an event loop reads every request (headers and body,
chunked or with a length) before one of a fixed pool of worker threads sees it, so a slow or stalled client
costs a socket and a buffer, never a thread; bodies over a few hundred KiB are buffered in a temporary file, not
in memory; connections are capped and idle ones are closed. See docs/processor.md ("Bounds").

Errors answer the way OTLP/HTTP clients understand: a ``google.rpc.Status`` body in the request's encoding,
503 + Retry-After when the processor is full (retryable), 400/405/413/415 for requests that would fail the
same way again (not retryable).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import zlib
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

import waitress.server
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, status_pb2
from jobtrail.otlp import CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, HTTP_TRACES_PATH
from jobtrail.otlp.json_codec import OtlpDecodeError, decode_request
from jobtrail.processor.backpressure import Consume, Overloaded
from jobtrail.processor.config import ProcessorConfig, split_host_port
from jobtrail.processor.telemetry import (
    REFUSED_BAD_REQUEST,
    REFUSED_METHOD_NOT_ALLOWED,
    REFUSED_TOO_LARGE,
    REFUSED_UNSUPPORTED_MEDIA_TYPE,
    REQUESTS_REFUSED,
    Telemetry,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

logger = logging.getLogger("jobtrail.processor.receivers.http")

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WORKER_THREADS = 4
"""Threads that decode and consume complete requests (the consume path is serialized by the pipeline's lock)."""
MAX_HEADER_BYTES = 64 * 1024
BODY_IN_MEMORY_BYTES = 256 * 1024
"""Per connection: body bytes kept in memory while a request arrives; beyond that waitress spools to a temp file."""

Health = Callable[[], "list[str]"]
"""``health() -> problems``; an empty list means healthy (``/healthz`` answers 503 with the problems otherwise)."""
StartResponse = Callable[..., Any]


class RequestRefused(Exception):
    """A refusal with its HTTP status, gRPC-style code and counter reason."""

    def __init__(self, status: int, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.reason = reason


class HttpReceiver:
    """Serves the OTLP/HTTP app on ``config.http_listen`` with waitress, in a thread of its own."""

    def __init__(self, config: ProcessorConfig, consume: Consume, telemetry: Telemetry, health: Health) -> None:
        assert config.http_listen is not None
        host, port = split_host_port(config.http_listen, "http_listen")
        app = OtlpHttpApp(config, consume, telemetry, health)
        try:
            self._server = waitress.server.create_server(
                app,
                host=host,
                port=port,
                threads=WORKER_THREADS,
                connection_limit=config.http_max_connections,
                channel_timeout=config.http_idle_timeout_seconds,
                cleanup_interval=max(min(config.http_idle_timeout_seconds / 2, 30.0), 0.1),
                # Twice the OTLP limit: the app refuses anything over max_request_bytes with a proper OTLP 413;
                # waitress stops a body past this hard cap itself (plain-text 413) without reading the rest.
                max_request_body_size=2 * config.max_request_bytes + 1,
                max_request_header_size=MAX_HEADER_BYTES,
                inbuf_overflow=BODY_IN_MEMORY_BYTES,
                ident="jobtrail-processor",
                expose_tracebacks=False,
            )
        except OSError as error:
            raise OSError(f"cannot listen on {config.http_listen} (HTTP): {error.strerror or error}") from None
        self.port: int = self._server.effective_port
        self._thread = threading.Thread(target=self._server.run, name="otlp-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Close the listener and every connection (in the server's own loop), then stop the worker threads (each
        finishes the request at hand, for up to 5 s)."""
        server = self._server
        socket_map = server._map  # waitress's own map of its sockets

        def close_all() -> None:
            for dispatcher in list(socket_map.values()):
                dispatcher.close()

        if self._thread.is_alive():
            try:
                server.trigger.pull_trigger(close_all)  # runs in the server's own loop
            except OSError:  # the loop's wake-up pipe is already closed: close from here, the loop then ends
                close_all()
            self._thread.join(5.0)
        else:
            close_all()
        server.task_dispatcher.shutdown(timeout=5)


class OtlpHttpApp:
    """The WSGI app: routes, body decoding and the OTLP answers (the transport is waitress's job)."""

    def __init__(self, config: ProcessorConfig, consume: Consume, telemetry: Telemetry, health: Health) -> None:
        self.config = config
        self.consume = consume
        self.telemetry = telemetry
        self.health = health

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        if path == HTTP_TRACES_PATH:
            if method == "POST":
                return self._export(environ, start_response)
            return self._refuse(
                start_response,
                RequestRefused(405, code_pb2.UNIMPLEMENTED, REFUSED_METHOD_NOT_ALLOWED, "use POST"),
                as_json=True,
            )
        if method == "GET" and path == HEALTH_PATH:
            problems = self.health()
            document = {"status": "ok"} if not problems else {"status": "unhealthy", "problems": problems}
            body = json.dumps(document, separators=(",", ":")).encode("utf-8")
            return _answer(start_response, 503 if problems else 200, CONTENT_TYPE_JSON, body)
        if method == "GET" and path == METRICS_PATH:
            return _answer(start_response, 200, METRICS_CONTENT_TYPE, self.telemetry.render_prometheus().encode())
        return _answer(start_response, 404, CONTENT_TYPE_JSON, b'{"error":"not found"}')

    def _export(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        media_type = (environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
        as_json = media_type != CONTENT_TYPE_PROTOBUF
        try:
            body = self._read_body(environ)
            encoding = environ.get("HTTP_CONTENT_ENCODING") or "identity"
            request = decode_body(media_type, encoding, body, self.config.max_request_bytes)
            original = body if media_type == CONTENT_TYPE_PROTOBUF and encoding == "identity" else None
            rejected, message = self.consume(request, original)
        except RequestRefused as error:
            return self._refuse(start_response, error, as_json)
        except Overloaded as overloaded:
            status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=str(overloaded))
            retry_after = str(max(1, math.ceil(overloaded.retry_after)))
            return _answer_message(start_response, 503, status, as_json, [("Retry-After", retry_after)])
        except Exception:  # a bug, not the sender's fault: answer it and keep serving
            logger.exception("failed to process a POST %s", HTTP_TRACES_PATH)
            status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error in the processor")
            return _answer_message(start_response, 500, status, as_json)
        response = ExportTraceServiceResponse()
        if rejected:
            response.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=rejected, error_message=message))
        return _answer_message(start_response, 200, response, as_json)

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        """The whole body (waitress has already received it, de-chunked, and set its length)."""
        limit = self.config.max_request_bytes
        length_text = environ.get("CONTENT_LENGTH") or "0"
        length = int(length_text) if length_text.isdigit() else 0
        if length > limit:
            raise RequestRefused(
                413,
                code_pb2.RESOURCE_EXHAUSTED,
                REFUSED_TOO_LARGE,
                f"body of {length} bytes is over the {limit} byte limit",
            )
        return environ["wsgi.input"].read(length) if length else b""

    def _refuse(self, start_response: StartResponse, error: RequestRefused, as_json: bool) -> Iterable[bytes]:
        self.telemetry.add(REQUESTS_REFUSED, reason=error.reason)
        status = status_pb2.Status(code=error.code, message=str(error))
        headers = [("Allow", "POST")] if error.status == 405 else []
        return _answer_message(start_response, error.status, status, as_json, headers)


def _answer_message(
    start_response: StartResponse,
    status: int,
    message: Message,
    as_json: bool,
    headers: list[tuple[str, str]] | None = None,
) -> Iterable[bytes]:
    """An OTLP message (response or Status) in the request's encoding."""
    if as_json:
        body = json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode("utf-8")
        return _answer(start_response, status, CONTENT_TYPE_JSON, body, headers)
    return _answer(start_response, status, CONTENT_TYPE_PROTOBUF, message.SerializeToString(), headers)


def _answer(
    start_response: StartResponse,
    status: int,
    content_type: str,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
) -> Iterable[bytes]:
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [("Content-Type", content_type), ("Content-Length", str(len(body))), *(headers or [])],
    )
    return [body]


def decode_body(media_type: str, content_encoding: str, body: bytes, limit: int) -> ExportTraceServiceRequest:
    """Inflate and decode one ``POST /v1/traces`` body, or raise :class:`RequestRefused` saying why (4xx)."""
    encoding = content_encoding.strip().lower()
    if encoding in _INFLATE_WBITS:
        body = _inflate(body, limit, encoding)
    elif encoding != "identity":
        raise RequestRefused(
            415,
            code_pb2.INVALID_ARGUMENT,
            REFUSED_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Encoding {encoding!r}: use gzip, deflate or none",
        )
    if media_type == CONTENT_TYPE_PROTOBUF:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except DecodeError as error:
            raise RequestRefused(
                400, code_pb2.INVALID_ARGUMENT, REFUSED_BAD_REQUEST, f"not an OTLP ExportTraceServiceRequest: {error}"
            ) from None
    if media_type == CONTENT_TYPE_JSON:
        try:
            return decode_request(body)
        except OtlpDecodeError as error:
            raise RequestRefused(400, code_pb2.INVALID_ARGUMENT, REFUSED_BAD_REQUEST, str(error)) from None
    raise RequestRefused(
        415,
        code_pb2.INVALID_ARGUMENT,
        REFUSED_UNSUPPORTED_MEDIA_TYPE,
        f"Content-Type {media_type or '(none)'!r}: use {CONTENT_TYPE_PROTOBUF} or {CONTENT_TYPE_JSON}",
    )


_INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""zlib window settings per Content-Encoding: gzip framing, and the zlib framing HTTP's ``deflate`` means."""


def _inflate(body: bytes, limit: int, encoding: str) -> bytes:
    """Inflate a compressed body without ever holding more than ``limit`` bytes (a zip bomb is a 413, not an OOM)."""
    inflater = zlib.decompressobj(_INFLATE_WBITS[encoding])
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise RequestRefused(
            400, code_pb2.INVALID_ARGUMENT, REFUSED_BAD_REQUEST, f"body is not valid {encoding}: {error}"
        ) from None
    if len(data) > limit:
        raise RequestRefused(
            413,
            code_pb2.RESOURCE_EXHAUSTED,
            REFUSED_TOO_LARGE,
            f"{encoding} body inflates to over the {limit} byte limit",
        )
    if not inflater.eof:
        raise RequestRefused(400, code_pb2.INVALID_ARGUMENT, REFUSED_BAD_REQUEST, f"{encoding} body is truncated")
    return data
