"""Exporters retry exactly what the OTLP spec calls retryable, honour the server's delay, and rotate files."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import grpc
from jobtrail.otlp.json_codec import decode_request
from jobtrail.processor.exporters.base import split_request
from jobtrail.processor.exporters.grpc import retry_delay
from jobtrail.processor.exporters.http import parse_retry_after
from jobtrail.processor.receivers.grpc import retry_trailers
from jobtrail.processor.telemetry import EXPORT_FAILURES, EXPORT_QUEUE_BYTES, SPANS_EXPORT_DROPPED, SPANS_EXPORTED
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .builders import new_trace_id, request, span
from .conftest import grpc_sender, wait_for


def send_plain_spans(pipeline, count: int, prefix: str = "span") -> None:
    tracer = grpc_sender(pipeline, "api").get_tracer("tests")
    for index in range(count):
        tracer.start_span(f"{prefix} {index}").end()


def test_http_exporter_retries_429_and_503_then_delivers(http_downstream, start_processor):
    http_downstream.script = [(503, {"Retry-After": "0"}), (429, {}), (502, {"Retry-After": "0"})]
    processor = start_processor(export_to=[http_downstream.url])

    send_plain_spans(processor, 1)

    wait_for(lambda: len(http_downstream.recorder.spans()) == 1, "the span after three refusals")
    assert http_downstream.answers == [503, 429, 502, 200]
    assert processor.telemetry.value(EXPORT_FAILURES) == 3
    wait_for(lambda: processor.telemetry.value(SPANS_EXPORTED) == 1, "the exported counter")


def test_http_exporter_does_not_retry_a_400_and_counts_the_loss(http_downstream, start_processor):
    http_downstream.script = [(400, {})]
    processor = start_processor(export_to=[http_downstream.url])

    send_plain_spans(processor, 1)

    wait_for(lambda: processor.telemetry.value(SPANS_EXPORT_DROPPED) == 1, "the dropped counter")
    send_plain_spans(processor, 1, prefix="next")
    wait_for(lambda: len(http_downstream.recorder.spans()) == 1, "the next span")
    assert http_downstream.answers == [400, 200]
    assert http_downstream.recorder.spans()[0].name == "next 0"


def test_grpc_resource_exhausted_without_retry_info_is_permanent(grpc_downstream, start_processor):
    grpc_downstream.refuse_with = grpc.StatusCode.RESOURCE_EXHAUSTED
    processor = start_processor(export_to=[grpc_downstream.url])

    send_plain_spans(processor, 2)

    wait_for(lambda: processor.telemetry.value(SPANS_EXPORT_DROPPED) == 2, "the dropped counter")
    assert 1 <= grpc_downstream.calls <= 2, "one call per batch, none retried"
    assert processor.telemetry.value(EXPORT_FAILURES) == grpc_downstream.calls


def test_grpc_unavailable_is_retried_until_the_downstream_accepts(grpc_downstream, start_processor):
    grpc_downstream.refuse_with = grpc.StatusCode.UNAVAILABLE
    processor = start_processor(export_to=[grpc_downstream.url])

    send_plain_spans(processor, 3)
    wait_for(lambda: processor.telemetry.value(EXPORT_FAILURES) >= 3, "retries")
    grpc_downstream.refuse_with = None

    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 3, "all spans once accepted")
    assert processor.telemetry.value(SPANS_EXPORT_DROPPED) == 0


def test_retry_delays_are_read_from_the_server_answer():
    trailers = retry_trailers(1.5, "busy")
    assert retry_delay(trailers) == 1.5
    assert retry_delay(trailers[:1]) == 1.5
    assert retry_delay(trailers[1:]) == 1.5
    assert retry_delay(()) is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now.timestamp()) == 30.0


def test_file_exporter_writes_otlp_json_lines_and_rotates(start_processor, tmp_path):
    path = tmp_path / "spans.jsonl"
    processor = start_processor(export_to=[f"file://{path}"], file_max_bytes=600, file_backups=2)
    for index in range(8):
        processor.consume(request(span(f"plain {index}", new_trace_id())), None)
        wait_for(lambda index=index: processor.telemetry.value(SPANS_EXPORTED) == index + 1, "one line written")
    processor.stop()

    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["spans.jsonl", "spans.jsonl.1", "spans.jsonl.2"]
    for name in files:
        lines = (tmp_path / name).read_bytes().splitlines()
        assert lines and all(len(line) <= 600 for line in lines)
        for line in lines:
            assert "resourceSpans" in json.loads(line)
            decode_request(line)
    newest = [
        s.name
        for line in path.read_bytes().splitlines()
        for rs in decode_request(line).resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    assert newest[-1] == "plain 7"


def test_a_request_over_the_batch_size_goes_out_in_pieces(grpc_downstream, start_processor):
    """One big request (it would pass a 4 MiB hop only in pieces) is split at span granularity, nothing lost."""
    processor = start_processor(export_to=[grpc_downstream.url], export_batch_max_bytes=4096)
    spans = [span(f"big {index}", new_trace_id()) for index in range(12)]
    for index, big in enumerate(spans):
        big.attributes.add(key="blob").value.string_value = str(index) * 1000
    processor.consume(request(*spans[:6], service="a"), None)
    processor.consume(request(*spans[6:], service="b"), None)

    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 12, "all 12 spans")
    received = grpc_downstream.recorder.spans_by_name()
    assert {name: s.SerializeToString() for name, s in received.items()} == {
        s.name: s.SerializeToString() for s in spans
    }
    assert all(r.ByteSize() <= 4096 for r in grpc_downstream.recorder.requests)
    assert grpc_downstream.recorder.resource_of("big 0")["service.name"] == "a"
    assert grpc_downstream.recorder.resource_of("big 11")["service.name"] == "b"
    wait_for(lambda: processor.telemetry.value(SPANS_EXPORTED) == 12, "the exported counter")
    assert processor.telemetry.value(EXPORT_QUEUE_BYTES) == 0


def test_split_request_keeps_every_span_with_its_resource_and_scope():
    spans = [span(f"s{index}", new_trace_id()) for index in range(7)]
    whole = request(*spans[:3], service="a", scope="one")
    whole.MergeFrom(request(*spans[3:], service="b", scope="two"))

    pieces = split_request(whole.SerializeToString(), 300)

    assert len(pieces) > 1 and sum(count for _payload, count in pieces) == 7
    rebuilt = [
        (rs.resource.attributes[0].value.string_value, ss.scope.name, s.name)
        for payload, _count in pieces
        for rs in ExportTraceServiceRequest.FromString(payload).resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    assert rebuilt == [("a", "one", f"s{i}") for i in range(3)] + [("b", "two", f"s{i}") for i in range(3, 7)]
