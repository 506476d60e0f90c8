"""A bad next hop: odd retry delays, timeouts, a crashing export loop, a stall. The exporter neither spins, nor
stalls, nor dies, and delivers every span (duplicates only from batches that timed out)."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from jobtrail.otlp import GRPC_RETRY_INFO_KEY, GRPC_STATUS_DETAILS_KEY
from jobtrail.processor.config import ProcessorConfig
from jobtrail.processor.exporters.base import clamp_retry_delay
from jobtrail.processor.exporters.grpc import retry_delay
from jobtrail.processor.exporters.http import parse_retry_after
from jobtrail.processor.telemetry import (
    EXPORT_BATCH_LIMIT_BYTES,
    EXPORT_FAILURES,
    EXPORT_STALLED,
    EXPORT_THREAD_RESTARTS,
    SPANS_EXPORT_DROPPED,
    SPANS_EXPORTED,
)

from tests.fixtures.otlp_receiver import GrpcTraceReceiver

from .builders import new_trace_id, request, span
from .conftest import wait_for

CONFIG = ProcessorConfig(retry_initial_backoff_seconds=0.5, retry_max_backoff_seconds=30.0)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(None, 2.0), (0.0, 0.5), (-5.0, 0.5), (3.0, 3.0), (99999999999.0, 30.0), (math.inf, 2.0), (math.nan, 2.0)],
)
def test_server_delays_are_clamped_to_the_backoff_range(requested, expected):
    assert clamp_retry_delay(requested, 2.0, CONFIG) == expected


def test_odd_retry_after_headers_parse_without_raising():
    now = 1_900_000_000.0
    assert parse_retry_after("99999999999") == 99999999999.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 0.0, "a date in the past"
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now) > 1e11
    for garbage in ("-1", "1.5", "soon", "Mon, 99 Foo 2020 99:99:99 GMT", "\x00"):
        assert parse_retry_after(garbage) is None


def test_odd_retry_info_reads_as_numbers_without_raising():
    huge = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=2**62))
    negative = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=-3))
    assert retry_delay(((GRPC_RETRY_INFO_KEY, huge.SerializeToString()),)) == 2**62
    assert retry_delay(((GRPC_RETRY_INFO_KEY, negative.SerializeToString()),)) == -3
    assert retry_delay(((GRPC_STATUS_DETAILS_KEY, b"\xff\xff\xff"),)) is None
    assert retry_delay(((GRPC_RETRY_INFO_KEY, b"\xff\xff\xff"),)) is None


def sized_spans(count: int, prefix: str, size: int = 400):
    spans = [span(f"{prefix} {index}", new_trace_id()) for index in range(count)]
    for item in spans:
        item.attributes.add(key="padding").value.string_value = "x" * size
    return spans


def test_odd_retry_after_values_from_an_http_next_hop(http_downstream, start_processor):
    http_downstream.script = [
        (503, {"Retry-After": "99999999999"}),
        (429, {"Retry-After": "0"}),
        (503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        (503, {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}),
        (503, {"Retry-After": "garbage"}),
    ]
    processor = start_processor(export_to=[http_downstream.url], export_stall_seconds=600)

    processor.consume(request(span("patient", new_trace_id())), None)

    wait_for(lambda: len(http_downstream.recorder.spans()) == 1, "the span after five odd refusals")
    assert http_downstream.answers == [503, 429, 503, 503, 503, 200]
    assert processor.telemetry.value(EXPORT_FAILURES) == 5
    assert processor.telemetry.value(EXPORT_THREAD_RESTARTS) == 0
    wait_for(lambda: processor.telemetry.value(SPANS_EXPORTED) == 1, "the exported counter")
    assert processor.health() == []


class RetryInfoDownstream(GrpcTraceReceiver):
    """Refuses with RESOURCE_EXHAUSTED and the scripted RetryInfo delays (seconds), then accepts."""

    def __init__(self, delays: list[int]) -> None:
        super().__init__()
        self.delays = delays

    def Export(self, request, context):  # noqa: N802 - the generated service's name
        if self.delays:
            self.calls += 1
            info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=self.delays.pop(0)))
            status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="busy")
            status.details.add().Pack(info)
            context.set_trailing_metadata(((GRPC_STATUS_DETAILS_KEY, status.SerializeToString()),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
        return super().Export(request, context)


def test_odd_retry_info_from_a_grpc_next_hop(start_processor):
    downstream = RetryInfoDownstream([315_576_000_000, 0, -7])
    downstream.start()
    try:
        processor = start_processor(export_to=[downstream.url])
        processor.consume(request(span("patient", new_trace_id())), None)
        wait_for(lambda: len(downstream.recorder.spans()) == 1, "the span after three odd RetryInfo delays")
    finally:
        downstream.stop()
    assert downstream.calls == 4
    assert processor.telemetry.value(EXPORT_FAILURES) == 3
    assert processor.telemetry.value(SPANS_EXPORT_DROPPED) == 0


class SlowNextHop(GrpcTraceReceiver):
    """Takes ``per_span`` seconds per span and still processes a request after the client's deadline passed (as
    a real overloaded next hop does): the only source of duplicates."""

    def __init__(self, per_span: float) -> None:
        super().__init__()
        self.per_span = per_span
        self.late: list[str] = []
        self.sizes: list[int] = []
        self._lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 - the generated service's name
        names = [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        time.sleep(self.per_span * len(names))
        with self._lock:
            self.sizes.append(len(names))
            if not context.is_active():
                self.late.extend(names)
        return super().Export(request, context)


def test_a_batch_that_times_out_goes_out_smaller_and_every_span_arrives(start_processor):
    downstream = SlowNextHop(per_span=0.01)  # 100 spans: 1 s, over the 0.3 s timeout
    downstream.start()
    try:
        processor = start_processor(export_to=[downstream.url], export_timeout_seconds=0.3)
        url = downstream.url
        initial_limit = processor.telemetry.value(EXPORT_BATCH_LIMIT_BYTES, exporter=url)
        processor.consume(request(*sized_spans(100, "big")), None)

        wait_for(lambda: processor.telemetry.value(SPANS_EXPORTED, exporter=url) == 100, "all 100 spans exported")
        names = Counter(s.name for s in downstream.recorder.spans())
    finally:
        downstream.stop()

    assert set(names) == {f"big {index}" for index in range(100)}
    duplicated = {name for name, count in names.items() if count > 1}
    assert duplicated <= set(downstream.late), "duplicates only from batches that timed out"
    assert max(downstream.sizes[-3:]) < 30, "the batch size settled where the next hop keeps up"
    assert processor.telemetry.value(EXPORT_BATCH_LIMIT_BYTES, exporter=url) < initial_limit
    assert processor.telemetry.value(EXPORT_FAILURES, exporter=url) >= 2
    assert processor.telemetry.value(SPANS_EXPORT_DROPPED) == 0


def test_the_export_loop_survives_a_bug(grpc_downstream, start_processor, monkeypatch):
    processor = start_processor(export_to=[grpc_downstream.url])
    (exporter,) = processor.exporters
    real_send = exporter.send
    calls = []

    def buggy_once(payload, timeout):
        calls.append(payload)
        if len(calls) == 1:
            raise RuntimeError("a bug in the export loop")
        return real_send(payload, timeout)

    monkeypatch.setattr(exporter, "send", buggy_once)
    processor.consume(request(span("survivor", new_trace_id())), None)

    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 1, "the span after the loop restarted")
    assert processor.telemetry.value(EXPORT_THREAD_RESTARTS) == 1
    assert calls[0] == calls[1], "the same batch, retried"
    wait_for(lambda: processor.telemetry.value(SPANS_EXPORTED) == 1, "the exported counter")
    assert processor.health() == []


def healthz(pipeline) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{pipeline.http_port}/healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_stalled_exporter_shows_in_healthz_and_metrics_until_it_recovers(grpc_downstream, start_processor):
    grpc_downstream.stop()
    processor = start_processor(export_to=[grpc_downstream.url], export_stall_seconds=0.2)
    assert healthz(processor) == (200, {"status": "ok"})
    processor.consume(request(span("stuck", new_trace_id())), None)

    wait_for(lambda: healthz(processor)[0] == 503, "/healthz to report the stall")
    _status, document = healthz(processor)
    assert document["status"] == "unhealthy"
    assert "no export to " + grpc_downstream.url in document["problems"][0]
    assert processor.telemetry.value(EXPORT_STALLED, exporter=grpc_downstream.url) == 1

    grpc_downstream.start()
    wait_for(lambda: len(grpc_downstream.recorder.spans()) == 1, "the span once the next hop is back")
    wait_for(lambda: healthz(processor)[0] == 200, "/healthz healthy again")
    assert processor.telemetry.value(EXPORT_STALLED, exporter=grpc_downstream.url) == 0


def test_concurrent_puts_while_batches_are_split_lose_nothing(start_processor):
    """Requests keep arriving while timed-out batches are cut and re-queued at the head."""
    downstream = SlowNextHop(per_span=0.005)
    downstream.start()
    try:
        processor = start_processor(export_to=[downstream.url], export_timeout_seconds=0.2)

        def send(prefix: str) -> None:
            for index in range(10):
                processor.consume(request(*sized_spans(10, f"{prefix} {index}")), None)

        senders = [threading.Thread(target=send, args=(f"t{n}",)) for n in range(3)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        wait_for(lambda: processor.telemetry.value(SPANS_EXPORTED) == 300, "all 300 spans exported")
        names = {s.name for s in downstream.recorder.spans()}
    finally:
        downstream.stop()
    assert len(names) == 300
    assert processor.telemetry.value(SPANS_EXPORT_DROPPED) == 0
