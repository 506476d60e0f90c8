"""The horse's flush: bounded whatever the SDK does, a breaker shared across fork, unsent spans counted.

Real OTLP/gRPC exporters: a dead endpoint is a closed port, a live one the test receiver.
"""

from __future__ import annotations

import logging
import os

import pytest
from jobtrail.conventions import METRIC_HORSE_SPANS_UNSENT
from jobtrail.rq.flush import ExportBreaker, FlushOutcome, HorseFlush, queued_spans, register_unsent_counter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.rq.conftest import closed_port

SPANS = 5
BOUND_MS = 300


def provider_exporting_to(endpoint: str) -> tuple[TracerProvider, OTLPSpanExporter]:
    """Exports only when flushed (the schedule is far off), as a short-lived horse sees it."""
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    return provider, exporter


def end_spans(provider: TracerProvider, count: int = SPANS) -> None:
    tracer = provider.get_tracer("test")
    for n in range(count):
        tracer.start_span(f"step {n}").end()


@pytest.fixture
def dead_provider():
    provider, exporter = provider_exporting_to(f"http://127.0.0.1:{closed_port()}")
    yield provider
    exporter.shutdown()  # first: it ends the export still retrying in the abandoned flush thread
    provider.shutdown()


def test_a_dead_collector_opens_the_breaker_once_and_later_flushes_do_not_wait(dead_provider, caplog):
    breaker = ExportBreaker()
    flush = HorseFlush(lambda: dead_provider, BOUND_MS, probe_interval_s=3600, breaker=breaker)
    end_spans(dead_provider)
    assert queued_spans(dead_provider) == SPANS
    with caplog.at_level(logging.WARNING, logger="jobtrail.rq"):
        assert flush("job-1") is FlushOutcome.TIMED_OUT
        end_spans(dead_provider, 2)
        assert flush("job-2") is FlushOutcome.SKIPPED
    assert breaker.is_open
    assert breaker.unsent == SPANS + 2
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "jobtrail.rq"]
    assert "job-1" in warning and f"{SPANS} spans" in warning and f"{BOUND_MS} ms" in warning


def test_the_breaker_is_shared_with_forked_processes_and_closes_when_exports_succeed(
    dead_provider, grpc_receiver, caplog
):
    breaker = ExportBreaker()
    pid = os.fork()
    if pid == 0:  # a horse: its spans, a flush towards the dead collector, then leave as RQ's horse does
        end_spans(dead_provider)
        outcome = HorseFlush(lambda: dead_provider, BOUND_MS, probe_interval_s=3600, breaker=breaker)("job-1")
        os._exit(0 if outcome is FlushOutcome.TIMED_OUT else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert breaker.is_open and breaker.unsent == SPANS  # written by the child, read by the parent

    live, _ = provider_exporting_to(grpc_receiver.endpoint)
    try:
        end_spans(live, 3)
        with caplog.at_level(logging.WARNING, logger="jobtrail.rq"):
            assert HorseFlush(lambda: live, BOUND_MS, 3600, breaker)("job-2") is FlushOutcome.SKIPPED
            assert HorseFlush(lambda: live, 5000, 0, breaker)("job-3") is FlushOutcome.FLUSHED  # the probe
        assert not breaker.is_open
        assert len(grpc_receiver.spans()) == 3  # the probe's flush sent what the skipped one left queued
        assert any("succeed again" in r.getMessage() and f"{SPANS + 3} spans" in r.getMessage() for r in caplog.records)
        end_spans(live, 1)
        assert HorseFlush(lambda: live, 5000, 3600, breaker)("job-4") is FlushOutcome.FLUSHED
        assert len(grpc_receiver.spans()) == 4
    finally:
        live.shutdown()


def test_the_unsent_counter_reports_the_shared_total():
    from jobtrail.rq import flush as flush_module

    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    flush_module._metric_registered = False
    try:
        register_unsent_counter(meters)
        flush_module.BREAKER.count(7)
        data = reader.get_metrics_data()
    finally:
        flush_module.BREAKER.close()
        meters.shutdown()
    (metric,) = [
        m
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == METRIC_HORSE_SPANS_UNSENT
    ]
    assert metric.data.is_monotonic
    assert metric.data.data_points[0].value >= 7
