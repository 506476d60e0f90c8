"""Attempt spans from a real SimpleWorker (with the scheduler) on real Redis: links, numbers, outcomes, errors."""

from __future__ import annotations

import logging
from datetime import datetime

import pytest
from jobtrail.conventions import (
    ATTR_ERROR_TYPE,
    ATTR_EXCEPTION_MESSAGE,
    ATTR_FIRST_ERROR_MESSAGE,
    ATTR_FIRST_ERROR_TYPE,
    ATTR_JOB_ATTEMPT,
    ATTR_JOB_OUTCOME,
    ATTR_JOB_QUEUE_WAIT_MS,
    ATTR_JOB_REQUEUED,
    ATTR_JOB_REQUEUED_AT,
    ATTR_JOB_RETRIES_LEFT,
    ATTR_LINK_TYPE,
    ATTR_REQUEST_ID,
    ATTR_RETRY_DELAY_S,
    ATTR_RETRY_NEXT_RUN_AT,
    ATTR_WORKER_NAME,
    EVENT_JOB_FAILED,
    EVENT_RETRY_SCHEDULED,
    JOB_META_ATTEMPTS_KEY,
    JOB_META_CARRIER_KEY,
    LINK_TYPE_ENQUEUED_BY,
    LINK_TYPE_RETRY_OF,
    OUTCOME_FAILED,
    OUTCOME_RETRY_SCHEDULED,
    OUTCOME_SUCCEEDED,
    REQUEST_ID_BAGGAGE_KEY,
)
from jobtrail.rq import RQInstrumentor
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from tests.rq import jobs
from tests.rq.conftest import attempt_spans, counter_key, named, work_until_done

REQUEST_ID = "req_0123456789abcdef"
pytestmark = pytest.mark.usefixtures("instrumented")


def enqueue_in_request(queue: Queue, *args, **kwargs):
    """Enqueue as a Flask handler would: inside a server span, with the request id in baggage."""
    token = context.attach(baggage.set_baggage(REQUEST_ID_BAGGAGE_KEY, REQUEST_ID))
    try:
        with trace.get_tracer("test").start_as_current_span("POST /refunds", kind=SpanKind.SERVER) as request:
            job = queue.enqueue(*args, **kwargs)
    finally:
        context.detach(token)
    return job, request


def events(span: ReadableSpan, name: str) -> list[dict]:
    return [dict(event.attributes or {}) for event in span.events if event.name == name]


def link_types(span: ReadableSpan) -> list[tuple[str, int]]:
    return [(link.attributes[ATTR_LINK_TYPE], link.context.span_id) for link in span.links]


def test_each_attempt_is_a_root_span_linked_to_the_enqueue_and_the_attempt_before(queue, span_exporter):
    job, request = enqueue_in_request(queue, jobs.fail_first, counter_key(), 2, retry=Retry(max=3))
    assert work_until_done(queue, job) == JobStatus.FINISHED

    (send,) = named(span_exporter, f"send {queue.name}")
    assert send.kind == SpanKind.PRODUCER
    assert send.context.trace_id == request.get_span_context().trace_id
    assert send.parent.span_id == request.get_span_context().span_id
    assert job.meta[JOB_META_CARRIER_KEY]["traceparent"].split("-")[2] == f"{send.context.span_id:016x}"

    attempts = attempt_spans(span_exporter, job)
    assert [a.attributes[ATTR_JOB_ATTEMPT] for a in attempts] == [1, 2, 3]
    assert [a.attributes[ATTR_JOB_OUTCOME] for a in attempts] == [
        OUTCOME_RETRY_SCHEDULED,
        OUTCOME_RETRY_SCHEDULED,
        OUTCOME_SUCCEEDED,
    ]
    assert [a.attributes[ATTR_JOB_RETRIES_LEFT] for a in attempts] == [2, 1, 1]
    for number, attempt in enumerate(attempts):
        assert attempt.kind == SpanKind.CONSUMER
        assert attempt.parent is None
        assert attempt.context.trace_id != send.context.trace_id
        assert attempt.attributes[ATTR_REQUEST_ID] == REQUEST_ID
        assert attempt.attributes[ATTR_WORKER_NAME]
        assert attempt.attributes[ATTR_JOB_QUEUE_WAIT_MS] >= 0
        expected = [(LINK_TYPE_ENQUEUED_BY, send.context.span_id)]
        if number:
            expected.append((LINK_TYPE_RETRY_OF, attempts[number - 1].context.span_id))
        assert link_types(attempt) == expected
        assert attempt.links[0].context.trace_id == send.context.trace_id

    for failed in attempts[:2]:
        assert failed.status.status_code == StatusCode.ERROR
        assert failed.attributes[ATTR_ERROR_TYPE] == "smtplib.SMTPAuthenticationError"
        assert [e.name for e in failed.events] == ["exception", EVENT_RETRY_SCHEDULED]
        (scheduled,) = events(failed, EVENT_RETRY_SCHEDULED)
        assert scheduled[ATTR_RETRY_DELAY_S] == 0.0
        datetime.fromisoformat(scheduled[ATTR_RETRY_NEXT_RUN_AT])
    assert attempts[2].status.status_code == StatusCode.UNSET
    assert ATTR_ERROR_TYPE not in attempts[2].attributes

    steps = named(span_exporter, jobs.STEP_SPAN)
    assert sorted((s.parent.span_id, s.context.trace_id) for s in steps) == sorted(
        (a.context.span_id, a.context.trace_id) for a in attempts
    )


def test_each_attempt_starts_with_a_pickup_marker(queue, span_exporter):
    job, _ = enqueue_in_request(queue, jobs.fail_first, counter_key(), 1, retry=Retry(max=1))
    assert work_until_done(queue, job) == JobStatus.FINISHED

    (send,) = named(span_exporter, f"send {queue.name}")
    attempts = attempt_spans(span_exporter, job)
    markers = named(span_exporter, f"pickup {queue.name}")
    assert len(markers) == len(attempts) == 2
    for marker, attempt in zip(sorted(markers, key=lambda m: m.attributes[ATTR_JOB_ATTEMPT]), attempts, strict=True):
        assert marker.kind == SpanKind.INTERNAL
        assert marker.parent.span_id == attempt.context.span_id
        assert marker.context.trace_id == attempt.context.trace_id
        assert marker.start_time == marker.end_time == attempt.start_time
        assert link_types(marker) == [(LINK_TYPE_ENQUEUED_BY, send.context.span_id)]
        assert dict(marker.attributes) == {
            "messaging.system": "rq",
            "messaging.destination.name": queue.name,
            "messaging.message.id": job.id,
            ATTR_JOB_ATTEMPT: attempt.attributes[ATTR_JOB_ATTEMPT],
            ATTR_REQUEST_ID: REQUEST_ID,
        }
        assert marker.end_time < attempt.end_time


def test_interval_retry_runs_through_the_scheduler_and_reports_when(queue, span_exporter):
    job, _ = enqueue_in_request(queue, jobs.fail_first, counter_key(), 1, retry=Retry(max=2, interval=1))
    assert work_until_done(queue, job) == JobStatus.FINISHED

    first, second = attempt_spans(span_exporter, job)
    (scheduled,) = events(first, EVENT_RETRY_SCHEDULED)
    assert scheduled[ATTR_RETRY_DELAY_S] == 1.0
    next_run_at = datetime.fromisoformat(scheduled[ATTR_RETRY_NEXT_RUN_AT])
    assert abs(next_run_at.timestamp() - (first.end_time / 1e9 + 1.0)) < 0.5
    # RQ's scheduler keeps whole seconds, so it may promote a retry up to 1 s before its due time.
    assert second.start_time > next_run_at.timestamp() * 1e9 - 1.05e9
    assert 0 <= second.attributes[ATTR_JOB_QUEUE_WAIT_MS] < (second.start_time - first.end_time) / 1e6
    assert link_types(second)[1] == (LINK_TYPE_RETRY_OF, first.context.span_id)


def test_final_failure_keeps_the_first_error_and_the_last(queue, span_exporter):
    job, _ = enqueue_in_request(queue, jobs.always_fail, "mailbox full", retry=Retry(max=2))
    assert work_until_done(queue, job) == JobStatus.FAILED

    attempts = attempt_spans(span_exporter, job)
    assert [a.attributes[ATTR_JOB_OUTCOME] for a in attempts] == [
        OUTCOME_RETRY_SCHEDULED,
        OUTCOME_RETRY_SCHEDULED,
        OUTCOME_FAILED,
    ]
    messages = [events(a, "exception")[0]["exception.message"] for a in attempts]
    assert len(set(messages)) == 3
    (failed,) = events(attempts[2], EVENT_JOB_FAILED)
    assert failed[ATTR_FIRST_ERROR_TYPE] == "ValueError"
    assert failed[ATTR_FIRST_ERROR_MESSAGE] == messages[0]
    assert failed[ATTR_EXCEPTION_MESSAGE] == messages[2]
    assert attempts[2].attributes[ATTR_JOB_RETRIES_LEFT] == 0
    assert not events(attempts[2], EVENT_RETRY_SCHEDULED)
    assert all(not events(a, EVENT_JOB_FAILED) for a in attempts[:2])


def test_a_job_returning_retry_is_retried_then_failed_past_max(queue, span_exporter):
    retried, _ = enqueue_in_request(queue, jobs.ask_for_retry, counter_key(), 1, 3)
    exhausted, _ = enqueue_in_request(queue, jobs.ask_for_retry, counter_key(), 5, 1)
    assert work_until_done(queue, retried) == JobStatus.FINISHED
    assert work_until_done(queue, exhausted) == JobStatus.FAILED

    assert [a.attributes[ATTR_JOB_OUTCOME] for a in attempt_spans(span_exporter, retried)] == [
        OUTCOME_RETRY_SCHEDULED,
        OUTCOME_SUCCEEDED,
    ]
    first, last = attempt_spans(span_exporter, exhausted)
    assert first.attributes[ATTR_JOB_OUTCOME] == OUTCOME_RETRY_SCHEDULED
    assert last.attributes[ATTR_JOB_OUTCOME] == OUTCOME_FAILED
    assert last.attributes[ATTR_ERROR_TYPE].endswith("Retry")
    assert events(last, EVENT_JOB_FAILED)[0][ATTR_FIRST_ERROR_TYPE] == first.attributes[ATTR_ERROR_TYPE]


def test_inside_the_job_the_attempt_span_is_current_and_the_baggage_is_there(queue, span_exporter):
    job, _ = enqueue_in_request(queue, jobs.observe_context)
    assert work_until_done(queue, job) == JobStatus.FINISHED
    (attempt,) = attempt_spans(span_exporter, job)
    assert job.return_value() == {
        "trace_id": f"{attempt.context.trace_id:032x}",
        "span_id": f"{attempt.context.span_id:016x}",
        "request_id": REQUEST_ID,
    }


@pytest.mark.parametrize("propagation", ["child", "none"])
def test_propagation_child_and_none(propagation, queue, span_exporter, tracer_provider):
    RQInstrumentor().uninstrument()
    RQInstrumentor().instrument(tracer_provider=tracer_provider, propagation=propagation)
    job, _ = enqueue_in_request(queue, jobs.add, 1, 2)
    assert work_until_done(queue, job) == JobStatus.FINISHED
    (send,) = named(span_exporter, f"send {queue.name}")
    (attempt,) = attempt_spans(span_exporter, job)
    assert not attempt.links
    (marker,) = named(span_exporter, f"pickup {queue.name}")
    assert not marker.links and marker.parent.span_id == attempt.context.span_id
    if propagation == "child":
        assert attempt.parent.span_id == send.context.span_id
        assert attempt.context.trace_id == send.context.trace_id
        assert attempt.attributes[ATTR_REQUEST_ID] == REQUEST_ID
    else:
        assert attempt.parent is None
        assert attempt.context.trace_id != send.context.trace_id
        assert ATTR_REQUEST_ID not in attempt.attributes


def test_job_from_an_uninstrumented_producer_runs_with_an_unlinked_attempt(queue, span_exporter, tracer_provider):
    RQInstrumentor().uninstrument()
    job = queue.enqueue(jobs.add, 2, 3)
    RQInstrumentor().instrument(tracer_provider=tracer_provider)
    assert JOB_META_CARRIER_KEY not in job.meta
    assert work_until_done(queue, job) == JobStatus.FINISHED
    assert job.return_value() == 5
    (attempt,) = attempt_spans(span_exporter, job)
    assert attempt.links == () or list(attempt.links) == []
    assert attempt.parent is None
    assert attempt.attributes[ATTR_JOB_OUTCOME] == OUTCOME_SUCCEEDED


@pytest.mark.parametrize(
    ("key", "garbage", "attempt_number"),
    [
        (JOB_META_CARRIER_KEY, "00-not-a-dict", 1),
        (JOB_META_CARRIER_KEY, {"traceparent": "00-zzzz-yyyy-01"}, 1),
        (JOB_META_CARRIER_KEY, {"traceparent": 42}, 1),
        (JOB_META_CARRIER_KEY, {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"}, 1),
        (JOB_META_ATTEMPTS_KEY, "junk", 1),
        (JOB_META_ATTEMPTS_KEY, {"attempts": -3}, 1),
        (JOB_META_ATTEMPTS_KEY, {"attempts": 1, "last_span": {"trace_id": "zz"}}, 2),  # the usable count is kept
        (JOB_META_ATTEMPTS_KEY, {"attempts": 10**30}, 1),
        (JOB_META_ATTEMPTS_KEY, {"last_span": {"trace_id": "1" * 32, "span_id": "2" * 16, "flags": float("inf")}}, 1),
        (JOB_META_ATTEMPTS_KEY, {"runnable_at": 10**400}, 1),
        (JOB_META_ATTEMPTS_KEY, {"runnable_at": -1e300}, 1),
        (JOB_META_ATTEMPTS_KEY, {"runnable_at": float("nan"), "final": "yes"}, 1),
    ],
)
def test_garbage_in_job_meta_is_ignored_with_one_warning(key, garbage, attempt_number, queue, span_exporter, caplog):
    job = queue.enqueue(jobs.add, 20, 22)
    job.meta.pop(JOB_META_CARRIER_KEY, None)  # only the garbage under test decides the links
    job.meta[key] = garbage
    job.save_meta()
    with caplog.at_level(logging.WARNING, logger="jobtrail.rq"):
        assert work_until_done(queue, job) == JobStatus.FINISHED
    assert job.return_value() == 42
    (attempt,) = attempt_spans(span_exporter, job)
    assert attempt.attributes[ATTR_JOB_ATTEMPT] == attempt_number
    assert not attempt.links
    assert 0 <= attempt.attributes[ATTR_JOB_QUEUE_WAIT_MS] < 60_000
    warnings = [r.getMessage() for r in caplog.records if r.name == "jobtrail.rq" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and job.id in warnings[0]


def test_attempt_numbers_go_on_across_operator_requeues(queue, span_exporter):
    job, _ = enqueue_in_request(queue, jobs.always_fail, "still broken", retry=Retry(max=1))
    assert work_until_done(queue, job) == JobStatus.FAILED
    FailedJobRegistry(queue=queue).requeue(job.id)
    assert work_until_done(queue, job) == JobStatus.FAILED
    Job.fetch(job.id, connection=queue.connection).requeue()
    assert work_until_done(queue, job) == JobStatus.FAILED

    attempts = attempt_spans(span_exporter, job)
    assert [a.attributes[ATTR_JOB_ATTEMPT] for a in attempts] == [1, 2, 3, 4]
    assert [a.attributes.get(ATTR_JOB_REQUEUED, False) for a in attempts] == [False, False, True, True]
    for previous, requeued in ((attempts[1], attempts[2]), (attempts[2], attempts[3])):
        requeued_at = datetime.fromisoformat(requeued.attributes[ATTR_JOB_REQUEUED_AT]).timestamp() * 1e9
        assert previous.end_time <= requeued_at <= requeued.start_time
        assert link_types(requeued)[1] == (LINK_TYPE_RETRY_OF, previous.context.span_id)
        assert 0 <= requeued.attributes[ATTR_JOB_QUEUE_WAIT_MS] <= (requeued.start_time - requeued_at) / 1e6 + 1
    assert [a.attributes[ATTR_JOB_OUTCOME] for a in attempts] == [OUTCOME_RETRY_SCHEDULED] + [OUTCOME_FAILED] * 3
    assert events(attempts[3], EVENT_JOB_FAILED)[0][ATTR_FIRST_ERROR_TYPE] == "ValueError"


def test_a_requeue_keeps_what_the_job_saved_in_its_meta(queue, span_exporter):
    job, _ = enqueue_in_request(queue, jobs.save_progress_then_fail, "halfway")
    assert work_until_done(queue, job) == JobStatus.FAILED
    assert Job.fetch(job.id, connection=queue.connection).meta["progress"] == "halfway"
    FailedJobRegistry(queue=queue).requeue(job.id)
    assert work_until_done(queue, job) == JobStatus.FAILED
    assert [a.attributes[ATTR_JOB_ATTEMPT] for a in attempt_spans(span_exporter, job)] == [1, 2]


def test_the_attempt_count_is_stored_before_rq_publishes_the_failure(queue, span_exporter, monkeypatch):
    """Whoever sees the job failed and requeues it at once must find its count (a forking worker once lost that
    race: the requeued run started at attempt 1 again)."""
    job, _ = enqueue_in_request(queue, jobs.always_fail, "broken")
    stored_when_failed = []
    set_status = Job.set_status

    def noting_what_is_stored(self: Job, status: JobStatus, *args: object, **kwargs: object) -> None:
        if status == JobStatus.FAILED:
            stored = Job.fetch(self.id, connection=self.connection).meta.get(JOB_META_ATTEMPTS_KEY)
            stored_when_failed.append(stored)
        set_status(self, status, *args, **kwargs)

    monkeypatch.setattr(Job, "set_status", noting_what_is_stored)
    assert work_until_done(queue, job) == JobStatus.FAILED
    assert [stored["attempts"] for stored in stored_when_failed] == [1]
