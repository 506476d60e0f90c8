"""OTLP/gRPC exporter: sends the queued bytes as they are (no re-serialization) and retries as the spec says."""

from __future__ import annotations

from urllib.parse import urlsplit

import grpc
from google.rpc import error_details_pb2, status_pb2
from jobtrail.otlp import EXPORT_METHOD_PATH, GRPC_RETRY_INFO_KEY, GRPC_STATUS_DETAILS_KEY
from jobtrail.processor.config import ProcessorConfig
from jobtrail.processor.exporters.base import PermanentExportError, QueuedExporter, RetryableExportError
from jobtrail.processor.telemetry import Telemetry
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""The OTLP spec's retryable codes; RESOURCE_EXHAUSTED joins them only when the server sent RetryInfo."""


def retry_delay(trailing_metadata: object) -> float | None:
    """The RetryInfo delay a server put in its trailers (standard status details or the SDK's own key)."""
    for key, value in trailing_metadata or ():
        if key == GRPC_STATUS_DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return info.retry_delay.ToTimedelta().total_seconds()
        elif key == GRPC_RETRY_INFO_KEY:
            info = error_details_pb2.RetryInfo.FromString(value)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


class GrpcExporter(QueuedExporter):
    """``grpc://host:port`` (plaintext, like the collector's ``tls.insecure``)."""

    def __init__(self, url: str, config: ProcessorConfig, telemetry: Telemetry) -> None:
        super().__init__(url, config, telemetry)
        self._channel = grpc.insecure_channel(
            urlsplit(url).netloc,
            options=[
                ("grpc.max_send_message_length", -1),
                ("grpc.enable_retries", 0),
                # gRPC's own reconnect backoff grows to minutes; keep it within ours so recovery is noticed.
                ("grpc.initial_reconnect_backoff_ms", int(config.retry_initial_backoff_seconds * 1000) or 1),
                ("grpc.min_reconnect_backoff_ms", int(config.retry_initial_backoff_seconds * 1000) or 1),
                ("grpc.max_reconnect_backoff_ms", int(config.retry_max_backoff_seconds * 1000) or 1),
            ],
        )
        self._export = self._channel.unary_unary(
            EXPORT_METHOD_PATH,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )

    def send(self, payload: bytes, timeout: float) -> int:
        try:
            response = self._export(payload, timeout=timeout, wait_for_ready=False)
        except grpc.RpcError as error:
            code = error.code()
            delay = retry_delay(error.trailing_metadata())
            message = f"{code.name}: {error.details()}"
            if code in RETRYABLE_CODES or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
                raise RetryableExportError(message, delay) from None
            raise PermanentExportError(message) from None
        return response.partial_success.rejected_spans

    def close(self) -> None:
        self._channel.close()
