"""Real worker processes (forking ``Worker`` and ``SimpleWorker``, with the scheduler) exporting OTLP/gRPC.

The work horse leaves with ``os._exit``: these tests prove its spans (the job's own included) reach a
real gRPC receiver, and that a horse killed mid-job or stopped on request is recorded as such.
"""

from __future__ import annotations

import time

import pytest
from jobtrail.conventions import (
    ATTR_ERROR_TYPE,
    ATTR_JOB_ATTEMPT,
    ATTR_JOB_OUTCOME,
    ATTR_JOB_REQUEUED,
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
from rq import Queue, Retry, Worker
from rq.command import send_stop_job_command
from rq.job import JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from tests.fixtures.otlp_receiver import attributes_of
from tests.rq import jobs
from tests.rq.conftest import closed_port, counter_key, named, wait_for_status

pytestmark = [pytest.mark.usefixtures("instrumented"), pytest.mark.slow]
STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR
SPAN_KIND_INTERNAL = 1  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_INTERNAL


def attempts_of(spans, job_id: str, kind: str = "process") -> list:
    """The job's attempt spans (or, with ``kind="pickup"``, its pickup markers), in attempt order."""
    found = [
        s for s in spans if s.name.startswith(f"{kind} ") and attributes_of(s).get(ATTR_MESSAGING_MESSAGE_ID) == job_id
    ]
    return sorted(found, key=lambda s: attributes_of(s)[ATTR_JOB_ATTEMPT])


def assert_marks_its_attempt(marker, attempt) -> None:
    """A pickup marker: zero-duration INTERNAL child of its attempt, with the attempt's number and enqueued_by link."""
    assert marker.name == "pickup " + attempt.name.removeprefix("process ")
    assert marker.kind == SPAN_KIND_INTERNAL
    assert (marker.trace_id, marker.parent_span_id) == (attempt.trace_id, attempt.span_id)
    assert marker.start_time_unix_nano == marker.end_time_unix_nano == attempt.start_time_unix_nano
    assert attributes_of(marker)[ATTR_JOB_ATTEMPT] == attributes_of(attempt)[ATTR_JOB_ATTEMPT]
    (link,) = marker.links
    assert (link.trace_id, link.span_id) == (attempt.links[0].trace_id, attempt.links[0].span_id)
    assert attributes_of(link) == {ATTR_LINK_TYPE: LINK_TYPE_ENQUEUED_BY}


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
    markers = attempts_of(spans, job.id, "pickup")
    assert len(markers) == 2
    for marker, attempt in zip(markers, (first, second), strict=True):
        assert_marks_its_attempt(marker, attempt)
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


def test_the_pickup_marker_is_exported_while_the_attempt_still_runs(
    queue, span_exporter, grpc_receiver, worker_process
):
    """SDK defaults (BatchSpanProcessor, 5 s schedule): the horse exports the marker long before the job ends."""
    job = queue.enqueue(jobs.sleep_for, 9)
    worker = worker_process("Worker", queue.name)
    spans = grpc_receiver.wait_for(lambda spans: attempts_of(spans, job.id, "pickup"), timeout_s=30)
    assert job.get_status(refresh=True) == JobStatus.STARTED
    assert not attempts_of(spans, job.id)
    (marker,) = attempts_of(spans, job.id, "pickup")
    (send,) = named(span_exporter, f"send {queue.name}")
    assert marker.links[0].span_id == send.context.span_id.to_bytes(8, "big")

    assert wait_for_status(job, {JobStatus.FINISHED, JobStatus.FAILED}) == JobStatus.FINISHED
    worker.stop()
    (attempt,) = attempts_of(grpc_receiver.wait_for(lambda spans: attempts_of(spans, job.id)), job.id)
    assert_marks_its_attempt(marker, attempt)


def test_a_dead_collector_does_not_slow_a_forking_worker(redis_conn, grpc_receiver, worker_process):
    """Two real forking workers side by side (so machine load hits both alike), one exporting to a closed port:
    one of its horses waits the flush bound, the next ones not at all. The live one loses no span."""
    count = 40
    endpoints = {"alive": grpc_receiver.endpoint, "dead": f"http://127.0.0.1:{closed_port()}"}
    queues = {name: Queue(name, connection=redis_conn) for name in endpoints}
    workers = {name: worker_process("Worker", name, endpoint=endpoint) for name, endpoint in endpoints.items()}
    deadline = time.monotonic() + 30
    while not all(Worker.all(queue=queue) for queue in queues.values()):
        assert time.monotonic() < deadline, "the workers never registered"
        time.sleep(0.05)

    start = time.monotonic()
    for n in range(count):
        for queue in queues.values():
            queue.enqueue(jobs.add, n, n)
    per_job: dict[str, float] = {}
    while len(per_job) < len(queues):
        assert time.monotonic() < start + 120, f"jobs did not finish: {per_job}"
        for name, queue in queues.items():
            if name not in per_job and FinishedJobRegistry(queue=queue).count == count:
                per_job[name] = (time.monotonic() - start) / count
        time.sleep(0.02)
    output = {name: worker.stop() for name, worker in workers.items()}

    assert per_job["dead"] - per_job["alive"] < 0.100, f"seconds per job: {per_job}"
    assert output["dead"].count("span export did not finish within 2000 ms, 3 spans of this work horse not sent") == 1
    spans = grpc_receiver.wait_for(lambda spans: len([s for s in spans if s.name == "process alive"]) == count)
    assert len([s for s in spans if s.name == "pickup alive"]) == count
    assert len([s for s in spans if s.name == jobs.STEP_SPAN]) == count
    assert not [s for s in spans if s.name.endswith(" dead")]


def test_a_requeued_job_counts_on_in_a_forking_worker(queue, grpc_receiver, worker_process):
    job = queue.enqueue(jobs.always_fail, "broken")
    worker = worker_process("Worker", queue.name)
    assert wait_for_status(job, {JobStatus.FAILED, JobStatus.FINISHED}) == JobStatus.FAILED
    FailedJobRegistry(queue=queue).requeue(job.id)
    assert wait_for_status(job, {JobStatus.FAILED, JobStatus.FINISHED}) == JobStatus.FAILED
    worker.stop()

    first, second = attempts_of(grpc_receiver.wait_for(lambda spans: len(attempts_of(spans, job.id)) == 2), job.id)
    assert [attributes_of(a)[ATTR_JOB_ATTEMPT] for a in (first, second)] == [1, 2]
    assert ATTR_JOB_REQUEUED not in attributes_of(first)
    assert attributes_of(second)[ATTR_JOB_REQUEUED] is True
    assert second.links[1].span_id == first.span_id
