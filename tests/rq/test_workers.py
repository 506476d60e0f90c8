"""Real worker processes (forking ``Worker`` and ``SimpleWorker``, with the scheduler) exporting OTLP/gRPC.

The work horse leaves with ``os._exit``: these tests prove its spans (the job's own included) reach a
real gRPC receiver, and that a horse killed mid-job or stopped on request is recorded as such.
"""

from __future__ import annotations

import pytest
from jobtrail.conventions import (
    ATTR_ERROR_TYPE,
    ATTR_JOB_ATTEMPT,
    ATTR_JOB_OUTCOME,
    ATTR_LINK_TYPE,
    ATTR_MESSAGING_MESSAGE_ID,
    LINK_TYPE_ENQUEUED_BY,
    LINK_TYPE_RETRY_OF,
    OUTCOME_ABANDONED,
    OUTCOME_RETRY_SCHEDULED,
    OUTCOME_STOPPED,
    OUTCOME_SUCCEEDED,
)
from jobtrail.rq.attempt import ERROR_TYPE_HORSE_TERMINATED, ERROR_TYPE_STOPPED
from rq import Retry
from rq.command import send_stop_job_command
from rq.job import JobStatus

from tests.fixtures.otlp_receiver import attributes_of
from tests.rq import jobs
from tests.rq.conftest import counter_key, named, wait_for_status

pytestmark = [pytest.mark.usefixtures("instrumented"), pytest.mark.slow]
STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


def attempts_of(spans, job_id: str) -> list:
    found = [
        s for s in spans if s.name.startswith("process ") and attributes_of(s)[ATTR_MESSAGING_MESSAGE_ID] == job_id
    ]
    return sorted(found, key=lambda s: attributes_of(s)[ATTR_JOB_ATTEMPT])


@pytest.mark.parametrize("worker_class", ["Worker", "SimpleWorker"])
def test_attempts_and_the_jobs_own_spans_reach_the_exporter(
    worker_class, queue, span_exporter, grpc_receiver, worker_process
):
    job = queue.enqueue(jobs.fail_first, counter_key(), 1, retry=Retry(max=2, interval=1))
    worker = worker_process(worker_class, queue.name)
    assert wait_for_status(job, {JobStatus.FINISHED, JobStatus.FAILED}) == JobStatus.FINISHED
    worker.stop()

    spans = grpc_receiver.wait_for(lambda spans: len(attempts_of(spans, job.id)) == 2)
    (send,) = named(span_exporter, f"send {queue.name}")
    first, second = attempts_of(spans, job.id)
    assert [attributes_of(a)[ATTR_JOB_OUTCOME] for a in (first, second)] == [OUTCOME_RETRY_SCHEDULED, OUTCOME_SUCCEEDED]
    assert first.links[0].span_id == send.context.span_id.to_bytes(8, "big")
    assert first.links[0].trace_id == send.context.trace_id.to_bytes(16, "big")
    assert attributes_of(first.links[0])[ATTR_LINK_TYPE] == LINK_TYPE_ENQUEUED_BY
    assert second.links[1].span_id == first.span_id
    assert attributes_of(second.links[1])[ATTR_LINK_TYPE] == LINK_TYPE_RETRY_OF
    steps = [s for s in spans if s.name == jobs.STEP_SPAN and s.trace_id in (first.trace_id, second.trace_id)]
    assert sorted(s.parent_span_id for s in steps) == sorted([first.span_id, second.span_id])


def test_a_horse_killed_mid_job_is_recorded_as_abandoned(queue, grpc_receiver, worker_process):
    job = queue.enqueue(jobs.die_abruptly, retry=Retry(max=1))
    worker = worker_process("Worker", queue.name)
    assert wait_for_status(job, {JobStatus.FINISHED, JobStatus.FAILED}) == JobStatus.FAILED
    worker.stop()

    spans = grpc_receiver.wait_for(lambda spans: len(attempts_of(spans, job.id)) == 2)
    first, second = attempts_of(spans, job.id)
    for attempt in (first, second):
        assert attributes_of(attempt)[ATTR_JOB_OUTCOME] == OUTCOME_ABANDONED
        assert attributes_of(attempt)[ATTR_ERROR_TYPE] == ERROR_TYPE_HORSE_TERMINATED
        assert attempt.status.code == STATUS_ERROR
    assert second.links[1].span_id == first.span_id
    assert [e.name for e in first.events] == ["exception", "rq.retry.scheduled"]
    assert [e.name for e in second.events] == ["exception", "rq.job.failed"]


def test_a_job_stopped_on_request_is_recorded_as_stopped(queue, redis_conn, grpc_receiver, worker_process):
    job = queue.enqueue(jobs.sleep_for, 30, retry=Retry(max=3))
    worker = worker_process("Worker", queue.name)
    wait_for_status(job, {JobStatus.STARTED})
    send_stop_job_command(redis_conn, job.id)
    assert wait_for_status(job, {JobStatus.STOPPED, JobStatus.FAILED, JobStatus.FINISHED}) == JobStatus.STOPPED
    worker.stop()

    (attempt,) = attempts_of(grpc_receiver.wait_for(lambda spans: attempts_of(spans, job.id)), job.id)
    assert attributes_of(attempt)[ATTR_JOB_OUTCOME] == OUTCOME_STOPPED
    assert attributes_of(attempt)[ATTR_ERROR_TYPE] == ERROR_TYPE_STOPPED
    assert not [e for e in attempt.events if e.name == "rq.retry.scheduled"]
