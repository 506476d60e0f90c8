"""Long jobs of any length end up whole in the request's trace, with every default left alone.

Real Redis, a real forking ``rq worker`` under ``opentelemetry-instrument`` (the SDK's default
``BatchSpanProcessor``, exporting OTLP/gRPC) and a real ``jobtrail-processor`` subprocess with its defaults
writing a file. The job's steps are exported while it runs, long before its attempt span ends: the pickup
marker, exported at attempt start, is what lets the processor move them at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from jobtrail.conventions import ATTR_MESSAGING_MESSAGE_ID, ATTR_STITCHED_ORIGINAL_TRACE_ID
from jobtrail.otlp.json_codec import decode_request

from tests.fixtures.processor_process import running_processor

from .builders import attributes_of
from .conftest import wait_for
from .long_job_app import REQUEST_SPAN, STEP_SPAN

pytestmark = pytest.mark.long

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run_long_job(redis_url: str, tmp_path: Path, seconds: float, steps: int) -> None:
    """Enqueue one job from an instrumented request, run it in a forking worker, and check the processor's file."""
    output = tmp_path / "traces.jsonl"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JOBTRAIL_PROCESSOR_", "OTEL_"))}
    command = [BIN / "jobtrail-processor", "--listen-grpc", "127.0.0.1:0", "--listen-http", "127.0.0.1:0"]
    with running_processor(
        [*command, "--export-to", output.as_uri()], tmp_path / "processor.log", env=env
    ) as processor:
        grpc_port = processor.grpc_port
        otel = {
            **env,
            "PYTHONPATH": str(REPO),
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{grpc_port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }
        queue = f"long-{uuid.uuid4().hex[:8]}"
        enqueued = subprocess.run(
            [str(BIN / "opentelemetry-instrument"), sys.executable, "-m", "tests.processor.long_job_app"]
            + ["enqueue", redis_url, queue, str(seconds), str(steps)],
            cwd=REPO,
            env={**otel, "OTEL_SERVICE_NAME": "api"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert enqueued.returncode == 0, enqueued.stderr
        job_id, request_trace = enqueued.stdout.split()
        worker = subprocess.run(
            [str(BIN / "opentelemetry-instrument"), str(BIN / "rq"), "worker", "--burst", "--url", redis_url, queue],
            cwd=REPO,
            env={**otel, "OTEL_SERVICE_NAME": "worker"},
            capture_output=True,
            text=True,
            timeout=seconds + 180,
        )
        assert worker.returncode == 0, worker.stderr
        expected = 1 + 1 + 1 + 1 + steps  # request, send, attempt, pickup marker, the job's steps

        def written() -> list:
            if not output.exists():
                return []
            lines = output.read_text(encoding="utf-8").splitlines()
            requests = [decode_request(line.encode()) for line in lines if line.strip()]
            return [s for r in requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

        wait_for(lambda: len(written()) >= expected, f"{expected} spans in the processor's file", timeout=60)
    counters = processor.stopped_counters()  # its final word, after SIGTERM and the drain

    spans = written()
    per_trace = Counter(span.trace_id.hex() for span in spans)
    assert per_trace == {request_trace: expected}, "every span of the job ends in the request's trace"
    names = Counter(span.name for span in spans)
    assert names == {REQUEST_SPAN: 1, f"send {queue}": 1, f"process {queue}": 1, f"pickup {queue}": 1, STEP_SPAN: steps}
    (attempt,) = [span for span in spans if span.name == f"process {queue}"]
    (send,) = [span for span in spans if span.name == f"send {queue}"]
    assert attributes_of(attempt)[ATTR_MESSAGING_MESSAGE_ID] == job_id
    assert attempt.parent_span_id == send.span_id
    job_spans = [span for span in spans if span.name in (STEP_SPAN, f"pickup {queue}")]
    assert {span.parent_span_id for span in job_spans} == {attempt.span_id}
    originals = {attributes_of(span).get(ATTR_STITCHED_ORIGINAL_TRACE_ID) for span in job_spans + [attempt]}
    assert len(originals) == 1 and None not in originals
    assert counters["spans_forwarded_unchanged_total{reason=window_expired}"] == 0
    assert counters["spans_forwarded_unchanged_total{reason=hold_full}"] == 0
    assert counters["spans_stitched_total"] == steps + 2
    assert counters["spans_rejected_total"] == 0


@pytest.mark.timeout(600)
def test_a_60_second_job_ends_up_whole_in_the_request_trace(redis_url, tmp_path):
    run_long_job(redis_url, tmp_path, seconds=60, steps=12)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_5_minute_job_ends_up_whole_in_the_request_trace(redis_url, tmp_path):
    run_long_job(redis_url, tmp_path, seconds=300, steps=30)
