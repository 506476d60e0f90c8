"""The worker side: one CONSUMER ``process {queue}`` span per execution attempt.

``perform_job`` runs an attempt (in the work horse of a forking ``Worker``, in-process for
``SimpleWorker``); the attempt span is current around it, so the job's own spans and logs join the
trail. RQ decides the attempt's fate in ``handle_job_failure`` (raised: retry, fail or stopped) and
``handle_job_retry`` (returned ``Retry``); the hooks there read that decision before RQ acts on it
and leave the attempt record in ``job.meta``, which RQ saves with the job for the retry. When the
horse dies mid-job, the parent worker calls ``handle_job_failure`` with no attempt running: the
attempt is then recorded from the parent as ``abandoned`` (or ``stopped`` on request).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from jobtrail.conventions import (
    ATTR_ERROR_TYPE,
    ATTR_EXCEPTION_MESSAGE,
    ATTR_EXCEPTION_TYPE,
    ATTR_FIRST_ERROR_MESSAGE,
    ATTR_FIRST_ERROR_TYPE,
    ATTR_JOB_ATTEMPT,
    ATTR_JOB_FUNC_NAME,
    ATTR_JOB_OUTCOME,
    ATTR_JOB_QUEUE_WAIT_MS,
    ATTR_JOB_REQUEUED,
    ATTR_JOB_REQUEUED_AT,
    ATTR_JOB_RETRIES_LEFT,
    ATTR_LINK_TYPE,
    ATTR_MESSAGING_DESTINATION_NAME,
    ATTR_MESSAGING_MESSAGE_ID,
    ATTR_MESSAGING_OPERATION_NAME,
    ATTR_MESSAGING_OPERATION_TYPE,
    ATTR_MESSAGING_SYSTEM,
    ATTR_REQUEST_ID,
    ATTR_RETRY_DELAY_S,
    ATTR_RETRY_NEXT_RUN_AT,
    ATTR_WORKER_NAME,
    EVENT_JOB_FAILED,
    EVENT_RETRY_SCHEDULED,
    LINK_TYPE_ENQUEUED_BY,
    LINK_TYPE_RETRY_OF,
    LOG_EVENT,
    LOG_EVENT_JOB_FINISHED,
    LOG_EVENT_JOB_STARTED,
    LOG_EVENT_RETRY_SCHEDULED,
    MESSAGING_SYSTEM_RQ,
    OPERATION_PROCESS,
    OUTCOME_ABANDONED,
    OUTCOME_FAILED,
    OUTCOME_RETRY_SCHEDULED,
    OUTCOME_STOPPED,
    OUTCOME_SUCCEEDED,
    PROPAGATION_CHILD,
    PROPAGATION_LINK,
    PROPAGATION_NONE,
    REQUEST_ID_BAGGAGE_KEY,
    pickup_span_name,
    process_span_name,
)
from jobtrail.logs import JobLogScope
from jobtrail.rq.carrier import AttemptRecord, MetaProblems, extract_creation_context
from jobtrail.rq.retry import RetryDecision, retry_decision
from jobtrail.rq.utils import call_argument, func_name_of, qualified_name
from opentelemetry import baggage, context, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import INVALID_SPAN, Link, SpanKind, Status, StatusCode

from rq.job import Job, Retry

_log = logging.getLogger("jobtrail.rq")

ERROR_TYPE_HORSE_TERMINATED = "work_horse_terminated"
ERROR_TYPE_STOPPED = "job_stopped"
_MAX_ERROR_MESSAGE = 1024
_MARKER_ATTRIBUTES = (
    ATTR_MESSAGING_SYSTEM,
    ATTR_MESSAGING_DESTINATION_NAME,
    ATTR_MESSAGING_MESSAGE_ID,
    ATTR_JOB_ATTEMPT,
    ATTR_REQUEST_ID,
)
"""What the pickup marker repeats from its attempt: enough to find the job and its request while it runs."""


@dataclass(frozen=True)
class AttemptError:
    """What went wrong in an attempt: the exception when this process saw it, else RQ's words."""

    type: str
    message: str
    exception: BaseException | None = None

    @classmethod
    def of(cls, exception: BaseException) -> AttemptError:
        return cls(qualified_name(type(exception)), str(exception)[:_MAX_ERROR_MESSAGE], exception)


class Attempt:
    """One execution attempt of one job: its span, its number, and how it ended."""

    def __init__(
        self,
        tracer: trace.Tracer,
        job: Job,
        worker: Any,
        propagation: str,
        start_time_ns: int | None = None,
    ) -> None:
        self.job_id = job.id
        problems = MetaProblems()
        self.record = AttemptRecord.read(job.meta, problems)
        self.number = self.record.attempts + 1
        self.requeued = self.record.final
        self.record.final = False  # until this attempt ends the run
        self._outcome: str | None = None
        self._retries_left: int | None = None
        creation = extract_creation_context(job.meta, problems) if propagation != PROPAGATION_NONE else None
        if problems:
            _log.warning("job %s: ignoring unusable values in job.meta: %s", job.id, problems)
        parent, enqueued_by = _parent_and_creator_link(creation, propagation)
        links = [enqueued_by] if enqueued_by is not None else []
        if self.record.last_span is not None:
            links.append(Link(self.record.last_span, {ATTR_LINK_TYPE: LINK_TYPE_RETRY_OF}))
        request_id = baggage.get_baggage(REQUEST_ID_BAGGAGE_KEY, parent)
        attributes: dict[str, Any] = {
            ATTR_MESSAGING_SYSTEM: MESSAGING_SYSTEM_RQ,
            ATTR_MESSAGING_OPERATION_TYPE: OPERATION_PROCESS,
            ATTR_MESSAGING_OPERATION_NAME: OPERATION_PROCESS,
            ATTR_MESSAGING_DESTINATION_NAME: job.origin,
            ATTR_MESSAGING_MESSAGE_ID: job.id,
            ATTR_JOB_ATTEMPT: self.number,
            ATTR_WORKER_NAME: str(worker.name),
        }
        func_name = func_name_of(job)
        if func_name is not None:
            attributes[ATTR_JOB_FUNC_NAME] = func_name
        if request_id is not None:
            attributes[ATTR_REQUEST_ID] = str(request_id)
        if self.requeued:
            attributes[ATTR_JOB_REQUEUED] = True
            if job.enqueued_at is not None:  # RQ sets it when the requeue puts the job back on its queue
                attributes[ATTR_JOB_REQUEUED_AT] = _aware(job.enqueued_at).isoformat()
        self.start_time_ns = start_time_ns if start_time_ns is not None else time.time_ns()
        runnable_at = _runnable_at(job, self.record)
        if runnable_at is not None:
            attributes[ATTR_JOB_QUEUE_WAIT_MS] = max(0.0, (self.start_time_ns / 1e9 - runnable_at) * 1000.0)
        self.span = tracer.start_span(
            process_span_name(job.origin),
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            start_time=self.start_time_ns,
        )
        self.context = trace.set_span_in_context(self.span, parent)
        self._tracer = tracer
        self._queue = job.origin
        self._enqueued_by = enqueued_by
        self._marker_attributes = {key: attributes[key] for key in _MARKER_ATTRIBUTES if key in attributes}

    def mark_pickup(self) -> None:
        """The zero-duration ``pickup {queue}`` marker: ended now, so it is exported long before the attempt span.

        It carries the attempt's ``enqueued_by`` link, so the collector processor can route the attempt's trace
        (and show the attempt as running) while the job is still going.
        """
        try:
            marker = self._tracer.start_span(
                pickup_span_name(self._queue),
                context=self.context,
                kind=SpanKind.INTERNAL,
                attributes=self._marker_attributes,
                links=[self._enqueued_by] if self._enqueued_by is not None else None,
                start_time=self.start_time_ns,
            )
            marker.end(end_time=self.start_time_ns)
        except Exception:  # the attempt span and the job go on without it
            _log.warning("job %s: could not record its pickup marker", self.job_id, exc_info=True)

    @property
    def decided(self) -> bool:
        return self._outcome is not None

    def decide(self, outcome: str, error: AttemptError | None, retry: RetryDecision | None, job: Job) -> None:
        """Record how the attempt ends; leave the record for the next attempt in ``job.meta``."""
        self._outcome = outcome
        self._retries_left = retry.retries_left if retry is not None else 0
        if error is not None:
            self._record_error(error, final=retry is None)
        self.record.runnable_at = None
        if retry is not None:
            next_run_at = retry.next_run_at
            self.record.runnable_at = next_run_at.timestamp()
            self.span.add_event(
                EVENT_RETRY_SCHEDULED,
                {
                    ATTR_RETRY_DELAY_S: float(retry.delay_s),
                    ATTR_RETRY_NEXT_RUN_AT: next_run_at.isoformat(),
                    ATTR_JOB_RETRIES_LEFT: retry.retries_left,
                },
            )
            self._log_event(
                LOG_EVENT_RETRY_SCHEDULED,
                "job %s attempt %s: retry scheduled in %ss at %s, %s retries left",
                self.job_id,
                self.number,
                retry.delay_s,
                next_run_at.isoformat(),
                retry.retries_left,
            )
        self.record.final = retry is None
        self.record.attempts = self.number
        self.record.last_span = self.span.get_span_context()
        self.record.write(job.meta)

    def _record_error(self, error: AttemptError, final: bool) -> None:
        if error.exception is not None:
            self.span.record_exception(error.exception)
        else:
            self.span.add_event("exception", {ATTR_EXCEPTION_TYPE: error.type, ATTR_EXCEPTION_MESSAGE: error.message})
        self.span.set_attribute(ATTR_ERROR_TYPE, error.type)
        self.span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"[:_MAX_ERROR_MESSAGE]))
        if self.record.first_error_type is None:
            self.record.first_error_type = error.type
            self.record.first_error_message = error.message
        if final:
            self.span.add_event(
                EVENT_JOB_FAILED,
                {
                    ATTR_FIRST_ERROR_TYPE: self.record.first_error_type,
                    ATTR_FIRST_ERROR_MESSAGE: self.record.first_error_message or "",
                    ATTR_EXCEPTION_TYPE: error.type,
                    ATTR_EXCEPTION_MESSAGE: error.message,
                },
            )

    def finish(self, job: Job, end_time_ns: int | None = None) -> None:
        """End the span; an attempt nobody failed has succeeded."""
        if self._outcome is None:
            self._outcome = OUTCOME_SUCCEEDED
            self._retries_left = job.retries_left or 0
        self.span.set_attributes({ATTR_JOB_OUTCOME: self._outcome, ATTR_JOB_RETRIES_LEFT: self._retries_left or 0})
        self._log_event(LOG_EVENT_JOB_FINISHED, "job %s attempt %s: %s", self.job_id, self.number, self._outcome)
        self.span.end(end_time=end_time_ns)

    def _log_event(self, event: str, message: str, *args: Any) -> None:
        if not _log.isEnabledFor(logging.INFO):
            return
        token = context.attach(self.context)
        try:
            with JobLogScope(self.job_id, self.number):
                _log.info(message, *args, extra={LOG_EVENT: event})
        finally:
            context.detach(token)


_ACTIVE: ContextVar[Attempt | None] = ContextVar("jobtrail_rq_attempt", default=None)


ConsumeHook = Callable[[trace.Span, Job], None]
"""``consume_hook(span, job)``: called when an attempt span starts, to add what the app knows (like contrib's
kafka ``consume_hook``). Its exceptions are logged and never reach RQ."""


class WorkerHooks:
    """The wrappers of the worker side."""

    def __init__(
        self,
        tracer: trace.Tracer,
        propagation: str,
        flush: Callable[[str], object],
        consume_hook: ConsumeHook | None = None,
    ) -> None:
        self._tracer = tracer
        self._propagation = propagation
        self._flush = flush
        self._consume_hook = consume_hook

    def _start(self, job: Job, worker: Any, start_time_ns: int | None = None) -> Attempt:
        attempt = Attempt(self._tracer, job, worker, self._propagation, start_time_ns)
        if self._consume_hook is not None and attempt.span.is_recording():
            try:
                self._consume_hook(attempt.span, job)
            except Exception:
                _log.warning("job %s: consume_hook raised", job.id, exc_info=True)
        return attempt

    def perform_job(
        self, wrapped: Callable[..., Any], worker: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        job = call_argument(args, kwargs, 0, "job")
        try:
            attempt = self._start(job, worker)
            attempt.mark_pickup()
        except Exception:  # never let tracing change the job
            _log.warning("job %s: could not start its attempt span", getattr(job, "id", "?"), exc_info=True)
            return wrapped(*args, **kwargs)
        active = _ACTIVE.set(attempt)
        token = context.attach(attempt.context)
        try:
            with JobLogScope(attempt.job_id, attempt.number):
                _log.info(
                    "job %s attempt %s picked up by %s",
                    attempt.job_id,
                    attempt.number,
                    worker.name,
                    extra={LOG_EVENT: LOG_EVENT_JOB_STARTED},
                )
                return wrapped(*args, **kwargs)
        except BaseException as error:  # RQ handles job errors itself: this is RQ's own bookkeeping failing
            if not attempt.decided:
                attempt.decide(OUTCOME_FAILED, AttemptError.of(error), None, job)
            raise
        finally:
            context.detach(token)
            _ACTIVE.reset(active)
            attempt.finish(job)
            if getattr(worker, "is_horse", False):
                self._flush(attempt.job_id)  # the horse leaves with os._exit: nothing queued would be exported

    def handle_job_failure(
        self, wrapped: Callable[..., Any], worker: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        job = call_argument(args, kwargs, 0, "job")
        active = _ACTIVE.get()
        from_parent = active is None or active.job_id != job.id
        if from_parent and not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        retroactive: Attempt | None = None  # the horse died: this process records the attempt and ends it
        attempt: Attempt | None = active
        try:
            if from_parent:
                attempt = retroactive = self._start(job, worker, _ns(job.started_at))
            if attempt is not None:
                self._decide_failure(attempt, job, worker, kwargs.get("exc_string") or "", from_parent)
                if attempt.record.final:
                    _keep_final_record(job, attempt.record)
        except Exception:
            _log.warning("job %s: could not record its failed attempt", job.id, exc_info=True)
        try:
            return wrapped(*args, **kwargs)
        finally:
            if retroactive is not None:
                retroactive.finish(job)

    def _decide_failure(self, attempt: Attempt, job: Job, worker: Any, exc_string: str, from_parent: bool) -> None:
        stopped = getattr(worker, "_stopped_job_id", None) == job.id
        if stopped:
            error = AttemptError(ERROR_TYPE_STOPPED, _last_line(exc_string))
        elif from_parent:
            error = AttemptError(ERROR_TYPE_HORSE_TERMINATED, _last_line(exc_string))
        else:
            raised = sys.exc_info()[1]
            error = AttemptError.of(raised) if raised is not None else AttemptError("error", _last_line(exc_string))
        retry = None if stopped else retry_decision(job)  # the one reading of RQ's decision
        if stopped:
            outcome = OUTCOME_STOPPED
        elif from_parent:
            outcome = OUTCOME_ABANDONED
        else:
            outcome = OUTCOME_RETRY_SCHEDULED if retry is not None else OUTCOME_FAILED
        attempt.decide(outcome, error, retry, job)

    def handle_job_retry(
        self, wrapped: Callable[..., Any], worker: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """The job returned ``Retry``: RQ fails it past ``max`` retries, else runs it again."""
        job = call_argument(args, kwargs, 0, "job")
        retry = call_argument(args, kwargs, 2, "retry")
        attempt = _ACTIVE.get()
        if attempt is not None and attempt.job_id == job.id and isinstance(retry, Retry):
            try:
                done = job.number_of_retries or 0
                error = AttemptError(qualified_name(type(retry)), f"the job asked for a retry (max {retry.max})")
                if done >= retry.max:
                    attempt.decide(OUTCOME_FAILED, error, None, job)
                else:
                    plan = RetryDecision(float(Retry.get_interval(done, retry.intervals)), retry.max - done - 1)
                    attempt.decide(OUTCOME_RETRY_SCHEDULED, error, plan, job)
            except Exception:
                _log.warning("job %s: could not record its retry", job.id, exc_info=True)
            if attempt.record.final:
                _keep_final_record(job, attempt.record)
        return wrapped(*args, **kwargs)


def _keep_final_record(job: Job, record: AttemptRecord) -> None:
    """RQ saves no meta when a run ends in failure: store the record, so a requeued run counts on.

    Stored before RQ publishes the failure: whoever sees the job failed and requeues it at once must find it.
    Read-modify-write of the meta alone, on this failure path only, so keys the job itself saved survive.
    """
    try:
        job.get_meta(refresh=True)
        record.write(job.meta)
        job.save_meta()
    except Exception:
        _log.warning("job %s: could not keep its attempt count for a requeue", job.id, exc_info=True)


def _parent_and_creator_link(creation: Context | None, propagation: str) -> tuple[Context, Link | None]:
    """A new trace root linked to the creation context (``link``), its child (``child``), or neither."""
    if creation is None:
        return Context(), None
    if propagation == PROPAGATION_CHILD:
        return creation, None
    parent = trace.set_span_in_context(INVALID_SPAN, creation)  # a new root that keeps the baggage
    creator = trace.get_current_span(creation).get_span_context()
    if propagation == PROPAGATION_LINK and creator.is_valid:
        return parent, Link(creator, {ATTR_LINK_TYPE: LINK_TYPE_ENQUEUED_BY})
    return parent, None


def _runnable_at(job: Job, record: AttemptRecord) -> float | None:
    """When this attempt could have started: the retry's or schedule's due time, else when it was (re)queued."""
    if record.runnable_at is not None:  # a final attempt clears it: a requeued run counts from its requeue
        return record.runnable_at
    if job.enqueued_at is not None:
        return _aware(job.enqueued_at).timestamp()
    return None


def _aware(moment: datetime) -> datetime:
    """RQ keeps naive UTC datetimes in some versions, aware ones in others."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _ns(moment: datetime | None) -> int | None:
    return int(_aware(moment).timestamp() * 1e9) if moment is not None else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:_MAX_ERROR_MESSAGE]
