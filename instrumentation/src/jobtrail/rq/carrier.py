"""What travels in ``job.meta``: the creation context, and the bookkeeping that spans retries.

The creation context is written once, when the job is created, and never again: retries,
scheduler promotion and dependency release keep the job's meta as it is. The attempt record
rides along with the job when RQ saves it for a retry, so it costs no Redis round trip.
Anything found malformed is ignored with one warning naming the job: the job still runs.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from jobtrail.conventions import JOB_META_ATTEMPTS_KEY, JOB_META_CARRIER_KEY
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, TraceFlags

_log = logging.getLogger(__name__)


def inject_creation_context(meta: MutableMapping[str, Any]) -> None:
    """Write the current context (traceparent, tracestate, baggage) into ``meta`` unless it has one."""
    if JOB_META_CARRIER_KEY in meta:
        return
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if carrier:
        meta[JOB_META_CARRIER_KEY] = carrier


def extract_creation_context(job_id: str, meta: Any) -> Context | None:
    """The job's creation context (span context and baggage), or None when absent or malformed."""
    raw = meta.get(JOB_META_CARRIER_KEY) if isinstance(meta, dict) else None
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        _log.warning("job %s: ignoring its trace context in job.meta: not a dict of strings", job_id)
        return None
    extracted = propagate.extract(raw)
    if "traceparent" in raw and not trace.get_current_span(extracted).get_span_context().is_valid:
        _log.warning("job %s: ignoring its trace context in job.meta: malformed traceparent", job_id)
        return None
    return extracted


@dataclass
class AttemptRecord:
    """How many attempts ran before, the last one's span, the first error, and when the job became runnable."""

    attempts: int = 0
    last_span: SpanContext | None = None
    first_error_type: str | None = None
    first_error_message: str | None = None
    runnable_at: float | None = None
    """Epoch seconds: the retry's or ``enqueue_at``'s due time (the scheduler promotes a little later)."""

    @classmethod
    def read(cls, job_id: str, meta: Any) -> AttemptRecord:
        raw = meta.get(JOB_META_ATTEMPTS_KEY) if isinstance(meta, dict) else None
        if raw is None:
            return cls()
        try:
            return cls._parse(raw)
        except (TypeError, ValueError, KeyError):
            _log.warning("job %s: ignoring malformed attempt bookkeeping in job.meta", job_id)
            return cls()

    @classmethod
    def _parse(cls, raw: Any) -> AttemptRecord:
        if not isinstance(raw, dict):
            raise TypeError("not a dict")
        attempts = raw.get("attempts", 0)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
            raise ValueError("attempts")
        last_span = None
        if raw.get("last_span") is not None:
            span = raw["last_span"]
            last_span = SpanContext(
                trace_id=int(span["trace_id"], 16),
                span_id=int(span["span_id"], 16),
                is_remote=True,
                trace_flags=TraceFlags(int(span.get("flags", 0))),
            )
            if not last_span.is_valid:
                raise ValueError("last_span")
        runnable_at = raw.get("runnable_at")
        return cls(
            attempts=attempts,
            last_span=last_span,
            first_error_type=_optional_str(raw.get("first_error_type")),
            first_error_message=_optional_str(raw.get("first_error_message")),
            runnable_at=float(runnable_at) if runnable_at is not None else None,
        )

    def write(self, meta: MutableMapping[str, Any]) -> None:
        meta[JOB_META_ATTEMPTS_KEY] = {
            "attempts": self.attempts,
            "last_span": None
            if self.last_span is None
            else {
                "trace_id": trace.format_trace_id(self.last_span.trace_id),
                "span_id": trace.format_span_id(self.last_span.span_id),
                "flags": int(self.last_span.trace_flags),
            },
            "first_error_type": self.first_error_type,
            "first_error_message": self.first_error_message,
            "runnable_at": self.runnable_at,
        }


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("not a string")
    return value
