"""OTLP/gRPC receiver: ``TraceService/Export`` on a raw-bytes handler.

The handler takes the request bytes itself (instead of the generated servicer's deserializer) so that a
request the processor does not change is forwarded as the very bytes that came in.
"""

from __future__ import annotations

from concurrent import futures

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from jobtrail.otlp import EXPORT_METHOD_PATH, GRPC_RETRY_INFO_KEY, GRPC_STATUS_DETAILS_KEY
from jobtrail.processor.backpressure import Consume, Overloaded
from jobtrail.processor.config import ProcessorConfig, split_host_port
from jobtrail.processor.telemetry import REFUSED_BAD_REQUEST, REQUESTS_REFUSED, Telemetry
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def retry_trailers(delay_seconds: float, message: str) -> tuple[tuple[str, bytes], ...]:
    """RetryInfo for a retryable refusal, in the standard status details and in the key the Python SDK reads."""
    retry_info = error_details_pb2.RetryInfo(retry_delay=Duration())
    retry_info.retry_delay.FromNanoseconds(int(delay_seconds * 1e9))
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)
    status.details.add().Pack(retry_info)
    return (
        (GRPC_STATUS_DETAILS_KEY, status.SerializeToString()),
        (GRPC_RETRY_INFO_KEY, retry_info.SerializeToString()),
    )


class GrpcReceiver:
    """Listens on ``config.grpc_listen``; hands every decoded request to ``consume``."""

    def __init__(self, config: ProcessorConfig, consume: Consume, telemetry: Telemetry) -> None:
        assert config.grpc_listen is not None
        self._config = config
        self._consume = consume
        self._telemetry = telemetry
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-grpc"),
            options=[
                ("grpc.max_receive_message_length", config.max_request_bytes),
                # gRPC sets SO_REUSEPORT by default: a second processor on the same port would share it silently.
                ("grpc.so_reuseport", 0),
            ],
        )
        handler = grpc.unary_unary_rpc_method_handler(
            self._export,
            request_deserializer=None,
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        )
        service, method = EXPORT_METHOD_PATH.strip("/").split("/")
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
        host, port = split_host_port(config.grpc_listen, "grpc_listen")
        try:
            self.port = self._server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        except RuntimeError:  # grpcio raises it for a port in use or an address it cannot bind
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen on {config.grpc_listen} (gRPC): address in use or not available")

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float) -> None:
        """Refuse new calls, let running ones finish (up to ``grace`` seconds)."""
        self._server.stop(grace).wait()

    def _export(self, body: bytes, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        try:
            request = ExportTraceServiceRequest.FromString(body)
        except DecodeError as error:
            self._telemetry.add(REQUESTS_REFUSED, reason=REFUSED_BAD_REQUEST)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an OTLP ExportTraceServiceRequest: {error}")
        try:
            rejected, message = self._consume(request, body)
        except Overloaded as overloaded:
            context.set_trailing_metadata(retry_trailers(overloaded.retry_after, str(overloaded)))
            context.abort(grpc.StatusCode.UNAVAILABLE, str(overloaded))
        if not rejected:
            return ExportTraceServiceResponse()
        return ExportTraceServiceResponse(
            partial_success=ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
        )
