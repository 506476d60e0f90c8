"""Bad input gets a clear 4xx (or gRPC status), is counted, and the processor keeps serving."""

from __future__ import annotations

import gzip
import http.client
import json
import zlib

import grpc
import pytest
from google.rpc import status_pb2
from jobtrail.otlp import EXPORT_METHOD_PATH, GRPC_RETRY_INFO_KEY, GRPC_STATUS_DETAILS_KEY
from jobtrail.processor.telemetry import REQUESTS_REFUSED, SPANS_REJECTED
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .builders import new_trace_id, request, span
from .conftest import wait_for

LIMIT = 64 * 1024


@pytest.fixture
def small_processor(grpc_downstream, start_processor):
    return start_processor(export_to=[grpc_downstream.url], max_request_bytes=LIMIT)


def post(pipeline, body: bytes, headers: dict[str, str], method: str = "POST", path: str = "/v1/traces"):
    connection = http.client.HTTPConnection("127.0.0.1", pipeline.http_port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def valid_body() -> bytes:
    return request(span("fine", new_trace_id())).SerializeToString()


def assert_still_serving(pipeline, grpc_downstream) -> None:
    before = len(grpc_downstream.recorder.spans())
    status, _headers, _body = post(pipeline, valid_body(), {"Content-Type": "application/x-protobuf"})
    assert status == 200
    wait_for(lambda: len(grpc_downstream.recorder.spans()) == before + 1, "a valid request still going through")
    assert post(pipeline, b"", {}, method="GET", path="/healthz")[0] == 200


PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"\xff\xff\xff\xff\xff", PROTOBUF, 400, "not an OTLP ExportTraceServiceRequest"),
        (valid_body()[:-3], PROTOBUF, 400, "not an OTLP ExportTraceServiceRequest"),
        (b"{not json", JSON, 400, "not valid JSON"),
        (b"[1, 2]", JSON, 400, "JSON object"),
        (b'{"resourceSpans": {"a": 1}}', JSON, 400, "resourceSpans must be an array"),
        (
            json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abcd", "spanId": "0" * 16}]}]}]}
            ).encode(),
            JSON,
            400,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId must be 32 hex characters, got 4",
        ),
        (
            json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz" * 16, "spanId": "0" * 16}]}]}]}
            ).encode(),
            JSON,
            400,
            "traceId must be hex",
        ),
        (b'{"resourceSpans": [], "\\ud800": 1}', JSON, 400, "an object key is not valid Unicode"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"\\udc00name": "x"}]}]}]}',
            JSON,
            400,
            "an object key is not valid Unicode",
        ),
        (gzip.compress(b"{}")[:-4], {**JSON, "Content-Encoding": "gzip"}, 400, "gzip"),
        (zlib.compress(valid_body())[:-6], {**PROTOBUF, "Content-Encoding": "deflate"}, 400, "deflate body is"),
        (b"plain", {"Content-Type": "text/plain"}, 415, "use application/x-protobuf or application/json"),
        (valid_body(), {**PROTOBUF, "Content-Encoding": "br"}, 415, "Content-Encoding 'br'"),
        (b"\0" * (LIMIT + 1), PROTOBUF, 413, "over the 65536 byte limit"),
        (gzip.compress(b"\0" * (LIMIT * 8)), {**PROTOBUF, "Content-Encoding": "gzip"}, 413, "inflates to over"),
    ],
    ids=[
        "garbage-protobuf",
        "truncated-protobuf",
        "broken-json",
        "json-array",
        "json-wrong-shape",
        "json-short-trace-id",
        "json-non-hex-id",
        "json-lone-surrogate-key",
        "json-lone-surrogate-key-in-span",
        "truncated-gzip",
        "truncated-deflate",
        "unknown-content-type",
        "unknown-content-encoding",
        "huge-body",
        "gzip-bomb",
    ],
)
def test_bad_http_bodies_get_a_clear_client_error(small_processor, grpc_downstream, body, headers, status, message):
    got_status, got_headers, got_body = post(small_processor, body, headers)

    assert got_status == status
    assert "Retry-After" not in got_headers
    if headers.get("Content-Type") == "application/x-protobuf":
        assert message in status_pb2.Status.FromString(got_body).message
    else:
        assert message in json.loads(got_body)["message"]
    assert small_processor.telemetry.value(REQUESTS_REFUSED) == 1
    assert_still_serving(small_processor, grpc_downstream)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_non_post_is_405(small_processor, method):
    status, headers, body = post(small_processor, b"", {}, method=method)
    assert status == 405 and headers["Allow"] == "POST"
    assert json.loads(body)["message"] == "use POST"


def test_spans_with_bad_ids_are_a_partial_success(small_processor, grpc_downstream):
    body = request(span("kept", new_trace_id()), span("short id", b"\x01" * 8)).SerializeToString()

    status, _headers, answer = post(small_processor, body, PROTOBUF)

    assert status == 200
    partial = ExportTraceServiceResponse.FromString(answer).partial_success
    assert partial.rejected_spans == 1 and "16 bytes (trace)" in partial.error_message
    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 1, "the good span downstream")
    assert grpc_downstream.recorder.spans()[0].name == "kept"
    assert small_processor.telemetry.value(SPANS_REJECTED) == 1


def test_bad_ids_over_grpc_are_a_partial_success_too(small_processor, grpc_downstream):
    bad = request(span("kept", new_trace_id()), span("long span id", new_trace_id()))
    bad.resource_spans[0].scope_spans[0].spans[1].span_id = b"\x02" * 9
    channel = grpc.insecure_channel(f"127.0.0.1:{small_processor.grpc_port}")
    export = channel.unary_unary(
        EXPORT_METHOD_PATH, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString
    )
    try:
        answer = export(bad.SerializeToString(), timeout=10)
    finally:
        channel.close()

    assert answer.partial_success.rejected_spans == 1
    assert "got 16, 9 and 0" in answer.partial_success.error_message
    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 1, "the good span downstream")
    assert grpc_downstream.recorder.spans()[0].name == "kept"


def test_a_parent_id_of_the_wrong_length_is_a_partial_success(small_processor, grpc_downstream):
    body = request(span("kept", new_trace_id()), span("odd parent", new_trace_id(), b"\x01" * 4)).SerializeToString()

    status, _headers, answer = post(small_processor, body, PROTOBUF)

    assert status == 200
    partial = ExportTraceServiceResponse.FromString(answer).partial_success
    assert partial.rejected_spans == 1 and "got 16, 8 and 4" in partial.error_message
    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 1, "the good span downstream")


def test_a_processor_bug_is_a_500_and_the_process_keeps_serving(small_processor, grpc_downstream, monkeypatch):
    def broken(*_args):
        raise RuntimeError("bug")

    monkeypatch.setattr(small_processor.stitcher, "process", broken)
    status, _headers, body = post(small_processor, valid_body(), PROTOBUF)
    assert status == 500 and "internal error" in status_pb2.Status.FromString(body).message
    monkeypatch.undo()
    assert_still_serving(small_processor, grpc_downstream)


def test_bad_grpc_requests_get_invalid_argument_or_resource_exhausted(small_processor, grpc_downstream):
    channel = grpc.insecure_channel(f"127.0.0.1:{small_processor.grpc_port}")
    export = channel.unary_unary(EXPORT_METHOD_PATH, request_serializer=None, response_deserializer=None)
    try:
        with pytest.raises(grpc.RpcError) as garbage:
            export(b"\xff\xff\xff\xff\xff", timeout=10)
        with pytest.raises(grpc.RpcError) as huge:
            export(b"\0" * (LIMIT + 1), timeout=10)
    finally:
        channel.close()

    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an OTLP ExportTraceServiceRequest" in garbage.value.details()
    assert huge.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(huge.value.trailing_metadata() or ())
    assert GRPC_RETRY_INFO_KEY not in trailers and GRPC_STATUS_DETAILS_KEY not in trailers
    assert small_processor.telemetry.value(REQUESTS_REFUSED, reason="bad_request") == 1
    assert_still_serving(small_processor, grpc_downstream)
