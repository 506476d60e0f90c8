"""OTLP facts both sides of the processor share, read from the generated descriptors (never retyped)."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"]
EXPORT_METHOD_PATH = f"/{_SERVICE.full_name}/{_SERVICE.methods_by_name['Export'].name}"
"""``/opentelemetry.proto.collector.trace.v1.TraceService/Export``"""
HTTP_TRACES_PATH = "/v1/traces"
CONTENT_TYPE_PROTOBUF = "application/x-protobuf"
CONTENT_TYPE_JSON = "application/json"
GRPC_RETRY_INFO_KEY = "google.rpc.retryinfo-bin"
"""Trailer the OpenTelemetry Python SDK reads RetryInfo from (it does not parse grpc-status-details-bin)."""
GRPC_STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""The standard trailer: a serialized ``google.rpc.Status`` whose details carry RetryInfo."""
