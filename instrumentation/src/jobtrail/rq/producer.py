"""The enqueue side: one span around the outermost call that sends jobs to a queue.

``enqueue`` -> ``enqueue_call`` -> ``create_job`` + ``enqueue_job`` and ``enqueue_in`` -> ``enqueue_at``:
only ``enqueue_call``, ``enqueue_at``, ``enqueue_many`` and a direct ``enqueue_job`` start a span;
``create_job`` gives each job its creation context before RQ saves it (no extra Redis write).
A single send is a PRODUCER ``send {queue}`` span whose context is the job's creation context.
A batch (``enqueue_many``) follows the messaging conventions for batch sends: one PRODUCER
``create {queue}`` span per job (child of the caller's context, carrying that job's id; its context is
the job's creation context), and one CLIENT ``send {queue}`` span linked to every ``create`` span.
RQ's own re-enqueues (retries, scheduler promotion, dependency release, requeue) go through private
methods and are left alone. The hot path does as little as it can: attributes at span start, the
propagator's inject once per job, nothing but the call itself when instrumentation is suppressed.
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
from jobtrail.rq.utils import call_argument, qualified_name
from opentelemetry import baggage, context, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from rq.job import Job
from rq.queue import Queue

_log = logging.getLogger("jobtrail.rq")

Wrapper = Callable[[Callable[..., Any], Queue, tuple[Any, ...], dict[str, Any]], Any]
ProduceHook = Callable[[Span, Queue, tuple[Any, ...], dict[str, Any]], None]
"""``produce_hook(span, queue, args, kwargs)``: called when a send span starts, with the enqueue call's
arguments (like contrib's kafka ``produce_hook``). Its exceptions are logged and never reach the caller."""


class _Send:
    """The send in progress: its span, the caller's context, and whether each job gets its own ``create`` span."""

    __slots__ = ("ambient", "batch", "queue", "request_id", "scheduled_for", "span")

    def __init__(self, span: Span, ambient: Context, queue: Queue, request_id: object, batch: bool) -> None:
        self.span = span
        self.ambient = ambient
        self.queue = queue
        self.request_id = request_id
        self.batch = batch
        self.scheduled_for: datetime | None = None

    def stamp(self, tracer: trace.Tracer, job: Job) -> None:
        """Give a freshly created job its creation context (and due time, for the first attempt's queue wait)."""
        if self.batch:
            creation = _create_span(tracer, self, job)
            self.span.add_link(creation.get_span_context())
            inject_creation_context(job.meta, trace.set_span_in_context(creation, self.ambient))
        else:
            if self.span.is_recording():
                self.span.set_attributes({ATTR_MESSAGING_MESSAGE_ID: job.id, ATTR_JOB_FUNC_NAME: job.func_name})
            inject_creation_context(job.meta)
        if self.scheduled_for is not None:
            AttemptRecord(runnable_at=self.scheduled_for.timestamp()).write(job.meta)


_NOTHING_TO_SEND = False
"""Marks a send whose span is not recorded and has nothing to propagate: the nested calls do nothing."""
_SENDING: ContextVar[_Send | bool | None] = ContextVar("jobtrail_rq_sending", default=None)


class ProducerHooks:
    """The wrappers of the enqueue side, sharing one tracer."""

    def __init__(self, tracer: trace.Tracer, produce_hook: ProduceHook | None = None) -> None:
        self._tracer = tracer
        self._produce_hook = produce_hook

    def enqueue_call(
        self, wrapped: Callable[..., Any], queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``Queue.enqueue_call`` (and so ``Queue.enqueue``): one job, one send span."""
        if _SENDING.get() is not None or not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        return self._traced(queue, wrapped, args, kwargs)

    def enqueue_many(
        self, wrapped: Callable[..., Any], queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``Queue.enqueue_many``: a batch send, one ``create`` span per job."""
        if _SENDING.get() is not None or not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        return self._traced(queue, wrapped, args, kwargs, batch=True)

    def enqueue_at(
        self, wrapped: Callable[..., Any], queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``Queue.enqueue_at`` (and so ``enqueue_in``): a send that also records when the job is due."""
        if _SENDING.get() is not None or not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        due = call_argument(args, kwargs, 0, "datetime")
        # A naive datetime means local time to RQ's scheduler too (``datetime.astimezone``).
        scheduled_for = due.astimezone(timezone.utc) if isinstance(due, datetime) else None
        return self._traced(queue, wrapped, args, kwargs, scheduled_for=scheduled_for)

    def enqueue_job(
        self, wrapped: Callable[..., Any], queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``Queue.enqueue_job(job)`` called directly: a job built with ``Job.create`` gets its context here."""
        if _SENDING.get() is not None or not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        return self._traced(queue, wrapped, args, kwargs, job=call_argument(args, kwargs, 0, "job"))

    def create_job(
        self, wrapped: Callable[..., Any], queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``Queue.create_job``: every job made inside a send gets its creation context."""
        job = wrapped(*args, **kwargs)
        send = _SENDING.get()
        if isinstance(send, _Send):
            self._stamp_safely(send, job)
        return job

    def _traced(
        self,
        queue: Queue,
        wrapped: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        batch: bool = False,
        scheduled_for: datetime | None = None,
        job: Any = None,
    ) -> Any:
        """Run the send as the current span (plain try/finally: this is on every enqueue's path)."""
        ambient = context.get_current()
        request_id = baggage.get_baggage(REQUEST_ID_BAGGAGE_KEY, ambient)
        attributes: dict[str, Any] = {
            ATTR_MESSAGING_SYSTEM: MESSAGING_SYSTEM_RQ,
            ATTR_MESSAGING_OPERATION_TYPE: OPERATION_SEND,
            ATTR_MESSAGING_OPERATION_NAME: OPERATION_SEND,
            ATTR_MESSAGING_DESTINATION_NAME: queue.name,
        }
        if request_id is not None:
            attributes[ATTR_REQUEST_ID] = str(request_id)
        if scheduled_for is not None:
            attributes[ATTR_JOB_SCHEDULED_FOR] = scheduled_for.isoformat()
        span = self._tracer.start_span(
            send_span_name(queue.name),
            context=ambient,
            kind=SpanKind.CLIENT if batch else SpanKind.PRODUCER,
            attributes=attributes,
        )
        if not span.is_recording():
            if not span.get_span_context().is_valid and scheduled_for is None and not baggage.get_all(ambient):
                return _untraced(wrapped, args, kwargs)  # no trace, no baggage: nothing to carry
        elif self._produce_hook is not None:
            _call_hook(self._produce_hook, span, queue, args, kwargs)
        send = _Send(span, ambient, queue, request_id, batch)
        send.scheduled_for = scheduled_for
        sending = _SENDING.set(send)
        current = context.attach(trace.set_span_in_context(span, ambient))
        try:
            if job is not None:
                self._stamp_safely(send, job)
            result = wrapped(*args, **kwargs)
        except BaseException as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.set_attribute(ATTR_ERROR_TYPE, qualified_name(type(error)))
            raise
        else:
            if batch and isinstance(result, list):
                span.set_attribute(ATTR_MESSAGING_BATCH_MESSAGE_COUNT, len(result))
            if _log.isEnabledFor(logging.INFO):
                _log_queued(result)
            return result
        finally:
            context.detach(current)
            _SENDING.reset(sending)
            span.end()

    def _stamp_safely(self, send: _Send, job: Any) -> None:
        if not isinstance(job, Job):
            return
        try:
            send.stamp(self._tracer, job)
        except Exception:  # never let tracing change the enqueue
            _log.warning("job %s: could not record its creation context", job.id, exc_info=True)


def _untraced(wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    sending = _SENDING.set(_NOTHING_TO_SEND)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _SENDING.reset(sending)


def _create_span(tracer: trace.Tracer, send: _Send, job: Job) -> Span:
    """The zero-length PRODUCER span that is one batch job's creation context (a child of the caller's)."""
    attributes: dict[str, Any] = {
        ATTR_MESSAGING_SYSTEM: MESSAGING_SYSTEM_RQ,
        ATTR_MESSAGING_OPERATION_TYPE: OPERATION_CREATE,
        ATTR_MESSAGING_OPERATION_NAME: OPERATION_CREATE,
        ATTR_MESSAGING_DESTINATION_NAME: send.queue.name,
        ATTR_MESSAGING_MESSAGE_ID: job.id,
        ATTR_JOB_FUNC_NAME: job.func_name,
    }
    if send.request_id is not None:
        attributes[ATTR_REQUEST_ID] = str(send.request_id)
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
