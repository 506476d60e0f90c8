"""Sampled traffic end to end: an API and a forking ``rq worker``, both under ``opentelemetry-instrument`` with
the sampler from the environment, a real ratio, real Redis, OTLP/gRPC to a real ``jobtrail-processor`` (its
defaults) that stitches attempts into their request's trace and exports to a real receiver.

With jobtrail's sampler every kept request keeps its job (every attempt, with the job's own span) in its
trace and no attempt is kept without its request. The SDK's ``parentbased_traceidratio`` is measured beside
it: each attempt is a new root sampled on its own, so trails break (the numbers quoted in docs/rq.md).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections import Counter
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from jobtrail.conventions import (
    ATTR_JOB_ATTEMPT,
    ATTR_MESSAGING_MESSAGE_ID,
    ATTR_STITCHED_ORIGINAL_TRACE_ID,
    SAMPLER_NAME,
    pickup_span_name,
    process_span_name,
    send_span_name,
)
from jobtrail.processor.stitch import REASON_WINDOW_EXPIRED
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from rq.job import Job, JobStatus

from tests.fixtures.instrument_cli import run_instrumented
from tests.fixtures.otlp_receiver import GrpcTraceReceiver, attributes_of
from tests.fixtures.processor_process import ProcessorProcess, running_processor
from tests.sampling.jobs import STEP_SPAN
from tests.sampling.producer import REQUEST_SPAN

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REQUESTS = 300
BASELINE_REQUESTS = 200
RATIO = "0.5"


def processor_to(receiver: GrpcTraceReceiver, log: Path) -> AbstractContextManager[ProcessorProcess]:
    """``jobtrail-processor`` with its defaults, exporting to ``receiver``."""
    listen = ["--listen-grpc", "127.0.0.1:0", "--listen-http", "127.0.0.1:0"]
    export = ["--export-to", receiver.url]
    return running_processor([sys.executable, "-m", "jobtrail.processor", *listen, *export], log, cwd=REPO)


@dataclass(frozen=True)
class Request:
    trace_id: str
    sampled: bool
    job_id: str
    attempts: int


@dataclass(frozen=True)
class Trails:
    """What the receiver holds after stitching, counted the way support meets it: trace by trace."""

    sampled_requests: int
    exported_requests: int
    complete: int
    requests_missing_their_job: int
    orphan_attempts: int
    exported_attempts: int


def count_trails(requests: list[Request], spans: list[Span], queue: str) -> Trails:
    by_name: dict[str, list[Span]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    request_spans = {span.trace_id.hex(): span for span in by_name.get(REQUEST_SPAN, [])}
    sends = {span.trace_id.hex(): span for span in by_name.get(send_span_name(queue), [])}
    attempts: dict[str, list[Span]] = {}
    for span in by_name.get(process_span_name(queue), []):
        attempts.setdefault(str(attributes_of(span)[ATTR_MESSAGING_MESSAGE_ID]), []).append(span)
    steps = Counter((span.trace_id, span.parent_span_id) for span in by_name.get(STEP_SPAN, []))
    markers = Counter((span.trace_id, span.parent_span_id) for span in by_name.get(pickup_span_name(queue), []))

    def complete(request: Request) -> bool:
        """The request's trace holds its send span, every attempt under it, each with its pickup marker and own span."""
        root, send = request_spans.get(request.trace_id), sends.get(request.trace_id)
        kept = sorted(attempts.get(request.job_id, []), key=lambda span: attributes_of(span)[ATTR_JOB_ATTEMPT])
        return (
            root is not None
            and send is not None
            and send.parent_span_id == root.span_id
            and [attributes_of(span)[ATTR_JOB_ATTEMPT] for span in kept] == list(range(1, request.attempts + 1))
            and all(span.trace_id == root.trace_id and span.parent_span_id == send.span_id for span in kept)
            and all(steps[(root.trace_id, span.span_id)] == 1 for span in kept)
            and all(markers[(root.trace_id, span.span_id)] == 1 for span in kept)
        )

    sampled = [request for request in requests if request.sampled]
    every_attempt = [span for kept in attempts.values() for span in kept]
    return Trails(
        sampled_requests=len(sampled),
        exported_requests=len(request_spans),
        complete=sum(complete(request) for request in sampled),
        requests_missing_their_job=sum(len(attempts.get(request.job_id, [])) < request.attempts for request in sampled),
        orphan_attempts=sum(span.trace_id.hex() not in request_spans for span in every_attempt),
        exported_attempts=len(every_attempt),
    )


def run_traffic(sampler: str, requests: int, redis_url: str, endpoint: str) -> tuple[list[Request], str]:
    """The API sends ``requests`` requests, then a forking burst worker runs every job; both exit (and flush)."""
    queue = f"sampled-{uuid.uuid4().hex[:8]}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "OTEL_TRACES_SAMPLER": sampler,
            "OTEL_TRACES_SAMPLER_ARG": RATIO,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
    )
    bin_dir = Path(sys.executable).parent

    def instrumented(service: str, *command: str) -> str:
        return run_instrumented(env, service, *command, timeout=600)

    produced = instrumented("api", sys.executable, "-m", "tests.sampling.producer", redis_url, queue, str(requests))
    instrumented("worker", str(bin_dir / "rq"), "worker", "--burst", "--with-scheduler", "--url", redis_url, queue)
    return [Request(**json.loads(line)) for line in produced.splitlines()], queue


def assert_every_job_succeeded(redis_url: str, requests: list[Request]) -> None:
    """Sampling never changes a job's outcome: the dropped ones ran exactly like the kept ones."""
    connection = redis.Redis.from_url(redis_url)
    try:
        found = Job.fetch_many([request.job_id for request in requests], connection=connection)
        assert [job.get_status() for job in found] == [JobStatus.FINISHED] * len(requests)
    finally:
        connection.close()


def test_jobtrail_sampler_keeps_every_sampled_trail_whole_and_nothing_else(redis_url, grpc_receiver, tmp_path):
    with processor_to(grpc_receiver, tmp_path / "processor.log") as processor:
        requests, queue = run_traffic(SAMPLER_NAME, REQUESTS, redis_url, processor.grpc_endpoint)
    assert len(requests) == REQUESTS
    assert_every_job_succeeded(redis_url, requests)
    spans = grpc_receiver.spans()
    trails = count_trails(requests, spans, queue)
    print(f"\n{SAMPLER_NAME} {RATIO}: {trails}")
    assert 0.35 * REQUESTS < trails.sampled_requests < 0.65 * REQUESTS  # the ratio is really applied
    assert trails.exported_requests == trails.sampled_requests
    assert trails.complete == trails.sampled_requests
    assert trails.requests_missing_their_job == 0
    assert trails.orphan_attempts == 0
    assert trails.exported_attempts == sum(request.attempts for request in requests if request.sampled)
    counters = processor.stopped_counters()
    stitched = [span for span in spans if ATTR_STITCHED_ORIGINAL_TRACE_ID in attributes_of(span)]
    assert len(stitched) == 3 * trails.exported_attempts  # each attempt, its pickup marker and the job's own span
    assert counters["spans_stitched_total"] == len(stitched)
    assert counters[f"spans_forwarded_unchanged_total{{reason={REASON_WINDOW_EXPIRED}}}"] == 0
    assert counters["spans_rejected_total"] == 0


def test_plain_parentbased_traceidratio_samples_each_attempt_on_its_own(redis_url, grpc_receiver, tmp_path):
    """The loss the SDK's sampler causes with ``link`` propagation, measured (docs/rq.md quotes a run)."""
    with processor_to(grpc_receiver, tmp_path / "processor.log") as processor:
        requests, queue = run_traffic("parentbased_traceidratio", BASELINE_REQUESTS, redis_url, processor.grpc_endpoint)
    assert len(requests) == BASELINE_REQUESTS
    assert_every_job_succeeded(redis_url, requests)
    trails = count_trails(requests, grpc_receiver.spans(), queue)
    print(f"\nparentbased_traceidratio {RATIO}: {trails}")
    assert trails.exported_requests == trails.sampled_requests
    assert trails.complete < trails.sampled_requests
    assert trails.requests_missing_their_job > 0
    assert trails.orphan_attempts > 0
