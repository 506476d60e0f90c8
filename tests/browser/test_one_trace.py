"""Headless Chromium clicks a button; the exported spans must form one trace with one request id."""

from __future__ import annotations

import pytest
from jobtrail.conventions import (
    ATTR_JOB_STATE,
    ATTR_MESSAGING_MESSAGE_ID,
    ATTR_REQUEST_ID,
    ATTR_UI_ACTION,
    ATTR_UI_RESULT_MESSAGE,
    ATTR_UI_RESULT_STATE,
    ATTR_UI_SCREEN,
    EVENT_UI_RESULT,
    PROPAGATION_LINK,
    REQUEST_ID_PATTERN,
    STATE_QUEUED,
    STATE_SUCCEEDED,
    process_span_name,
    send_span_name,
)
from jobtrail.rq import RQInstrumentor
from opentelemetry.trace import SpanKind

from tests.browser.spans import (
    OTLP_KIND_CLIENT,
    OTLP_KIND_INTERNAL,
    attribute,
    event_attributes,
    hex_parent_id,
    hex_span_id,
    hex_trace_id,
)
from tests.flask.conftest import QUEUE_NAME
from tests.flask.sample_app import create_app
from tests.flask.serving import serving

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ACTION = "Send refund receipt"


@pytest.fixture
def site(queue, http_receiver):
    """The sample app served for real, its span intake forwarding to the test's OTLP receiver."""
    recorder, receiver_url = http_receiver.recorder, http_receiver.url
    with serving(create_app(queue, forward_to=f"{receiver_url}/v1/traces")) as base_url:
        yield base_url, recorder


def exported(recorder, action_name, child_url):
    """Wait until the action span and a child fetch span of ``child_url`` have arrived at the receiver.

    A fetch span ends a moment after its response (the fetch instrumentation waits for resource
    timing), so it may be exported after the action span; the kit's batch processor sends it soon.
    """

    def arrived(_deliveries) -> bool:
        spans = recorder.json_spans()
        actions = [span for span in spans if span["name"] == action_name]
        return any(
            span.get("parentSpanId") == action["spanId"] and attribute(span, "url.full") == child_url
            for action in actions
            for span in spans
        )

    recorder.wait_for(arrived)


def click_and_export(page, base_url, recorder, button, done_text, action_name):
    """Click ``button``, wait for the page to show ``done_text``, and for the action's spans to arrive."""
    page.goto(base_url)
    page.click(button)
    page.wait_for_function(f"document.getElementById('result').textContent === {done_text!r}")
    page.evaluate("jobtrail.flush()")
    exported(recorder, action_name, f"{base_url}/receipts")
    return page.evaluate("window.acceptedJob")


def receipt_server_spans(finished):
    return [span for span in finished if span.kind == SpanKind.SERVER and span.name.endswith("/receipts")]


def browser_spans(recorder, action_name):
    spans = recorder.json_spans()
    (action,) = [span for span in spans if span["name"] == action_name]
    fetches = [span for span in spans if span.get("parentSpanId") == action["spanId"]]
    return action, fetches


@pytest.fixture
def rq_instrumented(tracer_provider):
    """The RQ instrumentation on the test's tracer provider, for this test only."""
    instrumentor = RQInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, propagation=PROPAGATION_LINK)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def test_click_to_enqueue_to_attempt_is_one_trace_with_one_request_id(
    page, site, span_exporter, rq_instrumented, run_jobs
):
    base_url, recorder = site

    accepted = click_and_export(page, base_url, recorder, "#send", "queued", ACTION)
    run_jobs()

    request_id = accepted["request_id"]
    assert REQUEST_ID_PATTERN.fullmatch(request_id)
    action, (fetch,) = browser_spans(recorder, ACTION)
    assert action["kind"] == OTLP_KIND_INTERNAL and action["service"] == "receipts-page"
    assert attribute(action, ATTR_UI_SCREEN) == "Order 1042"
    assert attribute(action, ATTR_UI_ACTION) == ACTION
    assert event_attributes(action, EVENT_UI_RESULT) == [
        {ATTR_UI_RESULT_MESSAGE: "Receipt queued", ATTR_UI_RESULT_STATE: "running"}
    ]
    assert fetch["kind"] == OTLP_KIND_CLIENT
    assert attribute(fetch, "url.full") == f"{base_url}/receipts"

    finished = span_exporter.get_finished_spans()
    (server,) = receipt_server_spans(finished)
    (send,) = [s for s in finished if s.kind == SpanKind.PRODUCER and s.name == send_span_name(QUEUE_NAME)]
    (attempt,) = [s for s in finished if s.kind == SpanKind.CONSUMER and s.name == process_span_name(QUEUE_NAME)]

    assert {fetch["traceId"], hex_trace_id(server), hex_trace_id(send)} == {action["traceId"]}
    assert fetch["parentSpanId"] == action["spanId"]
    assert hex_parent_id(server) == fetch["spanId"]
    assert hex_parent_id(send) == hex_span_id(server)
    assert send.attributes[ATTR_MESSAGING_MESSAGE_ID] == attempt.attributes[ATTR_MESSAGING_MESSAGE_ID]
    assert send.attributes[ATTR_MESSAGING_MESSAGE_ID] == accepted["job_id"]
    # propagation "link": the attempt is a trace of its own, linked to the enqueue.
    assert attempt.parent is None and hex_trace_id(attempt) != action["traceId"]
    assert [link.context.span_id for link in attempt.links][:1] == [send.context.span_id]
    assert [
        attribute(action, ATTR_REQUEST_ID),
        attribute(fetch, ATTR_REQUEST_ID),
        server.attributes[ATTR_REQUEST_ID],
        send.attributes[ATTR_REQUEST_ID],
        attempt.attributes[ATTR_REQUEST_ID],
    ] == [request_id] * 5


def test_each_poll_is_a_fetch_span_with_the_state_it_returned(page, site, run_jobs):
    base_url, recorder = site
    action_name = "Send refund receipt and wait"

    requests = []
    page.on("request", lambda request: requests.append(request))
    page.goto(base_url)
    page.click("#send-and-wait")
    page.wait_for_function("window.seenStates.includes('queued')")
    run_jobs()
    page.wait_for_function("document.getElementById('result').textContent === 'succeeded'")
    accepted = page.evaluate("window.acceptedJob")
    page.evaluate("jobtrail.flush()")
    exported(recorder, action_name, base_url + accepted["status_url"])

    action, fetches = browser_spans(recorder, action_name)
    polls = sorted(
        (span for span in fetches if attribute(span, "url.full") == base_url + accepted["status_url"]),
        key=lambda span: int(span["startTimeUnixNano"]),
    )
    poll_states = [attribute(span, ATTR_JOB_STATE) for span in polls]
    assert poll_states[0] == STATE_QUEUED and poll_states[-1] == STATE_SUCCEEDED
    assert set(poll_states) <= {STATE_QUEUED, "started", STATE_SUCCEEDED}
    assert all(attribute(span, ATTR_REQUEST_ID) == accepted["request_id"] for span in polls)
    assert page.evaluate("window.seenStates")[-1] == STATE_SUCCEEDED
    status_requests = [request for request in requests if request.url == base_url + accepted["status_url"]]
    assert len(status_requests) == len(polls)
    assert all(request.all_headers().get("cache-control") == "no-cache" for request in status_requests)
    assert event_attributes(action, EVENT_UI_RESULT)[-1] == {
        ATTR_UI_RESULT_MESSAGE: "Receipt succeeded",
        ATTR_UI_RESULT_STATE: "succeeded",
    }
