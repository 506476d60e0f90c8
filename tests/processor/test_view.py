"""The stitcher's view of OTLP: every byte of every field it does not read goes out as it came."""

from __future__ import annotations

import pytest
from jobtrail.conventions import ATTR_STITCHED_ORIGINAL_TRACE_ID, ATTR_STITCHED_PARENT_FROM_LINK
from jobtrail.processor.config import STITCH_RULE_JOBTRAIL
from jobtrail.processor.decision_cache import DecisionCache
from jobtrail.processor.span_store import SpanStore
from jobtrail.processor.stitch import REASON_NO_JOB_LINK, Stitcher, StitchResult
from jobtrail.processor.view import TraceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from .builders import attempt_root, attributes_of, new_trace_id, request, span, spans_of

pytestmark = pytest.mark.usefixtures("both_stitch_paths")

EVERY_KIND_OF_VALUE = [
    KeyValue(key="s", value=AnyValue(string_value="text")),
    KeyValue(key="b", value=AnyValue(bool_value=True)),
    KeyValue(key="i", value=AnyValue(int_value=-7)),
    KeyValue(key="d", value=AnyValue(double_value=0.25)),
    KeyValue(key="raw", value=AnyValue(bytes_value=b"\x00\xff")),
    KeyValue(
        key="array",
        value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="x"), AnyValue(int_value=2)])),
    ),
    KeyValue(
        key="map",
        value=AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(string_value="v"))])),
    ),
]


def rich(name: str, trace_id: bytes, parent: bytes = b"", links: list[Span.Link] | None = None) -> Span:
    """A span with every field OTLP has set, most of which the view does not declare."""
    built = span(name, trace_id, parent, kind=Span.SPAN_KIND_CLIENT, links=links)
    built.trace_state = "vendor=1"
    built.attributes.extend(EVERY_KIND_OF_VALUE)
    built.dropped_attributes_count = 3
    built.events.add(time_unix_nano=5, name="retry", attributes=EVERY_KIND_OF_VALUE[:2], dropped_attributes_count=1)
    built.dropped_events_count = 2
    built.dropped_links_count = 4
    built.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="boom"))
    built.flags = 0x301
    return built


def rich_request(*spans: Span) -> ExportTraceServiceRequest:
    built = request(*spans)
    resource_spans = built.resource_spans[0]
    resource_spans.schema_url = "https://opentelemetry.io/schemas/1.26.0"
    resource_spans.resource.dropped_attributes_count = 1
    scope_spans = resource_spans.scope_spans[0]
    scope_spans.scope.version = "1.2.3"
    scope_spans.scope.attributes.extend(EVERY_KIND_OF_VALUE[:3])
    scope_spans.schema_url = "https://opentelemetry.io/schemas/1.25.0"
    return built


def view_stitcher() -> Stitcher:
    """As the pipeline makes it: results in the view, which only gets serialized."""
    return Stitcher(
        SpanStore(30.0, 1000, 1 << 30), DecisionCache(600.0, 1000), STITCH_RULE_JOBTRAIL, results=TraceRequest
    )


def arrived(result: StitchResult) -> ExportTraceServiceRequest:
    """What a next hop parses from the bytes the pipeline would send."""
    return ExportTraceServiceRequest.FromString(result.serialized())


def test_a_request_through_the_view_parses_as_it_came() -> None:
    root = rich("GET /", new_trace_id())
    incoming = rich_request(rich("SELECT", root.trace_id, root.span_id), root)

    out = TraceRequest.FromString(incoming.SerializeToString()).SerializeToString()

    assert ExportTraceServiceRequest.FromString(out) == incoming


def test_a_field_that_comes_twice_merges_as_with_the_full_types() -> None:
    first = ResourceSpans(resource=Resource(attributes=[KeyValue(key="a", value=AnyValue(int_value=1))]))
    second = ResourceSpans(resource=Resource(attributes=[KeyValue(key="b", value=AnyValue(int_value=2))]))
    second.scope_spans.add().spans.append(span("only", new_trace_id()))
    resource_spans = first.SerializeToString() + second.SerializeToString()  # one ResourceSpans, resource twice
    raw = bytes([0x0A, len(resource_spans)]) + resource_spans

    out = TraceRequest.FromString(raw).SerializeToString()

    assert ExportTraceServiceRequest.FromString(out) == ExportTraceServiceRequest.FromString(raw)
    assert [a.key for a in ExportTraceServiceRequest.FromString(out).resource_spans[0].resource.attributes] == [
        "a",
        "b",
    ]


def test_moved_and_held_spans_keep_every_field_they_came_with() -> None:
    enqueue = span("send default", new_trace_id(), kind=Span.SPAN_KIND_PRODUCER)
    root = attempt_root(enqueue)
    early = rich("job work", root.trace_id, root.span_id)
    late = rich("redis GET", root.trace_id, early.span_id)
    subject = view_stitcher()

    first = subject.process(rich_request(early), now=0.0)
    assert first.spans_out == 0 and subject.spans.held_spans == 1
    second = subject.process(rich_request(late, root), now=1.0)

    out = {s.name: s for s in spans_of(arrived(second))}
    assert set(out) == {"job work", "redis GET", "process default"} and second.stitched == 3
    for sent in (early, late):
        got = out[sent.name]
        assert got.trace_id == enqueue.trace_id
        assert list(got.attributes)[:-1] == list(sent.attributes), "its own attributes first, in order"
        assert attributes_of(got)[ATTR_STITCHED_ORIGINAL_TRACE_ID] == root.trace_id.hex()
        for same in ("span_id", "parent_span_id", "trace_state", "name", "kind", "events", "links", "status"):
            assert getattr(got, same) == getattr(sent, same), same
        assert (got.dropped_attributes_count, got.dropped_events_count, got.flags) == (3, 2, 0x301)
    assert out["process default"].parent_span_id == enqueue.span_id
    assert attributes_of(out["process default"])[ATTR_STITCHED_PARENT_FROM_LINK] is True
    resource_spans = arrived(second).resource_spans
    assert {rs.schema_url for rs in resource_spans} == {"https://opentelemetry.io/schemas/1.26.0"}
    assert all(
        ss.scope.version == "1.2.3" and len(ss.scope.attributes) == 3 for rs in resource_spans for ss in rs.scope_spans
    )


def test_held_spans_of_interleaved_traces_leave_the_request_and_the_rest_keeps_its_order() -> None:
    waiting_a, waiting_b, plain = new_trace_id(), new_trace_id(), span("GET /", new_trace_id())
    spans = [
        span("a1", waiting_a, b"\x01" * 8),
        span("p1", plain.trace_id, plain.span_id),
        span("a2", waiting_a, b"\x01" * 8),
        span("a3", waiting_a, b"\x01" * 8),
        span("b1", waiting_b, b"\x02" * 8),
        plain,
        span("b2", waiting_b, b"\x02" * 8),
        span("a4", waiting_a, b"\x01" * 8),
    ]
    subject = view_stitcher()

    result = subject.process(request(*spans), now=0.0)

    assert [s.name for s in spans_of(arrived(result))] == ["p1", "GET /"]
    assert result.unchanged == {REASON_NO_JOB_LINK: 2}
    assert subject.spans.held_spans == 6 and subject.spans.held_traces == 2
    drained = subject.drain()
    assert sorted(s.name for s in spans_of(arrived(drained))) == ["a1", "a2", "a3", "a4", "b1", "b2"]
