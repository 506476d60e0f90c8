"""A Celery app traced the way opentelemetry-instrumentation-celery documents it, with ``use_span_links=True``.

The worker (``celery -A tests.processor.celery_app worker``) sets up tracing in each pool process
(``worker_process_init``); ``python -m tests.processor.celery_app`` is the producer: a request span that sends
one task, printing its id and the request's trace id. Both export OTLP/gRPC to ``OTLP_ENDPOINT`` through the SDK's
``BatchSpanProcessor``.
"""

from __future__ import annotations

import os

from celery import Celery, Task
from celery.signals import worker_process_init, worker_process_shutdown
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

REQUEST_SPAN = "POST /exports"
TASK = "tests.processor.celery_app.flaky_export"
"""Named explicitly: the producer runs this module as ``__main__``."""
RETRIES = 2

app = Celery("jobtrail_celery_tests", broker=os.environ.get("CELERY_BROKER_URL", "memory://"))
app.conf.task_default_queue = os.environ.get("CELERY_QUEUE", "celery")
app.conf.broker_connection_retry_on_startup = True


def start_tracing(service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=os.environ["OTLP_ENDPOINT"], insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument(tracer_provider=provider, use_span_links=True)
    return provider


@worker_process_init.connect(weak=False)
def _trace_the_pool_process(**_: object) -> None:
    start_tracing("celery-worker")


@worker_process_shutdown.connect(weak=False)
def _flush(**_: object) -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


@app.task(bind=True, max_retries=RETRIES, name=TASK)
def flaky_export(self: Task) -> str:
    """Fails the first ``RETRIES`` times and asks Celery to retry at once (``self.retry``)."""
    if self.request.retries < RETRIES:
        raise self.retry(countdown=0)
    return "exported"


def main() -> None:
    provider = start_tracing("api")
    with trace.get_tracer(__name__).start_as_current_span(REQUEST_SPAN, kind=trace.SpanKind.SERVER) as span:
        result = flaky_export.apply_async()
    print(result.id, format(span.get_span_context().trace_id, "032x"))
    provider.shutdown()


if __name__ == "__main__":
    main()
