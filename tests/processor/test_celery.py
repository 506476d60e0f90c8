"""Celery's own link style, as opentelemetry-instrumentation-celery really emits it with ``use_span_links=True``:
a real Celery worker (prefork pool of two processes: a retry may run, and export, before the attempt that sent
it) on a real Redis broker, a task retried twice with ``self.retry``, the processor with ``stitch_rule:
messaging``. Each attempt is a new trace whose ``run/<task>`` CONSUMER span links to the ``apply_async`` span
that sent it -- for a retry, the one inside the previous attempt's trace. One trace in the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from jobtrail.conventions import ATTR_STITCHED_ORIGINAL_TRACE_ID, ATTR_STITCHED_PARENT_FROM_LINK
from jobtrail.processor.telemetry import SPANS_FORWARDED_UNCHANGED, SPANS_REJECTED, SPANS_STITCHED

from .builders import attributes_of
from .celery_app import REQUEST_SPAN, RETRIES, TASK
from .conftest import wait_for

REPO = Path(__file__).resolve().parents[2]


def broker_url(redis_url: str) -> str:
    """Kombu spells a unix socket ``redis+socket://``."""
    return "redis+socket://" + redis_url.removeprefix("unix://") if redis_url.startswith("unix://") else redis_url


def test_a_retried_celery_task_is_one_trace_with_its_request(redis_url, grpc_downstream, start_processor):
    processor = start_processor(export_to=[grpc_downstream.url], stitch_rule="messaging", hold_seconds=2.0)
    queue = f"celery-{uuid.uuid4().hex[:8]}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env |= {
        "PYTHONPATH": str(REPO),
        "CELERY_BROKER_URL": broker_url(redis_url),
        "CELERY_QUEUE": queue,
        "OTLP_ENDPOINT": f"127.0.0.1:{processor.grpc_port}",
        "OTEL_METRICS_EXPORTER": "none",
    }
    sent = subprocess.run(
        [sys.executable, "-m", "tests.processor.celery_app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    task_id, request_trace = sent.stdout.split()
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.processor.celery_app", "worker"]
        + ["--pool", "prefork", "--concurrency", "2", "--queues", queue, "--loglevel", "INFO", "--without-gossip"]
        + ["--without-mingle", "--without-heartbeat"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    expected = 2 + (RETRIES + 1) + RETRIES  # request + apply_async; a run span per attempt; a re-send per retry
    try:
        wait_for(lambda: len(grpc_downstream.recorder.spans()) >= expected, f"{expected} spans", timeout=90)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()

    spans = grpc_downstream.recorder.spans()
    assert Counter(span.trace_id.hex() for span in spans) == {request_trace: expected}, "one trace"
    runs = [span for span in spans if span.name == f"run/{TASK}"]
    sends = {span.span_id: span for span in spans if span.name == f"apply_async/{TASK}"}
    (request_span,) = [span for span in spans if span.name == REQUEST_SPAN]
    assert len(runs) == RETRIES + 1 and len(sends) == RETRIES + 1
    assert {attributes_of(run)["messaging.message.id"] for run in runs} == {task_id}
    for run in runs:  # every attempt hangs under the apply_async span its link points at
        assert [link.span_id for link in run.links] == [run.parent_span_id] and run.parent_span_id in sends
        assert attributes_of(run)[ATTR_STITCHED_PARENT_FROM_LINK] is True
    retry_sends = [send for send in sends.values() if send.parent_span_id != request_span.span_id]
    assert {send.parent_span_id for send in retry_sends} <= {run.span_id for run in runs}
    originals = {attributes_of(span).get(ATTR_STITCHED_ORIGINAL_TRACE_ID) for span in runs + retry_sends}
    assert len(originals) == RETRIES + 1 and None not in originals, "each attempt came from its own trace"
    telemetry = processor.telemetry
    assert telemetry.value(SPANS_STITCHED) == len(runs) + len(retry_sends)
    assert telemetry.value(SPANS_FORWARDED_UNCHANGED, reason="window_expired") == 0
    assert telemetry.value(SPANS_REJECTED) == 0
