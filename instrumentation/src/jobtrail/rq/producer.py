"""The enqueue side: one span around the outermost call that sends jobs to a queue.

``enqueue`` -> ``enqueue_call`` -> ``create_job`` + ``enqueue_job``, and ``enqueue_in`` -> ``enqueue_at``
-> ``create_job`` + ``schedule_job``: only ``enqueue_job`` (so every ``enqueue``), ``enqueue_at`` and
``enqueue_many`` start a span. ``enqueue_job`` receives the job before RQ saves it and stamps its creation
context itself; inside ``enqueue_at`` and ``enqueue_many``, ``create_job`` gives each job its creation
context before RQ saves it (no extra Redis write either way).
A single send is a PRODUCER ``send {queue}`` span whose context is the job's creation context.
A batch (``enqueue_many``) follows the messaging conventions for batch sends: one PRODUCER
``create {queue}`` span per job (child of the caller's context, carrying that job's id; its context is
the job's creation context), and one CLIENT ``send {queue}`` span linked to every ``create`` span.
RQ's own re-enqueues (retries, scheduler promotion, dependency release, requeue) go through private
methods or ``schedule_job`` and are left alone.

Every ``enqueue`` passes through here, so the hot path does as little as it can: one wrapper per enqueue
that does real work (``create_job``'s returns at once outside a batch or a scheduled send), every
attribute given at span start, the propagator's inject once per job, and nothing but the call itself when
instrumentation is suppressed or a no-op tracer has no context to carry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from jobtrail.conventions import (
    ATTR_ERROR_TYPE,
    ATTR_JOB_FUNC_NAME,
    ATTR_JOB_SCHEDULED_FOR,
    ATTR_MESSAGING_BATCH_MESSAGE_COUNT,
    ATTR_MESSAGING_DESTINATION_NAME,
    ATTR_MESSAGING_MESSAGE_ID,
    ATTR_MESSAGING_OPERATION_NAME,
    ATTR_MESSAGING_OPERATION_TYPE,
    ATTR_MESSAGING_SYSTEM,
    ATTR_REQUEST_ID,
    LOG_EVENT,
    LOG_EVENT_JOB_QUEUED,
    LOG_JOB_ID,
    MESSAGING_SYSTEM_RQ,
    OPERATION_CREATE,
    OPERATION_SEND,
    REQUEST_ID_BAGGAGE_KEY,
    create_span_name,
    send_span_name,
)
from jobtrail.rq.carrier import AttemptRecord, inject_creation_context
from jobtrail.rq.utils import call_argument, func_name_of, qualified_name
from opentelemetry import baggage, context, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.trace import NoOpTracer, Span, SpanKind, Status, StatusCode

from rq.job import Job
from rq.queue import Queue

_log = logging.getLogger("jobtrail.rq")

ProduceHook = Callable[[Span, Queue, tuple[Any, ...], dict[str, Any]], None]
"""``produce_hook(span, queue, args, kwargs)``: called when a send span starts, with the arguments of the RQ method
that starts it (``enqueue_job(job, ...)`` for a single send, ``enqueue_at``, ``enqueue_many``), like contrib's kafka
``produce_hook``. Its exceptions are logged and never reach the caller."""


class _Send:
    """A batch or scheduled send in progress: the jobs ``create_job`` makes inside it get their creation context."""

    __slots__ = ("ambient", "batch", "queue", "request_id", "scheduled_for", "span")

    def __init__(
        self,
        span: Span,
        ambient: Context,
        queue: Queue,
        request_id: object,
        batch: bool,
        scheduled_for: datetime | None,
    ) -> None:
        self.span = span
        self.ambient = ambient
        self.queue = queue
        self.request_id = request_id
        self.batch = batch
        self.scheduled_for = scheduled_for

    def stamp(self, tracer: trace.Tracer, job: Job) -> None:
        """Give a freshly created job its creation context (and due time, for the first attempt's queue wait)."""
        if self.batch:
            creation = _create_span(tracer, self, job)
            self.span.add_link(creation.get_span_context())
            inject_creation_context(job.meta, trace.set_span_in_context(creation, self.ambient))
        else:
            if self.span.is_recording():
                self.span.set_attributes(_job_attributes(job))
            inject_creation_context(job.meta)
        if self.scheduled_for is not None:
            AttemptRecord(runnable_at=self.scheduled_for.timestamp()).write(job.meta)


_SENDING: ContextVar[_Send | None] = ContextVar("jobtrail_rq_sending", default=None)


class ProducerHooks:
    """The wrappers of the enqueue side, sharing one tracer."""

    def __init__(self, tracer: trace.Tracer, produce_hook: ProduceHook | None = None) -> None:
        self._tracer = tracer
        self._produce_hook = produce_hook
        self._no_op = isinstance(tracer, NoOpTracer)
        """Spans are never recorded: an enqueue with nothing in its context has nothing to do here."""

    def enqueue_job(
        self, wrapped: Callable[..., Any], queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``Queue.enqueue_job(job)``: every ``enqueue``/``enqueue_call``, and a job built with ``Job.create``.

        The job is not saved yet: its creation context goes into its meta here, and every attribute is known at
        span start."""
        ambient = context.get_current()
        if (self._no_op and not ambient) or ambient.get(_SUPPRESS_INSTRUMENTATION_KEY):
            return wrapped(*args, **kwargs)  # nothing to record and nothing to carry, or suppressed
        job = call_argument(args, kwargs, 0, "job")
        if not isinstance(job, Job):
            return wrapped(*args, **kwargs)
        request_id = baggage.get_baggage(REQUEST_ID_BAGGAGE_KEY, ambient)
        attributes = _span_attributes(queue, OPERATION_SEND, request_id, job)
        span = self._tracer.start_span(
            send_span_name(queue.name), context=ambient, kind=SpanKind.PRODUCER, attributes=attributes
        )
        current = trace.set_span_in_context(span, ambient)
        if span.is_recording() or span.get_span_context().is_valid or baggage.get_all(ambient):
            _stamp(job, inject_creation_context, job.meta, current)
        return self._run(span, current, None, queue, wrapped, args, kwargs)

    def enqueue_many(
        self, wrapped: Callable[..., Any], queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``Queue.enqueue_many``: a batch send, one ``create`` span per job."""
        return self._traced_send(queue, wrapped, args, kwargs, batch=True)

    def enqueue_at(
        self, wrapped: Callable[..., Any], queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``Queue.enqueue_at`` (and so ``enqueue_in``): a send that also records when the job is due."""
        due = call_argument(args, kwargs, 0, "datetime")
        # A naive datetime means local time to RQ's scheduler too (``datetime.astimezone``).
        scheduled_for = due.astimezone(timezone.utc) if isinstance(due, datetime) else None
        return self._traced_send(queue, wrapped, args, kwargs, scheduled_for=scheduled_for)

    def create_job(
        self, wrapped: Callable[..., Any], queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``Queue.create_job``: every job made inside a batch or scheduled send gets its creation context."""
        job = wrapped(*args, **kwargs)
        send = _SENDING.get()
        if send is not None and isinstance(job, Job):
            _stamp(job, send.stamp, self._tracer, job)
        return job

    def _traced_send(
        self,
        queue: Queue,
        wrapped: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        batch: bool = False,
        scheduled_for: datetime | None = None,
    ) -> Any:
        """A batch or scheduled send: its span is current while ``create_job`` stamps each job."""
        ambient = context.get_current()
        if ambient.get(_SUPPRESS_INSTRUMENTATION_KEY) or _SENDING.get() is not None:
            return wrapped(*args, **kwargs)
        request_id = baggage.get_baggage(REQUEST_ID_BAGGAGE_KEY, ambient)
        attributes = _span_attributes(queue, OPERATION_SEND, request_id)
        if scheduled_for is not None:
            attributes[ATTR_JOB_SCHEDULED_FOR] = scheduled_for.isoformat()
        span = self._tracer.start_span(
            send_span_name(queue.name),
            context=ambient,
            kind=SpanKind.CLIENT if batch else SpanKind.PRODUCER,
            attributes=attributes,
        )
        send = _Send(span, ambient, queue, request_id, batch, scheduled_for)
        return self._run(span, trace.set_span_in_context(span, ambient), send, queue, wrapped, args, kwargs)

    def _run(
        self,
        span: Span,
        current: Context,
        send: _Send | None,
        queue: Queue,
        wrapped: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run the send with its span current (plain try/finally: this is on every enqueue's path)."""
        if self._produce_hook is not None and span.is_recording():
            _call_hook(self._produce_hook, span, queue, args, kwargs)
        sending = _SENDING.set(send) if send is not None else None
        token = context.attach(current)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.set_attribute(ATTR_ERROR_TYPE, qualified_name(type(error)))
            raise
        else:
            if send is not None and send.batch and isinstance(result, list):
                span.set_attribute(ATTR_MESSAGING_BATCH_MESSAGE_COUNT, len(result))
            if _log.isEnabledFor(logging.INFO):
                _log_queued(result)
            return result
        finally:
            context.detach(token)
            if sending is not None:
                _SENDING.reset(sending)
            span.end()


def _stamp(job: Job, stamp: Callable[..., None], *args: Any) -> None:
    """``stamp(*args)``: tracing never changes the enqueue, so a failure is one warning naming the job."""
    try:
        stamp(*args)
    except Exception:
        _log.warning("job %s: could not record its creation context", job.id, exc_info=True)


def _span_attributes(queue: Queue, operation: str, request_id: object, job: Job | None = None) -> dict[str, Any]:
    """What a ``send`` or ``create`` span carries from its start (with ``job``: which job it sends)."""
    attributes: dict[str, Any] = {
        ATTR_MESSAGING_SYSTEM: MESSAGING_SYSTEM_RQ,
        ATTR_MESSAGING_OPERATION_TYPE: operation,
        ATTR_MESSAGING_OPERATION_NAME: operation,
        ATTR_MESSAGING_DESTINATION_NAME: queue.name,
    }
    if request_id is not None:
        attributes[ATTR_REQUEST_ID] = str(request_id)
    if job is not None:
        attributes.update(_job_attributes(job))
    return attributes


def _job_attributes(job: Job) -> dict[str, Any]:
    func_name = func_name_of(job)
    return {ATTR_MESSAGING_MESSAGE_ID: job.id} | ({ATTR_JOB_FUNC_NAME: func_name} if func_name is not None else {})


def _create_span(tracer: trace.Tracer, send: _Send, job: Job) -> Span:
    """The zero-length PRODUCER span that is one batch job's creation context (a child of the caller's)."""
    attributes = _span_attributes(send.queue, OPERATION_CREATE, send.request_id, job)
    span = tracer.start_span(
        create_span_name(send.queue.name), context=send.ambient, kind=SpanKind.PRODUCER, attributes=attributes
    )
    span.end()
    return span


def _call_hook(hook: ProduceHook, span: Span, queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        hook(span, queue, args, kwargs)
    except Exception:
        _log.warning("produce_hook raised", exc_info=True)


def _log_queued(result: Any) -> None:
    """One ``job.queued`` record per job the send put on a queue."""
    for job in result if isinstance(result, list) else [result]:
        if isinstance(job, Job):
            _log.info(
                "job %s queued on %s (%s)",
                job.id,
                job.origin,
                getattr(job.get_status(refresh=False), "value", None),
                extra={LOG_EVENT: LOG_EVENT_JOB_QUEUED, LOG_JOB_ID: job.id},
            )
