"""A worker process as a service team would run one: SDK, OTLP/gRPC export, RQ instrumented.

``python -m tests.rq.worker_process REDIS_URL OTLP_ENDPOINT WORKER_CLASS QUEUE [burst]``
"""

from __future__ import annotations

import sys

import redis
from jobtrail.rq import RQInstrumentor
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from rq import Queue, SimpleWorker, Worker

WORKER_CLASSES = {"Worker": Worker, "SimpleWorker": SimpleWorker}


def main(redis_url: str, endpoint: str, worker_class: str, queue_name: str, mode: str = "burst") -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "test-worker"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    trace.set_tracer_provider(provider)
    RQInstrumentor().instrument(tracer_provider=provider)
    connection = redis.Redis.from_url(redis_url)
    worker = WORKER_CLASSES[worker_class]([Queue(queue_name, connection=connection)], connection=connection)
    try:
        worker.work(burst=mode == "burst", with_scheduler=True)
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
