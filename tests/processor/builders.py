"""Small OTLP protobuf builders for the pure stitching tests (the socket tests use the SDK instead)."""

from __future__ import annotations

import os

from jobtrail.conventions import (
    ATTR_LINK_TYPE,
    ATTR_MESSAGING_OPERATION_TYPE,
    LINK_TYPE_ENQUEUED_BY,
    LINK_TYPE_RETRY_OF,
    OPERATION_PROCESS,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.fixtures.otlp_receiver import attributes_of as attributes_of  # re-exported: one helper for the suite


def new_trace_id() -> bytes:
    return os.urandom(16)


def new_span_id() -> bytes:
    return os.urandom(8)


def string_attribute(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def span(
    name: str,
    trace_id: bytes,
    parent: bytes = b"",
    *,
    kind: int = Span.SPAN_KIND_INTERNAL,
    links: list[Span.Link] | None = None,
    attributes: dict[str, str] | None = None,
) -> Span:
    built = Span(
        trace_id=trace_id,
        span_id=new_span_id(),
        parent_span_id=parent,
        name=name,
        kind=kind,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_500_000_000,
    )
    built.attributes.extend(string_attribute(key, value) for key, value in (attributes or {}).items())
    built.links.extend(links or [])
    return built


def link(trace_id: bytes, span_id: bytes, link_type: str = LINK_TYPE_ENQUEUED_BY) -> Span.Link:
    return Span.Link(trace_id=trace_id, span_id=span_id, attributes=[string_attribute(ATTR_LINK_TYPE, link_type)])


def attempt_root(enqueue: Span, previous_attempt: Span | None = None) -> Span:
    """A jobtrail attempt span: new trace, link 0 enqueued_by, link 1 retry_of (from attempt 2 on)."""
    links = [link(enqueue.trace_id, enqueue.span_id)]
    if previous_attempt is not None:
        links.append(link(previous_attempt.trace_id, previous_attempt.span_id, LINK_TYPE_RETRY_OF))
    return span(
        "process default",
        new_trace_id(),
        kind=Span.SPAN_KIND_CONSUMER,
        links=links,
        attributes={ATTR_MESSAGING_OPERATION_TYPE: OPERATION_PROCESS},
    )


def request(*spans: Span, service: str = "worker", scope: str = "tests") -> ExportTraceServiceRequest:
    built = ExportTraceServiceRequest()
    resource_spans = built.resource_spans.add()
    resource_spans.resource.attributes.append(string_attribute("service.name", service))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = scope
    scope_spans.spans.extend(spans)
    return built


def spans_of(built: ExportTraceServiceRequest) -> list[Span]:
    return [s for rs in built.resource_spans for ss in rs.scope_spans for s in ss.spans]
