"""OTLP/gRPC exporter: sends the queued bytes as they are (no re-serialization) and retries as the spec says."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from jobtrail.otlp import EXPORT_METHOD_PATH, GRPC_RETRY_INFO_KEY, GRPC_STATUS_DETAILS_KEY
from jobtrail.processor.config import ProcessorConfig
from jobtrail.processor.exporters.base import (
    ExportTimeout,
    PermanentExportError,
    QueuedExporter,
    RetryableExportError,
)
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
RECONNECT_BACKOFF_MS = (100, 1000)
"""The channel's reconnect backoff: first retry after 100 ms, then at most every second."""


def retry_delay(trailing_metadata: Iterable[tuple[str, bytes]] | None) -> float | None:
    """The RetryInfo delay a server put in its trailers (standard status details or the SDK's own key).

    Read as plain numbers (no timedelta: a huge Duration must not raise); garbage is no delay at all.
    """
    for key, value in trailing_metadata or ():
        try:
            if key == GRPC_STATUS_DETAILS_KEY:
                status = status_pb2.Status.FromString(value)
                for detail in status.details:
                    if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                        info = error_details_pb2.RetryInfo()
                        detail.Unpack(info)
                        return _seconds(info)
            elif key == GRPC_RETRY_INFO_KEY:
                return _seconds(error_details_pb2.RetryInfo.FromString(value))
        except DecodeError:
            continue
    return None


def _seconds(info: error_details_pb2.RetryInfo) -> float:
    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9


class GrpcExporter(QueuedExporter):
    """``grpc://host:port`` (plaintext, like the collector's ``tls.insecure``)."""

    def __init__(self, url: str, config: ProcessorConfig, telemetry: Telemetry) -> None:
        super().__init__(url, config, telemetry)
        self._channel = grpc.insecure_channel(
            urlsplit(url).netloc,
            options=[
                ("grpc.max_send_message_length", -1),
                ("grpc.enable_retries", 0),
                # gRPC's own reconnect backoff grows to two minutes and would stack on ours: the channel retries
                # the connection at least every second instead (cheap), and a READY channel ends our wait.
                ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
            ],
        )
        self._state = grpc.ChannelConnectivity.IDLE
        self._channel.subscribe(self._on_state, try_to_connect=True)
        self._export = self._channel.unary_unary(
            EXPORT_METHOD_PATH,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )

    def _on_state(self, state: grpc.ChannelConnectivity) -> None:
        self._state = state

    def reachable(self) -> bool:
        if self._state == grpc.ChannelConnectivity.IDLE:  # a dropped connection is not retried until asked to
            self._channel.unsubscribe(self._on_state)
            self._channel.subscribe(self._on_state, try_to_connect=True)
        return self._state == grpc.ChannelConnectivity.READY

    def send(self, payload: bytes, timeout: float) -> int:
        try:
            response = self._export(payload, timeout=timeout, wait_for_ready=False)
        except grpc.RpcError as error:
            code = error.code()
            delay = retry_delay(error.trailing_metadata())
            message = f"{code.name}: {error.details()}"
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ExportTimeout(message, delay) from None
            if code in RETRYABLE_CODES or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
                unreachable = code == grpc.StatusCode.UNAVAILABLE and self._state != grpc.ChannelConnectivity.READY
                raise RetryableExportError(message, delay, unreachable) from None
            raise PermanentExportError(message) from None
        return response.partial_success.rejected_spans

    def close(self) -> None:
        self._channel.unsubscribe(self._on_state)
        self._channel.close()
