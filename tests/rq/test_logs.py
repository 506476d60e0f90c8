"""Log correlation: the shared fields on every record, in the enqueuing process and in the job."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from jobtrail.conventions import (
    LOG_EVENT_JOB_FINISHED,
    LOG_EVENT_JOB_QUEUED,
    LOG_EVENT_JOB_STARTED,
    LOG_FIELDS,
    REQUEST_ID_BAGGAGE_KEY,
)
from jobtrail.logs import configure_logging
from opentelemetry import baggage, context, trace
from rq.job import JobStatus

from tests.rq import jobs
from tests.rq.conftest import attempt_spans, named, work_until_done

REQUEST_ID = "req_00000000deadbeef"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    configure_logging("billing", logging.INFO, stream)
    yield stream
    for handler in [h for h in root.handlers if h.get_name() == "jobtrail"]:
        root.removeHandler(handler)
    root.setLevel(level)


def records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("instrumented")
def test_enqueue_and_job_logs_carry_request_trace_job_and_attempt(queue, span_exporter, log_lines):
    token = context.attach(baggage.set_baggage(REQUEST_ID_BAGGAGE_KEY, REQUEST_ID))
    try:
        job = queue.enqueue(jobs.add, 1, 2)
    finally:
        context.detach(token)
    assert work_until_done(queue, job) == JobStatus.FINISHED
    (send,) = named(span_exporter, f"send {queue.name}")
    (attempt,) = attempt_spans(span_exporter, job)
    lines = records(log_lines)

    (queued,) = [line for line in lines if line.get("event") == LOG_EVENT_JOB_QUEUED]
    assert queued["job_id"] == job.id and queued["request_id"] == REQUEST_ID
    assert queued["span_id"] == f"{send.context.span_id:016x}"

    in_job = [line for line in lines if line["logger"] == "tests.rq.jobs"]
    started = [line for line in lines if line.get("event") == LOG_EVENT_JOB_STARTED]
    finished = [line for line in lines if line.get("event") == LOG_EVENT_JOB_FINISHED]
    for line in [*in_job, *started, *finished]:
        assert line["request_id"] == REQUEST_ID
        assert line["trace_id"] == f"{attempt.context.trace_id:032x}"
        assert line["job_id"] == job.id
        assert line["attempt"] == 1
        assert line["service"] == "billing"
    assert len(in_job) == len(started) == len(finished) == 1
    assert "succeeded" in finished[0]["message"]


def test_every_record_has_every_field_even_outside_a_trace(log_lines):
    logging.getLogger("plain").warning("no trace here")
    (line,) = records(log_lines)
    assert line["service"] == "billing" and line["message"] == "no trace here"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    (handler,) = [h for h in logging.getLogger().handlers if h.get_name() == "jobtrail"]
    assert handler.filter(record)
    assert all(hasattr(record, field) for field in LOG_FIELDS)


def test_configuring_twice_does_not_double_lines(log_lines):
    configure_logging("billing", logging.INFO, log_lines)
    with trace.get_tracer("t").start_as_current_span("s"):
        logging.getLogger("twice").info("once")
    assert len(records(log_lines)) == 1
