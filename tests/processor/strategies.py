"""Hypothesis strategies for OTLP requests the processor's tests share: attributes, job traces with ids of the
wrong length, and their bytes with a few flipped, inserted or deleted."""

from __future__ import annotations

from hypothesis import strategies as st
from jobtrail.conventions import ATTR_LINK_TYPE, ATTR_MESSAGING_OPERATION_TYPE, LINK_TYPE_ENQUEUED_BY, OPERATION_PROCESS
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

ENQUEUED_BY = KeyValue(key=ATTR_LINK_TYPE, value=AnyValue(string_value=LINK_TYPE_ENQUEUED_BY))

any_values = st.one_of(
    st.builds(lambda v: AnyValue(string_value=v), st.text(max_size=20)),
    st.builds(lambda v: AnyValue(int_value=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: AnyValue(bool_value=v), st.booleans()),
    st.builds(lambda v: AnyValue(double_value=v), st.floats(allow_nan=False, allow_infinity=False)),
    st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=10)),
)
key_values = st.builds(lambda k, v: KeyValue(key=k, value=v), st.text(max_size=10), any_values)


def span_count(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def ids(size: int) -> st.SearchStrategy[bytes]:
    """Mostly a valid id of ``size`` bytes, sometimes one a byte short or long, empty, or all zero."""
    return st.one_of(
        st.binary(min_size=size, max_size=size),
        st.binary(min_size=size, max_size=size),
        st.sampled_from([b"", bytes(size), b"\x01" * (size - 1), b"\x01" * (size + 1)]),
    )


@st.composite
def job_traces(draw) -> ExportTraceServiceRequest:
    """Attempt roots, their children and plain spans, in traces that share ids, some ids of the wrong length."""
    trace_ids = draw(st.lists(ids(16), min_size=1, max_size=3))
    span_ids = draw(st.lists(ids(8), min_size=1, max_size=4))
    built = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        scope_spans = built.resource_spans.add().scope_spans.add()
        for _ in range(draw(st.integers(1, 5))):
            added = scope_spans.spans.add(
                trace_id=draw(st.sampled_from(trace_ids)),
                span_id=draw(st.sampled_from(span_ids)),
                parent_span_id=draw(st.one_of(st.just(b""), st.sampled_from(span_ids))),
                kind=draw(st.sampled_from([Span.SPAN_KIND_CONSUMER, Span.SPAN_KIND_INTERNAL])),
            )
            if draw(st.booleans()):
                added.attributes.append(
                    KeyValue(key=ATTR_MESSAGING_OPERATION_TYPE, value=AnyValue(string_value=OPERATION_PROCESS))
                )
            for _ in range(draw(st.integers(0, 2))):
                added.links.add(
                    trace_id=draw(st.one_of(st.sampled_from(trace_ids), ids(16))),
                    span_id=draw(ids(8)),
                    attributes=draw(st.lists(st.one_of(key_values, st.just(ENQUEUED_BY)), max_size=2)),
                )
    return built


@st.composite
def mutated_bodies(draw) -> bytes:
    """An OTLP request of job traces (ids of the wrong length included), sometimes with a few bytes flipped,
    inserted or deleted: fields moved, strings broken, lengths wrong, what a buggy or hostile sender produces."""
    body = bytearray(draw(job_traces()).SerializeToString())
    for _ in range(draw(st.integers(0, 2))):
        position = draw(st.integers(0, len(body)))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "insert" or not body:
            body[position:position] = draw(st.binary(min_size=1, max_size=3))
        elif action == "flip":
            body[min(position, len(body) - 1)] ^= draw(st.integers(1, 255))
        else:
            del body[min(position, len(body) - 1)]
    return bytes(body)
