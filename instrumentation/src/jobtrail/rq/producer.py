"""The enqueue side: a PRODUCER ``send {queue}`` span around every way a job reaches a queue.

The public enqueue methods call each other (``enqueue`` -> ``enqueue_call`` -> ``enqueue_job``,
``enqueue_in`` -> ``enqueue_at``), so the outermost call owns the span and the nested ones only add
what they know. Each job gets the send span's context in ``job.meta`` as soon as it is created,
before RQ saves it, so the creation context costs no extra Redis write. RQ's own re-enqueues
(retries, scheduler promotion, dependency release) go through private methods and are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
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
    OPERATION_SEND,
    REQUEST_ID_BAGGAGE_KEY,
    send_span_name,
)
from jobtrail.rq.carrier import AttemptRecord, inject_creation_context
from jobtrail.rq.utils import call_argument, qualified_name
from opentelemetry import baggage, context, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from rq.job import Job
from rq.queue import Queue

_log = logging.getLogger("jobtrail.rq")

Wrapper = Callable[[Callable[..., Any], Queue, tuple[Any, ...], dict[str, Any]], Any]


class _Send:
    """The enqueue in progress: its span, and the due time when it is ``enqueue_at``/``enqueue_in``."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self.scheduled_for: datetime | None = None

    def note_due_time(self, due: datetime | None) -> None:
        if due is not None:
            # A naive datetime means local time to RQ's scheduler too (``datetime.astimezone``).
            self.scheduled_for = due.astimezone(timezone.utc)

    def stamp(self, job: Job) -> None:
        """Give a freshly created job its creation context (and due time, for the first attempt's queue wait)."""
        inject_creation_context(job.meta)
        if self.scheduled_for is not None:
            AttemptRecord(runnable_at=self.scheduled_for.timestamp()).write(job.meta)


_SENDING: ContextVar[_Send | None] = ContextVar("jobtrail_rq_sending", default=None)


class ProducerHooks:
    """The wrappers of the enqueue side, sharing one tracer."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def send(self) -> Wrapper:
        """Wrapper for a public enqueue method that creates and queues jobs."""

        def wrapper(wrapped: Callable[..., Any], queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if _SENDING.get() is not None:
                return wrapped(*args, **kwargs)
            return self._traced(queue, lambda _send: wrapped(*args, **kwargs))

        return wrapper

    def send_at(self, due_time: Callable[[tuple[Any, ...], dict[str, Any]], datetime | None]) -> Wrapper:
        """Wrapper for ``enqueue_at``/``enqueue_in``: like :meth:`send`, and records when the job is due."""

        def wrapper(wrapped: Callable[..., Any], queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            send = _SENDING.get()
            if send is not None:
                send.note_due_time(due_time(args, kwargs))
                return wrapped(*args, **kwargs)

            def call(send: _Send) -> Any:
                send.note_due_time(due_time(args, kwargs))
                return wrapped(*args, **kwargs)

            return self._traced(queue, call)

        return wrapper

    def enqueue_job(
        self, wrapped: Callable[..., Any], queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``Queue.enqueue_job(job)``: a job built with ``Job.create`` gets its creation context here."""

        def call(send: _Send) -> Any:
            _stamp_safely(send, call_argument(args, kwargs, 0, "job"))
            return wrapped(*args, **kwargs)

        send = _SENDING.get()
        return call(send) if send is not None else self._traced(queue, call)

    def create_job(
        self, wrapped: Callable[..., Any], queue: Queue, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``Queue.create_job``: every job made inside an enqueue gets the send span's context."""
        job = wrapped(*args, **kwargs)
        send = _SENDING.get()
        if send is not None:
            _stamp_safely(send, job)
        return job

    def _traced(self, queue: Queue, call: Callable[[_Send], Any]) -> Any:
        """Run ``call`` as the current send span (plain try/finally: this is on every enqueue's path)."""
        attributes: dict[str, Any] = {
            ATTR_MESSAGING_SYSTEM: MESSAGING_SYSTEM_RQ,
            ATTR_MESSAGING_OPERATION_TYPE: OPERATION_SEND,
            ATTR_MESSAGING_OPERATION_NAME: OPERATION_SEND,
            ATTR_MESSAGING_DESTINATION_NAME: queue.name,
        }
        request_id = baggage.get_baggage(REQUEST_ID_BAGGAGE_KEY)
        if request_id is not None:
            attributes[ATTR_REQUEST_ID] = str(request_id)
        span = self._tracer.start_span(send_span_name(queue.name), kind=SpanKind.PRODUCER, attributes=attributes)
        send = _Send(span)
        sending = _SENDING.set(send)
        current = context.attach(trace.set_span_in_context(span))
        try:
            result = call(send)
        except BaseException as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.set_attribute(ATTR_ERROR_TYPE, qualified_name(type(error)))
            raise
        else:
            _describe(span, result)
            if send.scheduled_for is not None:
                span.set_attribute(ATTR_JOB_SCHEDULED_FOR, send.scheduled_for.isoformat())
            return result
        finally:
            context.detach(current)
            _SENDING.reset(sending)
            span.end()


def enqueue_at_due_time(args: tuple[Any, ...], kwargs: dict[str, Any]) -> datetime | None:
    """The ``datetime`` argument of ``Queue.enqueue_at``."""
    value = call_argument(args, kwargs, 0, "datetime")
    return value if isinstance(value, datetime) else None


def enqueue_in_due_time(args: tuple[Any, ...], kwargs: dict[str, Any]) -> datetime | None:
    """Now plus the ``time_delta`` argument of ``Queue.enqueue_in``."""
    value = call_argument(args, kwargs, 0, "time_delta")
    return datetime.now(timezone.utc) + value if isinstance(value, timedelta) else None


def _stamp_safely(send: _Send, job: Any) -> None:
    if not isinstance(job, Job):
        return
    try:
        send.stamp(job)
    except Exception:  # never let tracing change the enqueue
        _log.warning("job %s: could not record its creation context", job.id, exc_info=True)


def _describe(span: Span, result: Any) -> None:
    """Name the job(s) on the send span and log each queue entry."""
    jobs = result if isinstance(result, list) else [result]
    jobs = [job for job in jobs if isinstance(job, Job)]
    if len(jobs) == 1:
        span.set_attribute(ATTR_MESSAGING_MESSAGE_ID, jobs[0].id)
        span.set_attribute(ATTR_JOB_FUNC_NAME, jobs[0].func_name)
    elif isinstance(result, list):
        span.set_attribute(ATTR_MESSAGING_BATCH_MESSAGE_COUNT, len(jobs))
    if not _log.isEnabledFor(logging.INFO):
        return
    for job in jobs:
        _log.info(
            "job %s queued on %s (%s)",
            job.id,
            job.origin,
            getattr(job.get_status(refresh=False), "value", None),
            extra={LOG_EVENT: LOG_EVENT_JOB_QUEUED, LOG_JOB_ID: job.id},
        )
