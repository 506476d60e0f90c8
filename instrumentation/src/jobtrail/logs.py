"""Log correlation: the same fields on every record, in the API and in the worker.

Every record gets ``request_id``, ``trace_id``, ``span_id``, ``job_id``, ``attempt``, ``event`` and
``service`` (see shared/CONVENTIONS.md), so one request id finds the API's lines and every attempt's
lines. The request id comes from baggage (the Flask layer puts it there; the RQ instrumentation
carries it into the job), the trace and span ids from the current span, and the job id and attempt
from :class:`JobLogScope`, which the RQ instrumentation opens around each attempt.

Usage::

    from jobtrail.logs import configure_logging
    configure_logging("billing-api")          # JSON lines on stderr, one object per record

or, to keep your own handlers and format, add :class:`CorrelationFilter` to them and use the fields
(``%(request_id)s``, ``%(trace_id)s`` ...) in your format string.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import IO, Any

from jobtrail.conventions import (
    LOG_ATTEMPT,
    LOG_FIELDS,
    LOG_JOB_ID,
    LOG_OPTIONAL_FIELDS,
    LOG_REQUEST_ID,
    LOG_SERVICE,
    LOG_SPAN_ID,
    LOG_TRACE_ID,
    REQUEST_ID_BAGGAGE_KEY,
)
from opentelemetry import baggage, trace

_JOB_SCOPE: ContextVar[tuple[str, int] | None] = ContextVar("jobtrail_job_scope", default=None)


class JobLogScope:
    """Every record logged inside carries this job id and attempt number (a plain class: it wraps every job)."""

    __slots__ = ("_scope", "_token")

    def __init__(self, job_id: str, attempt: int) -> None:
        self._scope = (job_id, attempt)

    def __enter__(self) -> None:
        self._token = _JOB_SCOPE.set(self._scope)

    def __exit__(self, *exc_info: object) -> None:
        _JOB_SCOPE.reset(self._token)


class CorrelationFilter(logging.Filter):
    """Puts the shared correlation fields on each record; values passed in ``extra`` win.

    Attach it to handlers (not loggers), so records of every library's loggers get the fields.
    """

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            fields.setdefault(LOG_TRACE_ID, trace.format_trace_id(span_context.trace_id))
            fields.setdefault(LOG_SPAN_ID, trace.format_span_id(span_context.span_id))
        request_id = baggage.get_baggage(REQUEST_ID_BAGGAGE_KEY)
        if request_id is not None:
            fields.setdefault(LOG_REQUEST_ID, str(request_id))
        scope = _JOB_SCOPE.get()
        if scope is not None:
            fields.setdefault(LOG_JOB_ID, scope[0])
            fields.setdefault(LOG_ATTEMPT, scope[1])
        fields.setdefault(LOG_SERVICE, self.service)
        for name in LOG_FIELDS:
            fields.setdefault(name, None)
        return True


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the shared fields, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in (*LOG_FIELDS, *LOG_OPTIONAL_FIELDS):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: int = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Send every record as a JSON line with the shared fields to ``stream`` (stderr by default).

    Replaces a handler installed by an earlier call, so calling it twice does not double the lines.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(CorrelationFilter(service))
    handler.setFormatter(JsonLogFormatter())
    handler.set_name("jobtrail")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "jobtrail"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


__all__ = ["CorrelationFilter", "JsonLogFormatter", "configure_logging", "JobLogScope"]
