"""The stitcher's C scanner (``jobtrail._otlp_wire``) against its Python path: the same decisions, counts and
spans out for every request either takes, hostile bytes included."""

from __future__ import annotations

import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobtrail import _otlp_wire
from jobtrail.conventions import ATTR_LINK_TYPE, LINK_TYPE_ENQUEUED_BY
from jobtrail.processor.config import STITCH_RULE_JOBTRAIL, STITCH_RULE_MESSAGING
from jobtrail.processor.decision_cache import DecisionCache
from jobtrail.processor.receivers.http import RequestRefused, decode_body
from jobtrail.processor.span_store import SpanStore
from jobtrail.processor.stitch import Stitcher, StitchResult
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from .builders import attempt_root, new_trace_id, request, span, spans_of
from .strategies import mutated_bodies

LIMIT = 1 << 20


def stitcher(rule: str, c_scanner: bool) -> Stitcher:
    return Stitcher(SpanStore(2.0, 1000, 1 << 30), DecisionCache(60.0, 1000), rule, use_c_scanner=c_scanner)


def outcome(result: StitchResult) -> tuple[object, ...]:
    """What a stitch result means, whatever path made it: the counts and the spans out as the next hop reads them.
    Not compared: fields the OTLP types do not know, and whether an empty resource or scope is sent or left out
    (the Python path drops the first and sends the second for held spans; the C path keeps what came)."""
    forwarded = ExportTraceServiceRequest.FromString(result.serialized())
    for resource_spans in forwarded.resource_spans:
        resource_spans.resource.SetInParent()
        for scope_spans in resource_spans.scope_spans:
            scope_spans.scope.SetInParent()
    counts = (result.stitched, result.unchanged, result.rejected, result.rejected_reason, result.spans_out)
    return counts, MessageToDict(forwarded)


def both_paths(raw: bytes, rule: str = STITCH_RULE_JOBTRAIL) -> tuple[list[object], list[object]]:
    """Each path's outcome of ``raw`` then of a drain, and what it held in between."""
    outcomes = []
    for c_scanner in (True, False):
        subject = stitcher(rule, c_scanner)
        assert subject.uses_c_scanner is c_scanner
        processed = subject.process(ExportTraceServiceRequest.FromString(raw), now=0.0, raw=raw)
        held = subject.spans.held_spans
        outcomes.append([outcome(processed), held, outcome(subject.drain())])
    return outcomes[0], outcomes[1]


def test_the_c_scanner_is_installed_in_this_environment() -> None:
    """./dev installs it (collector_processor/wire): the suite runs the processor as it is deployed."""
    assert stitcher(STITCH_RULE_JOBTRAIL, True).uses_c_scanner


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_bodies(), rule=st.sampled_from([STITCH_RULE_JOBTRAIL, STITCH_RULE_MESSAGING]))
def test_both_paths_stitch_whatever_decodes_alike(body: bytes, rule: str) -> None:
    try:
        decode_body("application/x-protobuf", "identity", body, LIMIT)
    except RequestRefused:
        return
    with_c, in_python = both_paths(body, rule)
    assert with_c == in_python


def test_a_field_sent_twice_counts_as_protobuf_says_the_last_one() -> None:
    root = attempt_root(span("send default", new_trace_id()))
    child = span("job work", root.trace_id, root.span_id)
    stray = span("stray", new_trace_id())
    # the child's bytes end with a second trace id: the span belongs to the stray's trace, which passes
    with_second_trace_id = child.SerializeToString() + bytes([0x0A, 16]) + stray.trace_id
    raw = request(root, stray).SerializeToString() + request_bytes_with_span(with_second_trace_id)

    with_c, in_python = both_paths(raw)

    assert with_c == in_python
    forwarded = ExportTraceServiceRequest.FromString(stitcher_output(raw))
    assert {s.name: s.trace_id for s in spans_of(forwarded)}["job work"] == stray.trace_id


def request_bytes_with_span(span_bytes: bytes) -> bytes:
    """A request of one resource, one scope and one span given as bytes."""
    return nested(0x0A, nested(0x12, nested(0x12, span_bytes)))


def nested(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: its one-byte tag, the payload's length as a varint, the payload."""
    length, size = bytearray(), len(payload)
    while size >= 0x80:
        length.append(size & 0x7F | 0x80)
        size >>= 7
    return bytes([tag, *length, size]) + payload


def stitcher_output(raw: bytes) -> bytes:
    return (
        stitcher(STITCH_RULE_JOBTRAIL, True).process(ExportTraceServiceRequest.FromString(raw), 0.0, raw).serialized()
    )


def test_fields_the_types_do_not_know_go_out_as_they_came() -> None:
    root = attempt_root(span("send default", new_trace_id()))
    unknown = bytes([0xF8, 0x07, 0x2A])  # field 127, varint 42
    raw = request_bytes_with_span(root.SerializeToString() + unknown)

    out = stitcher_output(raw)

    assert unknown in out
    (moved,) = spans_of(ExportTraceServiceRequest.FromString(out))
    assert moved.trace_id == root.links[0].trace_id


def test_bytes_the_scanner_does_not_take_go_the_python_way() -> None:
    """A group (wire types 3 and 4, which proto3 never writes) is legal protobuf the scanner leaves to upb."""
    root = attempt_root(span("send default", new_trace_id()))
    group = bytes([0xFB, 0x07, 0xFC, 0x07])  # start and end of group 127
    raw = request_bytes_with_span(root.SerializeToString() + group)
    assert _otlp_wire.scan(raw, None, None) is None

    with_c, in_python = both_paths(raw)

    assert with_c == in_python and with_c[0][0][0] == 1, "the attempt moved on both paths"


@pytest.mark.parametrize(
    ("attributes", "decides"),
    [
        ([KeyValue(key=ATTR_LINK_TYPE, value=AnyValue(string_value=LINK_TYPE_ENQUEUED_BY))], True),
        (
            [
                KeyValue(key=ATTR_LINK_TYPE, value=AnyValue(string_value="retry_of")),
                KeyValue(key=ATTR_LINK_TYPE, value=AnyValue(string_value=LINK_TYPE_ENQUEUED_BY)),
            ],
            False,  # the first attribute with the key counts
        ),
        ([KeyValue(key="other", value=AnyValue(string_value=LINK_TYPE_ENQUEUED_BY))], False),
        ([KeyValue(key=ATTR_LINK_TYPE, value=AnyValue(bytes_value=LINK_TYPE_ENQUEUED_BY.encode()))], False),
    ],
)
def test_the_scanner_reads_the_link_type_as_the_rules_do(attributes: list[KeyValue], decides: bool) -> None:
    root = span("process default", new_trace_id())
    link = root.links.add(trace_id=new_trace_id(), span_id=b"\x02" * 8)
    link.attributes.extend(attributes)
    raw = request(root).SerializeToString()

    with_c, in_python = both_paths(raw)

    assert with_c == in_python
    assert with_c[0][0][0] == (1 if decides else 0)


def test_a_oneof_member_set_later_wins_over_the_string() -> None:
    root = span("process default", new_trace_id())
    link = root.links.add(trace_id=new_trace_id(), span_id=b"\x02" * 8)
    link.attributes.add(key=ATTR_LINK_TYPE, value=AnyValue(string_value=LINK_TYPE_ENQUEUED_BY))
    # append an int_value to the attribute's AnyValue by merging a second KeyValue.value into it
    later = KeyValue(value=AnyValue(int_value=7)).SerializeToString()
    attribute = link.attributes[0].SerializeToString() + later
    link_bytes = nested(0x0A, link.trace_id) + nested(0x12, link.span_id) + nested(0x22, attribute)
    root_without_links = type(root)()
    root_without_links.CopyFrom(root)
    del root_without_links.links[:]
    span_bytes = root_without_links.SerializeToString() + nested(0x6A, link_bytes)
    raw = request_bytes_with_span(span_bytes)

    with_c, in_python = both_paths(raw)

    assert with_c == in_python
    assert with_c[0][0][0] == 0, "the link's type is an int now: nothing decides"


def test_rewrite_refuses_ids_it_cannot_hold() -> None:
    raw = request(span("GET /", new_trace_id())).SerializeToString()
    scanned = _otlp_wire.scan(raw, None, None)
    assert scanned is not None
    parsed = scanned[-1]
    with pytest.raises(ValueError, match="16"):
        _otlp_wire.rewrite(parsed, {b"short": (b"", b"")}, set())
    trace_id = new_trace_id()
    with pytest.raises(ValueError, match="both moved and held"):
        _otlp_wire.rewrite(parsed, {trace_id: (b"", b"")}, {trace_id})
    with pytest.raises(TypeError):
        _otlp_wire.rewrite(parsed, {trace_id: b""}, set())
    with pytest.raises(ValueError):  # not a parsed request
        _otlp_wire.rewrite(raw, {}, set())  # type: ignore[arg-type]
