"""An API under ``opentelemetry-instrument``: N requests, each a root span that enqueues one job.

``opentelemetry-instrument python -m tests.sampling.producer REDIS_URL QUEUE N`` prints one JSON line per
request: its trace id, whether its sampler kept it, its job id and how many attempts the job will take
(every fourth job fails once and is retried at once).
"""

from __future__ import annotations

import json
import sys
import uuid

import redis
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from rq import Queue, Retry

from tests.sampling import jobs

REQUEST_SPAN = "POST /receipts"
_tracer = trace.get_tracer(__name__)


def main(redis_url: str, queue_name: str, requests: str) -> None:
    queue = Queue(queue_name, connection=redis.Redis.from_url(redis_url))
    for number in range(int(requests)):
        with _tracer.start_as_current_span(REQUEST_SPAN, kind=SpanKind.SERVER) as span:
            if number % 4 == 3:
                job = queue.enqueue(jobs.render_after_a_failure, f"test:calls:{uuid.uuid4().hex}", retry=Retry(max=1))
                attempts = 2
            else:
                job = queue.enqueue(jobs.render)
                attempts = 1
            context = span.get_span_context()
        record = {
            "trace_id": trace.format_trace_id(context.trace_id),
            "sampled": context.trace_flags.sampled,
            "job_id": job.id,
            "attempts": attempts,
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
