"""The stitcher's view of OTLP trace requests: message types that declare only the fields it reads.

The full OTLP types make upb build a message for every attribute, event and link of every span on parse and encode
them all again on serialize, although stitching reads nothing but ids and links. The view types are built at
import time from the generated OTLP descriptors (the field definitions are copied, never retyped), keeping:

* ``ExportTraceServiceRequest.resource_spans``, ``ResourceSpans.scope_spans``, ``ScopeSpans.spans`` and the
  resources', scopes' ``schema_url``;
* ``Span.trace_id``, ``span_id``, ``parent_span_id`` and ``links`` (with their ids and attributes: the deciding
  link is found by its attribute);
* the ``resource`` and ``scope`` fields as an empty message type, so their contents stay opaque but two
  occurrences still merge as the real messages would.

Everything else (names, attributes, events, status, ...) stays an unknown field, which upb keeps as the bytes
that came and writes back verbatim on serialize: parsing and serializing a request costs a fraction of the full
types', and the output carries every byte of every field. Merging a prebuilt delta into a view span (how a span
moves) appends the delta's attributes after the span's own, as with the full types.

The types are annotated as the full OTLP classes they mirror: every field the view declares has the same name,
number and type there. Code that reads a field the view does not declare must use :func:`full_span`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

_PACKAGE = "jobtrail.processor.view"
_OPAQUE = "Opaque"
"""An empty message type: what the view makes of every message field whose contents it does not read."""
_OF_BYTES: tuple[tuple[Descriptor, str, str], ...] = (
    (ScopeSpans.DESCRIPTOR, "spans", "SerializedSpans"),
    (ResourceSpans.DESCRIPTOR, "scope_spans", "SerializedScopes"),
    (ExportTraceServiceRequest.DESCRIPTOR, "resource_spans", "SerializedResources"),
)
"""(real message, its repeated message field, the name of a type with only that field, declared as bytes)."""
_KEPT: tuple[tuple[Descriptor, str, tuple[str, ...] | None], ...] = (
    (ExportTraceServiceRequest.DESCRIPTOR, "ExportTraceServiceRequest", ("resource_spans",)),
    (ResourceSpans.DESCRIPTOR, "ResourceSpans", ("resource", "scope_spans", "schema_url")),
    (ScopeSpans.DESCRIPTOR, "ScopeSpans", ("scope", "spans", "schema_url")),
    (Span.DESCRIPTOR, "Span", ("trace_id", "span_id", "parent_span_id", "links")),
    (Span.Link.DESCRIPTOR, "Link", ("trace_id", "span_id", "attributes")),
    (KeyValue.DESCRIPTOR, "KeyValue", ("key", "value")),
    (AnyValue.DESCRIPTOR, "AnyValue", None),  # all of its oneof: a value's kind must read as it does in full
)
"""(real message, view name, fields kept; None for all)."""


def _file() -> descriptor_pb2.FileDescriptorProto:
    names = {descriptor.full_name: name for descriptor, name, _fields in _KEPT}
    file = descriptor_pb2.FileDescriptorProto(name="jobtrail_processor_view.proto", package=_PACKAGE, syntax="proto3")
    file.message_type.add(name=_OPAQUE)
    for descriptor, name, fields in _KEPT:
        real = descriptor_pb2.DescriptorProto()
        descriptor.CopyToProto(real)
        view = file.message_type.add(name=name)
        for field in real.field:
            if fields is None or field.name in fields:
                kept = view.field.add()
                kept.CopyFrom(field)
                if kept.type_name:
                    kept.type_name = f".{_PACKAGE}.{names.get(kept.type_name.lstrip('.'), _OPAQUE)}"
        if any(field.HasField("oneof_index") for field in view.field):
            assert fields is None, f"{name}: a oneof is kept whole or not at all"
            view.oneof_decl.extend(real.oneof_decl)
    for descriptor, field_name, name in _OF_BYTES:
        real = descriptor_pb2.DescriptorProto()
        descriptor.CopyToProto(real)
        (repeated,) = [field for field in real.field if field.name == field_name]
        repeated.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES  # same wire type: each element's own bytes
        repeated.ClearField("type_name")
        file.message_type.add(name=name, field=[repeated])
    return file


def _classes() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    # Every class is made here and kept: upb would otherwise make (and free) one whenever a field of the type
    # is read while no instance of it is alive, a class creation each time.
    names = [_OPAQUE] + [name for _descriptor, name, _fields in _KEPT] + [name for *_field, name in _OF_BYTES]
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in names}


_CLASSES = _classes()
TraceRequest = cast("type[ExportTraceServiceRequest]", _CLASSES["ExportTraceServiceRequest"])
ViewResourceSpans = cast("type[ResourceSpans]", _CLASSES["ResourceSpans"])
ViewScopeSpans = cast("type[ScopeSpans]", _CLASSES["ScopeSpans"])
ViewSpan = cast("type[Span]", _CLASSES["Span"])
SerializedSpans = cast("type[ScopeSpansOfBytes]", _CLASSES["SerializedSpans"])
"""``ScopeSpans`` with only its ``spans``, declared as ``bytes``: built from spans serialized one by one, it
serializes to the bytes of a ``ScopeSpans`` holding those spans (how held spans are kept without copying them
as messages, which costs upb several times more)."""
SerializedScopes = cast("type[ResourceSpansOfBytes]", _CLASSES["SerializedScopes"])
"""``ResourceSpans`` with only its ``scope_spans``, as ``bytes`` (serialized ``ScopeSpans``)."""
SerializedResources = cast("type[RequestOfBytes]", _CLASSES["SerializedResources"])
"""``ExportTraceServiceRequest`` with only its ``resource_spans``, as ``bytes`` (serialized ``ResourceSpans``)."""


class ScopeSpansOfBytes(Protocol):
    """What :data:`SerializedSpans` offers (for the type checker)."""

    def __init__(self, *, spans: Iterable[bytes]) -> None: ...

    def SerializeToString(self) -> bytes: ...  # noqa: N802 (protobuf's name)


class ResourceSpansOfBytes(Protocol):
    """What :data:`SerializedScopes` offers."""

    def __init__(self, *, scope_spans: Iterable[bytes]) -> None: ...

    def SerializeToString(self) -> bytes: ...  # noqa: N802


class RequestOfBytes(Protocol):
    """What :data:`SerializedResources` offers."""

    def __init__(self, *, resource_spans: Iterable[bytes]) -> None: ...

    def SerializeToString(self) -> bytes: ...  # noqa: N802


def full_span(span: Span) -> Span:
    """A view span as the full OTLP ``Span`` (a copy: for the few spans whose other fields a rule reads)."""
    return span if isinstance(span, Span) else Span.FromString(span.SerializeToString())
