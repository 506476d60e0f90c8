"""SDK OTLP exporters -> processor (real sockets) -> real downstream receivers: the stitched trace, exactly."""

from __future__ import annotations

import gzip
import json
import urllib.request

import grpc
import pytest
from jobtrail.conventions import (
    ATTR_LINK_TYPE,
    ATTR_STITCHED_ORIGINAL_TRACE_ID,
    ATTR_STITCHED_PARENT_FROM_LINK,
    LINK_TYPE_ENQUEUED_BY,
)
from jobtrail.otlp.json_codec import decode_request
from jobtrail.processor.telemetry import (
    REQUESTS_REFUSED,
    SPANS_FORWARDED_UNCHANGED,
    SPANS_RECEIVED,
    SPANS_STITCHED,
)
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from .builders import attributes_of
from .conftest import enqueue_in_request, grpc_sender, http_sender, run_attempt, wait_for


@pytest.mark.parametrize(("api_sender", "worker_sender"), [(grpc_sender, http_sender), (http_sender, grpc_sender)])
def test_attempt_children_sent_before_root_end_up_in_the_request_trace(
    processor, grpc_downstream, api_sender, worker_sender
):
    api = api_sender(processor, "api")
    worker = worker_sender(processor, "worker")
    server, enqueue = enqueue_in_request(api)
    root, child = run_attempt(
        worker, enqueue, before_root=lambda: wait_for(lambda: processor.spans.held_spans == 1, "the child held")
    )

    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 4, "4 spans downstream")
    spans = grpc_downstream.recorder.spans_by_name()
    request_trace = enqueue.trace_id.to_bytes(16, "big")
    assert {s.trace_id for s in spans.values()} == {request_trace}
    assert spans["process default"].span_id == root.span_id.to_bytes(8, "big")
    assert spans["process default"].parent_span_id == enqueue.span_id.to_bytes(8, "big")
    assert spans["job work"].parent_span_id == root.span_id.to_bytes(8, "big")
    assert spans["send default"].parent_span_id == server.span_id.to_bytes(8, "big")
    original = f"{root.trace_id:032x}"
    assert attributes_of(spans["process default"])[ATTR_STITCHED_ORIGINAL_TRACE_ID] == original
    assert attributes_of(spans["process default"])[ATTR_STITCHED_PARENT_FROM_LINK] is True
    assert attributes_of(spans["job work"])[ATTR_STITCHED_ORIGINAL_TRACE_ID] == original
    assert ATTR_STITCHED_ORIGINAL_TRACE_ID not in attributes_of(spans["send default"])
    (kept_link,) = spans["process default"].links
    assert kept_link.trace_id == request_trace and kept_link.span_id == enqueue.span_id.to_bytes(8, "big")
    assert attributes_of(kept_link) == {ATTR_LINK_TYPE: LINK_TYPE_ENQUEUED_BY}
    assert grpc_downstream.recorder.resource_of("job work")["service.name"] == "worker"
    assert processor.telemetry.value(SPANS_RECEIVED) == 4
    assert processor.telemetry.value(SPANS_STITCHED) == 2


@pytest.mark.parametrize("http_compression", [HttpCompression.Gzip, HttpCompression.Deflate])
def test_compressed_sdk_exports_are_stitched(processor, grpc_downstream, http_compression):
    """The SDK exporters' compression options: gRPC gzip (handled by gRPC itself), HTTP gzip and deflate."""
    api = grpc_sender(processor, "api", compression=grpc.Compression.Gzip)
    worker = http_sender(processor, "worker", compression=http_compression)
    _server, enqueue = enqueue_in_request(api)
    root, child = run_attempt(worker, enqueue)

    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 4, "4 spans downstream")
    spans = grpc_downstream.recorder.spans_by_name()
    assert {s.trace_id for s in spans.values()} == {enqueue.trace_id.to_bytes(16, "big")}
    assert spans["process default"].parent_span_id == enqueue.span_id.to_bytes(8, "big")
    assert spans["job work"].parent_span_id == root.span_id.to_bytes(8, "big")
    assert processor.telemetry.value(REQUESTS_REFUSED) == 0


def test_retry_after_the_mapping_expired_is_still_stitched(grpc_downstream, start_processor):
    processor = start_processor(export_to=[grpc_downstream.url], mapping_ttl_seconds=0.3)
    api = grpc_sender(processor, "api")
    worker = grpc_sender(processor, "worker")
    _server, enqueue = enqueue_in_request(api)
    first, _ = run_attempt(worker, enqueue)
    wait_for(lambda: len(processor.decisions) == 0, "every mapping to expire")

    retry, retry_child = run_attempt(worker, enqueue, name="process default (retry)", previous=first)

    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 6, "6 spans downstream")
    request_trace = enqueue.trace_id.to_bytes(16, "big")
    retry_spans = [
        s
        for s in grpc_downstream.recorder.spans()
        if s.span_id in {retry.span_id.to_bytes(8, "big"), retry_child.span_id.to_bytes(8, "big")}
    ]
    assert len(retry_spans) == 2
    assert {s.trace_id for s in retry_spans} == {request_trace}
    root = grpc_downstream.recorder.spans_by_name()["process default (retry)"]
    assert root.parent_span_id == enqueue.span_id.to_bytes(8, "big")
    assert [link.trace_id for link in root.links] == [request_trace, first.trace_id.to_bytes(16, "big")]


def test_traces_without_job_links_arrive_with_identical_content(processor, grpc_downstream):
    sender = http_sender(processor, "api")
    memory = InMemorySpanExporter()
    sender.add_span_processor(SimpleSpanProcessor(memory))
    tracer = sender.get_tracer("tests.api")
    with tracer.start_as_current_span("GET /", kind=SpanKind.SERVER), tracer.start_as_current_span("SELECT 1") as inner:
        inner.add_event("rows", {"n": 1})
        inner.add_link(trace.SpanContext(0xABC, 0xDEF, False), {"why": "test"})

    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 2, "2 spans downstream")
    expected = {
        span.span_id: span.SerializeToString()
        for rs in encode_spans(memory.get_finished_spans()).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    }
    assert {s.span_id: s.SerializeToString() for s in grpc_downstream.recorder.spans()} == expected
    assert processor.telemetry.value(SPANS_FORWARDED_UNCHANGED) == 2


def test_gzip_otlp_json_with_hex_ids_is_stitched(processor, grpc_downstream):
    enqueue_trace, enqueue_span = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    attempt_trace, attempt_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "worker"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "tests"},
                        "spans": [
                            {
                                "traceId": attempt_trace,
                                "spanId": attempt_span,
                                "name": "process default",
                                "kind": 5,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000001000000000",
                                "links": [
                                    {
                                        "traceId": enqueue_trace,
                                        "spanId": enqueue_span,
                                        "attributes": [
                                            {"key": ATTR_LINK_TYPE, "value": {"stringValue": LINK_TYPE_ENQUEUED_BY}}
                                        ],
                                    }
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    body = gzip.compress(json.dumps(document).encode())
    post = urllib.request.Request(
        f"http://127.0.0.1:{processor.http_port}/v1/traces",
        data=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    with urllib.request.urlopen(post, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.read()) == {}

    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 1, "the span downstream")
    (span,) = grpc_downstream.recorder.spans()
    assert span.trace_id.hex() == enqueue_trace and span.parent_span_id.hex() == enqueue_span
    assert span.span_id.hex() == attempt_span and span.kind == 5


def test_http_and_file_exporters_carry_the_same_stitched_trace(http_downstream, start_processor, tmp_path):
    path = tmp_path / "traces" / "out.jsonl"
    processor = start_processor(export_to=[http_downstream.url, f"file://{path}"])
    sender = grpc_sender(processor, "both")
    _server, enqueue = enqueue_in_request(sender)
    run_attempt(sender, enqueue)

    wait_for(lambda: len(http_downstream.recorder.spans()) == 4, "4 spans over HTTP")
    # The export queue may join both requests into one batch (one line) when the file exporter is behind.
    wait_for(lambda: len(_spans_in_file(path)) == 4, "4 spans in the file")
    processor.stop()
    from_file = _spans_in_file(path)
    assert sorted(s.SerializeToString() for s in from_file) == sorted(
        s.SerializeToString() for s in http_downstream.recorder.spans()
    )
    assert {s.trace_id for s in from_file} == {enqueue.trace_id.to_bytes(16, "big")}
    first_line = json.loads(path.read_bytes().splitlines()[0])
    first_span = first_line["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(first_span["traceId"]) == 32 and isinstance(first_span["kind"], int)


def _spans(request):
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def _spans_in_file(path):
    """The spans of every complete line of an exporter's file (none while it does not exist)."""
    written = path.read_bytes() if path.exists() else b""
    complete = written[: written.rfind(b"\n") + 1]
    return [s for line in complete.splitlines() for s in _spans(decode_request(line))]
