"""OTLP/HTTP receiver: ``POST /v1/traces`` (protobuf or JSON, optionally gzip), plus ``/healthz`` and ``/metrics``.

Errors answer the way OTLP/HTTP clients understand: a ``google.rpc.Status`` body in the request's encoding,
503 + Retry-After when the processor is full (retryable), 400/405/411/413/415 for requests that would fail the
same way again (not retryable).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class RequestRefused(Exception):
    """A refusal with its HTTP status, gRPC-style code and counter reason."""

    def __init__(self, status: int, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.reason = reason


class HttpReceiver:
    """Listens on ``config.http_listen`` with a thread per connection (keep-alive HTTP/1.1)."""

    def __init__(self, config: ProcessorConfig, consume: Consume, telemetry: Telemetry) -> None:
        assert config.http_listen is not None
        host, port = split_host_port(config.http_listen, "http_listen")
        handler = type("OtlpHttpHandler", (_Handler,), {"config": config, "consume": consume, "telemetry": telemetry})
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as error:
            raise OSError(f"cannot listen on {config.http_listen} (HTTP): {error.strerror or error}") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="otlp-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "jobtrail-processor"
    config: ProcessorConfig
    consume: Consume
    telemetry: Telemetry

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's signature)
        logger.debug("%s - " + format, self.address_string(), *args)

    # --- routes ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._send(200, CONTENT_TYPE_JSON, b'{"status":"ok"}')
        elif self.path == METRICS_PATH:
            self._send(200, METRICS_CONTENT_TYPE, self.telemetry.render_prometheus().encode("utf-8"))
        elif self.path == HTTP_TRACES_PATH:
            self._method_not_allowed()
        else:
            self._send(404, CONTENT_TYPE_JSON, b'{"error":"not found"}')

    def do_POST(self) -> None:
        media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        as_json = media_type != CONTENT_TYPE_PROTOBUF
        if self.path != HTTP_TRACES_PATH:
            self._discard_body()
            self._send(404, CONTENT_TYPE_JSON, b'{"error":"not found"}')
            return
        try:
            body = self._read_body()
            encoding = self.headers.get("Content-Encoding") or "identity"
            request = decode_body(media_type, encoding, body, self.config.max_request_bytes)
            original = body if media_type == CONTENT_TYPE_PROTOBUF and encoding == "identity" else None
            rejected, message = self.consume(request, original)
        except RequestRefused as error:
            self._refuse(error, as_json)
            return
        except Overloaded as overloaded:
            status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=str(overloaded))
            retry_after = str(max(1, math.ceil(overloaded.retry_after)))
            self._send_message(503, status, as_json, {"Retry-After": retry_after})
            return
        except Exception:  # a bug, not the sender's fault: answer it and keep serving
            logger.exception("failed to process a POST %s", self.path)
            self.close_connection = True
            status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error in the processor")
            self._send_message(500, status, as_json)
            return
        response = ExportTraceServiceResponse()
        if rejected:
            response.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=rejected, error_message=message))
        self._send_message(200, response, as_json)

    def do_PUT(self) -> None:
        self._method_not_allowed()

    do_DELETE = do_PATCH = do_PUT

    def _method_not_allowed(self) -> None:
        self._discard_body()
        self._refuse(
            RequestRefused(405, code_pb2.UNIMPLEMENTED, REFUSED_METHOD_NOT_ALLOWED, "use POST"), json_body=True
        )

    # --- body -----------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        limit = self.config.max_request_bytes
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise RequestRefused(
                411, code_pb2.INVALID_ARGUMENT, REFUSED_BAD_REQUEST, "send a Content-Length (no chunked)"
            )
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self.close_connection = True
            raise RequestRefused(411, code_pb2.INVALID_ARGUMENT, REFUSED_BAD_REQUEST, "Content-Length header required")
        length = int(length_header)
        if length > limit:
            self.close_connection = True
            raise RequestRefused(
                413,
                code_pb2.RESOURCE_EXHAUSTED,
                REFUSED_TOO_LARGE,
                f"body of {length} bytes is over the {limit} byte limit",
            )
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise RequestRefused(
                400, code_pb2.INVALID_ARGUMENT, REFUSED_BAD_REQUEST, "body shorter than Content-Length"
            )
        return body

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= self.config.max_request_bytes:
            self.rfile.read(int(length))
        elif length or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    # --- answers --------------------------------------------------------------------------------
    def _refuse(self, error: RequestRefused, json_body: bool) -> None:
        self.telemetry.add(REQUESTS_REFUSED, reason=error.reason)
        self._send_message(error.status, status_pb2.Status(code=error.code, message=str(error)), json_body)

    def _send_message(self, status: int, message: Message, as_json: bool, headers: dict[str, str] | None = None):
        if as_json:
            body = json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode("utf-8")
            self._send(status, CONTENT_TYPE_JSON, body, headers)
        else:
            self._send(status, CONTENT_TYPE_PROTOBUF, message.SerializeToString(), headers)

    def _send(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 405:
            self.send_header("Allow", "POST")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


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
