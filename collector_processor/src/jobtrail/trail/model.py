"""Spans as the trail view reads them: plain values, hex ids, one object per span whatever the source.

Both sources (the processor's OTLP/JSON file and Jaeger's api_v3) hand over OTLP requests; this module
flattens them once so the timeline builder stays pure and never touches protobuf.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME

KIND_INTERNAL = Span.SPAN_KIND_INTERNAL
KIND_SERVER = Span.SPAN_KIND_SERVER
KIND_CLIENT = Span.SPAN_KIND_CLIENT
KIND_PRODUCER = Span.SPAN_KIND_PRODUCER
KIND_CONSUMER = Span.SPAN_KIND_CONSUMER
STATUS_ERROR = Status.STATUS_CODE_ERROR


@dataclass(frozen=True)
class TrailEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class TrailLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class TrailSpan:
    """One span with everything the timeline needs; ids are lowercase hex, times are Unix nanoseconds."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[TrailEvent, ...] = ()
    links: tuple[TrailLink, ...] = ()
    status_error: bool = False
    status_message: str = ""

    def attribute(self, *keys: str) -> Any:
        """The first of ``keys`` present (stable semconv name first, the older one after)."""
        for key in keys:
            if key in self.attributes:
                return self.attributes[key]
        return None

    def event(self, name: str) -> TrailEvent | None:
        return next((event for event in self.events if event.name == name), None)


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as the plain Python value it carries."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return attributes_dict(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def attributes_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {attribute.key: any_value(attribute.value) for attribute in attributes}


def spans_from_request(request: ExportTraceServiceRequest) -> list[TrailSpan]:
    """Every span of an OTLP request, flattened, with its resource's ``service.name``."""
    spans: list[TrailSpan] = []
    for resource_spans in request.resource_spans:
        service = str(attributes_dict(resource_spans.resource.attributes).get(SERVICE_NAME, ""))
        for scope_spans in resource_spans.scope_spans:
            spans.extend(_trail_span(span, service) for span in scope_spans.spans)
    return spans


def _trail_span(span: Span, service: str) -> TrailSpan:
    return TrailSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=span.name,
        kind=span.kind,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        service=service,
        attributes=attributes_dict(span.attributes),
        events=tuple(
            TrailEvent(event.name, event.time_unix_nano, attributes_dict(event.attributes)) for event in span.events
        ),
        links=tuple(
            TrailLink(link.trace_id.hex(), link.span_id.hex(), attributes_dict(link.attributes)) for link in span.links
        ),
        status_error=span.status.code == STATUS_ERROR,
        status_message=span.status.message,
    )
