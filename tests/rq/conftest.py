"""RQ fixtures: an instrumented process, queues on the session's real Redis, worker runners."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from jobtrail.rq import RQInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus

from tests.fixtures.otlp_receiver import GrpcTraceReceiver

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}
DEADLINE_S = 60.0


@pytest.fixture
def instrumented(tracer_provider: TracerProvider) -> Iterator[RQInstrumentor]:
    """RQ instrumented with the test process's provider (default propagation), undone afterwards."""
    instrumentor = RQInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture
def queue(redis_conn: redis.Redis) -> Queue:
    return Queue(f"q-{uuid.uuid4().hex[:8]}", connection=redis_conn)


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released: connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def counter_key() -> str:
    return f"test:calls:{uuid.uuid4().hex}"


def work_until_done(queue: Queue, job: Job, worker_class: type = SimpleWorker) -> JobStatus:
    """Run burst workers with the scheduler until the job settles (scheduled retries included)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        worker_class([queue], connection=queue.connection).work(burst=True, with_scheduler=True)
        status = job.get_status(refresh=True)
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job.id} never settled: {status}")
        time.sleep(0.1)


def attempt_spans(exporter: InMemorySpanExporter, job: Job) -> list[ReadableSpan]:
    """The job's attempt spans, in attempt order."""
    spans = [
        span
        for span in exporter.get_finished_spans()
        if span.name.startswith("process ") and (span.attributes or {}).get("messaging.message.id") == job.id
    ]
    return sorted(spans, key=lambda span: span.attributes["rq.job.attempt"])


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


class WorkerProcess:
    """A real worker in its own process (``tests.rq.worker_process``), exporting OTLP/gRPC."""

    def __init__(
        self, redis_url: str, endpoint: str, worker_class: str, queue_name: str, env: dict[str, str] | None = None
    ) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.rq.worker_process", redis_url, endpoint, worker_class, queue_name, "serve"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def stop(self) -> str:
        """Warm shutdown (SIGTERM), as a deployment would; returns what the worker printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=DEADLINE_S)
        return output


@pytest.fixture
def worker_process(redis_url: str, grpc_receiver: GrpcTraceReceiver) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts worker processes exporting to the test's receiver (or to ``endpoint``), with extra ``env``."""
    started: list[WorkerProcess] = []

    def start(
        worker_class: str, queue_name: str, endpoint: str | None = None, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        process = WorkerProcess(redis_url, endpoint or grpc_receiver.endpoint, worker_class, queue_name, env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


def wait_for_status(job: Job, statuses: set[JobStatus]) -> JobStatus:
    deadline = time.monotonic() + DEADLINE_S
    while (status := job.get_status(refresh=True)) not in statuses:
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job.id} stayed {status}, expected one of {statuses}")
        time.sleep(0.05)
    return status
