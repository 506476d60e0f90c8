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
from jobtrail.processor.exporters.base import (
    RECONNECT_PROBE_SECONDS,
    ExportTimeout,
    PermanentExportError,
    QueuedExporter,
    RetryableExportError,
)
from jobtrail.processor.telemetry import Telemetry
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
"""The OTLP/HTTP spec's retryable responses; every other 4xx/5xx is permanent."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds to wait: delta-seconds or an HTTP date (RFC 9110); None when absent or unreadable.

    Not clamped here (see ``clamp_retry_delay``); a date in the past is 0.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        return max(when.timestamp() - (time.time() if now is None else now), 0.0)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


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
        """The keep-alive connection, connected (a failure here means nothing was sent: unreachable)."""
        if self._connection is None:
            cls = http.client.HTTPSConnection if self._secure else http.client.HTTPConnection
            connection = cls(self._netloc, timeout=timeout)
            try:
                connection.connect()
            except OSError as error:
                connection.close()
                raise RetryableExportError(f"cannot connect: {error!r}", unreachable=True) from None
            self._connection = connection
        return self._connection

    def reachable(self) -> bool:
        """A TCP connect succeeds (the connection is kept for the retry)."""
        try:
            self._connect(RECONNECT_PROBE_SECONDS)
        except RetryableExportError:
            return False
        return True

    def send(self, payload: bytes, timeout: float) -> int:
        connection = self._connect(timeout)
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        try:
            connection.request("POST", self._path, body=payload, headers={"Content-Type": CONTENT_TYPE_PROTOBUF})
            response = connection.getresponse()
            body = response.read()
        except TimeoutError as error:
            self.close()
            raise ExportTimeout(f"no answer within {timeout}s: {error!r}") from None
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
