"""The timeline builder on spans shaped like CONVENTIONS.md, emitted by the real SDK (pure: no sockets)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from jobtrail.trail import build_timeline, spans_from_request
from jobtrail.trail.timeline import (
    FINAL_DEAD_LETTERED,
    FINAL_PARTLY_DONE,
    FINAL_RETRY_OVERDUE,
    FINAL_RETRY_PENDING,
    FINAL_RUNNING,
    FINAL_SUCCEEDED,
    STEP_API_REJECTED,
    STEP_JOB_NOT_FINISHED,
    STEP_JOB_PARTIAL,
    STEP_NEVER_QUEUED,
    STEP_NOT_FINISHED_YET,
    STEP_NOTHING_BROKEN,
    STEP_UI_NEVER_SENT,
)
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.trail.scenario import T0_NS, emit_action, emit_batch


def spans_of(emit, **scenario):
    exporter = InMemorySpanExporter()
    emit(SimpleSpanProcessor(exporter), **scenario)
    return spans_from_request(encode_spans(exporter.get_finished_spans()))


def timeline_of(now=None, **scenario):
    return build_timeline(spans_of(emit_action, **scenario), now=now)


def at(seconds: float) -> datetime:
    """A moment ``seconds`` after the scenario's click (10:14:03 UTC)."""
    return datetime.fromtimestamp(T0_NS / 1e9 + seconds, timezone.utc)


def test_retried_then_succeeded_tells_every_attempt_in_order() -> None:
    timeline = timeline_of(failures=2)
    lines = timeline.lines()
    expected_in_order = [
        'action "Send refund receipt" clicked at 10:14:03 on screen "Refunds"',
        "API accepted POST /api/receipts at 10:14:04 (202)",
        'job job-84721 queued at 10:14:04 on queue "emails"',
        "attempt 1 picked up at 10:14:05 after 2.1 s in queue, failed: SMTPAuthenticationError; "
        "retry scheduled in 2 s (at 10:14:08)",
        "  step \"send email\" failed: SMTPAuthenticationError: (535, b'5.7.8 Username and Password not accepted')",
        "attempt 2 picked up at 10:14:08 after 0.1 s in queue, failed: SMTPAuthenticationError; retry scheduled in 4 s",
        "attempt 3 picked up at 10:14:11 after 0.1 s in queue, succeeded in 0.60 s",
        '  step "send email" done in 0.40 s',
        "job job-84721 succeeded at 10:14:11 after 3 attempts",
        'the page showed "Receipt sent." at 10:14:14 (succeeded)',
        "final: succeeded",
        "first broken step: nothing is broken: job job-84721 succeeded on attempt 3 after 2 failed "
        "(first: SMTPAuthenticationError)",
    ]
    positions = [next(i for i, line in enumerate(lines) if line.startswith(want)) for want in expected_in_order]
    assert positions == sorted(positions), lines
    assert 'the page checked the job\'s status 3 times; it last saw "succeeded" at 10:14:13' in lines
    assert timeline.final_state == FINAL_SUCCEEDED
    assert timeline.first_broken_step.step == STEP_NOTHING_BROKEN
    assert timeline.request_ids == ["req_0123456789abcdef"]
    assert timeline.job_ids == ["job-84721"]
    # unstitched input: the request's trace and one trace per attempt
    assert len(timeline.trace_ids) == 4


def test_dead_letter_keeps_the_first_error_and_names_the_job() -> None:
    timeline = timeline_of(failures=3, dead_letter=True)
    lines = timeline.lines()
    assert any(line.startswith("attempt 3 picked up") and line.endswith("no retries left") for line in lines), lines
    assert (
        "job job-84721 dead-lettered at 10:14:11 after 3 attempts (first error: SMTPAuthenticationError: "
        "(535, b'5.7.8 Username and Password not accepted'); last error: SMTPAuthenticationError)"
    ) in lines
    assert timeline.final_state == FINAL_DEAD_LETTERED
    assert timeline.first_broken_step.step == STEP_JOB_NOT_FINISHED
    assert "dead-lettered after attempt 3; first error SMTPAuthenticationError" in timeline.first_broken_step.detail
    assert lines[-1].startswith(f"first broken step: {STEP_JOB_NOT_FINISHED}")


def test_refused_request_is_the_api_rejecting_it() -> None:
    timeline = timeline_of(api_status=422, error_reason="amount_invalid")
    assert "API rejected POST /api/receipts at 10:14:04 with 422 (amount_invalid)" in timeline.lines()
    assert timeline.first_broken_step.step == STEP_API_REJECTED
    assert timeline.first_broken_step.detail == "422 amount_invalid"


def test_enqueue_failure_is_the_job_never_queued() -> None:
    timeline = timeline_of(api_status=503, error_reason="job_not_queued", queue_error=True)
    assert 'queuing the job on "emails" failed at 10:14:04: ConnectionError' in timeline.lines()
    assert timeline.first_broken_step.step == STEP_NEVER_QUEUED
    assert timeline.first_broken_step.detail == "queuing failed: ConnectionError"


def test_request_that_never_reached_the_api_is_the_ui_never_sending_it() -> None:
    timeline = timeline_of(reach_api=False)
    assert any("the page's request POST http://127.0.0.1:8000/api/receipts failed" in line for line in timeline.lines())
    assert timeline.first_broken_step.step == STEP_UI_NEVER_SENT
    assert "Failed to fetch" in timeline.first_broken_step.detail


def test_json_form_carries_the_same_facts() -> None:
    document = timeline_of(failures=2).to_dict()
    kinds = [entry["kind"] for entry in document["entries"]]
    assert kinds.count("attempt") == 3
    assert document["entries"][0]["at"] == "2026-11-22T10:14:03Z"
    assert document["first_broken_step"]["step"] == STEP_NOTHING_BROKEN
    assert document["final_state"] == FINAL_SUCCEEDED


def test_accepted_without_a_job_is_the_job_never_queued_but_a_plain_answer_is_fine() -> None:
    promised = timeline_of(enqueue=False)
    assert promised.first_broken_step.step == STEP_NEVER_QUEUED
    assert promised.final_state == "no job"
    plain = timeline_of(enqueue=False, api_status=200)
    assert plain.first_broken_step.step == STEP_NOTHING_BROKEN
    assert plain.first_broken_step.detail == "no background job belongs to this action"


def test_a_failed_step_in_the_last_attempt_is_a_partial_result() -> None:
    timeline = timeline_of(failures=0, partial=True)
    lines = timeline.lines()
    assert '  step "attach invoice" failed: ValueError: invoice RF-1042 has no amount' in lines
    assert "job job-84721 partly done at 10:14:05 after 1 attempt (1 of 2 steps failed)" in lines
    assert timeline.final_state == FINAL_PARTLY_DONE
    assert timeline.first_broken_step.step == STEP_JOB_PARTIAL
    assert timeline.first_broken_step.text == (
        f'{STEP_JOB_PARTIAL}: step "attach invoice" failed: ValueError: invoice RF-1042 has no amount'
    )


def test_a_running_attempt_is_told_from_its_pickup_marker() -> None:
    timeline = timeline_of(failures=1, emit_attempts=2, running=True, now=at(6))
    lines = timeline.lines()
    assert "attempt 2 picked up at 10:14:08, still running" in lines
    assert '  step "send email" done in 0.40 s' in lines, "the finished steps of the running attempt are told"
    assert not any("pickup" in line for line in lines), "the marker is not a step of its own"
    assert "job job-84721 still running: attempt 2 since 10:14:08" in lines
    assert timeline.final_state == FINAL_RUNNING
    assert timeline.first_broken_step.text == "not finished yet: attempt 2 picked up at 10:14:08, still running"


def test_a_pending_retry_is_not_finished_yet_and_a_late_one_is_overdue() -> None:
    pending = timeline_of(failures=2, emit_attempts=2, now=at(9))
    assert pending.first_broken_step.text == f"{STEP_NOT_FINISHED_YET}: attempt 3 scheduled at 10:14:11"
    assert pending.final_state == FINAL_RETRY_PENDING
    assert "job job-84721 retry pending at 10:14:08 after 2 attempts; attempt 3 scheduled at 10:14:11" in (
        pending.lines()
    )
    overdue = timeline_of(failures=2, emit_attempts=2, now=at(8 + 3600))
    assert overdue.final_state == FINAL_RETRY_OVERDUE
    assert overdue.first_broken_step.step == STEP_JOB_NOT_FINISHED
    assert overdue.first_broken_step.detail.startswith(
        "job job-84721: attempt 3 was due at 10:14:11 and is 60 min overdue"
    )
    (job,) = overdue.to_dict()["jobs"]
    assert job == {
        "job_id": "job-84721",
        "queue": "emails",
        "final_state": FINAL_RETRY_OVERDUE,
        "attempts": 2,
        "next_run_at": "2026-11-22T10:14:11+00:00",
    }


def test_without_a_clock_nothing_is_called_overdue() -> None:
    timeline = timeline_of(failures=2, emit_attempts=2)
    assert timeline.first_broken_step.step == STEP_NOT_FINISHED_YET


def test_an_operator_requeue_is_told_and_attempt_numbers_go_on() -> None:
    timeline = timeline_of(failures=2, dead_letter=True, requeue=True)
    lines = timeline.lines()
    requeued_at = "10:14:53"
    assert f"job job-84721 requeued by an operator at {requeued_at}" in lines
    told = [line for line in lines if line.startswith(("attempt ", "job job-84721 requeued"))]
    assert [line.split(" picked up")[0] for line in told] == [
        "attempt 1",
        "attempt 2",
        f"job job-84721 requeued by an operator at {requeued_at}",
        "attempt 3",
    ]
    assert timeline.final_state == FINAL_SUCCEEDED
    assert timeline.first_broken_step.detail.endswith("; requeued by an operator")
    requeue = next(entry for entry in timeline.to_dict()["entries"] if entry["kind"] == "requeued")
    assert (requeue["job_id"], requeue["attempt"]) == ("job-84721", 3)


@pytest.mark.parametrize(
    ("semconv", "links"),
    [(False, False), (True, True), (True, False)],
    ids=["one-send-span", "semconv-create-spans", "semconv-without-links"],
)
def test_enqueue_many_tells_each_job_and_no_false_verdict(semconv: bool, links: bool) -> None:
    timeline = build_timeline(spans_of(emit_batch, semconv=semconv, links=links))
    lines = timeline.lines()
    assert "API accepted POST /api/receipts/batch at 10:14:03 (202)" in lines
    assert '2 jobs queued together at 10:14:03 on queue "emails" (enqueue_many)' in lines
    for job_id in ("batch-job-1", "batch-job-2"):
        assert f"job {job_id} succeeded at 10:14:05 after 1 attempt" in lines
    assert sorted(timeline.job_ids) == ["batch-job-1", "batch-job-2"]
    assert timeline.final_state == FINAL_SUCCEEDED
    assert timeline.first_broken_step.text == STEP_NOTHING_BROKEN
    assert not any("never picked up" in line or "job  " in line for line in lines), lines
    if semconv:
        assert 'job batch-job-1 queued at 10:14:03 on queue "emails"' in lines


def test_a_batch_job_with_no_attempt_is_named_only_as_far_as_the_spans_know() -> None:
    spans = [
        span
        for span in spans_of(emit_batch, semconv=False)
        if span.attributes.get("messaging.message.id") != "batch-job-2"
    ]
    timeline = build_timeline(spans)
    assert timeline.first_broken_step.step == STEP_JOB_NOT_FINISHED
    assert timeline.first_broken_step.detail == "1 job(s) of the batch queued at 10:14:03 were never picked up"


def test_json_entries_carry_structured_fields() -> None:
    entries = timeline_of(failures=1).to_dict()["entries"]
    first, second = [entry for entry in entries if entry["kind"] == "attempt"]
    assert first["job_id"] == "job-84721" and first["attempt"] == 1
    assert first["outcome"] == "retry_scheduled" and first["error_type"] == "smtplib.SMTPAuthenticationError"
    assert first["retry_delay_s"] == 2 and first["next_run_at"] == "2026-11-22T10:14:08+00:00"
    assert first["queue_wait_s"] == 2.1 and first["service"] == "jobtrail-demo-worker"
    assert len(first["trace_id"]) == 32 and len(first["span_id"]) == 16
    assert second["outcome"] == "succeeded" and "error_type" not in second
    step = next(entry for entry in entries if entry["kind"] == "step" and entry["attempt"] == 1)
    assert step["name"] == "send email" and step["failed"] is True and step["depth"] == 1
    assert step["error"].startswith("SMTPAuthenticationError: (535")
    api = next(entry for entry in entries if entry["kind"] == "api")
    assert (api["method"], api["route"], api["status"]) == ("POST", "/api/receipts", 202)
