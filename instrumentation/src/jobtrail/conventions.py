"""Every jobtrail telemetry name, once (see shared/CONVENTIONS.md).

The browser kit, the Flask layer, the RQ instrumentation, the collector
processor and the trail view all import from here; never retype a string.
"""

from __future__ import annotations

import re

# --- identity -------------------------------------------------------------
REQUEST_ID_PREFIX = "req_"
REQUEST_ID_PATTERN = re.compile(r"^req_[0-9a-f]{16}$")
REQUEST_ID_HEADER = "X-Request-ID"
JOB_STATE_HEADER = "X-Job-State"
"""Response header of the status endpoint repeating the body's state, so a fetch span can record it."""
REQUEST_ID_BAGGAGE_KEY = "jobtrail.request.id"
JOB_META_CARRIER_KEY = "jobtrail.trace_context"
"""The one ``job.meta`` key holding the creation context (a dict of carrier strings)."""
JOB_META_ATTEMPTS_KEY = "jobtrail.attempts"
"""``job.meta`` key carrying attempt bookkeeping across retries: count, last attempt's span, first error."""

# --- log record fields (the same in every process) -------------------------
LOG_REQUEST_ID = "request_id"
LOG_TRACE_ID = "trace_id"
LOG_SPAN_ID = "span_id"
LOG_JOB_ID = "job_id"
LOG_ATTEMPT = "attempt"
LOG_EVENT = "event"
LOG_SERVICE = "service"
LOG_FIELDS = (LOG_REQUEST_ID, LOG_TRACE_ID, LOG_SPAN_ID, LOG_JOB_ID, LOG_ATTEMPT, LOG_EVENT, LOG_SERVICE)

# --- structured log events of the RQ instrumentation (values of the ``event`` field) --
LOG_EVENT_JOB_QUEUED = "job.queued"
LOG_EVENT_JOB_STARTED = "job.started"
LOG_EVENT_RETRY_SCHEDULED = "job.retry_scheduled"
LOG_EVENT_JOB_FINISHED = "job.finished"

# --- jobtrail attributes ---------------------------------------------------
ATTR_REQUEST_ID = "jobtrail.request.id"
ATTR_UI_SCREEN = "jobtrail.ui.screen"
ATTR_UI_ACTION = "jobtrail.ui.action"
EVENT_UI_RESULT = "jobtrail.ui.result"
ATTR_UI_RESULT_MESSAGE = "jobtrail.ui.result.message"
ATTR_UI_RESULT_STATE = "jobtrail.ui.result.state"
ATTR_JOB_STATE = "jobtrail.job.state"
ATTR_ERROR_REASON = "jobtrail.error.reason"
# Refusal reasons of the span intake (the JSON body's ``error.reason`` and ``jobtrail.error.reason``).
REASON_ORIGIN_NOT_ALLOWED = "origin_not_allowed"
REASON_UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
REASON_PAYLOAD_TOO_LARGE = "payload_too_large"
REASON_INVALID_OTLP_JSON = "invalid_otlp_json"
REASON_COLLECTOR_UNREACHABLE = "collector_unreachable"
ATTR_LINK_TYPE = "jobtrail.link.type"
LINK_TYPE_ENQUEUED_BY = "enqueued_by"
LINK_TYPE_RETRY_OF = "retry_of"
ATTR_STITCHED_ORIGINAL_TRACE_ID = "jobtrail.stitched.original_trace_id"
ATTR_STITCHED_PARENT_FROM_LINK = "jobtrail.stitched.parent_from_link"

UI_STATE_RUNNING = "running"
UI_STATE_SUCCEEDED = "succeeded"
UI_STATE_FAILED = "failed"

# --- OpenTelemetry semantic conventions used as-is --------------------------
ATTR_MESSAGING_SYSTEM = "messaging.system"
ATTR_MESSAGING_OPERATION_TYPE = "messaging.operation.type"
ATTR_MESSAGING_OPERATION_NAME = "messaging.operation.name"
ATTR_MESSAGING_DESTINATION_NAME = "messaging.destination.name"
ATTR_MESSAGING_MESSAGE_ID = "messaging.message.id"
ATTR_ERROR_TYPE = "error.type"
ATTR_EXCEPTION_TYPE = "exception.type"
ATTR_EXCEPTION_MESSAGE = "exception.message"
ATTR_MESSAGING_BATCH_MESSAGE_COUNT = "messaging.batch.message_count"
MESSAGING_SYSTEM_RQ = "rq"
OPERATION_SEND = "send"
OPERATION_CREATE = "create"
"""One per job of an ``enqueue_many`` batch: each job's own creation context (messaging semconv batch send)."""
OPERATION_PROCESS = "process"

# --- rq attributes and events ----------------------------------------------
ATTR_JOB_FUNC_NAME = "rq.job.func_name"
ATTR_JOB_SCHEDULED_FOR = "rq.job.scheduled_for"
ATTR_JOB_ATTEMPT = "rq.job.attempt"
ATTR_JOB_RETRIES_LEFT = "rq.job.retries_left"
ATTR_JOB_QUEUE_WAIT_MS = "rq.job.queue_wait_ms"
ATTR_WORKER_NAME = "rq.worker.name"
ATTR_JOB_OUTCOME = "rq.job.outcome"
ATTR_JOB_REQUEUED = "rq.job.requeued"
"""True on an attempt that follows an operator requeue (``FailedJobRegistry.requeue``, ``job.requeue()``)."""
ATTR_JOB_REQUEUED_AT = "rq.job.requeued_at"
"""ISO 8601: when the requeue put the job back on its queue."""
EVENT_RETRY_SCHEDULED = "rq.retry.scheduled"
ATTR_RETRY_DELAY_S = "rq.retry.delay_s"
ATTR_RETRY_NEXT_RUN_AT = "rq.retry.next_run_at"
EVENT_JOB_FAILED = "rq.job.failed"
ATTR_FIRST_ERROR_TYPE = "rq.job.first_error.type"
ATTR_FIRST_ERROR_MESSAGE = "rq.job.first_error.message"

OUTCOME_SUCCEEDED = "succeeded"
OUTCOME_RETRY_SCHEDULED = "retry_scheduled"
OUTCOME_FAILED = "failed"
OUTCOME_STOPPED = "stopped"
OUTCOME_ABANDONED = "abandoned"


def send_span_name(queue: str) -> str:
    """Name of the PRODUCER span that covers an enqueue."""
    return f"{OPERATION_SEND} {queue}"


def create_span_name(queue: str) -> str:
    """Name of the PRODUCER span that creates one job of a batch send."""
    return f"{OPERATION_CREATE} {queue}"


def process_span_name(queue: str) -> str:
    """Name of the CONSUMER span of one execution attempt."""
    return f"{OPERATION_PROCESS} {queue}"


PICKUP = "pickup"


def pickup_span_name(queue: str) -> str:
    """Name of the zero-duration INTERNAL marker a worker emits when an attempt starts."""
    return f"{PICKUP} {queue}"


# --- metrics -------------------------------------------------------------------
METRIC_HORSE_SPANS_UNSENT = "jobtrail.rq.horse.spans.unsent"
"""Counter: spans a forking worker's job horse could not export before it exited (collector down or slow)."""

# --- sampling ---------------------------------------------------------------
SAMPLER_NAME = "jobtrail_parentbased_traceidratio"
"""``OTEL_TRACES_SAMPLER`` value (entry point in group ``opentelemetry_traces_sampler``) of jobtrail's sampler."""

# --- propagation modes -------------------------------------------------------
PROPAGATION_LINK = "link"
PROPAGATION_CHILD = "child"
PROPAGATION_NONE = "none"
PROPAGATION_MODES = (PROPAGATION_LINK, PROPAGATION_CHILD, PROPAGATION_NONE)

# --- job states (status endpoint and UI) ------------------------------------
STATE_QUEUED = "queued"
STATE_DEFERRED = "deferred"
STATE_SCHEDULED = "scheduled"
STATE_STARTED = "started"
STATE_SUCCEEDED = "succeeded"
STATE_FAILED = "failed"
STATE_CANCELLED = "cancelled"
STATE_EXPIRED = "expired"
STATE_NOT_FOUND = "not_found"
TERMINAL_STATES = frozenset({STATE_SUCCEEDED, STATE_FAILED, STATE_CANCELLED, STATE_EXPIRED})
