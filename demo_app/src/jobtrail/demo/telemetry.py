"""Tracing and logging for the demo's API and worker processes, set up the way an application would.

OTLP/gRPC to the processor (or a collector), the RQ instrumentation (producer spans in the API,
attempt spans in the worker) and JSON logs with the shared field names.
"""

from __future__ import annotations

import logging

from jobtrail.logs import configure_logging
from jobtrail.rq import RQInstrumentor
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME

EXPORT_DELAY_MS = 200
"""Short, so a click shows up in the trail within a second or so (the SDK's default is 5 s)."""


def start_telemetry(service: str, otlp_endpoint: str) -> TracerProvider:
    """Install the global tracer provider, instrument RQ and configure JSON logging; return the provider."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    exporter = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=otlp_endpoint.startswith("http://"))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=EXPORT_DELAY_MS))
    trace.set_tracer_provider(provider)
    RQInstrumentor().instrument(tracer_provider=provider)
    configure_logging(service, logging.INFO)
    return provider
