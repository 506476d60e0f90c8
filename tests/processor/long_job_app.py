"""Both sides of the long-job tests, run under ``opentelemetry-instrument`` (no tracing setup of their own).

``python -m tests.processor.long_job_app enqueue URL QUEUE SECONDS STEPS``: a request span that enqueues one
job (prints the job id and the request's trace id); the worker imports :func:`long_job` from here.
"""

from __future__ import annotations

import sys
import time

import redis
from opentelemetry import trace
from rq import Queue

REQUEST_SPAN = "POST /reports"
STEP_SPAN = "report step"
JOB = "tests.processor.long_job_app.long_job"
"""By name: run as ``__main__`` here, the function itself could not be enqueued."""
_tracer = trace.get_tracer(__name__)


def long_job(seconds: float, steps: int) -> int:
    """Runs ``seconds`` in ``steps`` spans; each ends (and is queued for export) as the job goes on."""
    for number in range(steps):
        with _tracer.start_as_current_span(STEP_SPAN, attributes={"step": number}):
            time.sleep(seconds / steps)
    return steps


def enqueue(redis_url: str, queue_name: str, seconds: str, steps: str) -> None:
    queue = Queue(queue_name, connection=redis.Redis.from_url(redis_url))
    with _tracer.start_as_current_span(REQUEST_SPAN, kind=trace.SpanKind.SERVER) as request_span:
        job = queue.enqueue(
            "tests.processor.long_job_app.long_job", float(seconds), int(steps), job_timeout=int(float(seconds)) + 120
        )
    print(job.id, format(request_span.get_span_context().trace_id, "032x"))


if __name__ == "__main__":
    if sys.argv[1] == "enqueue":
        enqueue(*sys.argv[2:])
