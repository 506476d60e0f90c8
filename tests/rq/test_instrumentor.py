"""The instrumentor's own contract: entry point, opentelemetry-instrument, idempotence, exact uninstrument."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from jobtrail.conventions import ATTR_JOB_OUTCOME, ATTR_MESSAGING_MESSAGE_ID, OUTCOME_SUCCEEDED
from jobtrail.rq import RQInstrumentor
from rq import Queue
from rq.worker.base import BaseWorker

from tests.fixtures.otlp_receiver import attributes_of
from tests.rq import jobs
from tests.rq.conftest import REPO, named

PATCHED = [
    (Queue, name)
    for name in ("enqueue", "enqueue_call", "enqueue_many", "enqueue_at", "enqueue_in", "enqueue_job", "create_job")
] + [(BaseWorker, name) for name in ("perform_job", "handle_job_failure", "handle_job_retry")]


def test_uninstrument_restores_rq_exactly(tracer_provider):
    originals = {(owner, name): owner.__dict__[name] for owner, name in PATCHED}
    RQInstrumentor().instrument(tracer_provider=tracer_provider)
    assert all(owner.__dict__[name] is not originals[(owner, name)] for owner, name in PATCHED)
    RQInstrumentor().uninstrument()
    assert all(owner.__dict__[name] is originals[(owner, name)] for owner, name in PATCHED)


def test_instrumenting_twice_is_harmless(queue, span_exporter, tracer_provider):
    RQInstrumentor().instrument(tracer_provider=tracer_provider)
    RQInstrumentor().instrument(tracer_provider=tracer_provider)
    try:
        queue.enqueue(jobs.add, 1, 2)
    finally:
        RQInstrumentor().uninstrument()
    assert len(named(span_exporter, f"send {queue.name}")) == 1


def test_an_unknown_propagation_mode_is_refused():
    with pytest.raises(ValueError, match="link, child, none"):
        RQInstrumentor().instrument(propagation="sideways")
    assert not RQInstrumentor().is_instrumented_by_opentelemetry


def test_registered_as_an_opentelemetry_instrumentor():
    (entry,) = [e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "rq"]
    assert entry.load() is RQInstrumentor


@pytest.mark.slow
def test_opentelemetry_instrument_traces_an_app_and_rq_worker_with_no_code_change(redis_url, grpc_receiver):
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }

    def instrumented_run(service: str, *command: str) -> str:
        run = subprocess.run(
            [str(bin_dir / "opentelemetry-instrument"), *command],
            cwd=REPO,
            env={**env, "OTEL_SERVICE_NAME": service},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        return run.stdout

    job_id = instrumented_run("auto-app", sys.executable, "-m", "tests.rq.enqueue_once", redis_url, "auto").split()[-1]
    instrumented_run("auto-worker", str(bin_dir / "rq"), "worker", "--burst", "--url", redis_url, "auto")

    def arrived(spans):
        return {s.name for s in spans if job_id in str(attributes_of(s).get(ATTR_MESSAGING_MESSAGE_ID))} >= {
            "send auto",
            "process auto",
        }

    spans = grpc_receiver.wait_for(arrived)
    (send,) = [s for s in spans if s.name == "send auto"]
    (attempt,) = [s for s in spans if s.name == "process auto"]
    assert attempt.links[0].span_id == send.span_id
    assert attributes_of(attempt)[ATTR_JOB_OUTCOME] == OUTCOME_SUCCEEDED
