"""The OTLP/JSON codec and the HTTP body decoder: exact round trips, and nothing but a clear refusal on junk.

Property tests (hypothesis) over both decoders, and over decoder + stitcher with mutated protobuf bodies.
"""

from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobtrail.otlp.json_codec import OtlpDecodeError, decode_request, encode_request
from jobtrail.processor.config import STITCH_RULE_MESSAGING
from jobtrail.processor.decision_cache import DecisionCache
from jobtrail.processor.receivers.http import RequestRefused, decode_body
from jobtrail.processor.span_store import SpanStore
from jobtrail.processor.stitch import Stitcher
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from .strategies import ENQUEUED_BY, key_values, mutated_bodies, span_count

LIMIT = 1 << 20


@st.composite
def spans(draw) -> Span:
    built = Span(
        trace_id=draw(st.binary(min_size=16, max_size=16)),
        span_id=draw(st.binary(min_size=8, max_size=8)),
        parent_span_id=draw(st.one_of(st.just(b""), st.binary(min_size=8, max_size=8))),
        name=draw(st.text(max_size=20)),
        kind=draw(st.sampled_from(list(Span.SpanKind.values()))),
        start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        end_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        status=Status(code=draw(st.sampled_from(list(Status.StatusCode.values()))), message=draw(st.text(max_size=5))),
    )
    built.attributes.extend(draw(st.lists(key_values, max_size=3)))
    for _ in range(draw(st.integers(0, 2))):
        built.links.add(
            trace_id=draw(st.binary(min_size=16, max_size=16)),
            span_id=draw(st.binary(min_size=8, max_size=8)),
            attributes=draw(st.lists(st.one_of(key_values, st.just(ENQUEUED_BY)), max_size=2)),
        )
    return built


@st.composite
def requests(draw) -> ExportTraceServiceRequest:
    built = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        resource_spans = built.resource_spans.add()
        resource_spans.resource.attributes.extend(draw(st.lists(key_values, max_size=2)))
        for _ in range(draw(st.integers(0, 2))):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = draw(st.text(max_size=10))
            scope_spans.spans.extend(draw(st.lists(spans(), max_size=3)))
    return built


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_json_round_trip_is_exact(original: ExportTraceServiceRequest) -> None:
    assert decode_request(encode_request(original)) == original


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_encoded_ids_are_hex_and_enums_integers(original: ExportTraceServiceRequest) -> None:
    document = json.loads(encode_request(original))
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                assert len(span["traceId"]) == 32 and int(span["traceId"], 16) >= 0
                assert len(span["spanId"]) == 16
                assert "kind" not in span or isinstance(span["kind"], int)
                for link in span.get("links", []):
                    assert len(link["traceId"]) == 32 and len(link["spanId"]) == 16


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=15), children, max_size=4),
    max_leaves=30,
)
otlp_keys = st.sampled_from(
    ["resourceSpans", "scopeSpans", "spans", "traceId", "spanId", "parentSpanId", "links", "attributes", "kind"]
)
otlp_shaped = st.recursive(
    st.none() | st.integers() | st.text(alphabet="0123456789abcdefXZ ", max_size=34),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(otlp_keys, children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, otlp_shaped))
def test_json_decoder_accepts_or_refuses_clearly(document: object) -> None:
    try:
        decoded = decode_request(json.dumps(document).encode())
    except OtlpDecodeError as error:
        assert str(error)
    else:
        assert isinstance(decoded, ExportTraceServiceRequest)


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(st.binary(max_size=300), requests().map(lambda r: r.SerializeToString()[:-1])),
    media_type=st.sampled_from(["application/x-protobuf", "application/json"]),
    compress=st.booleans(),
)
def test_body_decoder_never_fails_with_anything_but_a_4xx(body: bytes, media_type: str, compress: bool) -> None:
    encoding = "gzip" if compress else "identity"
    payload = gzip.compress(body) if compress else body
    try:
        decoded = decode_body(media_type, encoding, payload, LIMIT)
    except RequestRefused as refusal:
        assert 400 <= refusal.status < 500 and str(refusal)
    else:
        assert isinstance(decoded, ExportTraceServiceRequest)


@pytest.mark.usefixtures("both_stitch_paths")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_bodies(), rule=st.sampled_from(["jobtrail", STITCH_RULE_MESSAGING]))
def test_whatever_decodes_is_stitched_without_losing_or_inventing_a_span(body: bytes, rule: str) -> None:
    """Decoder + stitcher together: a request is refused with a 4xx, or every span in it is accounted for
    (rejected one by one, forwarded, or held and then drained) and nothing crashes."""
    try:
        decoded = decode_body("application/x-protobuf", "identity", body, LIMIT)
    except RequestRefused as refusal:
        assert refusal.status == 400
        return
    incoming = span_count(decoded)
    stitcher = Stitcher(SpanStore(2.0, 1000, 1 << 30), DecisionCache(60.0, 1000), rule)

    result = stitcher.process(decoded, now=0.0)
    drained = stitcher.drain()

    out = span_count(result.request) + span_count(drained.request)
    assert result.rejected + out == incoming
    assert result.stitched + sum(result.unchanged.values()) + sum(drained.unchanged.values()) == out
    assert ExportTraceServiceRequest.FromString(result.request.SerializeToString()) == result.request


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("traceId", "ab" * 15, "traceId must be 32 hex characters, got 30"),
        ("spanId", "ab" * 9, "spanId must be 16 hex characters, got 18"),
        ("parentSpanId", "ab", "parentSpanId must be 16 hex characters, got 2"),
        ("traceId", "AQIDBAUGBwgJCgsMDQ4PEA==", "traceId must be 32 hex characters, got 24"),
        ("spanId", 12, "spanId must be a hex string, got int"),
    ],
)
def test_wrong_ids_name_the_field(field: str, value: object, message: str) -> None:
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", field: value}
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    with pytest.raises(OtlpDecodeError, match="resourceSpans\\[0\\].scopeSpans\\[0\\].spans\\[0\\]") as error:
        decode_request(json.dumps(document))
    assert message in str(error.value)


def test_link_ids_are_checked_too() -> None:
    link = {"traceId": "00" * 16, "spanId": "abc"}
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "links": [link]}
    with pytest.raises(OtlpDecodeError, match=r"spans\[0\]\.links\[0\]\.spanId must be 16 hex characters, got 3"):
        decode_request(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}))


def test_snake_case_names_and_string_enums_are_accepted() -> None:
    document = {
        "resource_spans": [
            {"scope_spans": [{"spans": [{"trace_id": "11" * 16, "span_id": "22" * 8, "kind": "SPAN_KIND_SERVER"}]}]}
        ]
    }
    (span,) = decode_request(json.dumps(document)).resource_spans[0].scope_spans[0].spans
    assert span.trace_id == b"\x11" * 16 and span.kind == Span.SPAN_KIND_SERVER
