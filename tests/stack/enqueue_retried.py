"""``python -m tests.stack.enqueue_retried REDIS_URL QUEUE COUNTER_KEY FAILURES``: an instrumented app enqueues one
job that fails FAILURES times and is retried each time (no wait between tries), under a SERVER span of its own;
spans go over OTLP/gRPC to ``OTEL_EXPORTER_OTLP_ENDPOINT``. Prints ``JOB_ID TRACE_ID``.
"""

from __future__ import annotations

import os
import sys

import redis
from jobtrail.rq import RQInstrumentor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from rq import Queue, Retry

from tests.rq import jobs


def main(redis_url: str, queue_name: str, counter_key: str, failures: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "test-app"}))
    exporter = OTLPSpanExporter(endpoint=os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"], insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    RQInstrumentor().instrument(tracer_provider=provider)
    queue = Queue(queue_name, connection=redis.Redis.from_url(redis_url))
    with provider.get_tracer(__name__).start_as_current_span("POST /send", kind=SpanKind.SERVER) as span:
        job = queue.enqueue(jobs.fail_first, counter_key, int(failures), retry=Retry(max=int(failures)))
        print(job.id, format(span.get_span_context().trace_id, "032x"), flush=True)
    provider.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
