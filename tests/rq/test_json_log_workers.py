"""``rq worker -w jobtrail.rq.workers.JsonLog*Worker`` under ``opentelemetry-instrument``: the plain rq command,
in its own process, logging one correlated JSON object per line and never a job's arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jobtrail.conventions import (
    ATTR_MESSAGING_MESSAGE_ID,
    LOG_ATTEMPT,
    LOG_JOB_ID,
    LOG_REQUEST_ID,
    LOG_SERVICE,
    LOG_TRACE_ID,
    REQUEST_ID_BAGGAGE_KEY,
)
from opentelemetry import baggage, context

from tests.fixtures.otlp_receiver import attributes_of
from tests.rq import jobs

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REQUEST_ID = "req_00000000000000c0"
SERVICE = "json-log-worker"


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["JsonLogWorker", "JsonLogSimpleWorker"])
def test_plain_rq_worker_logs_correlated_json_without_job_arguments(
    worker_class, instrumented, queue, redis_url, grpc_receiver
) -> None:
    token = context.attach(baggage.set_baggage(REQUEST_ID_BAGGAGE_KEY, REQUEST_ID))
    try:
        job = queue.enqueue(jobs.add, 40, 2)
    finally:
        context.detach(token)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }
    command = [str(BIN / "opentelemetry-instrument"), str(BIN / "rq"), "worker", "--burst", "--url", redis_url]
    run = subprocess.run(
        [*command, "-w", f"jobtrail.rq.workers.{worker_class}", queue.name],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert job.get_status(refresh=True) == "finished"

    records = [json.loads(line) for line in run.stderr.splitlines() if line.strip()]  # every line is JSON
    assert run.stdout.strip() == "", "nothing left on rq's plain-text handlers"
    assert "tests.rq.jobs.add(" not in run.stderr, "the job's description (its arguments) is not logged"
    assert {record[LOG_SERVICE] for record in records} == {SERVICE}
    assert any(record["logger"] == "rq.worker" for record in records)
    (in_job,) = [record for record in records if record["logger"] == jobs.__name__]
    assert (in_job[LOG_JOB_ID], in_job[LOG_ATTEMPT], in_job[LOG_REQUEST_ID]) == (job.id, 1, REQUEST_ID)

    spans = grpc_receiver.recorder.wait_for(
        lambda spans: any(attributes_of(s).get(ATTR_MESSAGING_MESSAGE_ID) == job.id for s in spans)
    )
    (attempt,) = [
        s for s in spans if s.name.startswith("process ") and attributes_of(s)[ATTR_MESSAGING_MESSAGE_ID] == job.id
    ]
    assert in_job[LOG_TRACE_ID] == attempt.trace_id.hex(), "the job's log line names the attempt's trace"
