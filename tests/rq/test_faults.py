"""Tracing never changes the outcome: dead or raising exporters, malformed attempt bookkeeping."""

from __future__ import annotations

from collections.abc import Sequence

from jobtrail.rq import RQInstrumentor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from rq import Retry
from rq.job import JobStatus

from tests.rq import jobs
from tests.rq.conftest import closed_port, counter_key, work_until_done


class RaisingExporter(SpanExporter):
    """An exporter whose backend throws on every batch."""

    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise RuntimeError("backend exploded")


def run_jobs_with(provider: TracerProvider, queue) -> list:
    RQInstrumentor().instrument(tracer_provider=provider)
    try:
        ok = queue.enqueue(jobs.add, 20, 22)
        retried = queue.enqueue(jobs.fail_first, counter_key(), 1, retry=Retry(max=1))
        dead = queue.enqueue(jobs.always_fail, "no", retry=Retry(max=1))
        statuses = [work_until_done(queue, job) for job in (ok, retried, dead)]
        return [statuses, ok.return_value(), retried.return_value()]
    finally:
        RQInstrumentor().uninstrument()
        provider.shutdown()


EXPECTED = [[JobStatus.FINISHED, JobStatus.FINISHED, JobStatus.FAILED], 42, "sent on call 2"]


def test_unreachable_exporter_changes_nothing(queue):
    provider = TracerProvider()
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{closed_port()}", insecure=True, timeout=1)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    assert run_jobs_with(provider, queue) == EXPECTED


def test_raising_exporter_changes_nothing(queue):
    provider = TracerProvider()
    exporter = RaisingExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert run_jobs_with(provider, queue) == EXPECTED
    assert exporter.calls > 0
