"""The sampler with the real RQ instrumentation, Redis and a ``SimpleWorker``: attempts follow their request.

Roots are sampled at ratio 0 here, so every kept attempt was kept by the ``enqueued_by`` rule alone; the
requests come in with a remote parent that was sampled or not, as an API receives a ``traceparent``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from jobtrail.conventions import (
    ATTR_JOB_ATTEMPT,
    ATTR_LINK_TYPE,
    ATTR_MESSAGING_MESSAGE_ID,
    JOB_META_CARRIER_KEY,
    LINK_TYPE_ENQUEUED_BY,
    LINK_TYPE_RETRY_OF,
)
from jobtrail.rq import RQInstrumentor
from jobtrail.sampling import JobtrailParentBasedTraceIdRatio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from rq import Queue, Retry, SimpleWorker
from rq.job import Job, JobStatus

from tests.sampling import jobs


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """RQ instrumented with a provider whose sampler keeps no root by ratio (undone afterwards)."""
    provider = TracerProvider(sampler=JobtrailParentBasedTraceIdRatio(0.0))
    instrumentor = RQInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    yield provider
    instrumentor.uninstrument()


@pytest.fixture
def exporter(provider: TracerProvider) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def queue(redis_conn: redis.Redis) -> Queue:
    return Queue(f"sampled-{uuid.uuid4().hex[:8]}", connection=redis_conn)


def enqueue_from_request(provider: TracerProvider, sampled: bool, queue: Queue) -> Job:
    """An API request whose caller's ``traceparent`` said sampled or not, enqueueing a job that fails once."""
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    caller = SpanContext(uuid.uuid4().int, uuid.uuid4().int >> 64, is_remote=True, trace_flags=flags)
    incoming = trace.set_span_in_context(NonRecordingSpan(caller))
    with provider.get_tracer(__name__).start_as_current_span("POST /receipts", context=incoming, kind=SpanKind.SERVER):
        return queue.enqueue(jobs.render_after_a_failure, uuid.uuid4().hex, retry=Retry(max=1))


def spans_of(exporter: InMemorySpanExporter, job: Job) -> list[ReadableSpan]:
    return [
        span
        for span in exporter.get_finished_spans()
        if (span.attributes or {}).get(ATTR_MESSAGING_MESSAGE_ID) == job.id
    ]


def work(queue: Queue) -> None:
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def test_every_attempt_of_a_sampled_request_is_kept(provider, exporter, queue):
    job = enqueue_from_request(provider, True, queue)
    work(queue)
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    (send,) = [span for span in spans_of(exporter, job) if span.kind == SpanKind.PRODUCER]
    attempts = sorted(
        (span for span in spans_of(exporter, job) if span.kind == SpanKind.CONSUMER),
        key=lambda span: span.attributes[ATTR_JOB_ATTEMPT],
    )
    assert [span.attributes[ATTR_JOB_ATTEMPT] for span in attempts] == [1, 2]
    assert all(span.parent is None and span.context.trace_flags.sampled for span in attempts)
    assert all(span.links[0].context.span_id == send.context.span_id for span in attempts)
    assert [link.attributes[ATTR_LINK_TYPE] for link in attempts[1].links] == [
        LINK_TYPE_ENQUEUED_BY,
        LINK_TYPE_RETRY_OF,
    ]


def test_attempts_of_an_unsampled_request_are_dropped_and_the_job_runs_the_same(provider, exporter, queue):
    job = enqueue_from_request(provider, False, queue)
    work(queue)
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert job.return_value() == "rendered"
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    "carrier",
    [
        {"traceparent": "00-not-a-trace-context-01"},
        {"traceparent": "00-00000000000000000000000000000000-0000000000000000-01"},
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        {"traceparent": 7},
    ],
    ids=["malformed", "invalid-ids", "not-a-dict", "not-a-string"],
)
def test_a_job_with_garbage_trace_context_runs_and_its_attempt_is_sampled_by_ratio(exporter, queue, carrier):
    job = queue.enqueue(jobs.render)
    job.meta[JOB_META_CARRIER_KEY] = carrier
    job.save_meta()
    work(queue)
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert job.return_value() == "rendered"
    assert spans_of(exporter, job) == []  # no usable link: the root ratio (0) decides
