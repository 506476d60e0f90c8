"""OTLP/HTTP exporter (binary protobuf), one keep-alive connection, retries as the spec says."""

from __future__ import annotations

import http.client
import time
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from jobtrail.otlp import CONTENT_TYPE_PROTOBUF, HTTP_TRACES_PATH
from jobtrail.processor.config import ProcessorConfig
from jobtrail.processor.exporters.base import PermanentExportError, QueuedExporter, RetryableExportError
from jobtrail.processor.telemetry import Telemetry
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
"""The OTLP/HTTP spec's retryable responses; every other 4xx/5xx is permanent."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds to wait: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


class HttpExporter(QueuedExporter):
    """``http://host:port[/path]``; the path defaults to ``/v1/traces`` as OTLP/HTTP clients do."""

    def __init__(self, url: str, config: ProcessorConfig, telemetry: Telemetry) -> None:
        super().__init__(url, config, telemetry)
        parts = urlsplit(url)
        self._secure = parts.scheme == "https"
        self._netloc = parts.netloc
        self._path = parts.path if parts.path not in ("", "/") else HTTP_TRACES_PATH
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self._connection is None:
            cls = http.client.HTTPSConnection if self._secure else http.client.HTTPConnection
            self._connection = cls(self._netloc, timeout=timeout)
        return self._connection

    def send(self, payload: bytes, timeout: float) -> int:
        connection = self._connect(timeout)
        try:
            connection.request("POST", self._path, body=payload, headers={"Content-Type": CONTENT_TYPE_PROTOBUF})
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise RetryableExportError(f"connection failed: {error!r}") from None
        if response.will_close:
            self.close()
        if 200 <= response.status < 300:
            if not body:
                return 0
            try:
                return ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans
            except DecodeError:
                return 0
        message = f"HTTP {response.status}: {_status_message(body)}"
        if response.status in RETRYABLE_STATUSES:
            raise RetryableExportError(message, parse_retry_after(response.getheader("Retry-After")))
        raise PermanentExportError(message)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _status_message(body: bytes) -> str:
    """The google.rpc.Status message an OTLP server puts in an error body, else the start of the body."""
    try:
        message = status_pb2.Status.FromString(body).message
    except DecodeError:
        message = ""
    return message or body[:200].decode("utf-8", "replace")
