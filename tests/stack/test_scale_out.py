"""Scale-out: two processor replicas behind the real collector's load_balancing exporter (routing_key: traceID),
running collector_processor/deploy/otel-collector.loadbalancing.yaml as shipped.

Each attempt of a retried job is a new trace, so the exporter may send each to another replica; every replica
stitches from the attempt root's own link, so the job still ends as ONE trace in the real Jaeger.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from jobtrail.conventions import ATTR_STITCHED_ORIGINAL_TRACE_ID
from jobtrail.demo.stack import LOADBALANCING_CONFIG, Stack
from jobtrail.trail import FileSource, Lookup, SourceError, TrailNotFound
from jobtrail.trail.model import KIND_CONSUMER, KIND_PRODUCER, TrailSpan

from tests.rq.conftest import WorkerProcess
from tests.stack.conftest import eventually, jaeger_json, jaeger_trace
from tests.stack.stackfiles import REPO

pytestmark = [pytest.mark.slow, pytest.mark.stack]
RETRIES = 3
MAX_JOBS = 6
"""Attempts land on replicas by trace-id hash: 4 attempts all on one of 2 replicas happens 1 time in 8, so a few
jobs make the spread certain enough (all on one replica every time: 1 in 260,000)."""


def enqueue_retried(redis_url: str, endpoint: str, queue: str) -> tuple[str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "tests.stack.enqueue_retried", redis_url, queue, f"calls-{uuid.uuid4()}", str(RETRIES)],
        cwd=REPO,
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    job_id, trace_id = result.stdout.split()
    return job_id, trace_id


def stitched_job(jaeger_url: str, trace_id: str) -> list[TrailSpan] | None:
    """The job's trace once Jaeger holds the send span and every attempt (stitched under it)."""
    spans = jaeger_trace(jaeger_url, trace_id)
    sends = [span for span in spans if span.kind == KIND_PRODUCER]
    attempts = [span for span in spans if span.kind == KIND_CONSUMER]
    if len(sends) == 1 and len(attempts) == RETRIES + 1:
        return spans
    return None


def stitched_here(trace_file: Path, original_trace_id: str) -> bool:
    """The replica writing ``trace_file`` stitched the attempt trace ``original_trace_id``."""
    try:
        FileSource(str(trace_file)).find(Lookup.parse(original_trace_id))
    except (TrailNotFound, SourceError):
        return False
    return True


def test_retried_attempts_on_different_replicas_end_as_one_trace(
    stack_factory: Callable[..., Stack], redis_url: str
) -> None:
    stack = stack_factory("scale-out", collector_config=LOADBALANCING_CONFIG, replicas=2, hold_seconds=0.5)
    queue = f"scale-out-{uuid.uuid4().hex[:8]}"
    endpoint = f"http://{stack.collector.otlp_grpc_endpoint}"
    worker = WorkerProcess(redis_url, endpoint, "SimpleWorker", queue)
    spread = False
    try:
        for _ in range(MAX_JOBS):
            _job_id, trace_id = enqueue_retried(redis_url, endpoint, queue)
            spans = eventually(lambda trace_id=trace_id: stitched_job(stack.jaeger.url, trace_id), "the stitched job")
            [send] = [span for span in spans if span.kind == KIND_PRODUCER]
            attempts = [span for span in spans if span.kind == KIND_CONSUMER]
            assert {attempt.parent_span_id for attempt in attempts} == {send.span_id}
            originals = [attempt.attributes[ATTR_STITCHED_ORIGINAL_TRACE_ID] for attempt in attempts]
            assert len(set(originals)) == RETRIES + 1
            replicas: set[int] = set()
            for original in originals:
                assert jaeger_json(stack.jaeger.url, f"/api/v3/traces/{original}") is None, "one trace, no leftovers"
                files = [index for index, path in enumerate(stack.trace_files) if stitched_here(path, original)]
                assert len(files) == 1, f"attempt trace {original} was stitched by replicas {files}"
                replicas.update(files)
            if replicas == {0, 1}:
                spread = True
                break
    finally:
        worker.stop()
    assert spread, f"in {MAX_JOBS} jobs, the load_balancing exporter never sent one job's attempts to both replicas"
