"""Emit the spans of one user action exactly as CONVENTIONS.md shapes them, through a real SDK pipeline.

The trail view is tested on these (timestamps fixed, so the lines are exact); the end-to-end test in
tests/demo checks the same shapes come out of the real browser kit, Flask layer and RQ instrumentor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from jobtrail import conventions as c
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.semconv._incubating.attributes.http_attributes import HTTP_METHOD, HTTP_STATUS_CODE, HTTP_URL
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

T0_NS = 1_795_342_443_000_000_000
"""2026-11-22 10:14:03 UTC."""
SECOND = 1_000_000_000
API_SERVICE = "jobtrail-demo-api"
WORKER_SERVICE = "jobtrail-demo-worker"
WEB_SERVICE = "jobtrail-demo-web"


@dataclass
class Emitted:
    request_id: str
    job_id: str
    request_trace_id: str = ""
    attempt_trace_ids: list[str] = field(default_factory=list)


def providers(processor: SpanProcessor) -> dict[str, trace.Tracer]:
    """One tracer per service, each with its own resource, all feeding ``processor``."""
    tracers = {}
    for service in (WEB_SERVICE, API_SERVICE, WORKER_SERVICE):
        provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
        provider.add_span_processor(processor)
        tracers[service] = provider.get_tracer("tests.trail")
    return tracers


def emit_action(
    processor: SpanProcessor,
    request_id: str = "req_0123456789abcdef",
    job_id: str = "job-84721",
    *,
    failures: int = 2,
    dead_letter: bool = False,
    api_status: int = 202,
    error_reason: str | None = None,
    queue_error: bool = False,
    reach_api: bool = True,
    enqueue: bool = True,
    partial: bool = False,
    emit_attempts: int | None = None,
    running: bool = False,
    requeue: bool = False,
) -> Emitted:
    """Click -> fetch -> Flask -> send -> attempts (``failures`` SMTP login errors, then success or dead letter).

    ``partial``: the successful attempt has a second step that fails (a job that reports a partial result).
    ``emit_attempts``: only the first N attempts happened so far (a retry still pending after the last one).
    ``running``: the last of those is still running: only its pickup marker and finished steps are exported.
    ``requeue``: after the dead letter an operator requeued the job; the next attempt succeeded.
    """
    tracers = providers(processor)
    web, api, worker = tracers[WEB_SERVICE], tracers[API_SERVICE], tracers[WORKER_SERVICE]
    emitted = Emitted(request_id, job_id)
    rid = {c.ATTR_REQUEST_ID: request_id}
    action = web.start_span(
        "Send refund receipt",
        context=otel_context.Context(),
        attributes={**rid, c.ATTR_UI_SCREEN: "Refunds", c.ATTR_UI_ACTION: "Send refund receipt"},
        start_time=T0_NS,
    )
    emitted.request_trace_id = format(action.get_span_context().trace_id, "032x")
    in_action = trace.set_span_in_context(action)
    fetch = web.start_span(
        "HTTP POST",
        context=in_action,
        kind=SpanKind.CLIENT,
        attributes={HTTP_METHOD: "POST", HTTP_URL: "http://127.0.0.1:8000/api/receipts"},
        start_time=T0_NS + SECOND // 10,
    )
    send = None
    if reach_api:
        server = api.start_span(
            "POST /api/receipts",
            context=trace.set_span_in_context(fetch),
            kind=SpanKind.SERVER,
            attributes={**rid, HTTP_METHOD: "POST", HTTP_ROUTE: "/api/receipts", HTTP_STATUS_CODE: api_status},
            start_time=T0_NS + SECOND,
        )
        if error_reason:
            server.set_attribute(c.ATTR_ERROR_REASON, error_reason)
        if enqueue and (api_status < 400 or queue_error):
            send = api.start_span(
                c.send_span_name("emails"),
                context=trace.set_span_in_context(server),
                kind=SpanKind.PRODUCER,
                attributes={
                    **rid,
                    c.ATTR_MESSAGING_SYSTEM: c.MESSAGING_SYSTEM_RQ,
                    c.ATTR_MESSAGING_OPERATION_TYPE: c.OPERATION_SEND,
                    c.ATTR_MESSAGING_DESTINATION_NAME: "emails",
                    c.ATTR_MESSAGING_MESSAGE_ID: job_id,
                    c.ATTR_JOB_FUNC_NAME: "jobtrail.demo.jobs.send_refund_receipt",
                },
                start_time=T0_NS + SECOND + SECOND // 10,
            )
            if queue_error:
                send.set_attribute(c.ATTR_ERROR_TYPE, "ConnectionError")
                send.set_status(Status(StatusCode.ERROR, "Redis is down"))
            send.end(T0_NS + SECOND + SECOND // 5)
        server.end(T0_NS + SECOND + SECOND // 2)
        fetch.set_attribute(HTTP_STATUS_CODE, api_status)
    else:
        fetch.set_status(Status(StatusCode.ERROR, "Failed to fetch"))
    fetch.end(T0_NS + SECOND + SECOND // 2)
    if send is not None and not queue_error:
        plan = _plan(failures, dead_letter, emit_attempts, requeue)
        _emit_attempts(worker, send.get_span_context(), emitted, plan, partial=partial, running=running)
        for poll in range(3):
            poll_span = web.start_span(
                "HTTP GET",
                context=in_action,
                kind=SpanKind.CLIENT,
                attributes={HTTP_METHOD: "GET", HTTP_URL: f"http://127.0.0.1:8000/api/jobs/{job_id}"},
                start_time=T0_NS + (2 + 4 * poll) * SECOND,
            )
            state = c.STATE_FAILED if dead_letter else c.STATE_SUCCEEDED
            poll_span.set_attribute(c.ATTR_JOB_STATE, state if poll == 2 else c.STATE_SCHEDULED)
            poll_span.end(T0_NS + (2 + 4 * poll) * SECOND + SECOND // 10)
    message = "Receipt sent." if not dead_letter else "We could not send the receipt."
    action.add_event(
        c.EVENT_UI_RESULT,
        {c.ATTR_UI_RESULT_MESSAGE: message, c.ATTR_UI_RESULT_STATE: c.UI_STATE_FAILED if dead_letter else "succeeded"},
        timestamp=T0_NS + 11 * SECOND,
    )
    action.end(T0_NS + 11 * SECOND)
    return emitted


FIRST_ERROR = ("smtplib.SMTPAuthenticationError", "(535, b'5.7.8 Username and Password not accepted')")
"""error.type as the RQ instrumentation records it, and the message."""
STEP_ERROR = f"SMTPAuthenticationError: {FIRST_ERROR[1]}"
"""A job's own step carries the SDK's "Type: message" status."""
REQUEUED_AT_S = 50
"""The operator requeues the dead-lettered job 50 s after the click (10:14:53)..."""
REQUEUE_AT_S = 60
"""... and a worker picks it up 10 s later."""


@dataclass(frozen=True)
class Attempt:
    number: int
    outcome: str
    start_ns: int
    requeued: bool = False


def _plan(failures: int, dead_letter: bool, emit_attempts: int | None, requeue: bool) -> list[Attempt]:
    attempts = failures + (0 if dead_letter else 1)
    plan = []
    for number in range(1, attempts + 1):
        outcome = c.OUTCOME_SUCCEEDED
        if number <= failures:
            outcome = c.OUTCOME_FAILED if number == attempts else c.OUTCOME_RETRY_SCHEDULED
        plan.append(Attempt(number, outcome, T0_NS + (2 + 3 * (number - 1)) * SECOND))
    if requeue:
        plan.append(Attempt(attempts + 1, c.OUTCOME_SUCCEEDED, T0_NS + REQUEUE_AT_S * SECOND, requeued=True))
    return plan[:emit_attempts] if emit_attempts is not None else plan


def _emit_attempts(
    worker: trace.Tracer,
    created: trace.SpanContext,
    emitted: Emitted,
    plan: list[Attempt],
    *,
    partial: bool = False,
    running: bool = False,
) -> None:
    previous = None
    for planned in plan:
        still_running = running and planned is plan[-1]
        previous = _emit_attempt(worker, created, emitted, planned, previous, partial=partial, running=still_running)


def _emit_attempt(
    worker: trace.Tracer,
    created: trace.SpanContext,
    emitted: Emitted,
    planned: Attempt,
    previous: trace.Span | None,
    *,
    partial: bool = False,
    running: bool = False,
) -> trace.Span:
    """One attempt as the RQ instrumentation shapes it: a new root linked to its creation, its pickup marker,
    its step; not ended when ``running`` (then only the marker and the finished step are exported)."""
    start = planned.start_ns
    links = [Link(created, {c.ATTR_LINK_TYPE: c.LINK_TYPE_ENQUEUED_BY})]
    if previous is not None:
        links.append(Link(previous.get_span_context(), {c.ATTR_LINK_TYPE: c.LINK_TYPE_RETRY_OF}))
    failed = planned.outcome != c.OUTCOME_SUCCEEDED
    common = {
        c.ATTR_REQUEST_ID: emitted.request_id,
        c.ATTR_MESSAGING_SYSTEM: c.MESSAGING_SYSTEM_RQ,
        c.ATTR_MESSAGING_DESTINATION_NAME: "emails",
        c.ATTR_MESSAGING_MESSAGE_ID: emitted.job_id,
        c.ATTR_JOB_ATTEMPT: planned.number,
    }
    attributes = {
        **common,
        c.ATTR_MESSAGING_OPERATION_TYPE: c.OPERATION_PROCESS,
        c.ATTR_JOB_FUNC_NAME: "jobtrail.demo.jobs.send_refund_receipt",
        c.ATTR_JOB_QUEUE_WAIT_MS: 2100 if planned.number == 1 else 1500 if planned.requeued else 150,
        c.ATTR_WORKER_NAME: "worker-1",
    }
    if planned.requeued:
        attributes[c.ATTR_JOB_REQUEUED] = True
        attributes[c.ATTR_JOB_REQUEUED_AT] = _iso(T0_NS + REQUEUED_AT_S * SECOND)
    attempt = worker.start_span(
        c.process_span_name("emails"),
        context=otel_context.Context(),
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
        start_time=start,
    )
    emitted.attempt_trace_ids.append(format(attempt.get_span_context().trace_id, "032x"))
    in_attempt = trace.set_span_in_context(attempt)
    marker = worker.start_span(
        c.pickup_span_name("emails"), context=in_attempt, links=links[:1], attributes=common, start_time=start
    )
    marker.end(start)
    step = worker.start_span("send email", context=in_attempt, start_time=start + SECOND // 10)
    if failed:
        step.set_status(Status(StatusCode.ERROR, STEP_ERROR))
    step.end(start + SECOND // 2)
    if running:
        return attempt
    attempt.set_attribute(c.ATTR_JOB_OUTCOME, planned.outcome)
    if failed:
        attempt.set_attribute(c.ATTR_ERROR_TYPE, FIRST_ERROR[0])
        attempt.set_status(Status(StatusCode.ERROR, FIRST_ERROR[1]))
    if planned.outcome == c.OUTCOME_RETRY_SCHEDULED:
        attempt.add_event(
            c.EVENT_RETRY_SCHEDULED,
            {
                c.ATTR_RETRY_DELAY_S: 2 * planned.number,
                c.ATTR_RETRY_NEXT_RUN_AT: _iso(T0_NS + (2 + 3 * planned.number) * SECOND),
            },
            timestamp=start + SECOND // 2,
        )
    elif planned.outcome == c.OUTCOME_FAILED:
        attempt.add_event(
            c.EVENT_JOB_FAILED,
            {c.ATTR_FIRST_ERROR_TYPE: FIRST_ERROR[0], c.ATTR_FIRST_ERROR_MESSAGE: FIRST_ERROR[1]},
            timestamp=start + SECOND // 2,
        )
    if partial and not failed:
        extra = worker.start_span("attach invoice", context=in_attempt, start_time=start + SECOND // 2)
        extra.set_status(Status(StatusCode.ERROR, "ValueError: invoice RF-1042 has no amount"))
        extra.end(start + SECOND // 2 + SECOND // 20)
    attempt.end(start + SECOND // 2 + SECOND // 10)
    return attempt


def emit_batch(
    processor: SpanProcessor, *, semconv: bool, links: bool = True, request_id: str = "req_00000000000000ba"
) -> list[Emitted]:
    """One request that enqueues two jobs with ``Queue.enqueue_many``; both succeed on their first attempt.

    ``semconv``: the messaging semconv batch shape (one ``create`` span per job with its id, the batch's
    ``send`` span, kind CLIENT, linking to them; attempts link to their ``create`` span). Otherwise the older
    shape: one ``send`` span without a message id, which every attempt links to. ``links``: whether the
    semconv ``send`` span keeps its links to the ``create`` spans (a backend may drop them).
    """
    tracers = providers(processor)
    api, worker = tracers[API_SERVICE], tracers[WORKER_SERVICE]
    rid = {c.ATTR_REQUEST_ID: request_id}
    jobs = [Emitted(request_id, f"batch-job-{n}") for n in (1, 2)]
    messaging = {
        **rid,
        c.ATTR_MESSAGING_SYSTEM: c.MESSAGING_SYSTEM_RQ,
        c.ATTR_MESSAGING_DESTINATION_NAME: "emails",
    }
    server = api.start_span(
        "POST /api/receipts/batch",
        context=otel_context.Context(),
        kind=SpanKind.SERVER,
        attributes={**rid, HTTP_METHOD: "POST", HTTP_ROUTE: "/api/receipts/batch", HTTP_STATUS_CODE: 202},
        start_time=T0_NS,
    )
    in_server = trace.set_span_in_context(server)
    creations: list[trace.SpanContext] = []
    batch_attributes = {
        **messaging,
        c.ATTR_MESSAGING_OPERATION_TYPE: c.OPERATION_SEND,
        c.ATTR_MESSAGING_BATCH_MESSAGE_COUNT: len(jobs),
    }
    if semconv:
        for job in jobs:
            create = api.start_span(
                f"{c.OPERATION_CREATE} emails",
                context=in_server,
                kind=SpanKind.PRODUCER,
                attributes={
                    **messaging,
                    c.ATTR_MESSAGING_OPERATION_TYPE: c.OPERATION_CREATE,
                    c.ATTR_MESSAGING_MESSAGE_ID: job.job_id,
                },
                start_time=T0_NS + SECOND // 10,
            )
            create.end(T0_NS + SECOND // 10)
            creations.append(create.get_span_context())
        batch = api.start_span(
            c.send_span_name("emails"),
            context=in_server,
            kind=SpanKind.CLIENT,
            links=[Link(context) for context in creations] if links else None,
            attributes=batch_attributes,
            start_time=T0_NS + SECOND // 5,
        )
    else:
        batch = api.start_span(
            c.send_span_name("emails"),
            context=in_server,
            kind=SpanKind.PRODUCER,
            attributes=batch_attributes,
            start_time=T0_NS + SECOND // 5,
        )
        creations = [batch.get_span_context()] * len(jobs)
    batch.end(T0_NS + SECOND // 4)
    server.end(T0_NS + SECOND // 2)
    for job, created in zip(jobs, creations, strict=True):
        job.request_trace_id = format(server.get_span_context().trace_id, "032x")
        _emit_attempt(worker, created, job, Attempt(1, c.OUTCOME_SUCCEEDED, T0_NS + 2 * SECOND), None)
    return jobs


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat()
