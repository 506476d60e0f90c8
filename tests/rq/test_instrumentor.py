"""The instrumentor's own contract: entry point, opentelemetry-instrument, idempotence, exact uninstrument."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from jobtrail.conventions import ATTR_JOB_OUTCOME, ATTR_MESSAGING_MESSAGE_ID, JOB_META_CARRIER_KEY, OUTCOME_SUCCEEDED
from jobtrail.provider import warn_if_no_sdk_provider
from jobtrail.rq import SCHEMA_URL, RQInstrumentor
from jobtrail.version import __version__
from opentelemetry.instrumentation.utils import suppress_instrumentation
from rq import Queue
from rq.job import Job, JobStatus
from rq.worker.base import BaseWorker

from tests.fixtures.instrument_cli import run_instrumented
from tests.fixtures.otlp_receiver import attributes_of
from tests.rq import jobs
from tests.rq.conftest import REPO, attempt_spans, named, work_until_done

PATCHED = [(Queue, name) for name in ("enqueue_job", "enqueue_many", "enqueue_at", "create_job")] + [
    (BaseWorker, name) for name in ("perform_job", "handle_job_failure", "handle_job_retry")
]


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
        return run_instrumented(env, service, *command, timeout=60)

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


def test_spans_carry_the_instrumentation_scope_version_and_schema(queue, span_exporter, instrumented):
    queue.enqueue(jobs.add, 1, 2)
    (send,) = named(span_exporter, f"send {queue.name}")
    scope = send.instrumentation_scope
    assert (scope.name, scope.version, scope.schema_url) == ("jobtrail.rq", __version__, SCHEMA_URL)


def test_suppressed_instrumentation_records_nothing_and_injects_nothing(queue, span_exporter, instrumented):
    with suppress_instrumentation():
        job = queue.enqueue(jobs.add, 1, 2)
        assert work_until_done(queue, job) == JobStatus.FINISHED
    assert job.return_value() == 3
    assert JOB_META_CARRIER_KEY not in Job.fetch(job.id, connection=queue.connection).meta
    assert [s.name for s in span_exporter.get_finished_spans()] == [jobs.STEP_SPAN]  # the job's own, not RQ's


def test_produce_and_consume_hooks_see_their_spans_and_cannot_break_a_job(queue, span_exporter, tracer_provider):
    seen = []

    def produce_hook(span, queue, args, kwargs):
        span.set_attribute("app.tenant", "acme")
        job = args[0] if args else kwargs["job"]  # a single send's hook sees enqueue_job's arguments: the job
        seen.append(("produce", queue.name, job.id, job.func_name))

    def consume_hook(span, job):
        seen.append(("consume", job.id))
        raise RuntimeError("a buggy hook")

    RQInstrumentor().instrument(tracer_provider=tracer_provider, produce_hook=produce_hook, consume_hook=consume_hook)
    try:
        job = queue.enqueue(jobs.add, 1, 2)
        assert work_until_done(queue, job) == JobStatus.FINISHED
    finally:
        RQInstrumentor().uninstrument()
    assert job.return_value() == 3
    assert seen == [("produce", queue.name, job.id, "tests.rq.jobs.add"), ("consume", job.id)]
    (send,) = named(span_exporter, f"send {queue.name}")
    assert send.attributes["app.tenant"] == "acme"
    assert len(attempt_spans(span_exporter, job)) == 1


def test_one_warning_when_instrumenting_without_an_sdk_provider():
    script = (
        "import logging; logging.basicConfig()\n"
        "from jobtrail.rq import RQInstrumentor\n"
        "RQInstrumentor().instrument(); RQInstrumentor().uninstrument(); RQInstrumentor().instrument()\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("no OpenTelemetry SDK tracer provider is set") == 1
    assert "jobtrail.rq" in run.stderr and "opentelemetry-instrument" in run.stderr


def test_no_warning_with_an_sdk_provider(caplog):
    with caplog.at_level(logging.WARNING):
        warn_if_no_sdk_provider("jobtrail.rq")
    assert not caplog.records
