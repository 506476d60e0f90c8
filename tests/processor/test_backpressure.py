"""Backpressure instead of loss: an outage downstream and an overloaded processor lose no span."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from jobtrail.otlp import EXPORT_METHOD_PATH, GRPC_RETRY_INFO_KEY, GRPC_STATUS_DETAILS_KEY
from jobtrail.processor.telemetry import (
    EXPORT_FAILURES,
    EXPORT_QUEUE_SPANS,
    REQUESTS_REFUSED,
    SPANS_EXPORT_DROPPED,
    SPANS_EXPORTED,
    SPANS_FORWARDED_UNCHANGED,
    SPANS_HELD,
    SPANS_RECEIVED,
    SPANS_STITCHED,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .builders import new_trace_id, request, span
from .conftest import enqueue_in_request, grpc_sender, http_sender, run_attempt, wait_for


def finished_spans(count: int, prefix: str):
    """``count`` finished plain root spans (each its own trace), as the SDK hands them to an exporter."""
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    for index in range(count):
        tracer.start_span(f"{prefix} {index}").end()
    return memory.get_finished_spans()


def test_downstream_outage_then_recovery_delivers_every_span(grpc_downstream, http_downstream, start_processor):
    """Both next hops (gRPC and HTTP) down, spans keep coming over both protocols, then the hops come back."""
    grpc_downstream.stop()
    http_downstream.stop()
    processor = start_processor(export_to=[grpc_downstream.url, http_downstream.url])
    api, worker = grpc_sender(processor, "api"), http_sender(processor, "worker")
    _server, enqueue = enqueue_in_request(api)
    run_attempt(worker, enqueue)
    tracer = api.get_tracer("tests")
    for index in range(16):
        tracer.start_span(f"during outage {index}").end()
    for url in (grpc_downstream.url, http_downstream.url):
        wait_for(lambda url=url: processor.telemetry.value(EXPORT_FAILURES, exporter=url) >= 2, f"retries to {url}")
    assert grpc_downstream.recorder.spans() == [] and http_downstream.recorder.spans() == []

    grpc_downstream.start()
    http_downstream.start()

    expected = {"POST /refunds", "send default", "process default", "job work"} | {
        f"during outage {index}" for index in range(16)
    }
    for downstream in (grpc_downstream, http_downstream):
        wait_for(lambda d=downstream: len(d.recorder.spans()) >= 20, f"every span at {downstream.url}")
        spans = downstream.recorder.spans()
        assert sorted(s.name for s in spans) == sorted(expected), "each span exactly once"
        assert {s.trace_id for s in spans if s.name in ("process default", "job work")} == {
            enqueue.trace_id.to_bytes(16, "big")
        }
        url = downstream.url
        wait_for(lambda url=url: processor.telemetry.value(SPANS_EXPORTED, exporter=url) == 20, "exported counter")
    telemetry = processor.telemetry
    assert telemetry.value(SPANS_RECEIVED) == 20
    assert telemetry.value(SPANS_STITCHED) == 2 and telemetry.value(SPANS_FORWARDED_UNCHANGED) == 18
    assert telemetry.value(SPANS_EXPORT_DROPPED) == 0 and telemetry.value(SPANS_HELD) == 0
    for url in (grpc_downstream.url, http_downstream.url):
        exported = telemetry.value(SPANS_EXPORTED, exporter=url)
        queued = telemetry.value(EXPORT_QUEUE_SPANS, exporter=url)
        assert exported + queued == telemetry.value(SPANS_STITCHED) + telemetry.value(SPANS_FORWARDED_UNCHANGED)


def test_full_queue_is_refused_as_retryable_on_both_protocols(grpc_downstream, start_processor):
    grpc_downstream.stop()
    processor = start_processor(
        export_to=[grpc_downstream.url], queue_max_spans=2, retry_after_seconds=0.25, shutdown_timeout_seconds=0.5
    )
    sender = GrpcSpanExporter(endpoint=f"127.0.0.1:{processor.grpc_port}", insecure=True)
    assert sender.export(finished_spans(2, "fills the queue")) == SpanExportResult.SUCCESS
    body = request(span("one more", new_trace_id())).SerializeToString()

    channel = grpc.insecure_channel(f"127.0.0.1:{processor.grpc_port}")
    export = channel.unary_unary(EXPORT_METHOD_PATH, request_serializer=None, response_deserializer=None)
    try:
        export(body, timeout=10)
        raise AssertionError("the full processor accepted the request")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        trailers = dict(error.trailing_metadata())
    finally:
        channel.close()
    status = status_pb2.Status.FromString(trailers[GRPC_STATUS_DETAILS_KEY])
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    retry_info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry_info)
    assert retry_info.retry_delay.ToMilliseconds() == 250
    assert error_details_pb2.RetryInfo.FromString(trailers[GRPC_RETRY_INFO_KEY]) == retry_info

    post = urllib.request.Request(
        f"http://127.0.0.1:{processor.http_port}/v1/traces",
        data=body,
        headers={"Content-Type": "application/x-protobuf"},
    )
    try:
        urllib.request.urlopen(post, timeout=10)
        raise AssertionError("the full processor accepted the request")
    except urllib.error.HTTPError as error:
        assert error.code == 503
        assert error.headers["Retry-After"] == "1"
        assert "export queue full" in status_pb2.Status.FromString(error.read()).message
    assert processor.telemetry.value(REQUESTS_REFUSED, reason="overloaded") == 2
    assert processor.telemetry.value(SPANS_RECEIVED) == 2

    processor.stop()
    assert processor.telemetry.value(SPANS_EXPORT_DROPPED) == 2, "spans given up at shutdown are counted"


def test_overloaded_processor_makes_sdk_exporters_retry_until_everything_is_delivered(grpc_downstream, start_processor):
    grpc_downstream.stop()
    # The SDK's gRPC exporter gives up after 6 tries: a 1 s RetryInfo gives it about 6 s to see the recovery.
    processor = start_processor(export_to=[grpc_downstream.url], queue_max_spans=4, retry_after_seconds=1.0)
    senders = {
        "grpc": GrpcSpanExporter(endpoint=f"127.0.0.1:{processor.grpc_port}", insecure=True, timeout=60),
        "http": HttpSpanExporter(endpoint=f"http://127.0.0.1:{processor.http_port}/v1/traces", timeout=60),
    }
    batches = {name: [finished_spans(2, f"{name} batch {b}") for b in range(4)] for name in senders}
    results: dict[str, list[SpanExportResult]] = {name: [] for name in senders}

    def send(name: str) -> None:
        for batch in batches[name]:
            results[name].append(senders[name].export(batch))

    threads = [threading.Thread(target=send, args=(name,)) for name in senders]
    for thread in threads:
        thread.start()
    wait_for(lambda: processor.telemetry.value(REQUESTS_REFUSED, reason="overloaded") >= 2, "refusals")
    grpc_downstream.start()
    for thread in threads:
        thread.join(90)

    assert results == {name: [SpanExportResult.SUCCESS] * 4 for name in senders}
    wait_for(lambda: len(grpc_downstream.recorder.spans()) >= 16, "all 16 spans downstream")
    expected = {s.name for batch_list in batches.values() for batch in batch_list for s in batch}
    assert {s.name for s in grpc_downstream.recorder.spans()} == expected
    assert processor.telemetry.value(SPANS_RECEIVED) == 16
    wait_for(lambda: processor.telemetry.value(SPANS_EXPORTED) == 16, "the exported counter")
    assert processor.telemetry.value(SPANS_EXPORT_DROPPED) == 0


def test_a_refused_request_leaves_nothing_behind(grpc_downstream, start_processor):
    """A refused request changes no state in the processor: the sender still owns those spans."""
    grpc_downstream.stop()
    processor = start_processor(export_to=[grpc_downstream.url], queue_max_spans=1, shutdown_timeout_seconds=0.5)
    ok = request(span("kept", new_trace_id()))
    refused = request(span("refused a", new_trace_id()), span("refused b", new_trace_id()))
    channel = grpc.insecure_channel(f"127.0.0.1:{processor.grpc_port}")
    export = channel.unary_unary(EXPORT_METHOD_PATH, request_serializer=ExportTraceServiceRequest.SerializeToString)
    try:
        export(ok, timeout=10)
        try:
            export(refused, timeout=10)
            raise AssertionError("accepted over the queue limit")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()
    assert processor.telemetry.value(SPANS_RECEIVED) == 1
    assert processor.spans.held_spans == 0 and len(processor.decisions) == 1


def test_the_queue_byte_bound_refuses_as_retryable_too(grpc_downstream, start_processor):
    """Few but big spans fill the queue by size before they fill it by count."""
    grpc_downstream.stop()
    processor = start_processor(
        export_to=[grpc_downstream.url], queue_max_bytes=4096, retry_after_seconds=0.25, shutdown_timeout_seconds=0.5
    )
    big = span("big", new_trace_id())
    big.attributes.add(key="blob").value.string_value = "x" * 3000
    channel = grpc.insecure_channel(f"127.0.0.1:{processor.grpc_port}")
    export = channel.unary_unary(EXPORT_METHOD_PATH, request_serializer=ExportTraceServiceRequest.SerializeToString)
    try:
        export(request(big), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            export(request(big), timeout=10)
    finally:
        channel.close()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "export queue full" in refused.value.details()
    assert processor.telemetry.value(SPANS_RECEIVED) == 1
    assert processor.telemetry.value(REQUESTS_REFUSED, reason="overloaded") == 1
