"""Every way a job reaches a queue: one PRODUCER span, the creation context in job.meta, never overwritten."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import redis
from jobtrail.conventions import (
    ATTR_ERROR_TYPE,
    ATTR_JOB_FUNC_NAME,
    ATTR_JOB_SCHEDULED_FOR,
    ATTR_LINK_TYPE,
    ATTR_MESSAGING_BATCH_MESSAGE_COUNT,
    ATTR_MESSAGING_DESTINATION_NAME,
    ATTR_MESSAGING_MESSAGE_ID,
    ATTR_MESSAGING_OPERATION_NAME,
    ATTR_MESSAGING_OPERATION_TYPE,
    ATTR_MESSAGING_SYSTEM,
    ATTR_REQUEST_ID,
    JOB_META_CARRIER_KEY,
    LINK_TYPE_ENQUEUED_BY,
    REQUEST_ID_BAGGAGE_KEY,
)
from jobtrail.rq import RQInstrumentor
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.trace import SpanKind, StatusCode
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry
from rq import Queue, Retry
from rq.job import Job, JobStatus

from tests.rq import jobs
from tests.rq.conftest import attempt_spans, closed_port, counter_key, named, work_until_done

pytestmark = pytest.mark.usefixtures("instrumented")


def traceparent_span_id(job: Job) -> int:
    return int(job.meta[JOB_META_CARRIER_KEY]["traceparent"].split("-")[2], 16)


def sends(exporter, queue: Queue):
    return named(exporter, f"send {queue.name}")


def test_enqueue_is_one_producer_span_whose_context_is_in_the_job(queue, span_exporter):
    job = queue.enqueue(jobs.add, 1, 2)
    (send,) = sends(span_exporter, queue)
    assert send.kind == SpanKind.PRODUCER
    assert dict(send.attributes) == {
        ATTR_MESSAGING_SYSTEM: "rq",
        ATTR_MESSAGING_OPERATION_TYPE: "send",
        ATTR_MESSAGING_OPERATION_NAME: "send",
        ATTR_MESSAGING_DESTINATION_NAME: queue.name,
        ATTR_MESSAGING_MESSAGE_ID: job.id,
        ATTR_JOB_FUNC_NAME: "tests.rq.jobs.add",
    }
    stored = Job.fetch(job.id, connection=queue.connection)
    assert traceparent_span_id(stored) == send.context.span_id
    assert all("(1, 2)" not in str(value) for value in send.attributes.values())


def test_enqueue_call_and_enqueue_job(queue, span_exporter):
    called = queue.enqueue_call(jobs.add, args=(1, 2))
    built = Job.create(jobs.add, args=(3, 4), connection=queue.connection)
    queue.enqueue_job(built)
    first, second = sends(span_exporter, queue)
    assert traceparent_span_id(Job.fetch(called.id, connection=queue.connection)) == first.context.span_id
    assert traceparent_span_id(Job.fetch(built.id, connection=queue.connection)) == second.context.span_id
    assert second.attributes[ATTR_MESSAGING_MESSAGE_ID] == built.id


def test_enqueue_many_gives_each_job_its_own_create_span_linked_from_the_batch_send(queue, span_exporter):
    request_id = "req_00000000000000aa"
    token = context.attach(baggage.set_baggage(REQUEST_ID_BAGGAGE_KEY, request_id))
    try:
        with trace.get_tracer("test").start_as_current_span("POST /batch") as caller:
            created = queue.enqueue_many([Queue.prepare_data(jobs.add, (n, n)) for n in range(3)])
    finally:
        context.detach(token)
    (send,) = sends(span_exporter, queue)
    creates = named(span_exporter, f"create {queue.name}")
    assert send.kind == SpanKind.CLIENT
    assert send.attributes[ATTR_MESSAGING_BATCH_MESSAGE_COUNT] == 3
    assert ATTR_MESSAGING_MESSAGE_ID not in send.attributes
    assert [link.context.span_id for link in send.links] == [c.context.span_id for c in creates]
    by_job = {c.attributes[ATTR_MESSAGING_MESSAGE_ID]: c for c in creates}
    assert sorted(by_job) == sorted(job.id for job in created)
    for job in created:
        create = by_job[job.id]
        assert create.kind == SpanKind.PRODUCER
        assert create.parent.span_id == caller.get_span_context().span_id
        assert create.attributes[ATTR_MESSAGING_OPERATION_TYPE] == "create"
        assert create.attributes[ATTR_REQUEST_ID] == request_id
        assert create.attributes[ATTR_JOB_FUNC_NAME] == "tests.rq.jobs.add"
        assert traceparent_span_id(Job.fetch(job.id, connection=queue.connection)) == create.context.span_id

    for job in created:
        assert work_until_done(queue, job) == JobStatus.FINISHED
        (attempt,) = attempt_spans(span_exporter, job)
        assert attempt.links[0].context.span_id == by_job[job.id].context.span_id
        assert attempt.attributes[ATTR_REQUEST_ID] == request_id


@pytest.mark.parametrize("how", ["enqueue_at", "enqueue_in"])
def test_scheduled_jobs_keep_their_creation_context_through_promotion(how, queue, span_exporter):
    due = datetime.now(timezone.utc) + timedelta(seconds=1)
    if how == "enqueue_at":
        job = queue.enqueue_at(due, jobs.add, 5, 6)
    else:
        job = queue.enqueue_in(timedelta(seconds=1), jobs.add, 5, 6)
    (send,) = sends(span_exporter, queue)
    scheduled_for = datetime.fromisoformat(send.attributes[ATTR_JOB_SCHEDULED_FOR])
    assert abs((scheduled_for - due).total_seconds()) < 0.5
    assert job.get_status() == JobStatus.SCHEDULED

    assert work_until_done(queue, job) == JobStatus.FINISHED
    assert len(sends(span_exporter, queue)) == 1  # promotion by the scheduler is not a new send
    (attempt,) = attempt_spans(span_exporter, job)
    assert attempt.links[0].context.span_id == send.context.span_id
    assert traceparent_span_id(Job.fetch(job.id, connection=queue.connection)) == send.context.span_id


def test_dependency_release_and_retries_do_not_overwrite_the_creation_context(queue, span_exporter):
    parent = queue.enqueue(jobs.fail_first, counter_key(), 1, retry=Retry(max=1))
    child = queue.enqueue(jobs.add, 7, 8, depends_on=parent)
    parent_send, child_send = sends(span_exporter, queue)
    assert child.get_status() == JobStatus.DEFERRED

    assert work_until_done(queue, parent) == JobStatus.FINISHED
    assert work_until_done(queue, child) == JobStatus.FINISHED
    assert len(sends(span_exporter, queue)) == 2
    assert traceparent_span_id(Job.fetch(parent.id, connection=queue.connection)) == parent_send.context.span_id
    assert traceparent_span_id(Job.fetch(child.id, connection=queue.connection)) == child_send.context.span_id
    for job, send in ((parent, parent_send), (child, child_send)):
        for attempt in attempt_spans(span_exporter, job):
            assert attempt.links[0].context.span_id == send.context.span_id
            assert attempt.links[0].attributes[ATTR_LINK_TYPE] == LINK_TYPE_ENQUEUED_BY


def test_producer_span_is_a_child_of_the_callers_span(queue, span_exporter):
    with trace.get_tracer("test").start_as_current_span("caller") as caller:
        queue.enqueue(jobs.add, 1, 1)
    (send,) = sends(span_exporter, queue)
    assert send.parent.span_id == caller.get_span_context().span_id


def test_redis_down_at_enqueue_raises_rqs_own_exception_and_the_span_says_error(
    request, span_exporter, tracer_provider
):
    down = redis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1, retry=RedisRetry(NoBackoff(), 0))
    queue = Queue("down", connection=down)
    request.addfinalizer(down.close)
    RQInstrumentor().uninstrument()
    with pytest.raises(redis.exceptions.ConnectionError) as bare:
        queue.enqueue(jobs.add, 1, 2)
    RQInstrumentor().instrument(tracer_provider=tracer_provider)
    with pytest.raises(redis.exceptions.ConnectionError) as traced:
        queue.enqueue(jobs.add, 1, 2)
    assert type(traced.value) is type(bare.value)
    assert str(traced.value) == str(bare.value)

    (send,) = named(span_exporter, "send down")
    assert send.status.status_code == StatusCode.ERROR
    assert send.attributes[ATTR_ERROR_TYPE] == "redis.exceptions.ConnectionError"
    assert [event.name for event in send.events] == ["exception"]


def test_a_no_op_tracer_still_carries_the_request_but_nothing_else(queue, span_exporter):
    RQInstrumentor().uninstrument()
    RQInstrumentor().instrument(tracer_provider=trace.NoOpTracerProvider())
    bare = queue.enqueue(jobs.add, 1, 1)
    token = context.attach(baggage.set_baggage(REQUEST_ID_BAGGAGE_KEY, "req_00000000000000bb"))
    try:
        in_request = queue.enqueue(jobs.add, 1, 2)
    finally:
        context.detach(token)
    assert JOB_META_CARRIER_KEY not in Job.fetch(bare.id, connection=queue.connection).meta
    carrier = Job.fetch(in_request.id, connection=queue.connection).meta[JOB_META_CARRIER_KEY]
    assert carrier == {"baggage": "jobtrail.request.id=req_00000000000000bb"}
    assert not span_exporter.get_finished_spans()


def test_a_no_op_tracer_passes_an_incoming_trace_on(queue, span_exporter):
    """A service without an SDK still hands the caller's trace (say, an incoming traceparent) to the job."""
    RQInstrumentor().uninstrument()
    RQInstrumentor().instrument(tracer_provider=trace.NoOpTracerProvider())
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    token = context.attach(propagate.extract({"traceparent": incoming}))
    try:
        job = queue.enqueue(jobs.add, 1, 2)
    finally:
        context.detach(token)
    assert Job.fetch(job.id, connection=queue.connection).meta[JOB_META_CARRIER_KEY] == {"traceparent": incoming}
    assert not span_exporter.get_finished_spans()
